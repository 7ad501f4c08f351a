"""PowerPoint decks (.pptx) through python-pptx.

One section per slide: page = the slide number (cited "slide 3"), heading = the slide
title. The text of every text frame, table (header then "header: value" rows) and
grouped shape (recursively), then the speaker notes under "Notes:".
"""

from __future__ import annotations

import io
from typing import Any

from ingest.loaders import LoadError
from ingest.loaders.office import cell_text, open_zip, table_text
from store.types import LoadedDocument, Section

_MAX_DEPTH = 32  # nested groups


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    open_zip(data, filename, "PowerPoint (.pptx)")
    import pptx

    try:
        deck = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-pptx raises many kinds on a damaged package
        raise LoadError(f"{filename} is not a readable PowerPoint deck ({type(exc).__name__}: {exc})") from exc
    sections: list[Section] = []
    try:
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            title = (
                " ".join(title_shape.text_frame.text.split())
                if title_shape is not None and title_shape.has_text_frame
                else ""
            )
            parts: list[str] = []
            _shapes(slide.shapes, parts, 0)
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
    doc = LoadedDocument(source=source, title=core_title, kind="pptx", sections=sections, pages=len(sections))
    doc.extra["page_label"] = "slide"
    return doc


def _shapes(shapes: Any, parts: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group shape
            _shapes(shape.shapes, parts, depth + 1)
            continue
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = [[cell_text(c.text) for c in row.cells] for row in shape.table.rows]
            text = table_text(rows)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            text = shape.text_frame.text.strip()
        else:
            continue
        if text:
            parts.append(text)
