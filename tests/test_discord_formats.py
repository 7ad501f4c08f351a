"""Office files and screenshots through the fake Discord (issue 14): /ingest of a .docx and of a
PNG read by the real OCR engine, then /ask answers quoting each with its location."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.discord_harness import World, world
from tests.fakes import FakeLLM, cite_first_passage

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Team Handbook"
    d.add_heading("Onboarding", level=1)
    d.add_paragraph("New hires get a laptop on day one.")
    d.add_heading("Accounts", level=2)
    d.add_paragraph("The VPN token is issued by the helpdesk on request.")
    d.add_heading("Leave", level=1)
    d.add_paragraph("Vacation requests go through the portal.")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def screenshot(lines: list[str]) -> bytes:
    """A PNG of an error dialog's text, drawn with Pillow (what a member posts in a channel)."""
    image = Image.new("RGB", (1000, 90 + 70 * len(lines)), "white")
    pen = ImageDraw.Draw(image)
    face = ImageFont.truetype(str(FONT), 34) if FONT.exists() else ImageFont.load_default(size=34)
    for i, line in enumerate(lines):
        pen.text((40, 40 + 70 * i), line, fill="black", font=face)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def ingest(w: World, filename: str, data: bytes, content_type: str) -> str:
    attachment = w.fake.add_attachment(w.channel["id"], filename, data, content_type)
    inter = await w.command(w.admin, "ingest", {"file": attachment})
    # the screenshot is OCR'd in the upload worker process: a spawn, the engine's load, a few seconds of OCR
    await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 120)
    [report] = w.fake.interaction_messages(inter)
    content: str = report["content"]
    return content


async def ask(w: World, question: str) -> dict[str, Any]:
    inter = await w.command(w.alice, "ask", {"question": question})
    messages = await w.reply(inter, timeout=30)
    return messages[-1]


@pytest.mark.slow
async def test_a_docx_and_a_screenshot_are_ingested_and_quoted_with_their_locations(tmp_path: Path) -> None:
    llm = FakeLLM(default=cite_first_passage)
    async with world(tmp_path, llm) as w:
        report = await ingest(
            w,
            "handbook.docx",
            make_docx(),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        )
        assert "handbook.docx" in report and "added" in report, report
        shot = screenshot(["Error 5023: disk quota exceeded", "Contact storage admins"])
        report = await ingest(w, "error.png", shot, "image/png")
        assert "error.png" in report and "added" in report, report
        kinds = {d.title or d.source: d.kind for d in w.service.documents(w.namespace())}
        assert sorted(kinds.values()) == ["docx", "image"], kinds

        answer = await ask(w, "Who issues the VPN token?")
        embed = answer["embeds"][0]
        assert "VPN token is issued by the helpdesk" in answer["content"], answer["content"]
        assert "Onboarding > Accounts" in embed["description"], embed["description"]

        answer = await ask(w, "What does error 5023 mean? disk quota")
        embed = answer["embeds"][0]
        quoted = " ".join(answer["content"].lower().split())
        assert "error 5023: disk quota exceeded" in quoted, answer["content"]  # the recognised text, verbatim
        assert "(OCR)" in embed["description"], embed["description"]


def scanned_tiff(frames: int) -> bytes:
    """A multi-page TIFF of scanned pages (a few seconds of OCR each on 2 cores)."""
    images = [Image.open(io.BytesIO(screenshot([f"Scanned page {n} of the audit", "Findings and notes"] * 3)))
              for n in range(1, frames + 1)]  # fmt: skip
    out = io.BytesIO()
    images[0].save(out, "TIFF", save_all=True, append_images=images[1:])
    return out.getvalue()


@pytest.mark.slow
async def test_a_long_ocr_shows_its_pages_and_the_bot_answers_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest.loaders import ocr as ocr_module
    from tests.discord_harness import message_payloads

    here: list[int] = []
    real = ocr_module.recognise
    monkeypatch.setattr(ocr_module, "recognise", lambda *a, **k: here.append(1) or real(*a, **k))
    monkeypatch.setattr("ingest.loaders.image.recognise", ocr_module.recognise)
    async with world(tmp_path, FakeLLM(default=cite_first_passage)) as w:
        w.add_document("handbook.md", "# Handbook\n\nThe office opens at eight.\n")
        attachment = w.fake.add_attachment(w.channel["id"], "audit.tiff", scanned_tiff(4), "image/tiff")
        inter = await w.command(w.admin, "ingest", {"file": attachment})

        def edits() -> str:
            return "\n".join(str(p.get("content")) for p in message_payloads(w.fake))

        await w.fake.wait_for(lambda: "reading page 1 of 4 (OCR)" in edits(), 120)
        sources = await w.command(w.alice, "sources")  # answered while the worker process OCRs
        await w.reply(sources, streamed=False, timeout=5)
        reported = "Ingest report" in str(w.fake.interaction_messages(inter))
        await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 120)
        [report] = w.fake.interaction_messages(inter)
    assert not reported  # /sources was answered before the OCR was over
    assert "audit.tiff" in report["content"] and "added" in report["content"], report["content"]
    assert "reading page 3 of 4 (OCR)" in edits() or "reading page 4 of 4 (OCR)" in edits()
    assert here == []  # nothing was OCR'd in the bot's process: the upload worker did it
