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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import numpy as np

from store.chroma_base import ChromaBase, IndexRecord, mismatch_message, new_collection_name
from store.chroma_client import ChromaLocation, guarded, parse_host
from store.chroma_records import batched, chunk_from_record, chunk_metadata, info_metadata
from store.namespaces import namespace_key
from store.protocol import ReindexProgress, StoreDamaged, StoreError, StoreUnavailable
from store.types import Chunk, DocumentInfo, Hit

__all__ = [
    "ChromaLocation",
    "ChromaStore",
    "IndexRecord",
    "StoreDamaged",
    "StoreError",
    "StoreUnavailable",
    "mismatch_message",
    "namespace_key",
    "parse_host",
]

log = logging.getLogger(__name__)


class ChromaStore(ChromaBase):
    """Chunks and manifests in Chroma. Thread-safe; methods block (run them off the event loop).

    `encoder` is the identity (`store.embedder.encoder_identity`) of the encoder whose
    vectors this process passes to `query` and `add_chunks`; None skips the check
    (tools that only list or forget documents).
    """

    # -- a damaged vector index (store/chroma_repair.py) ---------------------------------
    def _repair_damaged(self) -> bool:
        """Rebuild damaged collections if this process can (embedded, with the encoder).

        True: the store reads again. A process that cannot rebuild only looks whether
        another one has rebuilt it meanwhile."""
        from store.chroma_repair import damaged_now, repair

        if self.location.host or self.location.path is None or self.embed_check is None or not self.encoder:
            return not damaged_now(self)
        return repair(self)

    def _repair_pending(self) -> None:
        """A repair that stopped half-way left its note: finish it before any read (its vectors are gone)."""
        from store.chroma_repair import NOTE, damaged_message

        if self.location.host or self.location.path is None or not (self.location.path / NOTE).exists():
            return
        if not self._repair_damaged():
            raise StoreDamaged(damaged_message(self.location.describe, " and its rebuild did not finish"))

    # -- writing ----------------------------------------------------------------------
    def writer(self, ns: str) -> AbstractContextManager[None]:
        """Hold the data directory's writer lock while writing `ns` (ingest, forget, reindex).

        Waits up to RAGCORD_WRITER_WAIT_S for another process, then raises `StoreBusy`.
        After a writer that crashed, sweeps the leftovers it may have left first.
        """
        if self._writer is None:
            return nullcontext()
        return self._writer.hold(ns, recover=self._recover)

    def note_leftovers(self, ns: str) -> None:
        """A write left invisible chunks it could not remove (the store failed): the next writer sweeps."""
        if self._writer is not None:
            self._writer.mark_unclean()

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
        legacy = f"rc_{namespace_key(ns)}"
        current = self._record(ns).collection or legacy
        for name in self._collection_names():
            # a reindex's collections are "rc_<key>.<suffix>": no other namespace's name starts so
            if name != current and (name.startswith(f"{legacy}.") or name == legacy):
                log.info("dropping %s, left by a reindex that did not finish or could not clean up", name)
                self._client.delete_collection(name)
        return removed

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
        name = new_collection_name(ns)
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
        """Namespace keys that have a manifest ("rc_<key>_docs" beside chunks "rc_<key>" or "rc_<key>.<suffix>")."""
        names = set(self._collection_names())
        chunk_keys = {n[3:].split(".", 1)[0] for n in names if n.startswith("rc_")}
        return sorted(n[3:-5] for n in names if n.startswith("rc_") and n.endswith("_docs") and n[3:-5] in chunk_keys)

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
