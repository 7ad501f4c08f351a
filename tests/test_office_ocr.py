"""Pictures inside Word and PowerPoint files are read by OCR (issue 14).

The files are built here with python-docx and python-pptx around PNGs drawn with Pillow;
the `slow` tests read them with the real rapidocr engine, the others fake `recognise`.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from ingest.chunking import Chunker
from ingest.loaders import load_bytes
from ingest.loaders import ocr as ocr_module
from ingest.loaders import pictures as pictures_module
from ingest.loaders.ocr import OcrOptions, OcrPage
from ingest.loaders.office import has_pictures
from store.types import Chunk, LoadedDocument

KW: dict[str, Any] = {"max_bytes": 50 << 20}
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
slow = pytest.mark.slow


def picture(text: str, size: tuple[int, int] = (900, 140)) -> bytes:
    image = Image.new("RGB", size, "white")
    face = ImageFont.truetype(str(FONT), 40) if FONT.exists() else ImageFont.load_default(size=40)
    ImageDraw.Draw(image).text((30, 40), text, fill="black", font=face)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def make_docx(*pngs: bytes) -> bytes:
    """Heading "Design": a paragraph, the pictures (one in a table cell if there are two), a
    paragraph after them; then heading "Later" and its paragraph."""
    import docx
    from docx.shared import Inches

    d = docx.Document()
    d.add_heading("Design", level=1)
    d.add_paragraph("The architecture is shown below.")
    if pngs:
        d.add_picture(io.BytesIO(pngs[0]), width=Inches(5))
    for extra in pngs[1:]:
        cell = d.add_table(rows=1, cols=1).cell(0, 0)
        cell.paragraphs[0].add_run().add_picture(io.BytesIO(extra), width=Inches(3))
    d.add_paragraph("This paragraph follows the figure.")
    d.add_heading("Later", level=1)
    d.add_paragraph("Closing remarks about the rollout.")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def make_pptx(png: bytes) -> bytes:
    """Slide 1 "Overview" with text; slide 2 "Architecture" with the picture inside a group."""
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Overview"
    first.placeholders[1].text = "Typed text on the first slide."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Architecture"
    group = second.shapes.add_group_shape()
    group.shapes.add_picture(io.BytesIO(png), Inches(1), Inches(2), width=Inches(6))
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def replace_member(data: bytes, prefix: str, new: bytes) -> bytes:
    """The package with every member whose name starts with `prefix` replaced by `new`."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, new if info.filename.startswith(prefix) else src.read(info))
    return out.getvalue()


def chunks_of(doc: LoadedDocument) -> list[Chunk]:
    return Chunker(lambda texts: [len(t.split()) for t in texts]).chunk(doc)


def squeezed(text: str) -> str:
    return "".join(text.lower().split())


@dataclass
class FakeOcr:
    sizes: list[tuple[int, int]] = field(default_factory=list)  # of the images recognise() was given
    confidences: list[float] = field(default_factory=list)  # of the next readings (then 0.95)
    texts: list[str] = field(default_factory=list)  # the next readings (then "picture words N")


@pytest.fixture
def fake_ocr(monkeypatch: pytest.MonkeyPatch) -> FakeOcr:
    """recognise() returns "picture words N"; no model runs."""
    fake = FakeOcr()

    def recognise(image: Image.Image, options: OcrOptions | None = None) -> OcrPage:
        fake.sizes.append(image.size)
        score = fake.confidences.pop(0) if fake.confidences else 0.95
        text = fake.texts.pop(0) if fake.texts else f"picture words {len(fake.sizes)}"
        return OcrPage(text, score, 1, False, 0.01)

    monkeypatch.setattr(pictures_module, "recognise", recognise)
    return fake


# -- the real engine -------------------------------------------------------------------------------
@slow
def test_a_picture_in_a_docx_is_read_as_text_of_its_section_and_cited_with_ocr() -> None:
    doc = load_bytes(make_docx(picture("Quarterly revenue grew strongly")), "plan.docx", source="test://plan", **KW)
    headings = [s.heading for s in doc.sections]
    assert headings == ["Design", "Design (OCR)", "Later"], headings
    assert "quarterlyrevenuegrewstrongly" in squeezed(doc.sections[1].text)
    assert "follows the figure" in doc.sections[0].text and doc.warnings == []
    chunks = chunks_of(doc)
    ocrd = next(c for c in chunks if "revenue" in c.text.lower())
    typed = next(c for c in chunks if "follows the figure" in c.text)
    assert (ocrd.where, ocrd.is_ocr) == ("Design (OCR)", True)
    assert (typed.where, typed.is_ocr) == ("Design", False)


@slow
def test_a_picture_in_a_group_on_a_slide_is_read_as_part_of_that_slide() -> None:
    doc = load_bytes(make_pptx(picture("Diagram of the system components")), "deck.pptx", source="test://d", **KW)
    assert [(s.page, s.heading) for s in doc.sections] == [(1, "Overview"), (2, "Architecture"),
                                                           (2, "Architecture (OCR)")]  # fmt: skip
    assert "diagramofthesystemcomponents" in squeezed(doc.sections[2].text) and doc.pages == 2
    ocrd = next(c for c in chunks_of(doc) if "diagram" in c.text.lower())
    assert (ocrd.page, ocrd.where, ocrd.is_ocr) == (2, "slide 2 · Architecture (OCR)", True)


@slow
def test_a_docx_with_a_picture_is_read_in_the_worker_process() -> None:
    from ingest.workers import PdfWorker
    from tests.pdf_hooks import parse_or_misbehave

    seen: list[tuple[int, int]] = []
    worker = PdfWorker(timeout=120.0, parse=parse_or_misbehave)
    try:
        assert worker.wait_until_ready(120.0)
        with ocr_module.progress_to(lambda page, pages: seen.append((page, pages))):
            doc = worker.load(make_docx(picture("Worker side words")), "w.docx", source="test://w", **KW)
        pid = worker.pid
    finally:
        worker.close()
    assert doc.extra["parsed_by"] == str(pid) != str(os.getpid())
    assert seen == [(1, 1)] and any(s.heading == "Design (OCR)" for s in doc.sections)


# -- settings, caps and damage (the engine faked) ---------------------------------------------------
def test_ocr_off_skips_the_pictures_and_the_text_still_loads(fake_ocr: FakeOcr) -> None:
    data = make_docx(picture("never read"))
    doc = load_bytes(data, "plan.docx", source="test://plan", ocr=OcrOptions(enabled=False), **KW)
    assert [s.heading for s in doc.sections] == ["Design", "Later"] and fake_ocr.sizes == []
    assert any("1 picture(s) were not read: OCR is off" in w and "RAGCORD_OCR=true" in w for w in doc.warnings)
    deck = load_bytes(make_pptx(picture("x")), "d.pptx", source="test://d", ocr=OcrOptions(enabled=False), **KW)
    assert [s.heading for s in deck.sections] == ["Overview", "Architecture"] and fake_ocr.sizes == []


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_broken_picture_loses_only_itself_with_one_log_line(
    fake_ocr: FakeOcr, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = picture("fine")
    broken = good[:120] if damage == "truncated" else b"\x89PNG\r\n\x1a\n" + b"\x00junk" * 40
    data = replace_member(make_docx(good), "word/media/", broken)
    with caplog.at_level(logging.INFO, logger="ingest.loaders"):
        doc = load_bytes(data, "plan.docx", source="test://plan", **KW)
    assert [s.heading for s in doc.sections] == ["Design", "Later"]
    assert "follows the figure" in doc.sections[0].text and fake_ocr.sizes == []
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING and "plan.docx" in r.getMessage()]
    assert len(lines) == 1 and "word/media/image1.png" in lines[0].getMessage(), caplog.text
    assert any("word/media/image1.png" in w for w in doc.warnings), doc.warnings


def test_icons_are_skipped_and_a_picture_used_twice_is_read_once(fake_ocr: FakeOcr) -> None:
    import docx
    from docx.shared import Inches

    d = docx.Document()
    d.add_heading("Icons", level=1)
    d.add_paragraph("Text beside the icons.")
    big = picture("used twice")
    for png in (picture("i", (24, 24)), picture("i", (400, 30)), big, big):
        d.add_picture(io.BytesIO(png), width=Inches(1))
    out = io.BytesIO()
    d.save(out)
    doc = load_bytes(out.getvalue(), "icons.docx", source="test://i", **KW)
    assert fake_ocr.sizes == [(900, 140)]  # only the real picture, once
    assert [(s.heading, s.text) for s in doc.sections] == [("Icons", "Text beside the icons."),
                                                           ("Icons (OCR)", "picture words 1")]  # fmt: skip


def test_each_picture_counts_as_a_page_towards_the_cap_and_reports_progress(fake_ocr: FakeOcr) -> None:
    data = make_docx(picture("one"), picture("two", (800, 140)), picture("three", (700, 140)))
    seen: list[tuple[int, int]] = []
    with ocr_module.progress_to(lambda page, pages: seen.append((page, pages))):
        doc = load_bytes(data, "plan.docx", source="test://plan", ocr=OcrOptions(max_pages=2), **KW)
    assert seen == [(1, 2), (2, 2)] and len(fake_ocr.sizes) == 2
    assert [s.text for s in doc.sections if s.heading == "Design (OCR)"] == ["picture words 1", "picture words 2"]
    assert any("1 picture(s) were not OCR'd" in w and "RAGCORD_OCR_MAX_PAGES" in w for w in doc.warnings)


def test_a_picture_read_with_too_little_confidence_is_reported_not_indexed(fake_ocr: FakeOcr) -> None:
    fake_ocr.confidences.append(0.3)
    doc = load_bytes(make_pptx(picture("blurry")), "d.pptx", source="test://d", **KW)
    assert [s.heading for s in doc.sections] == ["Overview", "Architecture"]
    assert any("too little OCR confidence" in w for w in doc.warnings)


def test_marks_read_in_a_drawing_are_not_indexed_as_text(fake_ocr: FakeOcr) -> None:
    fake_ocr.texts.extend([">\n>", "- |"])  # what OCR makes of arrows and rules in a diagram
    doc = load_bytes(make_docx(picture("a"), picture("b", (800, 140))), "d.docx", source="test://d", **KW)
    assert [s.heading for s in doc.sections] == ["Design", "Later"] and len(fake_ocr.sizes) == 2


def test_only_word_and_powerpoint_packages_with_pictures_are_flagged() -> None:
    assert has_pictures(make_docx(picture("x"))) and has_pictures(make_pptx(picture("x")))
    assert not has_pictures(make_docx()) and not has_pictures(b"%PDF-1.7") and not has_pictures(b"PK\x03\x04junk")


def test_a_picture_only_chunk_without_a_heading_is_cited_as_ocr() -> None:
    slide = Chunk("d", 0, "t", "Deck", "s", page=4, section="(OCR)", extra=(("page_label", "slide"),))
    body = Chunk("d", 1, "t", "Plan", "s", section="(OCR)")
    named = Chunk("d", 2, "t", "Plan", "s", section="Plan > Design (OCR)")
    assert (slide.where, body.where, named.where) == ("slide 4 (OCR)", "(OCR)", "Design (OCR)")
    assert slide.is_ocr and body.is_ocr and named.is_ocr
    assert not Chunk("d", 3, "t", "Plan", "s", section="Design").is_ocr


def test_an_ocr_setting_change_re_reads_a_docx_with_pictures_but_not_one_without(
    fake_ocr: FakeOcr, tmp_path: Path
) -> None:
    from ingest.pipeline import Ingestor
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder

    (tmp_path / "pictures.docx").write_bytes(make_docx(picture("figure")))
    (tmp_path / "plain.docx").write_bytes(make_docx())
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    try:
        embedder = FakeEmbedder()

        def ingest(ocr: OcrOptions) -> dict[str, str]:
            ingestor = Ingestor(store, embedder, Chunker(embedder.count_tokens), ocr=ocr)
            paths = [tmp_path / "pictures.docx", tmp_path / "plain.docx"]
            return {Path(r.source).name: r.status for r in ingestor.ingest_paths("ns", paths)}

        assert ingest(OcrOptions(enabled=False)) == {"pictures.docx": "added", "plain.docx": "added"}
        assert fake_ocr.sizes == []
        assert ingest(OcrOptions()) == {"pictures.docx": "updated", "plain.docx": "unchanged"}
        assert len(fake_ocr.sizes) == 1
    finally:
        store.close()


def test_the_time_budget_leaves_the_pictures_with_a_warning(fake_ocr: FakeOcr) -> None:
    doc = load_bytes(make_pptx(picture("late")), "d.pptx", source="test://d", ocr=OcrOptions(budget_s=0), **KW)
    assert [s.heading for s in doc.sections] == ["Overview", "Architecture"] and fake_ocr.sizes == []
    assert any("1 picture(s) were not OCR'd" in w and "RAGCORD_OCR_BUDGET_S" in w for w in doc.warnings)
