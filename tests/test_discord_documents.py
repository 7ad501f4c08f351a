"""Documents through the fake Discord: /ingest, /sources, /forget, /summarize, /status, watched channels."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

from tests.discord_harness import EPHEMERAL, world
from tests.fakes import FakeLLM, cite_first_passage

HANDBOOK = "# Handbook\n\nNew people get a laptop on their first day. The office opens at eight.\n"
BILLING = "Invoices are sent on the first Monday of every month. Refunds take ten business days.\n"
GARDEN = "Roses need six hours of sun and weekly watering. Prune them in early spring.\n"


def make_pdf(pages: list[str], title: str = "Operations Manual") -> bytes:
    """A small real PDF (Helvetica text, one content stream per page) that pypdf can read."""
    try:
        from tests import pdfgen  # the ingest engineer's helper, when present
    except ImportError:
        pdfgen = None
    if pdfgen is not None and hasattr(pdfgen, "make_pdf"):
        try:
            return pdfgen.make_pdf(pages, title=title)  # type: ignore[no-any-return]
        except TypeError:
            pass

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    n = len(pages)
    kids = " ".join(f"{5 + 2 * i} 0 R" for i in range(n))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({esc(title)}) >>".encode(),
    ]
    for i, text in enumerate(pages):
        lines = textwrap.wrap(text, 80)
        stream = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({esc(line)}) '" for line in lines) + " ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {6 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode())
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


async def test_ingest_pdf_attachment_then_answer_cites_the_page(tmp_path):
    pdf = make_pdf(
        [
            "Welcome to the operations manual. This page introduces the team and the office.",
            "Backups run every night at two in the morning. The backup password rotates every ninety days.",
        ]
    )
    llm = FakeLLM(default=cite_first_passage)
    async with world(tmp_path, llm) as w:
        attachment = w.fake.add_attachment(w.channel["id"], "manual.pdf", pdf, "application/pdf")
        inter = await w.command(w.admin, "ingest", {"file": attachment})
        await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 15)
        [report] = w.fake.interaction_messages(inter)

        assert w.fake.cdn_hits  # downloaded from the CDN route with attachment.read()
        assert "manual.pdf" in report["content"] and "added" in report["content"]
        assert "2 pages" in report["content"]
        [doc] = w.service.documents(w.namespace())
        assert doc.pages == 2

        answer = await w.answer(await w.ask(w.alice, "When do backups run and how often does the password rotate?"))
        embed = answer[-1]["embeds"][0]
        assert "p. 2" in embed["description"]
        assert "Backups run every night" in answer[-1]["content"]

        # the same file again: unchanged; an unsupported one: refused with its reason
        again = w.fake.add_attachment(w.channel["id"], "manual.pdf", pdf, "application/pdf")
        junk = w.fake.add_attachment(w.channel["id"], "tool.exe", b"MZ\x00\x01binary", "application/octet-stream")
        inter = await w.command(w.admin, "ingest", {"file": again, "file2": junk})
        await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 15)
        table = w.fake.interaction_messages(inter)[0]["content"]
        assert "unchanged" in table and "refused" in table and "tool.exe" in table
        assert len(w.service.documents(w.namespace())) == 1


async def test_permission_refusals_are_private_and_say_what_is_needed(tmp_path):
    async with world(tmp_path, FakeLLM()) as w:
        w.add_document("handbook.md", HANDBOOK)
        attachment = w.fake.add_attachment(w.channel["id"], "b.txt", BILLING.encode())
        for name, options in (("ingest", {"file": attachment}), ("forget", {"document": "Handbook"})):
            inter = await w.command(w.alice, name, options)
            [refusal] = await w.reply(inter, streamed=False)
            assert inter.callback["type"] == 4 and inter.ephemeral
            assert int(refusal["flags"]) & EPHEMERAL
            needed = f"/{name} needs the <@&{w.admin_role['id']}> role or the **Manage Server** permission"
            assert needed in refusal["content"]
        assert [d.title for d in w.service.documents(w.namespace())] == ["Handbook"]
        assert not w.fake.cdn_hits
        # the guild owner has Manage Server: allowed without the role
        inter = await w.command(w.fake.owner, "forget", {"document": "Handbook"})
        [prompt] = await w.reply(inter, streamed=False)
        await w.fake.click(prompt, w.fake.owner, label="Forget")
        await w.fake.wait_for(lambda: "Forgot **Handbook**" in prompt["content"])


async def test_forget_with_autocomplete(tmp_path):
    async with world(tmp_path, FakeLLM()) as w:
        w.add_document("handbook.md", HANDBOOK)
        w.add_document("billing.txt", BILLING)
        choices = await w.fake.autocomplete(w.channel, w.admin, "forget", {"document": "hand"}, "document")
        assert [c["name"] for c in choices] == ["Handbook"]
        inter = await w.command(w.admin, "forget", {"document": choices[0]["value"]})
        [prompt] = await w.reply(inter, streamed=False)
        assert "(handbook.md, markdown, 1 chunk)" in prompt["content"]
        await w.fake.click(prompt, w.admin, label="Forget")
        await w.fake.wait_for(lambda: "Forgot **Handbook**" in prompt["content"])
        assert [d.source for d in w.service.documents(w.namespace())] == [f"discord:{w.guild['id']}:billing.txt"]
        inter = await w.command(w.admin, "forget", {"document": "no such thing"})
        [missing] = await w.reply(inter, streamed=False)
        assert "Nothing removed" in missing["content"]


async def test_sources_pages(tmp_path):
    async with world(tmp_path, FakeLLM()) as w:
        for i in range(12):
            w.add_document(f"note{i:02}.md", f"# Note {i:02}\n\nThis is note number {i} about topic {i}.\n")
        inter = await w.command(w.alice, "sources")
        [page1] = await w.reply(inter, streamed=False)
        embed = page1["embeds"][0]
        assert embed["title"] == "Documents (12)" and "Note 00" in embed["description"]
        assert "Note 11" not in embed["description"] and "Page 1/2" in embed["footer"]["text"]
        inter = await w.command(w.alice, "sources", {"page": 2})
        [page2] = await w.reply(inter, streamed=False)
        assert "Note 11" in page2["embeds"][0]["description"]


async def test_summarize_document_and_channel(tmp_path):
    # a channel summary must be backed by the messages: "People discussed the launch date" is backed by none
    llm = FakeLLM(
        ["The handbook covers laptops and office hours. [1]", "They will launch on Friday after the review [2]."]
    )
    async with world(tmp_path, llm) as w:
        w.add_document("handbook.md", HANDBOOK)
        choices = await w.fake.autocomplete(w.channel, w.alice, "summarize", {"document": "Hand"}, "document")
        inter = await w.command(w.alice, "summarize", {"document": choices[0]["value"]})
        [summary] = await w.reply(inter)
        assert "laptops and office hours" in summary["content"] and "✅ done" in summary["content"]
        assert "Handbook" in summary["embeds"][0]["description"]
        assert "New people get a laptop" in llm.last_prompt

        for user, text in (
            (w.alice, "Shall we launch on Friday?"),
            (w.bob, "Friday works, after the review."),
            (w.carol, "I'll book the review for Thursday."),
        ):
            await w.fake.user_message(w.channel, user, text)
        inter = await w.command(w.alice, "summarize", {"scope": "channel", "messages": 10})
        [summary] = await w.reply(inter)
        assert "launch on Friday after the review" in summary["content"]
        prompt = llm.last_prompt
        assert "Shall we launch on Friday?" in prompt and "book the review for Thursday" in prompt
        assert "laptops and office hours" not in prompt  # the bot's own messages are not summarised
        assert "/channels/" in summary["embeds"][0]["description"]  # jump links to the messages


async def test_guilds_never_see_each_others_documents(tmp_path):
    llm = FakeLLM(default=cite_first_passage)
    async with world(tmp_path, llm, guilds=2) as w:
        other = next(g for g in w.fake.guilds.values() if g is not w.guild)
        other_channel = w.fake.channel(other)
        w.add_document("billing.txt", BILLING)
        w.add_document("garden.md", GARDEN, guild=other)

        inter = await w.command(w.alice, "sources", channel=other_channel)
        [listing] = await w.reply(inter, streamed=False)
        assert "garden" in listing["embeds"][0]["description"].lower()
        assert "billing" not in listing["embeds"][0]["description"].lower()
        for typed in ("", "bill"):
            choices = await w.fake.autocomplete(other_channel, w.alice, "summarize", {"document": typed}, "document")
            assert all("billing" not in c["name"].lower() for c in choices)
        answer = await w.answer(await w.ask(w.alice, "When are invoices sent?", channel=other_channel))
        shown = answer[-1]["content"] + str(answer[-1]["embeds"])
        assert "Invoices" not in shown and "billing" not in shown.lower()
        answer = await w.answer(await w.ask(w.alice, "When are invoices sent?"))
        assert "Invoices are sent on the first Monday" in answer[-1]["content"]


async def test_watched_channel_auto_ingest_replace_and_delete(tmp_path):
    def watch_general(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
        return {"watch_channels": [int(fake.channel(guild)["id"])]}

    async with world(tmp_path, FakeLLM(), prepare=watch_general) as w:
        first = await w.fake.user_message(w.channel, w.alice, "notes", attachments=[("notes.md", HANDBOOK.encode())])
        await w.fake.wait_for(lambda: w.fake.replies_to(first))
        assert "notes.md** added" in w.fake.replies_to(first)[0]["content"]
        [doc] = w.service.documents(w.namespace())
        assert doc.source == f"discord:{w.guild['id']}:{w.channel['id']}:notes.md"
        assert doc.extra["message_id"] == first["id"] and doc.extra["jump_url"].endswith(first["id"])

        second = await w.fake.user_message(w.channel, w.alice, "v2", attachments=[("notes.md", BILLING.encode())])
        await w.fake.wait_for(lambda: w.fake.replies_to(second))
        assert "updated" in w.fake.replies_to(second)[0]["content"]
        [doc] = w.service.documents(w.namespace())
        assert doc.extra["message_id"] == second["id"]

        await w.fake.delete_message(w.channel, first)  # the old post: its document moved on, nothing happens
        await asyncio.sleep(0.3)
        assert len(w.service.documents(w.namespace())) == 1
        await w.fake.delete_message(w.channel, second)
        await w.fake.wait_for(lambda: not w.service.documents(w.namespace()))


async def test_status(tmp_path):
    async with world(tmp_path, FakeLLM()) as w:
        w.add_document("handbook.md", HANDBOOK)
        inter = await w.command(w.alice, "status")
        [status] = await w.reply(inter, streamed=False)
        fields = {f["name"]: f["value"] for f in status["embeds"][0]["fields"]}
        assert fields["Model"] == "fake-llm" and fields["Documents"] == "1"
        assert int(fields["Chunks"]) >= 1 and fields["Queue"].startswith("0 waiting")
        assert "Uptime" in fields and inter.ephemeral


async def test_sources_on_a_damaged_index_says_so_without_internals(tmp_path):
    from store.protocol import STORE_DAMAGED_NOTICE, StoreDamaged

    async with world(tmp_path, FakeLLM()) as w:
        w.add_document("handbook.md", HANDBOOK)

        def damaged(*args: object, **kwargs: object) -> None:
            raise StoreDamaged("the document store's vector index (/srv/data/chroma) is damaged")

        w.service.documents = damaged  # type: ignore[method-assign]
        [reply] = await w.reply(await w.command(w.alice, "sources"), streamed=False)
        assert STORE_DAMAGED_NOTICE in reply["content"]
        assert "/srv" not in reply["content"] and "No documents yet" not in reply["content"]
