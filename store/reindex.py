"""`ragcord reindex`: re-embed a namespace from its stored chunk texts with another encoder.

The new vectors go to a new chunk collection while questions keep using the old
one; the switch is one write of the namespace's index record (the same record that
carries the generation), so a reader sees either all old vectors or all new ones.
A reindex that stops half-way leaves only an unused collection, which the next
writer drops. The caller holds the store's writer lock, so no ingest writes to the
old collection meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from store.chroma_records import batched, chunk_from_record
from store.protocol import ReindexProgress

if TYPE_CHECKING:
    from store.chroma import ChromaStore

log = logging.getLogger(__name__)


def rebuild(
    store: ChromaStore,
    ns: str,
    embed: Callable[[Sequence[str]], np.ndarray],
    encoder: str,
    *,
    batch: int = 256,
    progress: ReindexProgress | None = None,
) -> int:
    target, live = store._new_chunk_collection(ns, encoder)
    total, done, dim = len(live), 0, 0
    if progress:
        progress(0, total)
    try:
        for ids in batched(live, batch):
            got_ids, texts, metas = store._read_records(ns, ids)
            if not got_ids:
                continue
            chunks = [chunk_from_record(t, m) for t, m in zip(texts, metas, strict=True)]
            vectors = np.asarray(embed([c.embed_text for c in chunks]), dtype=np.float32)  # the store stays free
            dim = int(vectors.shape[1])
            store._write_records(target, got_ids, texts, metas, vectors)
            done += len(got_ids)
            if progress:
                progress(done, total)
        store._switch_collection(ns, target, encoder, dim)
    except BaseException:
        log.warning("reindex of %s stopped; its old vectors stay live", ns)
        raise
    log.info("reindexed %s: %d chunks with %s", ns, done, encoder)
    return done
