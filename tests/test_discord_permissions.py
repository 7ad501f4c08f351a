"""Issue 12, defect 7 through the fake Discord: who may change a server's documents, and how much."""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from typing import Any

from tests.discord_harness import EPHEMERAL, World, world
from tests.fakes import FakeLLM

HANDBOOK = "# Handbook\n\nNew people get a laptop on their first day. The office opens at eight.\n"
BILLING = "Invoices are sent on the first Monday of every month. Refunds take ten business days.\n"


async def forget_prompt(w: World, user: dict[str, Any], document: str) -> dict[str, Any]:
    inter = await w.command(user, "forget", {"document": document})
    [prompt] = await w.reply(inter, streamed=False)
    return prompt


async def test_admins_are_matched_by_role_id_or_user_id_not_by_role_name(tmp_path):
    def prepare(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
        fake.mallory = fake.add_user("mallory")  # made herself a role with the admin role's name
        fake.add_member(guild["id"], fake.mallory, [fake.add_role(guild, "ragcord-admin")])
        fake.trusted = fake.add_user("trusted")
        fake.add_member(guild["id"], fake.trusted)
        return {"admin_role": "ragcord-admin", "admin_user_ids": [int(fake.trusted["id"])]}

    async with world(tmp_path, FakeLLM(), prepare=prepare) as w:
        w.add_document("handbook.md", HANDBOOK)
        [doc] = w.service.documents(w.namespace())
        refusal = await forget_prompt(w, w.fake.mallory, doc.doc_id)
        assert int(refusal["flags"]) & EPHEMERAL and not refusal["components"]
        assert (
            f"/forget needs the <@&{w.admin_role['id']}> role or the **Manage Server** permission"
            in (refusal["content"])
        )
        for user in (w.admin, w.fake.trusted, w.fake.owner):  # the role by id, the user id, Manage Server
            prompt = await forget_prompt(w, user, doc.doc_id)
            assert prompt["components"], (user["username"], prompt["content"])
        assert len(w.service.documents(w.namespace())) == 1  # nothing removed without a confirmation


async def test_role_name_is_only_a_logged_fallback(tmp_path, caplog):
    async with world(tmp_path, FakeLLM(), admin_role_ids=[], admin_role="ragcord-admin") as w:
        w.add_document("handbook.md", HANDBOOK)
        [doc] = w.service.documents(w.namespace())
        with caplog.at_level(logging.WARNING, logger="bot.discord_app.client"):
            prompt = await forget_prompt(w, w.admin, doc.doc_id)
        assert prompt["components"]
        warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "RAGCORD_ADMIN_ROLE_IDS" in warning and w.admin_role["id"] in warning


async def test_forget_takes_an_exact_document_shows_it_and_asks_to_confirm(tmp_path):
    async with world(tmp_path, FakeLLM()) as w:
        w.add_document("handbook.md", HANDBOOK)
        w.add_document("billing.txt", BILLING)
        handbook = next(d for d in w.service.documents(w.namespace()) if d.title == "Handbook")

        partial = await forget_prompt(w, w.admin, "hand")  # a partial title no longer picks a document
        assert "Nothing removed" in partial["content"] and not partial["components"]
        assert len(w.service.documents(w.namespace())) == 2

        prompt = await forget_prompt(w, w.admin, handbook.doc_id)  # the autocomplete's value
        assert int(prompt["flags"]) & EPHEMERAL
        assert "**Handbook**" in prompt["content"] and f"{handbook.chunks} chunk" in prompt["content"]
        cancel = await w.fake.click(prompt, w.admin, label="Cancel")
        await w.fake.wait_for(lambda: cancel.callback is not None)
        await w.fake.wait_for(lambda: "Nothing removed" in w.fake.messages[int(prompt["id"])]["content"])
        assert not w.fake.messages[int(prompt["id"])]["components"]
        assert len(w.service.documents(w.namespace())) == 2

        prompt = await forget_prompt(w, w.admin, handbook.doc_id)
        as_seen = copy.deepcopy(prompt)  # what the admin's client shows, buttons included
        await w.fake.click(prompt, w.admin, label="Forget")
        await w.fake.wait_for(lambda: "Forgot **Handbook**" in w.fake.messages[int(prompt["id"])]["content"])
        assert not w.fake.messages[int(prompt["id"])]["components"]
        assert [d.title for d in w.service.documents(w.namespace())] == ["billing.txt"]

        w.add_document("handbook.md", HANDBOOK)  # back again; an old button of the answered prompt does nothing
        await w.fake.click(as_seen, w.admin, label="Forget")
        await asyncio.sleep(0.5)
        assert len(w.service.documents(w.namespace())) == 2
        assert "Forgot **Handbook**" in w.fake.messages[int(prompt["id"])]["content"]


def uploader_setup(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    fake.uploader_role = fake.add_role(guild, "uploaders")
    fake.dora, fake.eve = fake.add_user("dora"), fake.add_user("eve")
    for user in (fake.dora, fake.eve):
        fake.add_member(guild["id"], user, [fake.uploader_role])
    channel = fake.channel(guild)
    return {
        "watch_channels": [int(channel["id"])],
        "uploader_role_ids": [int(fake.uploader_role["id"])],
        "upload_files_per_user_hour": 2,
        "upload_files_per_guild_hour": 3,
    }


async def ingest_report(w: World, inter: Any, timeout: float = 10.0) -> dict[str, Any]:
    await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), timeout)
    [report] = w.fake.interaction_messages(inter)
    return report


async def post(w: World, user: dict[str, Any], *names: str) -> str:
    files = [(name, f"# {name}\n\nSome text about {name} for the index.\n".encode()) for name in names]
    message = await w.fake.user_message(w.channel, user, "files", attachments=files)
    await w.fake.wait_for(lambda: w.fake.replies_to(message))
    return str(w.fake.replies_to(message)[0]["content"])


async def test_watched_channels_need_the_uploader_role_and_are_rate_limited(tmp_path):
    async with world(tmp_path, FakeLLM(), prepare=uploader_setup) as w:
        refused = await post(w, w.alice, "a.md")
        assert "not indexed" in refused and f"<@&{w.fake.uploader_role['id']}>" in refused
        assert not w.service.documents(w.namespace()) and not w.fake.cdn_hits

        reply = await post(w, w.fake.dora, "d1.md", "d2.md", "d3.md")  # 2 files an hour per member
        assert "d1.md** added" in reply and "d2.md** added" in reply
        assert "d3.md** not indexed" in reply and "2 files an hour" in reply and "try again in" in reply
        reply = await post(w, w.fake.eve, "e1.md", "e2.md")  # 3 files an hour for the whole server
        assert "e1.md** added" in reply
        assert "e2.md** not indexed" in reply and "3 files an hour" in reply
        assert sorted(d.title for d in w.service.documents(w.namespace())) == ["d1.md", "d2.md", "e1.md"]
        reply = await post(w, w.admin, "admin.md")  # admins are neither role-checked nor limited
        assert "admin.md** added" in reply


async def test_attachment_size_is_checked_before_downloading_and_said_in_the_settings_unit(tmp_path):
    async with world(tmp_path, FakeLLM(), max_file_mb=1) as w:
        big = w.fake.add_attachment(w.channel["id"], "big.txt", b"small really")
        big["size"] = 1536 * 1024  # declared 1.5 MB (the setting's MB: 1024 * 1024 bytes)
        report = await ingest_report(w, await w.command(w.admin, "ingest", {"file": big}))
        assert "1.5 MB, over the 1 MB limit" in report["content"], report["content"]
        assert not w.fake.cdn_hits


async def test_one_servers_slow_ingest_does_not_hold_up_another(tmp_path):
    async with world(tmp_path, FakeLLM(), guilds=2) as w:
        other = next(g for g in w.fake.guilds.values() if g is not w.guild)
        release = threading.Event()
        real = w.service.ingest_bytes

        def slow_in_first_guild(namespace: str, *args: Any, **kwargs: Any) -> Any:
            if namespace == w.namespace():
                release.wait(20)
            return real(namespace, *args, **kwargs)

        w.service.ingest_bytes = slow_in_first_guild
        try:
            slow = w.fake.add_attachment(w.channel["id"], "slow.md", HANDBOOK.encode())
            first = await w.command(w.admin, "ingest", {"file": slow})
            await w.fake.wait_for(lambda: "reading slow.md" in str(w.fake.rest_calls("PATCH", first.token)[-1:]))
            channel = w.fake.channel(other)
            quick = w.fake.add_attachment(channel["id"], "quick.md", BILLING.encode())
            second = await w.fake.slash(channel, w.fake.owner, "ingest", {"file": quick})
            report = await ingest_report(w, second, timeout=8)
            assert "quick.md" in report["content"] and "added" in report["content"]
            assert "Ingest report" not in str(w.fake.interaction_messages(first))  # still held up
        finally:
            release.set()
        report = await ingest_report(w, first)
        assert "slow.md" in report["content"] and "added" in report["content"]


async def test_an_unconfirmed_forget_expires_and_removes_nothing(tmp_path):
    async with world(tmp_path, FakeLLM()) as w:
        w.add_document("handbook.md", HANDBOOK)
        [doc] = w.service.documents(w.namespace())
        w.bot.get_cog("Documents").confirm_seconds = 0.5
        prompt = await forget_prompt(w, w.admin, doc.doc_id)
        assert prompt["components"]
        await w.fake.wait_for(lambda: "not confirmed within 0.5 s" in prompt["content"], 5)
        assert not prompt["components"]
        assert len(w.service.documents(w.namespace())) == 1
