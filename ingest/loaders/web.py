"""Web pages: the main text of an HTML page, as trafilatura finds it (no menus, footers or ads).

`extract` runs trafilatura on the page and turns its XML (``<head rend="h2">``, ``<p>``,
``<list>``, ``<table>``) into sections with heading paths like Markdown's
("Guide > Storage"); tables become "a | b" rows, list items "- item" lines. Links
keep their text only. The result is serialised (`encode`) so that the ingest
fingerprint covers the page's main text, not its markup: a page whose adverts,
tokens or timestamps change on every fetch is still unchanged. `load` turns that
back into a `LoadedDocument` of kind "web".

A page where trafilatura finds no main text (a short page, an index of links) is
read by the HTML loader instead (all visible text).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ingest.loaders import DEFAULT_MAX_TEXT_CHARS, LoadError, cap_text
from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section

if TYPE_CHECKING:
    from lxml.etree import _Element

log = logging.getLogger(__name__)

_FORMAT = "ragcord-web-1"
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_SPACES = re.compile(r"[^\S\n]+")
_HEADING_LEVEL = re.compile(r"h([1-6])")


def extract(data: bytes, *, url: str, charset: str = "") -> tuple[str, list[Section]] | None:
    """(title, sections) of the page's main text, or None if trafilatura finds none."""
    import trafilatura

    declared = charset
    if not declared:
        m = _META_CHARSET.search(data[:4096])
        declared = m.group(1).decode("ascii", errors="ignore") if m else "utf-8"
    markup = decode_text(data, PurePosixPath(url.split("?", 1)[0]).name or url, declared=declared)
    try:
        found = trafilatura.bare_extraction(
            markup,
            url=url,
            with_metadata=True,
            include_links=False,
            include_images=False,
            include_tables=True,
            include_formatting=True,
            include_comments=False,
        )
    except Exception:  # trafilatura (lxml) failing on a hostile page: the HTML loader reads it instead
        log.warning("trafilatura failed on %s", url, exc_info=True)
        return None
    body = getattr(found, "body", None)  # a trafilatura Document (with output_format="python", the default)
    if body is None:
        return None
    sections = _sections(body)
    if not sections:
        return None
    title = " ".join(str(getattr(found, "title", "") or "").split())
    return title, sections


def encode(title: str, sections: list[Section]) -> bytes:
    payload = {"format": _FORMAT, "title": title, "sections": [[s.heading, s.text] for s in sections]}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def load(
    data: bytes,
    filename: str,
    *,
    source: str,
    title: str | None = None,
    max_chars: int = DEFAULT_MAX_TEXT_CHARS,
    **_ignored: Any,
) -> LoadedDocument:
    """The document `encode` wrote (the pipeline calls this as its loader for web pages)."""
    try:
        payload = json.loads(data)
        assert payload["format"] == _FORMAT
        sections = [Section(str(text), heading=str(heading)) for heading, text in payload["sections"]]
        page_title = str(payload["title"])
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise LoadError(f"{filename}: the extracted page could not be read back") from exc
    doc = LoadedDocument(source=source, title=page_title, kind="web", sections=[s for s in sections if s.text.strip()])
    if not doc.sections:
        raise LoadError(f"{filename} has no text to index")
    cap_text(doc, max_chars)
    doc.title = " ".join((title or "").split()) or doc.title or filename
    return doc


def _sections(body: _Element) -> list[Section]:
    out: list[Section] = []
    path: list[tuple[int, str]] = []
    parts: list[str] = []

    def close() -> None:
        text = "\n\n".join(p for p in parts if p).strip()
        if text:
            out.append(Section(text, heading=" > ".join(h for _, h in path if h)))
        parts.clear()

    for el in body:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag == "head":
            close()
            m = _HEADING_LEVEL.fullmatch(str(el.get("rend") or ""))
            level = int(m.group(1)) if m else 2
            heading = _squash(_text(el))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, heading))
        elif tag == "table":
            rows = [" | ".join(_squash(_text(c)) for c in row if c.tag == "cell") for row in el.iter("row")]
            parts.append("\n".join(r for r in rows if r.strip(" |")))
        elif tag == "list":
            items = [f"- {_squash(_text(item))}" for item in el.iter("item")]
            parts.append("\n".join(i for i in items if i != "- "))
        elif tag:
            parts.append(_lines(_text(el)))
    close()
    return out


def _text(el: _Element) -> str:
    """The element's text, a line break for each <lb/>, nested lists' items not repeated by their parents."""
    pieces: list[str] = []
    stack: list[tuple[_Element, bool]] = [(el, False)]
    while stack:  # iterative: the nesting depth is the page's choice
        node, leaving = stack.pop()
        if leaving:
            if node is not el and node.tail:
                pieces.append(node.tail)
            continue
        if node is not el and node.tag in ("list", "table"):
            if node.tail:
                pieces.append(node.tail)
            continue  # read as their own items / rows
        if node.tag == "lb":
            pieces.append("\n")
        if node.text:
            pieces.append(node.text)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(list(node)))
    return "".join(pieces)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _lines(text: str) -> str:
    return "\n".join(line for line in (_SPACES.sub(" ", ln).strip() for ln in text.split("\n")) if line)
