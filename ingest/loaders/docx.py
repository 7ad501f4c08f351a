"""Word documents (.docx) through python-docx.

Paragraphs (and the text boxes anchored in them) in body order, with the heading path
from the "Heading N" (and "Title") styles; tables as their header row then "header: value"
rows; then headers, footers and footnotes (read from word/footnotes.xml, which python-docx
does not expose), each as a section of its own ("Header", "Footer", "Footnotes").

Pictures in the body (inline or floating, in paragraphs, text boxes and tables) are read
by OCR (ingest/loaders/pictures.py): the text of each follows the text of the section it
sits in, as a section of its own headed "<heading path> (OCR)", so it is cited so.
"""

from __future__ import annotations

import io
import logging
import re
import xml.etree.ElementTree as ET
from typing import Any

from ingest.loaders import LoadError
from ingest.loaders.ocr import OcrOptions
from ingest.loaders.office import cell_text, open_zip, read_member, table_text
from ingest.loaders.pictures import Picture, ocr_heading, read_pictures
from store.types import LoadedDocument, Section

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_BLIP = "{http://schemas.openxmlformats.org/drawingml/2006/main}blip"
_VML_IMAGE = "{urn:schemas-microsoft-com:vml}imagedata"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_HEADING = re.compile(r"heading\s*(\d)", re.IGNORECASE)

log = logging.getLogger(__name__)


def load(data: bytes, *, filename: str, source: str, ocr: OcrOptions | None = None) -> LoadedDocument:
    package = open_zip(data, filename, "Word (.docx)")
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-docx raises many kinds on a damaged package
        raise LoadError(f"{filename} is not a readable Word document ({type(exc).__name__}: {exc})") from exc
    items: list[Section | Picture] = []  # in body order; each picture becomes the text OCR reads in it
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    pictures: list[Picture] = []  # met since the last flush
    title = ""

    def flush() -> None:
        heading = " > ".join(t for _, t in path)
        if lines:
            items.append(Section("\n".join(lines), heading=heading))
            lines.clear()
        items.extend(Picture(p.name, p.data, heading=heading) for p in pictures)
        pictures.clear()

    try:
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text = block.text.strip()
                level = _level(block)
                if level is not None and text:
                    flush()
                    if level == 0:
                        title = title or " ".join(text.split())
                    path[:] = [p for p in path if p[0] < max(level, 1)]
                    path.append((max(level, 1), " ".join(text.split())))
                elif text:
                    lines.append(text)
                lines.extend(_text_boxes(block))
            elif isinstance(block, Table):
                text = _table(block)
                if text:
                    lines.append(text)
            pictures.extend(_pictures(block, document.part, filename))
        flush()
        extras = _headers_footers(document)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{filename} is a damaged Word document ({type(exc).__name__}: {exc})") from exc
    warnings: list[str] = []
    found = [item for item in items if isinstance(item, Picture)]
    texts = iter(read_pictures(found, ocr or OcrOptions(), filename, warnings))
    sections = [i if isinstance(i, Section) else Section(next(texts), heading=ocr_heading(i.heading)) for i in items]
    sections = [s for s in sections if s.text] + extras
    try:
        notes = _footnotes(read_member(package, "word/footnotes.xml", filename), filename)
    except LoadError as exc:  # a damaged footnotes part loses only the footnotes
        notes = ""
        warnings.append(f"the footnotes were not read: {exc}")
    if notes:
        sections.append(Section(notes, heading="Footnotes"))
    core_title = ""
    try:
        core_title = (document.core_properties.title or "").strip()
    except Exception:  # noqa: BLE001 - a broken docProps/core.xml only loses the title
        core_title = ""
    return LoadedDocument(source=source, title=core_title or title, kind="docx", sections=sections, warnings=warnings)


def _level(paragraph: Any) -> int | None:
    """0 for the Title style, N for "Heading N", None for body text."""
    try:
        style = paragraph.style.name or ""
    except Exception:  # noqa: BLE001 - a missing style is body text
        return None
    if style.lower() == "title":
        return 0
    m = _HEADING.match(style)
    return int(m.group(1)) if m else None


def _text_boxes(paragraph: Any) -> list[str]:
    """The text of the text boxes anchored in a paragraph, once each (Word writes a box twice:
    as DrawingML and as its VML fallback)."""
    element = paragraph._p
    if element.find(f".//{_W}txbxContent") is None:
        return []
    out: list[str] = []
    for box in element.iter(f"{_W}txbxContent"):
        if any(a.tag == _MC_FALLBACK for a in box.iterancestors()):
            continue
        for p in box.iter(f"{_W}p"):
            text = "".join(t.text or "" for t in p.iter(f"{_W}t")).strip()
            if text:
                out.append(text)
    return out


def _table(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = cell_text(cell.text)
            if not cells or cells[-1] != text:  # a merged cell comes back once per grid column
                cells.append(text)
            else:
                cells.append("")
        rows.append(cells)
    return table_text(rows)


def _headers_footers(document: Any) -> list[Section]:
    seen: set[str] = set()
    out: list[Section] = []
    for kind in ("header", "footer"):
        texts: list[str] = []
        for section in document.sections:
            part = getattr(section, kind)
            if part.is_linked_to_previous and texts:
                continue
            text = "\n".join(p.text.strip() for p in part.paragraphs if p.text.strip())
            text += "".join("\n" + _table(t) for t in part.tables)
            if text.strip() and text not in seen:
                seen.add(text)
                texts.append(text.strip())
        if texts:
            out.append(Section("\n".join(texts), heading=kind.capitalize()))
    return out


def _footnotes(xml: bytes | None, filename: str) -> str:
    if not xml:
        return ""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return ""  # footnotes are a bonus: a broken part loses only them
    notes = []
    for note in root.iter(f"{_W}footnote"):
        if note.get(f"{_W}type") in ("separator", "continuationSeparator", "continuationNotice"):
            continue
        paragraphs = ["".join(t.text or "" for t in p.iter(f"{_W}t")) for p in note.iter(f"{_W}p")]
        text = " ".join(" ".join(paragraphs).split())
        if text:
            notes.append(f"[{note.get(f'{_W}id')}] {text}")
    return "\n".join(notes)


def _pictures(block: Any, part: Any, filename: str) -> list[Picture]:
    """The pictures embedded in a paragraph or table (DrawingML blips, and VML images where a
    drawing has no DrawingML version), in document order; linked (external) ones are skipped."""
    out: list[Picture] = []
    element = getattr(block, "_p", None)
    if element is None:
        element = block._tbl
    for node in element.iter(_BLIP, _VML_IMAGE):
        rid = node.get(f"{_R}embed") if node.tag == _BLIP else node.get(f"{_R}id")
        if not rid or any(a.tag == _MC_FALLBACK for a in node.iterancestors()):
            continue  # linked, or the VML copy Word writes as the fallback of a drawing
        try:
            image = part.related_parts[rid]
            out.append(Picture(str(image.partname).lstrip("/"), image.blob))
        except Exception as exc:  # noqa: BLE001 - a dangling relationship, a missing part: lose only the picture
            log.warning("%s: picture %s is missing from the package: %s: %s", filename, rid, type(exc).__name__, exc)
    return out
