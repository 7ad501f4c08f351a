"""Document loaders: bytes of a PDF, Markdown, HTML, text or office file -> a `LoadedDocument`.

`load_bytes` picks the loader from the file name's suffix, but trusts the content
over the name: a file starting with ``%PDF`` is read as a PDF whatever it is called,
a zip package is named by its members (a .docx sent as .zip is read as Word; docs/formats.md),
and a "text" file full of NUL or control bytes is refused as binary. Every refusal is
a `LoadError` whose message is one line the user can act on.

The format modules (and pypdf) are imported on first use, not at import time.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path, PurePath

from ingest.loaders.ocr import OcrOptions
from store.types import LoadedDocument

log = logging.getLogger(__name__)

_KINDS: dict[str, str] = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".docx": "docx",
    ".docm": "docx",
    ".pptx": "pptx",
    ".pptm": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".csv": "csv",
    ".tsv": "csv",
    ".odt": "odt",
    ".ods": "ods",
    ".odp": "odp",
    ".epub": "epub",
    ".rtf": "rtf",
    ".eml": "eml",
}
_ZIP_KINDS = frozenset({"docx", "pptx", "xlsx", "odt", "ods", "odp", "epub"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".webp", ".tif", ".tiff"})  # read by OCR
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_KINDS) | IMAGE_SUFFIXES
_READS = (
    "ragcord reads PDF, Markdown, text, HTML, Word, PowerPoint, Excel, CSV/TSV, OpenDocument, EPUB, RTF, "
    "e-mail and images (docs/formats.md)"
)
_MIB = 1024 * 1024
DEFAULT_MAX_PAGES = 2000  # RAGCORD_PDF_MAX_PAGES: pages of a PDF that are read
DEFAULT_MAX_TEXT_CHARS = 10_000_000  # RAGCORD_MAX_TEXT_CHARS: characters of one document that are indexed


class LoadError(Exception):
    """A file that cannot be indexed; the message is one line the user can act on."""


def load_path(
    path: Path,
    *,
    max_bytes: int,
    pdf_password: str | None = None,
    source: str | None = None,
    title: str | None = None,
) -> LoadedDocument:
    """Load a file from disk; `source` defaults to its resolved absolute path."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise LoadError(f"{path} is not a regular file")
        _check_size(size, path.name, max_bytes)
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return load_bytes(
        data,
        path.name,
        max_bytes=max_bytes,
        pdf_password=pdf_password,
        source=source or str(path.resolve()),
        title=title,
    )


def load_bytes(
    data: bytes,
    filename: str,
    *,
    max_bytes: int,
    pdf_password: str | None = None,
    source: str,
    title: str | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
    max_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ocr: OcrOptions | None = None,
) -> LoadedDocument:
    """Load a document from its bytes; `filename` decides the format (content can overrule it).

    Only the first `max_pages` pages of a PDF and the first `max_chars` characters of any
    document are indexed; a document cut short says so in its warnings.
    """
    name = PurePath(filename).name or filename
    _check_size(len(data), name, max_bytes)
    kind = detect_kind(data, name)
    if kind == "pdf":
        from ingest.loaders import pdf

        doc = pdf.load(
            data,
            filename=name,
            source=source,
            password=pdf_password,
            max_pages=max_pages,
            max_chars=max_chars,
            ocr=ocr,
        )
    elif kind == "image":
        from ingest.loaders import image

        doc = image.load(data, filename=name, source=source, ocr=ocr)
    elif kind == "markdown":
        from ingest.loaders import markdown

        doc = markdown.load(data, filename=name, source=source)
    elif kind == "html":
        from ingest.loaders import html

        doc = html.load(data, filename=name, source=source)
    elif kind in _OFFICE_KINDS:
        doc = _load_office(kind, data, name, source, max_bytes, ocr)
    else:
        from ingest.loaders import text

        doc = text.load(data, filename=name, source=source)
    doc.sections = [s for s in doc.sections if s.text.strip()]
    if not doc.sections:
        raise LoadError(f"{name} has no text to index")
    cap_text(doc, max_chars)
    doc.title = " ".join((title or "").split()) or doc.title or name
    log.debug("loaded %s: %s, %d sections", source, kind, len(doc.sections))
    return doc


_OFFICE_KINDS = frozenset({"docx", "pptx", "xlsx", "csv", "odt", "ods", "odp", "epub", "rtf", "eml"})


def _load_office(
    kind: str, data: bytes, name: str, source: str, max_bytes: int, ocr: OcrOptions | None = None
) -> LoadedDocument:
    """The office, e-book, spreadsheet and e-mail formats (docs/formats.md); `ocr` reads the
    pictures inside Word and PowerPoint files."""
    if kind == "docx":
        from ingest.loaders import docx

        return docx.load(data, filename=name, source=source, ocr=ocr)
    if kind == "pptx":
        from ingest.loaders import pptx

        return pptx.load(data, filename=name, source=source, ocr=ocr)
    if kind == "xlsx":
        from ingest.loaders import xlsx

        return xlsx.load(data, filename=name, source=source)
    if kind == "csv":
        from ingest.loaders import delimited

        return delimited.load(data, filename=name, source=source)
    if kind in ("odt", "ods", "odp"):
        from ingest.loaders import odf

        return odf.load(data, filename=name, source=source, kind=kind)
    if kind == "epub":
        from ingest.loaders import epub

        return epub.load(data, filename=name, source=source)
    if kind == "rtf":
        from ingest.loaders import rtf

        return rtf.load(data, filename=name, source=source)
    from ingest.loaders import email

    return email.load(data, filename=name, source=source, max_bytes=max_bytes)


def cap_text(doc: LoadedDocument, max_chars: int) -> None:
    """Keep the first `max_chars` characters of the document's sections (cut at a word), with a warning."""
    total = sum(len(s.text) for s in doc.sections)
    if total <= max_chars:
        return
    kept, room = [], max_chars
    for section in doc.sections:
        if room <= 0:
            break
        if len(section.text) > room:
            section = dataclasses.replace(section, text=cut_at_word(section.text, room))
        room -= len(section.text)
        kept.append(section)
    doc.sections = [s for s in kept if s.text.strip()]
    doc.warnings.append(
        f"only the first {max_chars:,} of {total:,} characters were indexed (raise RAGCORD_MAX_TEXT_CHARS to index all)"
    )


def cut_at_word(text: str, limit: int) -> str:
    """At most `limit` characters of `text`, cut after a word if one ends in the second half."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit)]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return (cut[:space] if space > limit // 2 else cut).rstrip()


def detect_kind(data: bytes, filename: str) -> str:
    """The loader for these bytes ("pdf", "markdown", "docx", "xlsx", ...); LoadError if none fits.

    A zip package is named by its members (word/document.xml, the OpenDocument mimetype, ...),
    an OLE file where a zip format was expected is an encrypted or old binary Office file.
    """
    suffix = PurePath(filename).suffix.lower()
    head = data[:1024]
    if head.lstrip(b"\x00\t\n\r\x0c ").startswith(b"%PDF") or (suffix == ".pdf" and b"%PDF-" in head):
        return "pdf"
    from ingest.loaders.image import image_format

    if image_format(head):
        return "image"
    if suffix in IMAGE_SUFFIXES:
        raise LoadError(f"{filename} is not a PNG, JPEG, WebP or TIFF image (damaged, or another format renamed)")
    kind = _KINDS.get(suffix)
    if head.startswith(b"PK\x03\x04") and (kind is None or kind in _ZIP_KINDS):
        from ingest.loaders.office import zip_kind

        kind = zip_kind(data) or kind  # the members say what it is (a .docx renamed .zip, a .xlsx called .docx)
    elif head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") and kind in _ZIP_KINDS:
        raise LoadError(
            f"{filename} is password-protected or an old binary Office file (.doc/.xls/.ppt): "
            "save an unprotected copy in the current format and ingest it again"
        )
    elif head.lstrip().startswith(b"{\\rtf") and kind in (None, "text"):
        kind = "rtf"
    if kind is None:
        shown = f"'{suffix}'" if suffix else "(no file extension)"
        raise LoadError(f"{filename}: unsupported file type {shown} ({_READS})")
    if kind == "pdf":
        looks_html = head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))
        hint = "it looks like a web page; was it downloaded correctly?" if looks_html else "no %PDF header"
        raise LoadError(f"{filename} is not a valid PDF ({hint})")
    return kind


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise LoadError(
            f"{name} is {_human_size(size)}, over the {_human_size(max_bytes)} limit "
            "(raise RAGCORD_MAX_FILE_MB to index it)"
        )


def _human_size(n: int) -> str:
    if n >= _MIB:
        return f"{n / _MIB:.1f}".removesuffix(".0") + " MB"
    if n >= 1024:
        return f"{n / 1024:.1f}".removesuffix(".0") + " KB"
    return f"{n} bytes"
