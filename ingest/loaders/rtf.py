"""RTF documents through striprtf: the text without control words (one section).

The code page comes from the file's \\ansicpg (cp1252 when it names none or an unknown one);
characters given as \\uN come through whatever the code page.
"""

from __future__ import annotations

import codecs
import re

from ingest.loaders import LoadError
from store.types import LoadedDocument, Section

_CODEPAGE = re.compile(rb"\\ansicpg(\d{3,5})")


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    if not data.lstrip()[:5] == b"{\\rtf":
        raise LoadError(f"{filename} is not a valid RTF file (no {{\\rtf header)")
    m = _CODEPAGE.search(data[:4096])
    encoding = f"cp{int(m.group(1))}" if m else "cp1252"
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "cp1252"
    from striprtf.striprtf import rtf_to_text

    try:
        text = rtf_to_text(data.decode("latin-1"), encoding=encoding, errors="replace")
    except Exception as exc:  # noqa: BLE001 - striprtf on damaged input
        raise LoadError(f"{filename} is a damaged RTF file ({type(exc).__name__}: {exc})") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return LoadedDocument(source=source, title="", kind="rtf", sections=[Section(text.strip())])
