"""The project's own small data types, shared by ingest, store and the answering core.

Public signatures use these, never Chroma, llama.cpp or discord types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def content_hash(text: str) -> str:
    """A short, stable hash of a chunk's text (its identity inside a document)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# The scope of a document readable by every member of its guild (CLI ingests, public Discord ingests,
# and every document stored before scopes existed); any other scope is a Discord channel or thread id.
GUILD_SCOPE = "guild"
# Extra metadata key of a document with OCR'd text: "*" (all of it, an image) or its pages, "3,5,7".
OCR_PAGES_KEY = "ocr_pages"
# The end of the heading of a section read by OCR inside a document with typed text (a picture in a
# Word or PowerPoint file): "Design (OCR)", or just "(OCR)" where the picture has no heading.
OCR_MARK = "(OCR)"


def scope_of(extra: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """The scope recorded in a document's or chunk's extra metadata ("guild" when none is)."""
    items = extra if isinstance(extra, Mapping) else dict(extra)
    return str(items.get("scope") or GUILD_SCOPE)


def document_id_for(source: str) -> str:
    """A document's id derives from its source (path, URL or Discord attachment key)."""
    return "d" + hashlib.sha256(source.encode("utf-8")).hexdigest()[:15]


@dataclass(frozen=True, slots=True)
class Section:
    """A piece of a loaded document before chunking: one PDF page or one Markdown section."""

    text: str
    page: int | None = None  # 1-based PDF page number
    heading: str = ""  # heading path, e.g. "Setup > Discord"


@dataclass(slots=True)
class LoadedDocument:
    """What a loader returns: the document's text split into pages or sections."""

    source: str
    title: str
    kind: str  # "pdf", "markdown", "text", "html"
    sections: list[Section]
    pages: int = 0  # PDF page count (0 for other kinds)
    pages_without_text: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # e.g. {"jump_url": ...}

    @property
    def doc_id(self) -> str:
        return document_id_for(self.source)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document sized for the embedding model, with everything a citation needs."""

    doc_id: str
    index: int
    text: str  # the text shown and quoted (no heading prefix)
    title: str
    source: str
    page: int | None = None
    section: str = ""
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def hash(self) -> str:
        return content_hash(self.text)

    @property
    def id(self) -> str:
        return f"{self.doc_id}:{self.hash}"

    @property
    def embed_text(self) -> str:
        """What the encoder sees: title and section give context to a bare passage."""
        head = " > ".join(p for p in (self.title, self.section) if p)
        return f"{head}\n{self.text}" if head else self.text

    @property
    def scope(self) -> str:
        """Who may read this chunk: "guild", or the id of the channel or thread it came from."""
        return scope_of(self.extra)

    @property
    def where(self) -> str:
        """Human-readable location: 'p. 3', 'p. 3 (OCR)', 'Setup > Discord', or ''."""
        ocr = self.is_ocr
        if self.page is not None:
            if dict(self.extra).get("page_label") == "slide":  # decks (pptx, odp): page is the slide number
                if self.section == OCR_MARK:  # a picture on a slide without a title
                    return f"slide {self.page} {OCR_MARK}"
                return f"slide {self.page}" + (f" · {self.section}" if self.section else "")
            return f"p. {self.page} (OCR)" if ocr else f"p. {self.page}"
        # the heading path usually starts with the document's own title: do not repeat it
        prefix = f"{self.title} > "
        where = self.section[len(prefix) :] if self.section.startswith(prefix) else self.section
        return f"{where} (OCR)".strip() if ocr and not where.endswith(OCR_MARK) else where

    @property
    def is_ocr(self) -> bool:
        """The chunk's text was read by OCR: its document's `ocr_pages` extra is "*" or lists its page,
        or its section is a picture's (its heading ends with `OCR_MARK`)."""
        if self.section == OCR_MARK or self.section.endswith(" " + OCR_MARK):
            return True
        pages = dict(self.extra).get(OCR_PAGES_KEY, "")
        if not pages:
            return False
        return pages == "*" or (self.page is not None and str(self.page) in pages.split(","))


@dataclass(slots=True)
class Hit:
    """A retrieved chunk with its scores."""

    chunk: Chunk
    score: float  # fused or reranked score used for ordering
    dense: float | None = None  # cosine similarity, when dense retrieval saw it
    lexical: float | None = None  # BM25 score, when lexical retrieval saw it


@dataclass(slots=True)
class DocumentInfo:
    """One stored document, as listed by `sources`."""

    doc_id: str
    title: str
    source: str
    kind: str
    chunks: int
    pages: int
    ingested_at: str
    content_hash: str
    chunk_ids: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        """Who may read this document: "guild", or the id of the channel or thread it came from."""
        return scope_of(self.extra)
