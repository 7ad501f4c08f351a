"""PowerPoint decks (.pptx) through python-pptx.

One section per slide: page = the slide number (cited "slide 3"), heading = the slide
title. The text of every text frame, table (header then "header: value" rows) and
grouped shape (recursively), then the speaker notes under "Notes:".

Pictures on a slide (picture shapes, picture placeholders and picture fills, in groups too)
are read by OCR (ingest/loaders/pictures.py): their text follows the slide's as a section
of its own on the same page, headed "<slide title> (OCR)", cited "slide 2 · Title (OCR)".
"""

from __future__ import annotations

import io
import logging
from typing import Any

from ingest.loaders import LoadError
from ingest.loaders.ocr import OcrOptions
from ingest.loaders.office import cell_text, open_zip, table_text
from ingest.loaders.pictures import Picture, ocr_heading, read_pictures
from store.types import LoadedDocument, Section

_MAX_DEPTH = 32  # nested groups
_BLIP = "{http://schemas.openxmlformats.org/drawingml/2006/main}blip"
_EMBED = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}embed"

log = logging.getLogger(__name__)


def load(data: bytes, *, filename: str, source: str, ocr: OcrOptions | None = None) -> LoadedDocument:
    open_zip(data, filename, "PowerPoint (.pptx)")
    import pptx

    try:
        deck = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-pptx raises many kinds on a damaged package
        raise LoadError(f"{filename} is not a readable PowerPoint deck ({type(exc).__name__}: {exc})") from exc
    sections: list[Section] = []
    pictures: list[Picture] = []
    try:
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            title = (
                " ".join(title_shape.text_frame.text.split())
                if title_shape is not None and title_shape.has_text_frame
                else ""
            )
            parts: list[str] = []
            found: list[Any] = []
            _shapes(slide.shapes, parts, found, 0)
            pictures.extend(_pictures(slide, found, number, ocr_heading(title), filename))
            if slide.has_notes_slide:
                frame = slide.notes_slide.notes_text_frame
                notes = frame.text.strip() if frame is not None else ""
                if notes:
                    parts.append(f"Notes: {notes}")
            text = "\n".join(parts) or title
            sections.append(Section(text, page=number, heading=title))
        core_title = (deck.core_properties.title or "").strip()
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{filename} is a damaged PowerPoint deck ({type(exc).__name__}: {exc})") from exc
    slides = len(sections)
    warnings: list[str] = []
    texts = read_pictures(pictures, ocr or OcrOptions(), filename, warnings)
    sections += [Section(t, page=p.page, heading=p.heading) for p, t in zip(pictures, texts, strict=True) if t]
    sections.sort(key=lambda s: s.page or 0)  # stable: each slide's pictures after its text
    doc = LoadedDocument(
        source=source, title=core_title, kind="pptx", sections=sections, pages=slides, warnings=warnings
    )
    doc.extra["page_label"] = "slide"
    return doc


def _shapes(shapes: Any, parts: list[str], found: list[Any], depth: int) -> None:
    """The text of `shapes` into `parts`, the shapes that are not groups into `found`, in order."""
    if depth > _MAX_DEPTH:
        return
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group shape
            _shapes(shape.shapes, parts, found, depth + 1)
            continue
        found.append(shape)
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = [[cell_text(c.text) for c in row.cells] for row in shape.table.rows]
            text = table_text(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text.strip()
        else:
            continue
        if text:
            parts.append(text)


def _pictures(slide: Any, shapes: list[Any], page: int, heading: str, filename: str) -> list[Picture]:
    """The pictures of a slide's shapes (each `a:blip` that embeds an image part), in shape order."""
    out: list[Picture] = []
    for shape in shapes:
        for blip in shape._element.iter(_BLIP):
            rid = blip.get(_EMBED)
            if not rid:
                continue  # a linked picture
            try:
                image = slide.part.related_part(rid)
                out.append(Picture(str(image.partname).lstrip("/"), image.blob, heading=heading, page=page))
            except Exception as exc:  # noqa: BLE001 - a dangling relationship: lose only the picture
                log.warning("%s: slide %d: picture %s is missing: %s: %s", filename, page, rid, type(exc).__name__, exc)
    return out
