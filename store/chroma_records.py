"""Chroma records <-> the project's dataclasses (chunk and manifest metadata)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from store.types import Chunk, DocumentInfo


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def chunk_metadata(chunk: Chunk, ingested_at: str) -> dict[str, Any]:
    return {
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.index,
        "title": chunk.title,
        "source": chunk.source,
        "page": chunk.page if chunk.page is not None else -1,
        "section": chunk.section,
        "content_hash": chunk.hash,
        "ingested_at": ingested_at,
        "extra": json.dumps(dict(chunk.extra)),
        "scope": chunk.scope,  # its own key, so a query can filter on it (`extra` is a JSON string)
    }


def chunk_from_record(text: str, meta: dict[str, Any]) -> Chunk:
    page = int(meta.get("page", -1))
    extra = json.loads(meta.get("extra") or "{}")
    return Chunk(
        doc_id=str(meta["doc_id"]),
        index=int(meta.get("chunk_index", 0)),
        text=text,
        title=str(meta.get("title", "")),
        source=str(meta.get("source", "")),
        page=page if page >= 0 else None,
        section=str(meta.get("section", "")),
        extra=tuple(sorted(extra.items())),
    )


def info_metadata(info: DocumentInfo) -> dict[str, Any]:
    return {
        "title": info.title,
        "source": info.source,
        "kind": info.kind,
        "chunks": info.chunks,
        "pages": info.pages,
        "ingested_at": info.ingested_at,
        "content_hash": info.content_hash,
        "extra": json.dumps(info.extra),
        "scope": info.scope,
    }


def info_from_record(doc_id: str, meta: dict[str, Any], document: str | None) -> DocumentInfo:
    return DocumentInfo(
        doc_id=doc_id,
        title=str(meta.get("title", "")),
        source=str(meta.get("source", "")),
        kind=str(meta.get("kind", "")),
        chunks=int(meta.get("chunks", 0)),
        pages=int(meta.get("pages", 0)),
        ingested_at=str(meta.get("ingested_at", "")),
        content_hash=str(meta.get("content_hash", "")),
        chunk_ids=json.loads(document or "[]"),
        extra=json.loads(meta.get("extra") or "{}"),
    )
