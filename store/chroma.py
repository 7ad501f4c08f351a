"""Chroma, wrapped: one chunk collection and one manifest collection per namespace.

Consistency model
-----------------
Chroma has no transactions, so a document's *manifest* record (its list of live chunk
ids) is the commit point. Writing a document: add the new chunks, then replace the
manifest record, then delete the chunks the manifest no longer names. Readers only
return chunks a manifest names, so a crash half-way leaves the previous version
answerable and the leftovers invisible until the next write sweeps them.

Every commit also bumps a generation record. A long-lived embedded client does not
see vectors another process wrote to the same folder, so readers compare the
generation (cheap, read through SQLite, which *is* shared) and reopen the client
when it moved.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from store.types import Chunk, DocumentInfo, Hit

log = logging.getLogger(__name__)

_GEN_ID = "__generation__"
_NAMESPACE_RE = re.compile(r"[^a-z0-9_-]+")


class StoreError(RuntimeError):
    pass


def namespace_key(namespace: str) -> str:
    """Namespaces become collection names: lower-case letters, digits, _ and -."""
    key = _NAMESPACE_RE.sub("-", namespace.lower()).strip("-_")
    if not key:
        raise StoreError(f"invalid namespace {namespace!r}")
    return key[:60]


@dataclass(frozen=True, slots=True)
class ChromaLocation:
    """Where the store lives: a folder (embedded) or a server."""

    path: Path | None = None
    host: str | None = None
    port: int = 8000

    @property
    def describe(self) -> str:
        return f"chroma server {self.host}:{self.port}" if self.host else f"embedded chroma at {self.path}"


def parse_host(host: str, default_port: int) -> tuple[str, int, bool]:
    """'h', 'h:p' or 'http[s]://h[:p]' -> (host, port, ssl)."""
    ssl = host.startswith("https://")
    bare = re.sub(r"^https?://", "", host).rstrip("/")
    if ":" in bare:
        name, port = bare.rsplit(":", 1)
        return name, int(port), ssl
    return bare, default_port, ssl


class ChromaStore:
    """Chunks and manifests in Chroma. Thread-safe; methods block (run them off the event loop)."""

    def __init__(self, location: ChromaLocation, *, refresh_interval: float = 0.5) -> None:
        self.location = location
        self.refresh_interval = refresh_interval
        self._lock = threading.RLock()
        self._client: Any = None
        self._generations: dict[str, str] = {}
        self._checked_at: dict[str, float] = {}
        self._live_ids: dict[str, set[str]] = {}
        self._open()

    # -- client lifecycle -------------------------------------------------------
    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        try:
            if self.location.host:
                host, port, ssl = parse_host(self.location.host, self.location.port)
                self._client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=chroma_settings)
                self._client.heartbeat()
            else:
                assert self.location.path is not None
                self.location.path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.location.path), settings=chroma_settings)
        except Exception as exc:
            raise StoreError(
                f"cannot open {self.location.describe}: {exc}. "
                + ("Is `chroma run` up? Check CHROMA_HOST." if self.location.host else "Check RAGCORD_DATA_DIR.")
            ) from exc
        self._opened_at = time.time()
        self._generations.clear()
        self._live_ids.clear()

    def _reopen(self) -> None:
        """Drop the cached embedded client so queries see other processes' writes."""
        from chromadb.api.shared_system_client import SharedSystemClient

        log.info("store changed on disk; reopening %s", self.location.describe)
        try:
            self._client.close()
        except Exception:  # close() is best effort on old clients
            log.debug("closing chroma client failed", exc_info=True)
        SharedSystemClient.clear_system_cache()
        self._open()

    def close(self) -> None:
        with self._lock:
            try:
                self._client.close()
            except Exception:
                log.debug("closing chroma client failed", exc_info=True)

    @property
    def max_batch_size(self) -> int:
        try:
            return int(self._client.get_max_batch_size())
        except Exception:
            return 5000

    def _chunks(self, ns: str, create: bool = False) -> Any:
        name = f"rc_{namespace_key(ns)}"
        if create:
            return self._client.get_or_create_collection(
                name, embedding_function=None, metadata={"hnsw:space": "cosine", "ragcord:namespace": ns}
            )
        try:
            return self._client.get_collection(name, embedding_function=None)
        except Exception:
            return None

    def _manifest(self, ns: str, create: bool = False) -> Any:
        name = f"rc_{namespace_key(ns)}_docs"
        if create:
            return self._client.get_or_create_collection(name, embedding_function=None)
        try:
            return self._client.get_collection(name, embedding_function=None)
        except Exception:
            return None

    # -- generation / freshness ---------------------------------------------------
    def generation(self, ns: str) -> tuple[str, float]:
        """(generation id, wall time of the commit) of a namespace; ("", 0) if empty."""
        manifest = self._manifest(ns)
        if manifest is None:
            return "", 0.0
        got = manifest.get(ids=[_GEN_ID], include=["metadatas"])
        metas = got.get("metadatas") or []
        if not metas or not metas[0]:
            return "", 0.0
        return str(metas[0].get("generation", "")), float(metas[0].get("at", 0.0))

    def _bump_generation(self, ns: str) -> str:
        gen = uuid.uuid4().hex
        self._manifest(ns, create=True).upsert(
            ids=[_GEN_ID], embeddings=[[0.0]], metadatas=[{"generation": gen, "at": time.time()}], documents=[""]
        )
        self._generations[ns] = gen
        self._live_ids.pop(ns, None)
        return gen

    def refresh(self, ns: str, *, force: bool = False) -> str:
        """Make sure this process sees the namespace as committed by any process."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked_at.get(ns, -1e9) < self.refresh_interval:
                return self._generations.get(ns, "")
            self._checked_at[ns] = now
            gen, committed_at = self.generation(ns)
            known = self._generations.get(ns)
            # Another process committed since this client opened: its vectors are invisible
            # to us until the client is reopened (embedded mode only; a server is shared).
            stale = known != gen if known is not None else committed_at >= self._opened_at - 1.0
            if stale and gen and not self.location.host:
                self._reopen()
            if known != gen:
                self._live_ids.pop(ns, None)
            self._generations[ns] = gen
            return gen

    # -- documents (manifest) -------------------------------------------------------
    def documents(self, ns: str) -> list[DocumentInfo]:
        with self._lock:
            self.refresh(ns)
            manifest = self._manifest(ns)
            if manifest is None:
                return []
            got = manifest.get(include=["metadatas", "documents"])
            docs = [
                _info_from_record(i, m, d)
                for i, m, d in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
                if i != _GEN_ID
            ]
            return sorted(docs, key=lambda d: (d.title.lower(), d.source))

    def document(self, ns: str, doc_id: str) -> DocumentInfo | None:
        with self._lock:
            manifest = self._manifest(ns)
            if manifest is None:
                return None
            got = manifest.get(ids=[doc_id], include=["metadatas", "documents"])
            if not got["ids"]:
                return None
            return _info_from_record(got["ids"][0], got["metadatas"][0], got["documents"][0])

    def live_ids(self, ns: str) -> set[str]:
        with self._lock:
            self.refresh(ns)
            if ns not in self._live_ids:
                self._live_ids[ns] = {cid for d in self.documents(ns) for cid in d.chunk_ids}
            return self._live_ids[ns]

    # -- writing ----------------------------------------------------------------------
    def existing_ids(self, ns: str, ids: Sequence[str]) -> set[str]:
        col = self._chunks(ns)
        if col is None or not ids:
            return set()
        found: set[str] = set()
        for batch in _batched(list(ids), self.max_batch_size):
            found.update(col.get(ids=batch, include=[])["ids"])
        return found

    def add_chunks(self, ns: str, chunks: Sequence[Chunk], vectors: np.ndarray, ingested_at: str) -> None:
        """Upsert chunks with their vectors (not yet live until `commit_document`)."""
        if not chunks:
            return
        with self._lock:
            col = self._chunks(ns, create=True)
            step = self.max_batch_size
            for start in range(0, len(chunks), step):
                part = chunks[start : start + step]
                col.upsert(
                    ids=[c.id for c in part],
                    embeddings=vectors[start : start + step].tolist(),
                    documents=[c.text for c in part],
                    metadatas=[_chunk_metadata(c, ingested_at) for c in part],
                )

    def update_chunk_metadata(self, ns: str, chunks: Sequence[Chunk], ingested_at: str) -> None:
        """Chunks whose text is unchanged but whose position (index, page, section) moved."""
        if not chunks:
            return
        with self._lock:
            col = self._chunks(ns, create=True)
            for batch in _batched(list(chunks), self.max_batch_size):
                col.update(ids=[c.id for c in batch], metadatas=[_chunk_metadata(c, ingested_at) for c in batch])

    def delete_chunks(self, ns: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            col = self._chunks(ns)
            if col is None:
                return
            for batch in _batched(ids, self.max_batch_size):
                col.delete(ids=batch)

    def commit_document(self, ns: str, info: DocumentInfo) -> None:
        """The commit point: the manifest now names exactly `info.chunk_ids`."""
        self.commit_documents(ns, [info])

    def commit_documents(self, ns: str, infos: Sequence[DocumentInfo]) -> None:
        """Commit several documents in one manifest write and one generation bump.

        Each document's switch is still its own record: a reader sees every document
        either at its old version or its new one. Per-document commits cost two Chroma
        writes (about 45 ms) each, which made them most of an ingest's writing time.
        """
        if not infos:
            return
        with self._lock:
            manifest = self._manifest(ns, create=True)
            for batch in _batched(list(infos), self.max_batch_size):
                manifest.upsert(
                    ids=[i.doc_id for i in batch],
                    embeddings=[[0.0]] * len(batch),
                    metadatas=[_info_metadata(i) for i in batch],
                    documents=[json.dumps(i.chunk_ids) for i in batch],
                )
            self._bump_generation(ns)

    def remove_document(self, ns: str, doc_id: str) -> DocumentInfo | None:
        """Forget a document: manifest first (it stops being answerable), then its chunks."""
        with self._lock:
            self.refresh(ns, force=True)
            info = self.document(ns, doc_id)
            if info is None:
                return None
            manifest = self._manifest(ns)
            manifest.delete(ids=[doc_id])
            self._bump_generation(ns)
            self.delete_chunks(ns, self.orphan_ids(ns, doc_id, keep=()))
            return info

    def orphan_ids(self, ns: str, doc_id: str, keep: Iterable[str]) -> list[str]:
        """Chunk ids stored for `doc_id` that are not in `keep` (leftovers of older versions)."""
        return self.orphans(ns, {doc_id: keep})

    def orphans(self, ns: str, keep: Mapping[str, Iterable[str]]) -> list[str]:
        """Chunk ids stored for the documents in `keep` that their entry does not name."""
        col = self._chunks(ns)
        if col is None or not keep:
            return []
        allowed = {doc: set(ids) for doc, ids in keep.items()}
        out: list[str] = []
        for docs in _batched(list(allowed), 500):
            where: Any = {"doc_id": docs[0]} if len(docs) == 1 else {"doc_id": {"$in": docs}}
            got = col.get(where=where, include=["metadatas"])
            for cid, meta in zip(got["ids"], got["metadatas"] or [], strict=False):
                if cid not in allowed.get(str((meta or {}).get("doc_id")), ()):
                    out.append(cid)
        return out

    # -- reading ------------------------------------------------------------------------
    def count(self, ns: str) -> int:
        return len(self.live_ids(ns))

    def namespaces(self) -> list[str]:
        names = []
        for col in self._client.list_collections():
            name = col if isinstance(col, str) else col.name
            if name.startswith("rc_") and not name.endswith("_docs"):
                names.append(name[3:])
        return sorted(names)

    def query(self, ns: str, vector: np.ndarray, k: int) -> list[Hit]:
        """Nearest live chunks by cosine similarity (highest first)."""
        with self._lock:
            live = self.live_ids(ns)
            col = self._chunks(ns)
            if col is None or not live:
                return []
            fetch = min(len(live) + 8, max(k * 2, k + 8))
            res = col.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32).tolist()],
                n_results=fetch,
                include=["documents", "metadatas", "distances"],
            )
            hits = []
            for cid, text, meta, dist in zip(
                res["ids"][0], res["documents"][0], res["metadatas"][0], res["distances"][0], strict=True
            ):
                if cid not in live:
                    continue
                sim = 1.0 - float(dist)
                hits.append(Hit(chunk=_chunk_from_record(text, meta), score=sim, dense=sim))
            return hits[:k]

    def get_chunks(self, ns: str, ids: Sequence[str]) -> list[Chunk]:
        with self._lock:
            col = self._chunks(ns)
            if col is None or not ids:
                return []
            by_id: dict[str, Chunk] = {}
            for batch in _batched(list(ids), self.max_batch_size):
                got = col.get(ids=batch, include=["documents", "metadatas"])
                for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                    by_id[cid] = _chunk_from_record(text, meta)
            return [by_id[i] for i in ids if i in by_id]

    def get_vectors(self, ns: str, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of `ids`, in that order (rows of zeros for unknown ids)."""
        with self._lock:
            col = self._chunks(ns)
            if col is None or not ids:
                return np.zeros((0, 0), dtype=np.float32)
            got = col.get(ids=list(ids), include=["embeddings"])
            by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
            dim = len(next(iter(by_id.values()))) if by_id else 1
            return np.asarray([by_id.get(i, np.zeros(dim)) for i in ids], dtype=np.float32)

    def iter_live_texts(self, ns: str) -> Iterator[tuple[str, str]]:
        """(chunk id, text) of every live chunk: what the lexical index is built from."""
        with self._lock:
            live = sorted(self.live_ids(ns))
            col = self._chunks(ns)
            if col is None:
                return
            for batch in _batched(live, self.max_batch_size):
                got = col.get(ids=batch, include=["documents"])
                yield from zip(got["ids"], got["documents"], strict=True)


def _batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _chunk_metadata(chunk: Chunk, ingested_at: str) -> dict[str, Any]:
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
    }


def _chunk_from_record(text: str, meta: dict[str, Any]) -> Chunk:
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


def _info_metadata(info: DocumentInfo) -> dict[str, Any]:
    return {
        "title": info.title,
        "source": info.source,
        "kind": info.kind,
        "chunks": info.chunks,
        "pages": info.pages,
        "ingested_at": info.ingested_at,
        "content_hash": info.content_hash,
        "extra": json.dumps(info.extra),
    }


def _info_from_record(doc_id: str, meta: dict[str, Any], document: str | None) -> DocumentInfo:
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
