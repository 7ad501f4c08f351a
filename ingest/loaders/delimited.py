"""CSV and TSV files: the encoding and the delimiter are sniffed, the header row starts every
section piece, and a piece's heading names its rows ("rows 12-30", counted as lines of the
file with the header as row 1)."""

from __future__ import annotations

import csv
import io

from ingest.loaders import LoadError
from ingest.loaders.office import cell_text, row_pieces
from ingest.loaders.text import decode_text, looks_binary
from store.types import LoadedDocument, Section

_SAMPLE = 64 * 1024
_DELIMITERS = ",;\t|"
MAX_FIELD = 1024 * 1024  # characters of one field


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    text = _decode(data, filename)
    tsv = filename.lower().endswith(".tsv")
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:_SAMPLE], delimiters=_DELIMITERS)
    except csv.Error:
        dialect = csv.excel_tab if tsv else csv.excel
    old = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD)
    try:
        reader = csv.reader(io.StringIO(text), dialect)
        rows = [(reader.line_num, [cell_text(c) for c in row]) for row in reader]
    except csv.Error as exc:
        raise LoadError(f"{filename} is not a readable {'TSV' if tsv else 'CSV'} file ({exc})") from exc
    finally:
        csv.field_size_limit(old)
    rows = [(n, cells) for n, cells in rows if any(cells)]
    if not rows:
        raise LoadError(f"{filename} has no text to index")
    (header_line, header), body = rows[0], rows[1:]
    header_text = " | ".join(header)
    sections = [
        Section(piece, heading=f"rows {start}-{end}" if start != end else f"row {start}")
        for start, end, piece in row_pieces(header_text, ((n, " | ".join(c)) for n, c in body))
    ]
    if not sections:
        sections = [Section(header_text, heading=f"row {header_line}")]
    return LoadedDocument(source=source, title="", kind="tsv" if tsv else "csv", sections=sections)


def _decode(data: bytes, filename: str) -> str:
    if looks_binary(data):
        return decode_text(data, filename)  # a BOM'd UTF-16 file decodes; other binary is refused
    try:
        return decode_text(data, filename, declared="utf-8") if _is_utf8(data) else _guess(data, filename)
    except LookupError as exc:
        raise LoadError(f"{filename}: unknown text encoding ({exc})") from exc


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _guess(data: bytes, filename: str) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data[:_SAMPLE]))
    if not matches:
        return decode_text(data, filename)  # cp1252 / latin-1
    best = matches[0]
    # ties are common on short Western text (cp1250 = cp1252 by every measure): prefer cp1252,
    # the Windows default that browsers assume too
    for m in matches:
        if m.chaos <= best.chaos and m.coherence >= best.coherence and "cp1252" in m.could_be_from_charset:
            return decode_text(data, filename, declared="cp1252")
    return decode_text(data, filename, declared=best.encoding)
