"""EPUB e-books through ebooklib: one or more sections per chapter (spine item), in reading
order. A chapter's heading is its title from the table of contents (else its first
heading), followed by the headings inside it; the XHTML goes through the HTML loader, so
only visible text is kept."""

from __future__ import annotations

import io
import posixpath
from typing import Any

from ingest.loaders import LoadError
from ingest.loaders.html import parse_html
from ingest.loaders.office import open_zip
from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    open_zip(data, filename, "EPUB")
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": False})
    except Exception as exc:  # noqa: BLE001 - ebooklib raises many kinds on a damaged package
        raise LoadError(f"{filename} is not a readable EPUB ({type(exc).__name__}: {exc})") from exc
    titles: dict[str, str] = {}
    _toc_titles(book.toc, titles, 0)
    sections: list[Section] = []
    try:
        items = [book.get_item_with_id(idref) for idref, _ in book.spine]
        if not any(items):
            items = list(book.get_items_of_type(ebooklib.ITEM_DOCUMENT))
        for item in items:
            if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
                continue
            chapter = parse_html(decode_text(item.get_content(), filename, declared="utf-8"))
            name = posixpath.normpath(item.get_name())
            title = titles.get(name) or chapter.title or next((s.heading for s in chapter.sections if s.heading), "")
            for s in chapter.sections:
                heading = s.heading
                if title and not heading.startswith(title):
                    heading = f"{title} > {heading}" if heading else title
                sections.append(Section(s.text, heading=heading))
        meta = book.get_metadata("DC", "title")
        book_title = " ".join(str(meta[0][0]).split()) if meta else ""
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{filename} is a damaged EPUB ({type(exc).__name__}: {exc})") from exc
    return LoadedDocument(source=source, title=book_title, kind="epub", sections=sections)


def _toc_titles(toc: Any, out: dict[str, str], depth: int) -> None:
    if depth > 16:
        return
    for entry in toc or []:
        if isinstance(entry, tuple | list) and len(entry) == 2:
            _toc_titles([entry[0]], out, depth + 1)
            _toc_titles(entry[1], out, depth + 1)
            continue
        href = getattr(entry, "href", "") or ""
        title = " ".join(str(getattr(entry, "title", "") or "").split())
        name = posixpath.normpath(href.split("#", 1)[0]) if href else ""
        if name and title:
            out.setdefault(name, title)
