"""Excel workbooks (.xlsx, .xlsm) through openpyxl in read-only mode.

Cached values only (data_only=True): a formula cell shows the value Excel last computed,
never the formula. Each visible sheet is read row by row; hidden sheets are skipped,
with a warning. The first non-empty row is the sheet's header and starts every section
piece; a piece's heading names its range, e.g. "Budget!A12:F30".

The declared sheet dimension is ignored (a file can claim a million rows); at most
`MAX_CELLS` cells of the workbook and `MAX_EMPTY_RUN` empty rows in a row are read, so
time and memory follow the cells actually present.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from ingest.loaders import LoadError
from ingest.loaders.office import cell_text, column_letter, open_zip, row_pieces
from store.types import LoadedDocument, Section

MAX_CELLS = 2_000_000  # cells read per workbook (values and blanks inside a row)
MAX_COLUMNS = 1_000
MAX_EMPTY_RUN = 1_000  # empty rows in a row after which the rest of a sheet is skipped


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    open_zip(data, filename, "Excel (.xlsx)")
    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds on a damaged package
        raise LoadError(f"{filename} is not a readable Excel workbook ({type(exc).__name__}: {exc})") from exc
    doc = LoadedDocument(source=source, title="", kind="xlsx", sections=[])
    budget = [MAX_CELLS]
    hidden = []
    try:
        for sheet in book.worksheets:
            if getattr(sheet, "sheet_state", "visible") != "visible":
                hidden.append(sheet.title)
                continue
            doc.sections.extend(_sheet(sheet, budget, doc.warnings))
        doc.title = (book.properties.title or "").strip() if book.properties else ""
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{filename} is a damaged Excel workbook ({type(exc).__name__}: {exc})") from exc
    finally:
        book.close()
    if hidden:
        doc.warnings.append(f"hidden sheets were skipped: {', '.join(hidden)}")
    if budget[0] <= 0:
        doc.warnings.append(f"only the first {MAX_CELLS:,} cells of the workbook were read")
    return doc


def _rows(sheet: object, budget: list[int], warnings: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts) of the sheet's non-empty rows, within the cell budget."""
    reset = getattr(sheet, "reset_dimensions", None)
    if reset is not None:
        reset()  # the declared dimension can lie; read the rows that are there
    empty_run = 0
    for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):  # type: ignore[attr-defined]
        budget[0] -= len(row)
        if budget[0] < 0:
            return
        cells = [cell_text(v) for v in row[:MAX_COLUMNS]]
        if not any(cells):
            empty_run += 1
            if empty_run > MAX_EMPTY_RUN:
                title = sheet.title  # type: ignore[attr-defined]
                warnings.append(
                    f"sheet {title!r}: rows after row {number:,} were skipped ({MAX_EMPTY_RUN:,} empty rows in a row)"
                )
                return
            continue
        empty_run = 0
        yield number, cells


def _sheet(sheet: object, budget: list[int], warnings: list[str]) -> list[Section]:
    name: str = sheet.title  # type: ignore[attr-defined]
    rows = _rows(sheet, budget, warnings)
    first = next(rows, None)
    if first is None:
        return []
    header_row, header = first
    width = max((i + 1 for i, c in enumerate(header) if c), default=1)
    widths = [width]

    def numbered() -> Iterator[tuple[int, str]]:
        for number, cells in rows:
            last = max(i + 1 for i, c in enumerate(cells) if c)
            widths.append(last)
            yield number, " | ".join(cells[: max(last, width)])

    header_text = " | ".join(header[:width])
    sections = []
    pieces = list(row_pieces(header_text, numbered()))
    if not pieces:
        return [Section(header_text, heading=f"{name}!A{header_row}:{column_letter(width)}{header_row}")]
    cols = column_letter(max(widths))
    for start, end, text in pieces:
        sections.append(Section(text, heading=f"{name}!A{start}:{cols}{end}"))
    return sections
