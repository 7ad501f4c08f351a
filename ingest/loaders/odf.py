"""OpenDocument files through odfpy: ODT (headings give the section path, tables as rows
with their header), ODS (each sheet a section, rows in pieces with the header repeated,
headed "Sheet!A1:C9") and ODP (one section per slide: page = slide number, heading = its
title or name).

Repeated rows and columns (table:number-rows-repeated) are expanded only when they hold
text, and at most `MAX_CELLS` cells are read.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from ingest.loaders import LoadError
from ingest.loaders.office import column_letter, open_zip, read_member, row_pieces, table_text
from store.types import LoadedDocument, Section

MAX_CELLS = 2_000_000
_MAX_REPEAT = 1_000
_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
_PRES = "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_BLOCKS = {"p", "h", "list-item"}


def load(data: bytes, *, filename: str, source: str, kind: str) -> LoadedDocument:
    package = open_zip(data, filename, f"OpenDocument (.{kind})")
    manifest = read_member(package, "META-INF/manifest.xml", filename)
    if manifest is not None and b"encryption-data" in manifest:
        raise LoadError(f"{filename} is password-protected: save an unprotected copy and ingest it again")
    from odf.opendocument import load as odf_load

    try:
        document = odf_load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - odfpy raises many kinds on a damaged package
        raise LoadError(f"{filename} is not a readable OpenDocument file ({type(exc).__name__}: {exc})") from exc
    budget = [MAX_CELLS]
    try:
        if kind == "ods":
            sections = [s for table in _children(document.spreadsheet, _TABLE, "table") for s in _sheet(table, budget)]
        elif kind == "odp":
            sections = _slides(document.presentation)
        else:
            sections = _text_sections(document.text, budget)
        title = _title(document)
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{filename} is a damaged OpenDocument file ({type(exc).__name__}: {exc})") from exc
    doc = LoadedDocument(source=source, title=title, kind=kind, sections=sections)
    if kind == "odp":
        doc.pages = len(sections)
        doc.extra["page_label"] = "slide"
    if budget[0] <= 0:
        doc.warnings.append(f"only the first {MAX_CELLS:,} cells were read")
    return doc


def _is(node: Any, ns: str, name: str) -> bool:
    return getattr(node, "qname", None) == (ns, name)


def _children(node: Any, ns: str, name: str) -> Iterator[Any]:
    for child in getattr(node, "childNodes", []):
        if _is(child, ns, name):
            yield child


def _text(node: Any) -> str:
    """The text of a node and everything inside it (iteratively), with <text:s/> and tabs as spaces."""
    out: list[str] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n.nodeType == n.TEXT_NODE:
            out.append(n.data)
            continue
        qname = getattr(n, "qname", None)
        if qname in ((_TEXT, "s"), (_TEXT, "tab"), (_TEXT, "line-break")):
            out.append(" ")
        elif qname == (_TEXT, "note-citation"):
            continue
        stack.extend(reversed(n.childNodes))
    return " ".join("".join(out).split())


def _attr(node: Any, ns: str, name: str) -> str:
    try:
        return str(node.attributes.get((ns, name)) or "")
    except AttributeError:
        return ""


def _title(document: Any) -> str:
    from odf import dc

    for t in document.meta.getElementsByType(dc.Title):
        return _text(t)
    return ""


def _text_sections(body: Any, budget: list[int]) -> list[Section]:
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            sections.append(Section("\n".join(lines), heading=" > ".join(t for _, t in path)))
            lines.clear()

    stack = list(reversed(body.childNodes))
    while stack:
        node = stack.pop()
        qname = getattr(node, "qname", None)
        if qname == (_TEXT, "h"):
            text = _text(node)
            if text:
                flush()
                try:
                    level = max(1, int(_attr(node, _TEXT, "outline-level") or 1))
                except ValueError:
                    level = 1
                path[:] = [p for p in path if p[0] < level]
                path.append((level, text))
        elif qname == (_TEXT, "p"):
            text = _text(node)
            if text:
                lines.append(text)
        elif qname == (_TABLE, "table"):
            text = table_text(r for _, r in _table_rows(node, budget))
            if text:
                lines.append(text)
        elif getattr(node, "childNodes", None):
            stack.extend(reversed(node.childNodes))
    flush()
    return sections


def _repeat(node: Any, name: str) -> int:
    try:
        return max(1, int(_attr(node, _TABLE, name) or 1))
    except ValueError:
        return 1


def _table_rows(table: Any, budget: list[int]) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of a table's rows; repeats of empty rows or cells are not expanded."""
    number = 0
    rows: list[Any] = []
    stack = list(reversed(table.childNodes))
    while stack:  # rows may sit inside table:table-header-rows / table-row-group
        n = stack.pop()
        if _is(n, _TABLE, "table-row"):
            rows.append(n)
        elif getattr(n, "qname", (None,))[0] == _TABLE and n.qname[1] in (
            "table-header-rows",
            "table-rows",
            "table-row-group",
        ):
            stack.extend(reversed(n.childNodes))
    for row in rows:
        cells: list[str] = []
        for cell in row.childNodes:
            if not (_is(cell, _TABLE, "table-cell") or _is(cell, _TABLE, "covered-table-cell")):
                continue
            text = _text(cell)
            cells.extend([text] * (min(_repeat(cell, "number-columns-repeated"), _MAX_REPEAT) if text else 1))
        while cells and not cells[-1]:
            cells.pop()
        repeat = _repeat(row, "number-rows-repeated")
        if not cells:
            number += repeat
            continue
        for _ in range(min(repeat, _MAX_REPEAT)):
            number += 1
            budget[0] -= len(cells)
            if budget[0] < 0:
                return
            yield number, cells
        number += max(0, repeat - _MAX_REPEAT)


def _sheet(table: Any, budget: list[int]) -> list[Section]:
    name = _attr(table, _TABLE, "name") or "Sheet"
    rows = _table_rows(table, budget)
    first = next(rows, None)
    if first is None:
        return []
    header_row, header = first
    widths = [len(header)]

    def numbered() -> Iterator[tuple[int, str]]:
        for number, cells in rows:
            widths.append(len(cells))
            yield number, " | ".join(cells)

    header_text = " | ".join(header)
    pieces = list(row_pieces(header_text, numbered()))
    cols = column_letter(max(widths))
    if not pieces:
        return [Section(header_text, heading=f"{name}!A{header_row}:{cols}{header_row}")]
    return [Section(text, heading=f"{name}!A{start}:{cols}{end}") for start, end, text in pieces]


def _slides(presentation: Any) -> list[Section]:
    sections = []
    for number, page in enumerate(_children(presentation, _DRAW, "page"), start=1):
        title = ""
        parts: list[str] = []
        stack = list(reversed(page.childNodes))
        while stack:
            node = stack.pop()
            qname = getattr(node, "qname", None)
            if qname == (_DRAW, "frame") and _attr(node, _PRES, "class") == "title" and not title:
                title = _text(node)
                parts.append(title)
            elif qname == (_TABLE, "table"):
                parts.append(table_text(r for _, r in _table_rows(node, [MAX_CELLS])))
            elif qname in ((_TEXT, "p"), (_TEXT, "h")):
                parts.append(_text(node))
            elif getattr(node, "childNodes", None):
                stack.extend(reversed(node.childNodes))
        text = "\n".join(p for p in parts if p)
        sections.append(Section(text, page=number, heading=title or _attr(page, _DRAW, "name")))
    return sections
