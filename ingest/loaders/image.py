"""Images (PNG, JPEG, WebP, TIFF) read by OCR: one section per frame (a multi-page TIFF has several).

The format comes from the magic bytes. Pillow decodes the image (its decompression-bomb
check is on), `ocr.to_rgb_array` converts palette, grey, CMYK and transparent images to
RGB (a palette PNG gives rapidocr no text otherwise). A frame read with too little
confidence is reported in the warnings, not indexed. The document's `ocr_pages` extra is
"*" for a single image (cited "(OCR)") or the frames OCR'd ("p. 2 (OCR)").
"""

from __future__ import annotations

import io
import logging
import time

from ingest.loaders import LoadError
from ingest.loaders.ocr import MAX_IMAGE_PIXELS, OcrOptions, OcrUnavailable, recognise, report_progress
from store.types import OCR_PAGES_KEY, LoadedDocument, Section

log = logging.getLogger(__name__)


def image_format(head: bytes) -> str | None:
    """ "PNG", "JPEG", "WEBP" or "TIFF" from the first bytes of a file, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def load(data: bytes, *, filename: str, source: str, ocr: OcrOptions | None = None) -> LoadedDocument:
    from PIL import Image, UnidentifiedImageError

    ocr = ocr or OcrOptions()
    if not ocr.enabled:
        raise LoadError(f"{filename} is an image, read only by OCR, and OCR is off (set RAGCORD_OCR=true)")
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_IMAGE_PIXELS * 4)
    try:
        image = Image.open(io.BytesIO(data))
        frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise LoadError(f"{filename} is too large an image to read ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        log.info("%s: Pillow cannot open it", filename, exc_info=True)
        kind = image_format(data[:16]) or "image"
        raise LoadError(
            f"{filename} is damaged or not an image (it starts like a {kind} but cannot be decoded)"
        ) from exc
    multi = frames > 1
    doc = LoadedDocument(source=source, title="", kind="image", sections=[], pages=frames if multi else 0)
    done, low, started = [], [], time.perf_counter()
    for index in range(frames):
        number = index + 1
        if index >= ocr.max_pages or time.perf_counter() - started >= ocr.budget_s:
            doc.warnings.append(
                f"{frames - index} frames were not OCR'd: the OCR cap of {ocr.max_pages} pages or "
                f"{ocr.budget_s:g} s a file was reached (RAGCORD_OCR_MAX_PAGES, RAGCORD_OCR_BUDGET_S)"
            )
            break
        report_progress(number, min(frames, ocr.max_pages))
        try:
            image.seek(index)
            image.load()
            page = recognise(image, ocr)
        except OcrUnavailable as exc:
            raise LoadError(f"{filename} cannot be read: {exc}") from exc
        except Exception as exc:  # a truncated frame, a codec error: keep the others
            log.info("%s: frame %d: OCR failed", filename, number, exc_info=True)
            doc.warnings.append(f"image {number}: could not be read ({type(exc).__name__}: {exc})")
            continue
        log.info("%s: frame %d OCR'd in %.1f s (confidence %.2f)", filename, number, page.seconds, page.confidence)
        if not page.text.strip():
            continue
        if page.confidence < ocr.min_confidence:
            low.append(number)
            continue
        doc.sections.append(Section(page.text, page=number if multi else None))
        done.append(number)
    if low:
        doc.warnings.append(
            f"{len(low)} image(s) were read with too little OCR confidence to index "
            f"(RAGCORD_OCR_MIN_CONFIDENCE is {ocr.min_confidence:g})"
        )
    if not doc.sections:
        why = doc.warnings[-1] if doc.warnings else "OCR found no text in it"
        raise LoadError(f"{filename} has no text to index ({why})")
    doc.extra[OCR_PAGES_KEY] = ",".join(map(str, done)) if multi else "*"
    return doc
