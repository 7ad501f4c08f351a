"""Committing prepared documents: their new chunks, then their manifests (the commit point), then the sweep.

A document whose write or commit fails is rolled back: the chunks this attempt added
are deleted and the metadata it changed on the previous version's live chunks is put
back, so the previous version stays answerable exactly as it was.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import numpy as np

from ingest.sources import Prepared
from store.protocol import VectorStore
from store.types import DocumentInfo

log = logging.getLogger(__name__)


class Committer:
    """Writes prepared documents into a store (the ingest pipeline's writer thread)."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def write_chunks(self, namespace: str, ready: list[Prepared]) -> bool:
        """New chunks of all ready documents in one batched write (invisible until each commit).

        False if that write failed: each document then writes (and rolls back) on its own.
        """
        new = [(p, c) for p in ready for c in p.to_embed]
        if len(ready) < 2 or not new:
            return False
        now = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            vectors = np.stack([p.vectors[c.id] for p, c in new])
            self.store.add_chunks(namespace, [c for _, c in new], vectors, now)
        except Exception:
            log.warning("batched write of %d chunks failed; writing document by document", len(new), exc_info=True)
            return False
        return True

    def commit(self, namespace: str, ready: list[Prepared], *, written: bool = False) -> None:
        """Make the ready documents live: their manifests in one write, then sweep old chunks.

        If the joint commit fails, each document commits on its own, so one bad document
        cannot fail the others; a document whose commit fails loses the chunks this
        attempt added and keeps its previous version.
        """
        now = datetime.now(UTC).isoformat(timespec="seconds")
        staged = [(p, info) for p in ready if (info := self.stage(namespace, p, now, written=written)) is not None]
        if not staged:
            return
        try:
            self.store.commit_documents(namespace, [info for _, info in staged])
            committed = staged
        except Exception as exc:
            if len(staged) == 1:
                self.roll_back(namespace, *staged[0], exc)
                return
            log.warning("joint commit of %d documents failed; committing one by one", len(staged), exc_info=True)
            committed = []
            for p, info in staged:
                try:
                    self.store.commit_document(namespace, info)
                    committed.append((p, info))
                except Exception as exc:
                    self.roll_back(namespace, p, info, exc)
        for p, _ in committed:
            p.result.status = "updated" if p.previous is not None else "added"
            p.result.embedded = len(p.to_embed)
        try:
            # older versions' chunks, and leftovers of any earlier attempt that crashed before its commit
            keep = {info.doc_id: info.chunk_ids for _, info in committed}
            self.store.delete_chunks(namespace, self.store.orphans(namespace, keep))
        except Exception:
            log.warning("could not sweep old chunks; they stay invisible and the next writer sweeps", exc_info=True)
            self.store.note_leftovers(namespace)

    def stage(self, namespace: str, p: Prepared, now: str, *, written: bool) -> DocumentInfo | None:
        """Write a document's new chunks (unless the batch write did) and its manifest record to be."""
        assert p.doc is not None
        info = DocumentInfo(
            doc_id=p.doc.doc_id,
            title=p.doc.title,
            source=p.doc.source,
            kind=p.doc.kind,
            chunks=len(p.chunks),
            pages=p.doc.pages,
            ingested_at=now,
            content_hash=p.fingerprint,
            chunk_ids=[c.id for c in p.chunks],
            extra=dict(p.doc.extra),
        )
        try:
            new = p.to_embed
            if not written:
                vectors = np.stack([p.vectors[c.id] for c in new]) if new else np.zeros((0, 1), np.float32)
                self.store.add_chunks(namespace, new, vectors, now)
            moved = [c for c in p.chunks if c.id in p.reused]
            if moved:  # live chunks of the previous version: their old metadata is put back if the commit fails
                p.saved_metadata = self.store.chunk_metadata(namespace, [c.id for c in moved])
                self.store.update_chunk_metadata(namespace, moved, now)
        except Exception as exc:
            self.roll_back(namespace, p, info, exc)
            return None
        return info

    def roll_back(self, namespace: str, p: Prepared, info: DocumentInfo, exc: Exception) -> None:
        """Mark the document failed (with `exc`) and remove what this attempt added."""
        log.error("writing %s failed; rolling back its new chunks", info.source, exc_info=exc)
        try:
            self.store.delete_chunks(namespace, [c.id for c in p.to_embed])
            self.store.restore_chunk_metadata(namespace, p.saved_metadata)
        except Exception:
            log.exception("rollback of %s failed; leftovers are invisible and the next writer sweeps", info.source)
            self.store.note_leftovers(namespace)
        p.result.status, p.result.reason = "failed", f"store write failed: {exc}"
