"""Chroma, wrapped: a chunk collection and a manifest collection per namespace.

Consistency model
-----------------
Chroma has no transactions, so a document's *manifest* record (its list of live chunk
ids) is the commit point. Writing a document: add the new chunks, then replace the
manifest record, then delete the chunks the manifest no longer names. Readers only
return chunks a manifest names, so a crash half-way leaves the previous version
answerable and the leftovers invisible; the next writer sweeps them (the writer lock
notices the crash, see store/writer_lock.py).

The manifest also holds one *index record*: the generation (bumped by every commit),
which chunk collection is live, and which encoder made its vectors (and their
dimension). Questions and ingests check the encoder (`EncoderMismatch`), and
`reindex` fills a new collection from the stored texts and then switches the record
in one write, so the previous vectors stay answerable until the switch.

A long-lived embedded client does not see vectors another process wrote to the same
folder, so readers compare the generation (cheap, read through SQLite, which *is*
shared) and reopen their own client when it moved.

Every public method runs under the store's lock (the client can be reopened at any
time) and retries outages (store/chroma_client.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from store.chroma_client import ChromaConnection, ChromaLocation, guarded, is_not_found, parse_host
from store.chroma_records import batched, chunk_from_record, chunk_metadata, info_from_record, info_metadata
from store.namespaces import namespace_key
from store.protocol import EncoderMismatch, ReindexProgress, StoreError, StoreUnavailable
from store.types import Chunk, DocumentInfo, Hit
from store.writer_lock import WriterLock

__all__ = ["ChromaLocation", "ChromaStore", "StoreError", "StoreUnavailable", "namespace_key", "parse_host"]

log = logging.getLogger(__name__)

_GEN_ID = "__generation__"


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """The namespace's index record: generation, live chunk collection, encoder and dimension."""

    generation: str = ""
    at: float = 0.0
    collection: str = ""
    encoder: str = ""
    dim: int = 0


def mismatch_message(ns: str, recorded: str, configured: str) -> str:
    return (
        f"namespace '{ns}' was embedded by {recorded}, but the configured encoder is {configured}: "
        f"run `ragcord reindex --namespace {ns}` to re-embed it with the configured one "
        "(or set RAGCORD_EMBED_MODEL / RAGCORD_EMBED_BACKEND back)"
    )


class ChromaStore:
    """Chunks and manifests in Chroma. Thread-safe; methods block (run them off the event loop).

    `encoder` is the identity (`store.embedder.encoder_identity`) of the encoder whose
    vectors this process passes to `query` and `add_chunks`; None skips the check
    (tools that only list or forget documents).
    """

    def __init__(
        self,
        location: ChromaLocation,
        *,
        refresh_interval: float = 0.5,
        encoder: str | None = None,
        lock_dir: Path | None = None,
        writer_wait_s: float = 10.0,
    ) -> None:
        self.location = location
        self.refresh_interval = refresh_interval
        self.encoder = encoder
        self._lock = threading.RLock()
        self._depth = 0  # nesting of guarded calls (only the outermost retries)
        self._conn = ChromaConnection(location)
        self._index: dict[str, IndexRecord] = {}
        self._generations: dict[str, str] = {}  # the generation this client is known to see
        self._checked_at: dict[str, float] = {}
        self._live_ids: dict[str, set[str]] = {}
        folder = lock_dir or location.path
        self._writer = WriterLock(folder, timeout=writer_wait_s) if folder is not None else None
        self._conn.open()

    # -- client lifecycle -------------------------------------------------------
    @property
    def _client(self) -> Any:
        return self._conn.client

    @property
    def _opened_at(self) -> float:
        return self._conn.opened_at

    def _after_reopen(self) -> None:
        self._index.clear()
        self._generations.clear()
        self._live_ids.clear()

    @guarded
    def _reopen(self) -> None:
        """Replace this store's client so queries see other processes' writes (embedded mode)."""
        log.info("store changed on disk; reopening %s", self.location.describe)
        self._conn.reopen()
        self._after_reopen()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def max_batch_size(self) -> int:
        try:
            return int(self._client.get_max_batch_size())
        except Exception:
            return 5000

    def _collection(self, name: str, create: bool = False, metadata: dict[str, Any] | None = None) -> Any:
        if create:
            return self._client.get_or_create_collection(name, embedding_function=None, metadata=metadata)
        try:
            return self._client.get_collection(name, embedding_function=None)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    def _chunks(self, ns: str, create: bool = False) -> Any:
        """The namespace's live chunk collection."""
        name = self._record(ns).collection or f"rc_{namespace_key(ns)}"
        meta = {"hnsw:space": "cosine", "ragcord:namespace": ns}
        if create and self.encoder:
            meta["ragcord:encoder"] = self.encoder
        return self._collection(name, create, meta if create else None)

    def _manifest(self, ns: str, create: bool = False) -> Any:
        return self._collection(f"rc_{namespace_key(ns)}_docs", create)

    # -- the index record ---------------------------------------------------------
    @guarded
    def generation(self, ns: str) -> tuple[str, float]:
        """(generation id, wall time of the commit) of a namespace; ("", 0) if empty."""
        record = self._read_record(ns)
        return record.generation, record.at

    def _read_record(self, ns: str) -> IndexRecord:
        manifest = self._manifest(ns)
        if manifest is None:
            return IndexRecord()
        got = manifest.get(ids=[_GEN_ID], include=["metadatas"])
        metas = got.get("metadatas") or []
        meta = metas[0] if metas and metas[0] else {}
        return IndexRecord(
            generation=str(meta.get("generation", "")),
            at=float(meta.get("at", 0.0)),
            collection=str(meta.get("collection", "")),
            encoder=str(meta.get("encoder", "")),
            dim=int(meta.get("dim", 0)),
        )

    def _record(self, ns: str) -> IndexRecord:
        if ns not in self._index:
            self._index[ns] = self._read_record(ns)
        return self._index[ns]

    def _write_record(self, ns: str, record: IndexRecord) -> None:
        meta = {"generation": record.generation, "at": record.at, "collection": record.collection}
        meta.update({"encoder": record.encoder, "dim": record.dim})
        self._manifest(ns, create=True).upsert(ids=[_GEN_ID], embeddings=[[0.0]], metadatas=[meta], documents=[""])
        self._index[ns] = record
        self._live_ids.pop(ns, None)

    def _bump_generation(self, ns: str, **changes: Any) -> str:
        gen = uuid.uuid4().hex
        self._write_record(ns, replace(self._record(ns), generation=gen, at=time.time(), **changes))
        self._generations[ns] = gen
        return gen

    @guarded
    def refresh(self, ns: str, *, force: bool = False) -> str:
        """Make sure this process sees the namespace as committed by any process."""
        now = time.monotonic()
        known = self._generations.get(ns)
        if not force and known is not None and now - self._checked_at.get(ns, -1e9) < self.refresh_interval:
            return known
        self._checked_at[ns] = now
        record = self._read_record(ns)
        # Another process committed since this client opened: its vectors are invisible
        # to us until the client is reopened (embedded mode only; a server is shared).
        stale = known != record.generation if known is not None else record.at >= self._opened_at - 1.0
        if stale and record.generation and not self.location.host:
            self._reopen()
        if known != record.generation:
            self._live_ids.pop(ns, None)
        self._generations[ns] = record.generation
        self._index[ns] = record
        return record.generation

    # -- encoders -------------------------------------------------------------------
    @guarded
    def check_encoder(self, ns: str, encoder: str) -> None:
        """Before writing with `encoder`: raise `EncoderMismatch` if the namespace holds another's vectors.

        A namespace without a recorded encoder (new, or written before encoders were
        recorded) takes this one; an empty namespace switches to a fresh collection.
        """
        self.refresh(ns, force=True)
        record = self._record(ns)
        if record.encoder == encoder:
            return
        if record.encoder and self.live_ids(ns):
            raise EncoderMismatch(mismatch_message(ns, record.encoder, encoder))
        if record.encoder:  # nothing live: start over in a collection of the new encoder
            self._bump_generation(ns, collection=_new_collection_name(ns), encoder=encoder, dim=0)
            return
        if self.live_ids(ns):
            log.warning("namespace %s has no recorded encoder; recording %s", ns, encoder)
        self._bump_generation(ns, encoder=encoder)

    def _check_vectors(self, ns: str, dim: int) -> None:
        record = self._record(ns)
        if self.encoder and record.encoder and record.encoder != self.encoder:
            raise EncoderMismatch(mismatch_message(ns, record.encoder, self.encoder))
        if record.dim and dim != record.dim:
            shown = self.encoder or "the configured encoder"
            raise EncoderMismatch(
                mismatch_message(ns, record.encoder or f"a {record.dim}-d encoder", f"{shown} ({dim}-d)")
            )

    # -- documents (manifest) -------------------------------------------------------
    @guarded
    def documents(self, ns: str) -> list[DocumentInfo]:
        self.refresh(ns)
        manifest = self._manifest(ns)
        if manifest is None:
            return []
        got = manifest.get(include=["metadatas", "documents"])
        docs = [
            info_from_record(i, m, d)
            for i, m, d in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
            if i != _GEN_ID
        ]
        return sorted(docs, key=lambda d: (d.title.lower(), d.source))

    @guarded
    def document(self, ns: str, doc_id: str) -> DocumentInfo | None:
        manifest = self._manifest(ns)
        if manifest is None:
            return None
        got = manifest.get(ids=[doc_id], include=["metadatas", "documents"])
        if not got["ids"]:
            return None
        return info_from_record(got["ids"][0], got["metadatas"][0], got["documents"][0])

    @guarded
    def live_ids(self, ns: str) -> set[str]:
        self.refresh(ns)
        if ns not in self._live_ids:
            self._live_ids[ns] = {cid for d in self.documents(ns) for cid in d.chunk_ids}
        return self._live_ids[ns]

    # -- writing ----------------------------------------------------------------------
    def writer(self, ns: str) -> AbstractContextManager[None]:
        """Hold the data directory's writer lock while writing `ns` (ingest, forget, reindex).

        Waits up to RAGCORD_WRITER_WAIT_S for another process, then raises `StoreBusy`.
        After a writer that crashed, sweeps the leftovers it may have left first.
        """
        if self._writer is None:
            return nullcontext()
        return self._writer.hold(ns, recover=self._recover)

    def _recover(self, namespaces: list[str]) -> None:
        targets = self.namespaces() if "*" in namespaces else namespaces
        for ns in targets:
            removed = self.sweep_orphans(ns)
            if removed:
                log.warning("swept %d chunks a crashed writer left in %s", removed, ns)

    @guarded
    def sweep_orphans(self, ns: str) -> int:
        """Delete every stored chunk no manifest names, and chunk collections no longer live."""
        self.refresh(ns, force=True)
        live = self.live_ids(ns)
        removed = 0
        col = self._chunks(ns)
        if col is not None:
            stray = [cid for cid in col.get(include=[])["ids"] if cid not in live]
            for batch in batched(stray, self.max_batch_size):
                col.delete(ids=batch)
            removed = len(stray)
        current = self._record(ns).collection or f"rc_{namespace_key(ns)}"
        prefix = f"rc_{namespace_key(ns)}__"
        for name in self._collection_names():
            if name.startswith(prefix) and name != current:
                log.info("dropping %s, left by an unfinished reindex", name)
                self._client.delete_collection(name)
        return removed

    def _collection_names(self) -> list[str]:
        return [c if isinstance(c, str) else c.name for c in self._client.list_collections()]

    @guarded
    def existing_ids(self, ns: str, ids: Sequence[str]) -> set[str]:
        col = self._chunks(ns)
        if col is None or not ids:
            return set()
        found: set[str] = set()
        for batch in batched(list(ids), self.max_batch_size):
            found.update(col.get(ids=batch, include=[])["ids"])
        return found

    @guarded
    def add_chunks(self, ns: str, chunks: Sequence[Chunk], vectors: np.ndarray, ingested_at: str) -> None:
        """Upsert chunks with their vectors (not yet live until `commit_document`)."""
        if not chunks:
            return
        self._check_vectors(ns, int(vectors.shape[1]))
        if not self._record(ns).dim:
            self._write_record(ns, replace(self._record(ns), dim=int(vectors.shape[1])))
        col = self._chunks(ns, create=True)
        step = self.max_batch_size
        for start in range(0, len(chunks), step):
            part = chunks[start : start + step]
            col.upsert(
                ids=[c.id for c in part],
                embeddings=vectors[start : start + step].tolist(),
                documents=[c.text for c in part],
                metadatas=[chunk_metadata(c, ingested_at) for c in part],
            )

    @guarded
    def chunk_metadata(self, ns: str, ids: Sequence[str]) -> dict[str, dict[str, object]]:
        """Stored metadata of `ids` (to restore it if a commit fails)."""
        col = self._chunks(ns)
        if col is None or not ids:
            return {}
        out: dict[str, dict[str, object]] = {}
        for batch in batched(list(ids), self.max_batch_size):
            got = col.get(ids=batch, include=["metadatas"])
            out.update({cid: dict(meta or {}) for cid, meta in zip(got["ids"], got["metadatas"], strict=True)})
        return out

    @guarded
    def update_chunk_metadata(self, ns: str, chunks: Sequence[Chunk], ingested_at: str) -> None:
        """Chunks whose text is unchanged but whose position (index, page, section) moved."""
        if not chunks:
            return
        col = self._chunks(ns, create=True)
        for batch in batched(list(chunks), self.max_batch_size):
            col.update(ids=[c.id for c in batch], metadatas=[chunk_metadata(c, ingested_at) for c in batch])

    @guarded
    def restore_chunk_metadata(self, ns: str, saved: Mapping[str, Mapping[str, object]]) -> None:
        """Put back metadata saved by `chunk_metadata` (the rollback of `update_chunk_metadata`)."""
        col = self._chunks(ns)
        if col is None or not saved:
            return
        for batch in batched(list(saved), self.max_batch_size):
            col.update(ids=batch, metadatas=[dict(saved[cid]) for cid in batch])

    @guarded
    def delete_chunks(self, ns: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if not ids:
            return
        col = self._chunks(ns)
        if col is None:
            return
        for batch in batched(ids, self.max_batch_size):
            col.delete(ids=batch)

    def commit_document(self, ns: str, info: DocumentInfo) -> None:
        """The commit point: the manifest now names exactly `info.chunk_ids`."""
        self.commit_documents(ns, [info])

    @guarded
    def commit_documents(self, ns: str, infos: Sequence[DocumentInfo]) -> None:
        """Commit several documents in one manifest write and one generation bump.

        Each document's switch is still its own record: a reader sees every document
        either at its old version or its new one. Per-document commits cost two Chroma
        writes (about 45 ms) each, which made them most of an ingest's writing time.
        """
        if not infos:
            return
        manifest = self._manifest(ns, create=True)
        for batch in batched(list(infos), self.max_batch_size):
            manifest.upsert(
                ids=[i.doc_id for i in batch],
                embeddings=[[0.0]] * len(batch),
                metadatas=[info_metadata(i) for i in batch],
                documents=[json.dumps(i.chunk_ids) for i in batch],
            )
        self._bump_generation(ns)

    @guarded
    def remove_document(self, ns: str, doc_id: str) -> DocumentInfo | None:
        """Forget a document: manifest first (it stops being answerable), then its chunks."""
        self.refresh(ns, force=True)
        info = self.document(ns, doc_id)
        if info is None:
            return None
        self._manifest(ns).delete(ids=[doc_id])
        self._bump_generation(ns)
        self.delete_chunks(ns, self.orphan_ids(ns, doc_id, keep=()))
        return info

    def orphan_ids(self, ns: str, doc_id: str, keep: Iterable[str]) -> list[str]:
        """Chunk ids stored for `doc_id` that are not in `keep` (leftovers of older versions)."""
        return self.orphans(ns, {doc_id: keep})

    @guarded
    def orphans(self, ns: str, keep: Mapping[str, Iterable[str]]) -> list[str]:
        """Chunk ids stored for the documents in `keep` that their entry does not name."""
        col = self._chunks(ns)
        if col is None or not keep:
            return []
        allowed = {doc: set(ids) for doc, ids in keep.items()}
        out: list[str] = []
        for docs in batched(list(allowed), 500):
            where: Any = {"doc_id": docs[0]} if len(docs) == 1 else {"doc_id": {"$in": docs}}
            got = col.get(where=where, include=["metadatas"])
            for cid, meta in zip(got["ids"], got["metadatas"] or [], strict=False):
                if cid not in allowed.get(str((meta or {}).get("doc_id")), ()):
                    out.append(cid)
        return out

    # -- reindex --------------------------------------------------------------------------
    def reindex(
        self,
        ns: str,
        embed: Callable[[Sequence[str]], np.ndarray],
        encoder: str,
        *,
        batch: int = 256,
        progress: ReindexProgress | None = None,
    ) -> int:
        """Re-embed every live chunk of `ns` with `embed` (texts -> vectors) into a new collection,
        then switch to it in one write. Questions keep using the old vectors until then.
        The caller holds `writer(ns)`. Returns the number of chunks embedded."""
        from store.reindex import rebuild

        return rebuild(self, ns, embed, encoder, batch=batch, progress=progress)

    @guarded
    def _new_chunk_collection(self, ns: str, encoder: str) -> tuple[str, list[str]]:
        """(name of a new empty chunk collection for `encoder`, sorted live ids)."""
        self.refresh(ns, force=True)
        name = _new_collection_name(ns)
        meta = {"hnsw:space": "cosine", "ragcord:namespace": ns, "ragcord:encoder": encoder}
        self._collection(name, create=True, metadata=meta)
        return name, sorted(self.live_ids(ns))

    @guarded
    def _read_records(self, ns: str, ids: Sequence[str]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """(ids, texts, metadatas) of stored chunks, for a reindex."""
        got = self._chunks(ns).get(ids=list(ids), include=["documents", "metadatas"])
        return list(got["ids"]), list(got["documents"]), [dict(m or {}) for m in got["metadatas"]]

    @guarded
    def _write_records(
        self, target: str, ids: list[str], texts: list[str], metas: list[dict[str, Any]], vectors: np.ndarray
    ) -> None:
        self._collection(target).upsert(ids=ids, embeddings=vectors.tolist(), documents=texts, metadatas=metas)

    @guarded
    def _switch_collection(self, ns: str, target: str, encoder: str, dim: int) -> None:
        """The reindex's commit point: one write of the index record."""
        old = self._record(ns).collection or f"rc_{namespace_key(ns)}"
        self._bump_generation(ns, collection=target, encoder=encoder, dim=dim)
        try:
            self._client.delete_collection(old)
        except Exception:
            log.warning("could not drop %s after a reindex; the next writer does", old, exc_info=True)

    # -- reading ------------------------------------------------------------------------
    def count(self, ns: str) -> int:
        return len(self.live_ids(ns))

    @guarded
    def namespaces(self) -> list[str]:
        """Namespace keys that have a manifest."""
        names = self._collection_names()
        return sorted(n[3:-5] for n in names if n.startswith("rc_") and n.endswith("_docs") and n[:-5] in names)

    @guarded
    def query(self, ns: str, vector: np.ndarray, k: int) -> list[Hit]:
        """Nearest live chunks by cosine similarity (highest first)."""
        live = self.live_ids(ns)
        col = self._chunks(ns)
        if col is None or not live:
            return []
        self._check_vectors(ns, int(np.asarray(vector).shape[-1]))
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
            hits.append(Hit(chunk=chunk_from_record(text, meta), score=sim, dense=sim))
        return hits[:k]

    @guarded
    def get_chunks(self, ns: str, ids: Sequence[str]) -> list[Chunk]:
        col = self._chunks(ns)
        if col is None or not ids:
            return []
        by_id: dict[str, Chunk] = {}
        for batch in batched(list(ids), self.max_batch_size):
            got = col.get(ids=batch, include=["documents", "metadatas"])
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                by_id[cid] = chunk_from_record(text, meta)
        return [by_id[i] for i in ids if i in by_id]

    @guarded
    def get_vectors(self, ns: str, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of `ids`, in that order (rows of zeros for unknown ids)."""
        col = self._chunks(ns)
        if col is None or not ids:
            return np.zeros((0, 0), dtype=np.float32)
        if self.encoder:
            self._check_vectors(ns, self._record(ns).dim)
        got = col.get(ids=list(ids), include=["embeddings"])
        by_id = dict(zip(got["ids"], got["embeddings"], strict=True))
        dim = len(next(iter(by_id.values()))) if by_id else 1
        return np.asarray([by_id.get(i, np.zeros(dim)) for i in ids], dtype=np.float32)

    @guarded
    def iter_live_texts(self, ns: str) -> Iterator[tuple[str, str]]:
        """(chunk id, text) of every live chunk: what the lexical index is built from."""
        live = sorted(self.live_ids(ns))
        col = self._chunks(ns)
        if col is None:
            return iter(())
        out: list[tuple[str, str]] = []
        for batch in batched(live, self.max_batch_size):
            got = col.get(ids=batch, include=["documents"])
            out.extend(zip(got["ids"], got["documents"], strict=True))
        return iter(out)


def _new_collection_name(ns: str) -> str:
    return f"rc_{namespace_key(ns)}__{uuid.uuid4().hex[:8]}"
