"""OCR of images and scanned PDF pages (issue 14, item 2).

The box-ordering, caps, confidence and citation tests are fast (the engine is faked or not
needed); the `slow` ones run the real rapidocr engine on small images drawn here with Pillow.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from ingest.chunking import Chunker
from ingest.loaders import LoadError, detect_kind, load_bytes
from ingest.loaders import ocr as ocr_module
from ingest.loaders.ocr import Box, OcrOptions, OcrPage, boxes_to_text, order_boxes
from store.types import OCR_PAGES_KEY, Chunk

MAX = 50 << 20
KW: dict[str, Any] = {"max_bytes": MAX}
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def font(size: int = 32) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if FONT.exists():
        return ImageFont.truetype(str(FONT), size)
    return ImageFont.load_default(size=size)


def draw(lines: list[tuple[int, int, str]], size: tuple[int, int] = (900, 300), text_size: int = 32) -> Image.Image:
    image = Image.new("RGB", size, "white")
    pen = ImageDraw.Draw(image)
    for x, y, text in lines:
        pen.text((x, y), text, fill="black", font=font(text_size))
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def scanned_pdf(images: list[Image.Image]) -> bytes:
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return out.getvalue()


def words(text: str) -> str:
    return " ".join(text.lower().split())


# -- box ordering (fast) ----------------------------------------------------------------------------
def b(x0: float, y0: float, x1: float, text: str, h: float = 20) -> Box:
    return Box(x0, y0, x1, y0 + h, text)


def test_two_columns_are_read_column_by_column_between_full_width_lines() -> None:
    boxes = [
        b(100, 10, 900, "Title across the page"),
        # the right column's lines sit a few pixels lower than the left's, as in real scans
        *(b(100, 60 + 25 * i, 480, f"left {i}") for i in range(5)),
        *(b(520, 64 + 25 * i, 900, f"right {i}") for i in range(5)),
        b(100, 200, 900, "Footer across the page"),
    ]
    shuffled = boxes[::2] + boxes[1::2]  # the engine's order is no help
    lines = [boxes_to_text([line]) for line in order_boxes(shuffled)]
    assert lines == [
        "Title across the page",
        *(f"left {i}" for i in range(5)),
        *(f"right {i}" for i in range(5)),
        "Footer across the page",
    ]


def test_boxes_on_one_line_are_joined_left_to_right_and_lines_go_down() -> None:
    boxes = [b(300, 12, 400, "world"), b(100, 10, 280, "hello"), b(100, 50, 300, "next line")]
    assert boxes_to_text(order_boxes(boxes)) == "hello world\nnext line"


def test_a_single_column_with_short_lines_is_not_split_into_columns() -> None:
    # short lines leave the right half empty on several rows: no text on both sides, no columns
    boxes = [b(100, 10 + 30 * i, 900 if i % 2 else 300, f"line {i}") for i in range(8)]
    assert boxes_to_text(order_boxes(boxes)).split("\n") == [f"line {i}" for i in range(8)]


def test_a_table_row_with_a_gap_stays_one_line_when_no_column_block_forms() -> None:
    boxes = [b(100, 10, 300, "Name"), b(600, 10, 800, "Value"), b(100, 50, 800, "a full-width sentence")]
    assert boxes_to_text(order_boxes(boxes)) == "Name Value\na full-width sentence"


@pytest.mark.parametrize("layout", ["two columns", "short lines"])
def test_ordering_is_linear_in_the_boxes(layout: str) -> None:
    import time

    def page(n: int) -> list[Box]:
        if layout == "two columns":
            return [b(100 + 420 * (i % 2), 10 + 25 * (i // 2), 480 + 420 * (i % 2), f"w{i}") for i in range(n)]
        # one column of short lines sharing a gap on the right: a run that never becomes columns
        return [b(100, 10 + 25 * i, 300 + (i % 7), f"w{i}") for i in range(n)] + [b(100, 10 + 25 * n, 900, "end")]

    times = []
    for n in (1000, 4000):  # CPU time, the best of three runs: one run once took 0.5 s for 0.21 s of work
        boxes = page(n)
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            order_boxes(boxes)
            best = min(best, time.process_time() - started)
        times.append(best)
    assert times[1] < 2.0 and times[1] < 8 * max(times[0], 0.01), times  # 4x the boxes: ~4x the time, not 16x


# -- citations, caps, confidence (engine faked: fast) --------------------------------------------------
def test_ocr_chunks_are_cited_with_ocr() -> None:
    ocrd = Chunk("d", 0, "text", "Scan", "s", page=3, extra=((OCR_PAGES_KEY, "1,3"),))
    typed = Chunk("d", 1, "text", "Scan", "s", page=2, extra=((OCR_PAGES_KEY, "1,3"),))
    image = Chunk("d", 2, "text", "shot.png", "s", extra=((OCR_PAGES_KEY, "*"),))
    assert (ocrd.where, typed.where, image.where) == ("p. 3 (OCR)", "p. 2", "(OCR)")
    assert Chunk("d", 3, "t", "T", "s", page=13, extra=((OCR_PAGES_KEY, "1,3"),)).where == "p. 13"


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """recognise() returns "page text N" at the confidences listed (default 0.95); no model runs."""
    confidences: list[float] = []
    calls = {"n": 0}

    def recognise(image: Image.Image, options: OcrOptions | None = None) -> OcrPage:
        calls["n"] += 1
        score = confidences.pop(0) if confidences else 0.95
        return OcrPage(f"page text {calls['n']}", score, 3, False, 0.01)

    monkeypatch.setattr(ocr_module, "recognise", recognise)
    return confidences


def scans(n: int) -> bytes:
    return scanned_pdf([draw([(50, 50, f"Scanned {i}")], (400, 200)) for i in range(n)])


def test_scanned_pdf_pages_are_ocrd_and_marked(fake_engine: list[float]) -> None:
    doc = load_bytes(scans(2), "scan.pdf", source="test://scan", **KW)
    assert [(s.page, s.text) for s in doc.sections] == [(1, "page text 1"), (2, "page text 2")]
    assert doc.extra[OCR_PAGES_KEY] == "1,2" and doc.pages_without_text == [] and doc.warnings == []


def test_the_page_cap_leaves_pages_with_a_warning(fake_engine: list[float]) -> None:
    doc = load_bytes(scans(3), "scan.pdf", source="test://scan", ocr=OcrOptions(max_pages=1), **KW)
    assert [s.page for s in doc.sections] == [1] and doc.pages_without_text == [2, 3]
    assert any("2 scanned pages were not OCR'd" in w and "RAGCORD_OCR_MAX_PAGES" in w for w in doc.warnings)


def test_the_time_budget_leaves_pages_with_a_warning(fake_engine: list[float]) -> None:
    with pytest.raises(LoadError, match="RAGCORD_OCR_BUDGET_S"):  # a budget of 0 s: nothing read
        load_bytes(scans(2), "scan.pdf", source="test://scan", ocr=OcrOptions(budget_s=0), **KW)


def test_low_confidence_pages_are_reported_not_indexed(fake_engine: list[float]) -> None:
    fake_engine.extend([0.95, 0.4])
    doc = load_bytes(scans(2), "scan.pdf", source="test://scan", ocr=OcrOptions(min_confidence=0.8), **KW)
    assert [s.page for s in doc.sections] == [1] and doc.pages_without_text == [2]
    assert any("too little OCR confidence" in w and "page 2" in w for w in doc.warnings)


def test_ocr_off_refuses_a_scan_and_says_how_to_turn_it_on(fake_engine: list[float]) -> None:
    with pytest.raises(LoadError, match="RAGCORD_OCR=true"):
        load_bytes(scans(1), "scan.pdf", source="test://scan", ocr=OcrOptions(enabled=False), **KW)
    with pytest.raises(LoadError, match="RAGCORD_OCR=true"):
        load_bytes(png(draw([(10, 10, "x")])), "shot.png", source="test://s", ocr=OcrOptions(enabled=False), **KW)


def test_image_format_comes_from_the_content() -> None:
    shot = png(draw([(10, 10, "x")], (50, 50)))
    assert detect_kind(shot, "screenshot.txt") == "image"  # a PNG with the wrong name
    assert detect_kind(shot, "screenshot") == "image"
    with pytest.raises(LoadError, match="is not a PNG, JPEG, WebP or TIFF image"):
        detect_kind(b"hello, not an image", "photo.jpg")
    with pytest.raises(LoadError, match="damaged or not an image"):
        load_bytes(shot[:40], "cut.png", source="test://cut", **KW)


def test_palette_and_transparent_images_become_rgb() -> None:
    image = draw([(10, 10, "Hi")], (60, 40))
    for mode_image in (image.convert("P"), image.convert("LA"), image.convert("RGBA"), image.convert("1")):
        array = ocr_module.to_rgb_array(mode_image)
        assert array.shape == (40, 60, 3) and array.dtype.name == "uint8"
        assert array.min() < 100 and array.max() > 200  # the text survived the conversion


# -- the real engine (slow: a few seconds each) --------------------------------------------------------
slow = pytest.mark.slow


@slow
def test_words_drawn_on_an_image_are_read_back() -> None:
    doc = load_bytes(png(draw([(30, 40, "Invoice number 4711"), (30, 120, "Payment due in March")])), "a.png",
                     source="test://a", **KW)  # fmt: skip
    text = words(doc.sections[0].text).replace(" ", "")
    assert "invoicenumber4711" in text and "paymentduein" in text and "march" in text
    assert doc.kind == "image" and doc.extra[OCR_PAGES_KEY] == "*"


@slow
def test_a_palette_png_gives_text() -> None:
    data = png(draw([(30, 40, "Palette mode works")]).convert("P", palette=Image.Palette.ADAPTIVE, colors=4))
    assert Image.open(io.BytesIO(data)).mode == "P"
    doc = load_bytes(data, "p.png", source="test://p", **KW)
    assert "palette" in words(doc.sections[0].text) and "works" in words(doc.sections[0].text)


TWO_COLUMNS = [
    *((40, 30 + 50 * i, f"Alpha {w}") for i, w in enumerate(["one", "two", "three", "four"])),
    *((520, 36 + 50 * i, f"Omega {w}") for i, w in enumerate(["five", "six", "seven", "eight"])),
]


@slow
def test_a_two_column_image_is_read_column_by_column() -> None:
    page = ocr_module.recognise(draw(TWO_COLUMNS, (900, 250)))
    text = words(page.text).replace(" ", "")
    positions = [text.find(w) for w in ["alphaone", "alphafour", "omegafive", "omegaeight"]]
    assert -1 not in positions and positions == sorted(positions), page.text


@slow
def test_an_upside_down_image_comes_out_in_reading_order() -> None:
    lines = [(40, 30, "First line here"), (40, 100, "Second line here"), (40, 170, "Third line here")]
    page = ocr_module.recognise(draw(lines, (700, 240)).rotate(180))
    text = words(page.text).replace(" ", "")
    positions = [text.find(w) for w in ["firstline", "secondline", "thirdline"]]
    assert page.rotated and -1 not in positions and positions == sorted(positions), page.text


@slow
def test_a_scanned_pdf_page_is_ocrd_and_cited_with_ocr() -> None:
    data = scanned_pdf([draw([(40, 60, "Quarterly revenue grew strongly")], (900, 300))])
    doc = load_bytes(data, "scan.pdf", source="test://scan", **KW)
    assert doc.extra[OCR_PAGES_KEY] == "1" and doc.warnings == []
    chunks = Chunker(lambda texts: [len(t.split()) for t in texts]).chunk(doc)
    assert chunks and chunks[0].where == "p. 1 (OCR)"
    assert "revenue" in words(chunks[0].text)  # the quote keeps the recognised text


@slow
def test_images_are_read_in_the_worker_process() -> None:
    from ingest.workers import PdfWorker
    from tests.pdf_hooks import parse_or_misbehave

    worker = PdfWorker(timeout=120.0, parse=parse_or_misbehave)
    try:
        assert worker.wait_until_ready(120.0)
        doc = worker.load(png(draw([(30, 40, "Worker side text")])), "w.png", source="test://w", **KW)
        assert doc.extra["parsed_by"] == str(worker.pid) != str(os.getpid())
    finally:
        worker.close()


def test_the_ocr_settings_reach_the_loader_and_survive_the_trip_to_the_worker() -> None:
    import functools
    import pickle

    from bot.service import ocr_options
    from bot.settings import Settings

    options = ocr_options(Settings(ocr=False, ocr_max_pages=3, ocr_budget_s=5.0, ocr_dpi=100, ocr_min_confidence=0.5))
    assert options == OcrOptions(enabled=False, dpi=100, min_confidence=0.5, max_pages=3, budget_s=5.0)
    parse = pickle.loads(pickle.dumps(functools.partial(load_bytes, ocr=options)))  # as the spawned worker gets it
    with pytest.raises(LoadError, match="OCR is off"):
        parse(scans(1), "scan.pdf", source="test://scan", **KW)


def tiff(frames: list[Image.Image]) -> bytes:
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:])
    return out.getvalue()


@slow
def test_ocr_progress_comes_back_from_the_worker_process_page_by_page() -> None:
    from ingest.workers import PdfWorker

    frames = [draw([(30, 40, f"Frame number {n}")], (700, 140)) for n in (1, 2, 3)]
    seen: list[tuple[int, int]] = []
    worker = PdfWorker(timeout=120.0)
    try:
        assert worker.wait_until_ready(120.0)
        with ocr_module.progress_to(lambda page, pages: seen.append((page, pages))):
            doc = worker.load(tiff(frames), "scan.tiff", source="test://scan", **KW)
    finally:
        worker.close()
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [s.page for s in doc.sections] == [1, 2, 3]


def test_ocr_progress_reaches_the_ingest_progress_of_the_document_being_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ingest.pipeline import Ingestor
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder

    def fake(image: Any, options: OcrOptions | None = None) -> OcrPage:
        return OcrPage(f"Scanned words {image.tell()}", 0.95, 2, False, 0.01)

    monkeypatch.setattr(ocr_module, "recognise", fake)
    monkeypatch.setattr("ingest.loaders.image.recognise", fake)
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    try:
        embedder = FakeEmbedder()
        ingestor = Ingestor(store, embedder, Chunker(embedder.count_tokens))
        frames = [draw([(30, 40, "x")], (100, 60)) for _ in range(4)]
        (tmp_path / "scan.tiff").write_bytes(tiff(frames))
        seen: list[tuple[str, int, int]] = []
        [result] = ingestor.ingest_paths(
            "ns", [tmp_path / "scan.tiff"], progress=lambda s: seen.append((s.current, s.ocr_page, s.ocr_pages))
        )
    finally:
        store.close()
    assert result.status == "added", result
    assert [s for s in seen if s[1]] == [("scan.tiff", n, 4) for n in (1, 2, 3, 4)]
    assert seen[-1][1:] == (0, 0)  # the OCR is over once the document is read


def test_changing_an_ocr_setting_that_changes_the_text_re_ocrs_and_others_re_read_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder, FakeLLM
    from tests.test_office_loaders import make_pptx

    calls: list[OcrOptions] = []

    def fake(image: Any, options: OcrOptions | None = None) -> OcrPage:
        calls.append(options or OcrOptions())
        return OcrPage("Scanned words of the audit", 0.95, 2, False, 0.01)

    monkeypatch.setattr("ingest.loaders.image.recognise", fake)
    (tmp_path / "scan.png").write_bytes(png(draw([(30, 40, "x")], (100, 60))))
    text = tmp_path / "notes.md"
    text.write_text("# Notes\n\nNothing here is scanned.\n")
    (tmp_path / "deck.pptx").write_bytes(make_pptx())  # its loader adds extra metadata too (page_label)
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)

    def ingest(**settings: Any) -> dict[str, str]:
        service = RagService(
            store,
            FakeEmbedder(),
            llm_factory=FakeLLM,
            lexical_dir=None,
            settings=Settings(_env_file=None, data_dir=tmp_path, **settings),  # type: ignore[call-arg]
        )
        try:
            results = service.ingest_paths("ns", [tmp_path / "scan.png", text, tmp_path / "deck.pptx"])
            return {Path(r.source).name: r.status for r in results}
        finally:
            service.ingestor.close()

    try:
        assert set(ingest().values()) == {"added"} and len(calls) == 1
        # neither changes the text: nothing is read again
        assert set(ingest(ocr_threads=1, ocr_budget_s=30.0).values()) == {"unchanged"}
        assert len(calls) == 1
        for change in ({"ocr_dpi": 150}, {"ocr_det_side": 1600}, {"ocr_min_confidence": 0.5}):
            statuses = ingest(**change)
            assert statuses == {"scan.png": "updated", "notes.md": "unchanged", "deck.pptx": "unchanged"}, change
            assert calls[-1] == OcrOptions(**{k.removeprefix("ocr_"): v for k, v in change.items()}), change
            assert ingest(**change)["scan.png"] == "unchanged"  # and once more: nothing to do
        count = len(calls)
        statuses = ingest(ocr=False)  # OCR off: the image is refused (and back on, read again)
        assert statuses["scan.png"] == "skipped" and len(calls) == count
        assert ingest()["scan.png"] != "unchanged" and len(calls) == count + 1
    finally:
        store.close()


# -- spaces the recognizer drops ------------------------------------------------------------------
BOLD = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def tracked(
    lines: list[str], size: int = 40, track: float = 0.35, word: float = 1.0
) -> tuple[Image.Image, list[list[float]]]:
    """Capitals spaced out as on an alert screen (the recognizer reads "THISISATEST"), and each
    character's centre (x) per line."""
    face = ImageFont.truetype(str(BOLD), size) if BOLD.exists() else font(size)
    image = Image.new("RGB", (1400, 60 + 90 * len(lines)), "white")
    pen = ImageDraw.Draw(image)
    centres: list[list[float]] = []
    for i, line in enumerate(lines):
        x, row = 40.0, []
        for c in line:
            width = word * size if c == " " else face.getlength(c)
            row.append(x + width / 2)
            if c != " ":
                pen.text((x, 40 + 90 * i), c, fill="black", font=face)
                width += track * size
            x += width
        centres.append(row)
    return image, centres


@slow
def test_words_the_recognizer_runs_together_are_spaced_again() -> None:
    image, _ = tracked(["THIS IS A TEST OF THE NATIONAL", "EMERGENCY ALERT SYSTEM"])
    page = ocr_module.recognise(image)
    assert words(page.text) == "this is a test of the national emergency alert system", page.text


def test_restore_spaces_puts_a_space_only_where_the_image_shows_a_word_gap() -> None:
    import numpy as np

    image, [centres] = tracked(["THIS IS A TEST."], track=0.1, word=0.9)
    grey = np.asarray(image.convert("L"))
    box = [(30, 30), (1000, 30), (1000, 100), (30, 100)]
    dropped = [x for c, x in zip("THIS IS A TEST.", centres, strict=True) if c != " "]
    assert ocr_module.restore_spaces(grey, box, "THISISATEST.", dropped) == "THIS IS A TEST."
    spaced = ocr_module.restore_spaces(grey, box, "THIS IS A TEST.", centres)
    assert spaced == "THIS IS A TEST."  # the spaces it kept are not doubled, letters not split
    # the period drawn after a gap stays on its word; characters out of order or unmatched: untouched
    far, [at] = tracked(["WORDS ."], track=0.1, word=0.9)
    at = [x for c, x in zip("WORDS .", at, strict=True) if c != " "]
    assert ocr_module.restore_spaces(np.asarray(far.convert("L")), box, "WORDS.", at) == "WORDS."
    assert ocr_module.restore_spaces(grey, box, "THISISATEST.", dropped[::-1]) == "THISISATEST."
    assert ocr_module.restore_spaces(grey, box, "THISISATEST.", dropped[:-1]) == "THISISATEST."
    blank = np.full_like(grey, 255)
    assert ocr_module.restore_spaces(blank, box, "THISISATEST.", dropped) == "THISISATEST."
