"""Plain text files, and the bytes-to-text decoding shared by the text-based formats."""

from __future__ import annotations

import codecs
import re

from ingest.loaders import LoadError
from store.types import LoadedDocument, Section

# C0 controls other than tab, newline, vertical tab, form feed, carriage return and escape
# (ANSI colour codes in logs); and DEL. Many of these mean binary data.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Browsers read these labels as windows-1252 (WHATWG encoding standard); so do we.
_AS_CP1252 = {"latin_1", "iso8859_1", "ascii", "cp1252"}
_SAMPLE = 64 * 1024
_MAX_CONTROL_RATIO = 0.05


def looks_binary(data: bytes) -> bool:
    """True for bytes that are not text in any encoding we read (NULs or many control bytes)."""
    if any(data.startswith(bom) for bom, _ in _BOMS):
        return False
    sample = data[:_SAMPLE]
    if b"\x00" in sample:
        return True
    return len(_CONTROL_BYTES.findall(sample)) > _MAX_CONTROL_RATIO * max(len(sample), 20)


def decode_text(data: bytes, filename: str, *, declared: str | None = None) -> str:
    """Decode a text file: a BOM wins, then a declared charset, then UTF-8, then cp1252/latin-1.

    Raises LoadError for binary content. Line endings come back as "\\n".
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _clean(data.decode(codec, errors="replace"))
    if looks_binary(data):
        raise LoadError(
            f"{filename} looks like a binary file, not text "
            "(ragcord reads PDF, Office, OpenDocument, EPUB, RTF, e-mail, image, Markdown, HTML and text files)"
        )
    if declared:
        try:
            codec = codecs.lookup(declared.strip()).name.replace("-", "_")
        except LookupError:
            codec = "utf_8"
        if codec in _AS_CP1252:
            return _clean(_decode_legacy(data))
        try:
            return _clean(data.decode(codec, errors="replace"))
        except (LookupError, ValueError):  # e.g. a codec without "replace" support
            return _clean(data.decode("utf-8", errors="replace"))
    try:
        return _clean(data.decode("utf-8"))
    except UnicodeDecodeError:
        return _clean(_decode_legacy(data))


def _decode_legacy(data: bytes) -> str:
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # five byte values are undefined in cp1252
        return data.decode("latin-1")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    return _CONTROL_CHARS.sub("", _ANSI_ESCAPE.sub("", text.lstrip("\ufeff")))


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    text = decode_text(data, filename)
    return LoadedDocument(source=source, title="", kind="text", sections=[Section(text.strip("\n"))])
