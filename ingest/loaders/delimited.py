"""CSV and TSV files: the encoding and the delimiter (, ; tab |) are sniffed, the header row starts every
section piece, and a piece's heading names its rows ("rows 12-30", counted as lines of the
file with the header as row 1)."""

from __future__ import annotations

import csv
import io
import re

from ingest.loaders import LoadError
from ingest.loaders.office import cell_text, row_pieces
from ingest.loaders.text import decode_text, looks_binary
from store.types import LoadedDocument, Section

_SAMPLE = 64 * 1024
_DELIMITERS = ",;\t|"
MAX_FIELD = 1024 * 1024  # characters of one field
_SNIFF_LINES = 50
_QUOTED = re.compile(r'"[^"]*"')


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    text = _decode(data, filename)
    tsv = filename.lower().endswith(".tsv")
    delimiter = sniff_delimiter(text[:_SAMPLE]) or ("\t" if tsv else ",")
    old = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD)
    try:
        reader = csv.reader(io.StringIO(text), csv.excel, delimiter=delimiter)
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


def sniff_delimiter(sample: str) -> str | None:
    """The candidate that splits the sample's first lines most consistently (quoted parts aside).

    Linear in the sample: csv.Sniffer's regexes take seconds on 64 KB of quotes.
    """
    lines = [_QUOTED.sub("", line) for line in sample.split("\n")[:_SNIFF_LINES] if line.strip()]
    if len(lines) > 1:
        lines = lines[:-1]  # the sample may cut the last line short
    best: tuple[float, int, str] | None = None
    for d in _DELIMITERS:
        counts = [line.count(d) for line in lines]
        mode = max(set(counts), key=counts.count) if counts else 0
        if mode == 0:
            continue
        score = (counts.count(mode) / len(counts), mode, d)
        if best is None or score[:2] > best[:2]:
            best = score
    return best[2] if best else None


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
