"""Pictures embedded in Word and PowerPoint files, read by OCR (issue 14).

A loader collects the pictures it meets in reading order (`Picture`: the image part's name,
its bytes, and where the text it holds belongs), then `read_pictures` OCRs them within the
same settings as scanned pages: nothing when OCR is off (a warning says so); tiny images
(icons, bullets, rules: under `MIN_SIDE` pixels a side or `MIN_PIXELS` in all) and vector
formats (EMF, WMF) skipped; an image used twice read once; at most `MAX_PICTURES` pictures
looked at per file, each OCR'd picture counting as a page towards `OcrOptions.max_pages`,
and `budget_s` seconds a file. Progress goes to `ocr.report_progress` as for PDF pages. A
picture read with too little confidence is reported, not indexed; a broken image part is
one line in the log and one warning, and the rest of the file loads.

The bytes come from the file's zip package, which `office.open_zip` has already checked
(members, inflated size, ratio), and Pillow's decompression-bomb check is on.

Citations: the text of a picture is a section of its own whose heading is the place's
heading with " (OCR)" after it (`ocr_heading`), so a citation reads "Intro > Design (OCR)"
or "slide 2 · Architecture (OCR)" (store.types.Chunk.where).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.loaders.ocr import MAX_IMAGE_PIXELS, OcrOptions, OcrUnavailable, recognise, report_progress
from store.types import OCR_MARK

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MIN_SIDE = 32  # pixels: a narrower or lower picture is an icon, a bullet or a rule
MIN_PIXELS = 64 * 64  # pixels in all: a smaller picture holds no readable text
MAX_PICTURES = 200  # pictures of one file looked at (beyond these, a warning)
_MIN_WORD_CHARS = 2  # letters or digits a picture's text needs to be indexed
_RASTER = frozenset({"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "MPO"})


@dataclass(frozen=True, slots=True)
class Picture:
    """One embedded picture: its image part's name (the same part used twice is read once),
    its bytes, and the heading and page its text belongs to."""

    name: str
    data: bytes
    heading: str = ""
    page: int | None = None


def ocr_heading(heading: str) -> str:
    """The heading of a picture's text: its place's heading, marked as read by OCR."""
    return f"{heading} {OCR_MARK}" if heading else OCR_MARK


def read_pictures(pictures: Sequence[Picture], ocr: OcrOptions, filename: str, warnings: list[str]) -> list[str]:
    """The text OCR reads in each picture ("" for one skipped or without text), in order.

    What was not read, and why, is appended to `warnings` (one line each)."""
    texts = [""] * len(pictures)
    if not pictures:
        return texts
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_IMAGE_PIXELS * 4)
    first: dict[str, int] = {}  # part name -> the index of its first use
    todo: list[tuple[int, Image.Image]] = []
    broken: list[str] = []
    for index, picture in enumerate(pictures):
        if picture.name in first:
            continue
        first[picture.name] = index
        if len(first) > MAX_PICTURES:
            warnings.append(f"only the first {MAX_PICTURES} pictures were looked at for text to OCR")
            break
        image = _open(picture, filename, broken)
        if image is not None:
            todo.append((index, image))
    if broken:
        listed = ", ".join(broken[:5]) + (", ..." if len(broken) > 5 else "")
        warnings.append(f"{len(broken)} picture(s) could not be decoded and were skipped ({listed})")
    if not todo:
        return texts
    if not ocr.enabled:
        warnings.append(f"{len(todo)} picture(s) were not read: OCR is off (set RAGCORD_OCR=true to read them)")
        return texts
    read: dict[int, str] = {}
    low, started, total = 0, time.perf_counter(), min(len(todo), ocr.max_pages)
    for position, (index, image) in enumerate(todo):
        if position >= ocr.max_pages or time.perf_counter() - started >= ocr.budget_s:
            cap = (
                f"the OCR cap of {ocr.max_pages} pages a file (RAGCORD_OCR_MAX_PAGES)"
                if position >= ocr.max_pages
                else f"the OCR time budget of {ocr.budget_s:g} s a file (RAGCORD_OCR_BUDGET_S)"
            )
            warnings.append(f"{len(todo) - position} picture(s) were not OCR'd: {cap} was reached")
            break
        report_progress(position + 1, total)
        name = pictures[index].name
        try:
            image.load()
            page = recognise(image, ocr)
        except OcrUnavailable as exc:
            warnings.append(f"the pictures were not read: {exc}")
            break
        except Exception as exc:  # noqa: BLE001 - a truncated image, a codec error: keep the others
            log.warning("%s: picture %s could not be read by OCR: %s: %s", filename, name, type(exc).__name__, exc)
            warnings.append(f"picture {name} could not be read ({type(exc).__name__})")
            continue
        log.info("%s: picture %s OCR'd in %.1f s (confidence %.2f)", filename, name, page.seconds, page.confidence)
        text = "\n".join(" ".join(line.split()) for line in page.text.splitlines() if line.strip())
        if sum(ch.isalnum() for ch in text) < _MIN_WORD_CHARS:  # nothing, or marks read in a drawing (">")
            continue
        if page.confidence < ocr.min_confidence:
            low += 1
            continue
        read[index] = text
    if low:
        warnings.append(
            f"{low} picture(s) were read with too little OCR confidence to index "
            f"(RAGCORD_OCR_MIN_CONFIDENCE is {ocr.min_confidence:g})"
        )
    for index, picture in enumerate(pictures):
        if first.get(picture.name) == index:
            texts[index] = read.get(index, "")
    return texts


def _open(picture: Picture, filename: str, broken: list[str]) -> Any:
    """The picture as a lazily decoded PIL image, or None: too small, vector, or broken (then in `broken`)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(picture.data))
        width, height = image.size
        kind = image.format or ""
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, DecompressionBombError, struct errors...
        if _is_vector(picture.data):
            log.debug("%s: picture %s is a vector drawing (not OCR'd)", filename, picture.name)
            return None
        log.warning("%s: picture %s cannot be decoded: %s: %s", filename, picture.name, type(exc).__name__, exc)
        broken.append(picture.name)
        return None
    if kind not in _RASTER:
        log.debug("%s: picture %s is %s, not a raster image (not OCR'd)", filename, picture.name, kind or "unknown")
        return None
    if min(width, height) < MIN_SIDE or width * height < MIN_PIXELS:
        log.debug("%s: picture %s is %dx%d, too small to hold text", filename, picture.name, width, height)
        return None
    return image


def _is_vector(data: bytes) -> bool:
    """EMF, WMF or SVG: drawings Pillow cannot rasterise here."""
    head = data[:256].lstrip()
    return (
        data[40:44] == b" EMF"  # EMF header signature
        or data[:4] in (b"\xd7\xcd\xc6\x9a", b"\x01\x00\x09\x00", b"\x02\x00\x09\x00")  # placeable / plain WMF
        or head.startswith((b"<svg", b"<?xml"))
    )
