"""The core of `ChromaStore`: the client, the namespace's index record, freshness, encoders, manifests.

See store/chroma.py for the consistency model. Every public method runs under the
store's lock and retries outages (`guarded`, store/chroma_client.py).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from store.chroma_client import ChromaConnection, ChromaLocation, guarded, is_not_found
from store.chroma_records import chunk_from_record, info_from_record
from store.namespaces import namespace_key
from store.protocol import EncoderMismatch
from store.types import DocumentInfo
from store.writer_lock import WriterLock

log = logging.getLogger(__name__)

GEN_ID = "__generation__"
# A namespace without a recorded encoder is checked on this many chunks, to this cosine.
UNRECORDED_SAMPLE = 4
UNRECORDED_MIN_COSINE = 0.999


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


class ChromaBase:
    """Client, index record and manifests of `ChromaStore` (which adds writing and queries).

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
        request_timeout_s: float = 30.0,
    ) -> None:
        self.location = location
        self.refresh_interval = refresh_interval
        self.encoder = encoder
        # the configured encoder's `embed`, to check namespaces written before encoders were recorded
        self.embed_check: Callable[[Sequence[str]], np.ndarray] | None = None
        self._unrecorded_ok: dict[str, str] = {}
        self._lock = threading.RLock()
        self._depth = 0  # nesting of guarded calls (only the outermost retries)
        self._conn = ChromaConnection(location, request_timeout_s=request_timeout_s)
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

    def _repair_damaged(self) -> bool:
        """Rebuild a damaged vector index if this store can; ChromaStore can (store/chroma_repair.py)."""
        return False

    def _repair_pending(self) -> None:
        """Finish a rebuild that stopped half-way, before any read; ChromaStore does."""

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
        got = manifest.get(ids=[GEN_ID], include=["metadatas"])
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
        self._manifest(ns, create=True).upsert(ids=[GEN_ID], embeddings=[[0.0]], metadatas=[meta], documents=[""])
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
            self._bump_generation(ns, collection=new_collection_name(ns), encoder=encoder, dim=0)
            return
        if self.live_ids(ns):
            self._verify_unrecorded(ns, encoder)
            log.warning("namespace %s has no recorded encoder; recording %s", ns, encoder)
        self._bump_generation(ns, encoder=encoder)

    def _verify_unrecorded(self, ns: str, encoder: str) -> None:
        """A namespace written before encoders were recorded: re-embed a few of its chunks with the
        configured encoder (`embed_check`) and refuse unless they match the stored vectors.

        The same model and backend give the same vectors (cosine 1.0); torch against onnx-int8
        measured 0.97-0.985. Readers only remember the answer; the next ingest records it.
        """
        if self.embed_check is None or self._unrecorded_ok.get(ns) == encoder:
            return
        col = self._chunks(ns)
        sample = sorted(self.live_ids(ns))[:UNRECORDED_SAMPLE]
        got = col.get(ids=sample, include=["documents", "metadatas", "embeddings"]) if col is not None else None
        if not got or not len(got["ids"]):
            return
        stored = np.asarray(got["embeddings"], dtype=np.float32)
        texts = [chunk_from_record(t, m).embed_text for t, m in zip(got["documents"], got["metadatas"], strict=True)]
        fresh = np.asarray(self.embed_check(texts), dtype=np.float32)
        if fresh.shape != stored.shape:
            raise EncoderMismatch(mismatch_message(ns, f"a {stored.shape[1]}-d encoder (not recorded)", encoder))
        cosine = float(np.min(np.sum(fresh * stored, axis=1)))
        if cosine < UNRECORDED_MIN_COSINE:
            raise EncoderMismatch(
                mismatch_message(
                    ns, f"an unrecorded encoder (cosine {cosine:.3f} to the configured one's vectors)", encoder
                )
            )
        self._unrecorded_ok[ns] = encoder

    def _check_vectors(self, ns: str, dim: int) -> None:
        record = self._record(ns)
        if self.encoder and record.encoder and record.encoder != self.encoder:
            raise EncoderMismatch(mismatch_message(ns, record.encoder, self.encoder))
        if self.encoder and not record.encoder:
            self._verify_unrecorded(ns, self.encoder)
        if record.dim and dim != record.dim:
            shown = self.encoder or "the configured encoder"
            raise EncoderMismatch(
                mismatch_message(ns, record.encoder or f"a {record.dim}-d encoder", f"{shown} ({dim}-d)")
            )

    # -- documents (manifest) -------------------------------------------------------
    @guarded
    def documents(self, ns: str, scopes: frozenset[str] | None = None) -> list[DocumentInfo]:
        """The namespace's documents; with `scopes`, only those of these scopes (documents stored
        before scopes existed are guild-wide)."""
        self.refresh(ns)
        manifest = self._manifest(ns)
        if manifest is None:
            return []
        got = manifest.get(include=["metadatas", "documents"])
        docs = [
            info_from_record(i, m, d)
            for i, m, d in zip(got["ids"], got["metadatas"], got["documents"], strict=True)
            if i != GEN_ID
        ]
        if scopes is not None:
            docs = [d for d in docs if d.scope in scopes]
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

    def _collection_names(self) -> list[str]:
        return [c if isinstance(c, str) else c.name for c in self._client.list_collections()]


def new_collection_name(ns: str) -> str:
    """A chunk collection for a reindex: '.' cannot occur in a namespace key, so the name is this namespace's."""
    return f"rc_{namespace_key(ns)}.{uuid.uuid4().hex[:8]}"
