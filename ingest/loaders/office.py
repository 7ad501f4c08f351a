"""Shared pieces of the office-format loaders: opening zip packages within limits, telling
encrypted (OLE) files apart, and turning table rows into text with their header.

A zip-based file (DOCX, PPTX, XLSX, OpenDocument, EPUB) is checked from its central
directory before any library opens it: at most `MAX_MEMBERS` members, at most
`MAX_UNCOMPRESSED` bytes once inflated, and no member over `MIN_RATIO_SIZE` that inflates
more than `MAX_RATIO` times. `zipfile` never returns more than a member's declared size,
so a lying header cannot inflate past these limits either. A decompression bomb is
refused from the directory alone, in milliseconds.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence

from ingest.loaders import LoadError
from store.types import Section

MAX_MEMBERS = 10_000
MAX_UNCOMPRESSED = 256 * 1024 * 1024
MAX_RATIO = 200
MIN_RATIO_SIZE = 4 * 1024 * 1024
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
PIECE_CHARS = 700  # table text per section piece (each repeats the header), about one chunk
ENCRYPTED_HINT = "remove the password (save an unprotected copy) and ingest it again"


def open_zip(data: bytes, name: str, what: str) -> zipfile.ZipFile:
    """The file's zip package, after the limits in the module docstring; LoadError otherwise."""
    if data.startswith(OLE_MAGIC):
        raise LoadError(f"{name} is password-protected or an old binary Office file: {ENCRYPTED_HINT}")
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        members = package.infolist()
    except Exception as exc:  # noqa: BLE001 - BadZipFile, NotImplementedError ("zip file version"), struct errors...
        raise LoadError(f"{name} is not a valid {what} file (damaged or truncated zip: {exc})") from exc
    if len(members) > MAX_MEMBERS:
        raise LoadError(f"{name} has {len(members):,} zip members, over the limit of {MAX_MEMBERS:,}; refused")
    total = 0
    for m in members:
        if m.flag_bits & 0x1:
            raise LoadError(f"{name} is encrypted: {ENCRYPTED_HINT}")
        total += m.file_size
        if m.file_size > MIN_RATIO_SIZE and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise LoadError(
                f"{name} looks like a decompression bomb ({m.filename} inflates "
                f"{m.file_size // max(m.compress_size, 1):,} times); refused"
            )
    if total > MAX_UNCOMPRESSED:
        raise LoadError(
            f"{name} inflates to {total // (1024 * 1024):,} MB, over the {MAX_UNCOMPRESSED // (1024 * 1024)} MB "
            "limit for zip-based files; refused"
        )
    return package


def read_member(package: zipfile.ZipFile, member: str, name: str) -> bytes | None:
    """One member's bytes (None when it is absent); a damaged member is a LoadError."""
    try:
        return package.read(member)
    except KeyError:
        return None
    except Exception as exc:  # noqa: BLE001 - BadZipFile (CRC), zlib.error, NotImplementedError (method)...
        raise LoadError(f"{name} is damaged ({member}: {exc})") from exc


def zip_kind(data: bytes) -> str | None:
    """The format of a zip package from its members: docx, pptx, xlsx, odt, ods, odp, epub, or None."""
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        names = set(package.namelist())
        mimetype = package.read("mimetype")[:100].decode("ascii", "replace").strip() if "mimetype" in names else ""
    except Exception:  # noqa: BLE001 - any damaged zip: let the extension decide, its loader reports it
        return None
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    odf = {
        "application/vnd.oasis.opendocument.text": "odt",
        "application/vnd.oasis.opendocument.spreadsheet": "ods",
        "application/vnd.oasis.opendocument.presentation": "odp",
        "application/epub+zip": "epub",
    }
    return odf.get(mimetype)


_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def has_pictures(data: bytes) -> bool:
    """A Word or PowerPoint package holding raster pictures, which OCR may read (ingest/loaders/pictures.py).

    Only the zip's central directory is read; anything that is not such a zip is False."""
    if not data.startswith(ZIP_MAGIC):
        return False
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except Exception:  # noqa: BLE001 - a damaged zip: its loader reports it
        return False
    return any(n.startswith(("word/", "ppt/")) and n.lower().endswith(_PICTURE_SUFFIXES) for n in names)


def cell_text(value: object) -> str:
    """A cell's value as one line of text (floats without a spurious ".0")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return " ".join(str(value).split())


def table_lines(rows: Iterable[Sequence[str]]) -> list[str]:
    """Table rows as " | "-joined lines (empty rows dropped); the first row is the header."""
    return [" | ".join(cells) for cells in rows if any(cells)]


def table_text(rows: Iterable[Sequence[str]]) -> str:
    """A small table as text: the header row, then each row as "header: value" pairs."""
    kept = [list(r) for r in rows if any(r)]
    if not kept:
        return ""
    header, body = kept[0], kept[1:]
    if not body or len(set(header)) < len(header) or not all(header):
        return "\n".join(table_lines(kept))
    lines = [" | ".join(header)]
    for row in body:
        pairs = [f"{h}: {v}" for h, v in zip(header, row, strict=False) if v]
        pairs += [v for v in row[len(header) :] if v]
        lines.append("; ".join(pairs))
    return "\n".join(lines)


def row_pieces(
    header: str, rows: Iterable[tuple[int, str]], *, limit: int = PIECE_CHARS
) -> Iterator[tuple[int, int, str]]:
    """Group numbered row lines into pieces of about `limit` characters, each starting with `header`.

    Yields (first row number, last row number, text).
    """
    lines: list[str] = []
    first = last = 0
    size = 0
    for number, line in rows:
        if lines and size + len(line) > limit:
            yield first, last, "\n".join([header, *lines]) if header else "\n".join(lines)
            lines, size = [], 0
        if not lines:
            first = number
        lines.append(line)
        last = number
        size += len(line) + 1
    if lines:
        yield first, last, "\n".join([header, *lines]) if header else "\n".join(lines)


def column_letter(index: int) -> str:
    """1 -> A, 27 -> AA."""
    letters = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters or "A"


def joined(parts: Iterable[str]) -> str:
    return "\n".join(p for p in (x.strip() for x in parts) if p)


def non_empty(sections: Iterable[Section]) -> list[Section]:
    return [s for s in sections if s.text.strip()]
