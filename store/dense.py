"""An in-process copy of a namespace's vectors, for dense searches filtered by scope.

A member who may read only some channels must get the best chunks *they* may read,
so the filter has to apply before the top k. Chroma's `where` filter does that, but
cost 150-200 ms a query at 100k vectors (bench/permissions.py measures it again), so a
filtered dense search runs here instead: one float32 matrix of the live vectors, its
rows grouped by scope; the search multiplies only the allowed scopes' rows by the
query and partially sorts the result. Unfiltered searches (every scope allowed: the CLI,
or a guild where all documents are guild-wide) keep using Chroma and never build this.

The matrix is built from the store on the first filtered search of a generation and
rebuilt when the generation moves, like the BM25 index. It holds 4 bytes per dimension
per chunk (154 MB at 100k chunks of 384 dimensions).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from store.lexical import ScopeColumn
from store.protocol import VectorStore
from store.types import GUILD_SCOPE, scope_of

log = logging.getLogger(__name__)

_BATCH = 4000  # ids per store read (below SQLite's variable limit)
_BLOCK = 1024  # rows per matrix-vector product (see `_product`)


def row_scope(meta: dict[str, object]) -> str:
    """A chunk's scope from its stored metadata; chunks stored before scopes existed are guild-wide."""
    scope = meta.get("scope")
    if isinstance(scope, str) and scope:
        return scope
    try:
        extra = json.loads(str(meta.get("extra") or "{}"))
    except ValueError:
        return GUILD_SCOPE
    return scope_of(extra) if isinstance(extra, dict) else GUILD_SCOPE


@dataclass(slots=True)
class DenseMatrix:
    """Rows grouped by scope (each scope's rows are contiguous), so a filtered search reads only
    the allowed scopes' rows: the product is memory-bound (154 MB for 100k rows of 384)."""

    generation: str
    ids: list[str]
    vectors: np.ndarray  # (rows, dim) float32, L2-normalised
    scopes: ScopeColumn
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)  # scope -> [start, stop) of its rows

    def __post_init__(self) -> None:
        if not self.spans and len(self.ids):
            names = self.scopes.names()
            start = 0
            for i in range(1, len(names) + 1):
                if i == len(names) or names[i] != names[start]:
                    if names[start] in self.spans:
                        raise ValueError("rows of a scope must be contiguous")
                    self.spans[names[start]] = (start, i)
                    start = i

    def top(self, vector: np.ndarray, k: int, scopes: frozenset[str] | None) -> list[tuple[str, float]]:
        """(chunk id, cosine) of the k most similar rows whose scope is allowed, best first."""
        if not self.ids or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        if self.scopes.covers(scopes):
            spans = [(0, len(self.ids))]
        else:
            assert scopes is not None
            spans = [self.spans[s] for s in sorted(scopes) if s in self.spans]
            if not spans:
                return []
        rows = np.concatenate([np.arange(a, b) for a, b in spans])
        sims = np.concatenate([_product(self.vectors, query, a, b) for a, b in spans])
        k = min(k, len(rows))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self.ids[int(rows[i])], float(sims[i])) for i in top]


def _product(vectors: np.ndarray, query: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start..stop times the query, in blocks small enough that BLAS stays on this thread.

    A multi-threaded product waits for its slowest thread: on the busy 2-core machine that put
    100k-row products at p95 80 ms (0.5 ms p50); in blocks of 1,024 rows, p95 0.9 ms for 20k rows."""
    return np.concatenate(
        [vectors[i : min(i + _BLOCK, stop)] @ query for i in range(start, stop, _BLOCK)]
        or [np.zeros(0, dtype=np.float32)]
    )


class DenseMatrices:
    """One `DenseMatrix` per namespace, rebuilt when its generation moves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._matrices: dict[str, DenseMatrix] = {}
        self.builds = 0  # tests and benchmarks read it

    def get(self, store: VectorStore, namespace: str, generation: str) -> DenseMatrix:
        with self._lock:
            found = self._matrices.get(namespace)
            if found is not None and found.generation == generation:
                return found
            matrix = build_matrix(store, namespace, generation)
            self.builds += 1
            self._matrices[namespace] = matrix
            return matrix


def build_matrix(store: VectorStore, namespace: str, generation: str) -> DenseMatrix:
    """Every live chunk's vector and scope, read from the store in batches."""
    ids = sorted(store.live_ids(namespace))
    log.info("building the dense matrix of %s (%d chunks)", namespace, len(ids))
    parts: list[np.ndarray] = []
    scopes: list[str] = []
    kept: list[str] = []
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        metas = store.chunk_metadata(namespace, batch)
        batch = [cid for cid in batch if cid in metas]  # a chunk gone since the generation was read
        if not batch:
            continue
        parts.append(np.asarray(store.get_vectors(namespace, batch), dtype=np.float32))
        scopes.extend(row_scope(metas[cid]) for cid in batch)
        kept.extend(batch)
    vectors = np.concatenate(parts) if parts else np.zeros((0, 1), dtype=np.float32)
    order = sorted(range(len(kept)), key=lambda i: scopes[i])  # each scope's rows together
    ids = [kept[i] for i in order]
    return DenseMatrix(generation, ids, vectors[order] if order else vectors, ScopeColumn([scopes[i] for i in order]))
