"""Retrieval: dense (Chroma), lexical (BM25) or both fused, with an optional reranker.

Hybrid search takes the `candidates` best chunks of each retriever, fills in the
score each one is missing (cosine for lexical-only chunks, BM25 for dense-only ones)
and fuses them, by default with a weighted sum of min-max normalised scores
("convex"); weighted reciprocal rank fusion ("rrf") is the other choice. The
defaults were measured with bench/retrieval.py on SciFact train claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from store.dense import DenseMatrices
from store.embedder import Embedder
from store.lexical import BUILD_PAGE, Bm25Index, LexicalIndexes
from store.namespaces import namespace_key
from store.protocol import VectorStore
from store.text import terms
from store.types import Hit

log = logging.getLogger(__name__)

Mode = Literal["dense", "lexical", "hybrid"]
Fusion = Literal["convex", "rrf"]


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    name: str

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder (a local folder, or a hub id on a networked machine)."""

    def __init__(self, model: str, device: str = "cpu") -> None:
        self.name = model
        self.device = device
        self._model: Any = None

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.name, device=self.device)
        scores = self._model.predict([(query, p) for p in passages], show_progress_bar=False)
        return [float(s) for s in scores]


def rrf_fuse(rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60) -> dict[str, float]:
    """Weighted reciprocal rank fusion: sum of weight / (k + rank), rank starting at 1."""
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, cid in enumerate(ranking, start=1):
            fused[cid] = fused.get(cid, 0.0) + weight / (k + rank)
    return fused


def min_max(values: Sequence[float]) -> list[float]:
    """Scale to 0..1 over the candidate pool (all equal -> all 1, so a lone signal still counts)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return [1.0 if hi > 0 else 0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def convex_fuse(dense: Sequence[float], lexical: Sequence[float], weights: Sequence[float] = (1.0, 1.0)) -> list[float]:
    """Weighted sum of min-max normalised dense and lexical scores of the same candidates."""
    total = sum(weights) or 1.0
    wd, wl = weights[0] / total, weights[1] / total
    return [wd * d + wl * x for d, x in zip(min_max(dense), min_max(lexical), strict=True)]


@dataclass(slots=True)
class Timings:
    """Milliseconds per retrieval stage of the last search (for benchmarks)."""

    stages: dict[str, float] = field(default_factory=dict)


class Retriever:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        lexical: LexicalIndexes,
        *,
        mode: Mode = "hybrid",
        fusion: Fusion = "convex",
        candidates: int = 50,
        rrf_k: int = 60,
        dense_weight: float = 1.0,
        lexical_weight: float = 1.0,
        reranker: Reranker | None = None,
        rerank_candidates: int = 30,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.lexical = lexical
        self.mode = mode
        self.fusion = fusion
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.dense_matrices = DenseMatrices()  # for dense searches filtered by scope (store/dense.py)
        self.lexical_page = BUILD_PAGE  # chunks read from the store at a time for a lexical rebuild
        self.last = Timings()

    def lexical_index(self, namespace: str) -> Bm25Index:
        generation = self.store.refresh(namespace)
        return self.lexical.get(namespace_key(namespace), generation, lambda: self._lexical_items(namespace))

    def term_rarity(self, namespace: str, query: str, scopes: frozenset[str] | None = None) -> dict[str, float]:
        """How telling each of the query's stemmed terms is among the chunks `scopes` may read
        (BM25's idf; see Bm25Index.term_rarity)."""
        return self.lexical_index(namespace).term_rarity(terms(query, parts=False), scopes)

    def _lexical_items(self, namespace: str) -> Iterator[tuple[str, str, str]]:
        """What BM25 indexes: each live chunk's text with its title and section (as the encoder sees it),
        and its scope."""
        live = sorted(self.store.live_ids(namespace))
        for start in range(0, len(live), self.lexical_page):  # a page of chunks in memory at a time
            for chunk in self.store.get_chunks(namespace, live[start : start + self.lexical_page]):
                yield chunk.id, chunk.embed_text, chunk.scope

    def search(
        self,
        namespace: str,
        query: str,
        k: int,
        scopes: frozenset[str] | None = None,
        *,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The k best live chunks for `query`, each with its dense (cosine) score filled in.

        `scopes`: the scopes the asker may read ("guild" and channel ids), or None for all (the CLI).
        Both retrievers drop the other scopes' chunks before taking their top k, so a member still
        gets the passages they may read when the best ones overall are hidden from them.
        `vector`: the query's embedding, when the caller has it already (the answerer reads with it too).
        """
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        if vector is None:
            vector = self.embedder.embed_query(query)
        stages["embed"] = (time.perf_counter() - t0) * 1000
        wide = self.mode == "hybrid" or self.reranker is not None
        pool = max(k, self.candidates if wide else k, self.rerank_candidates if self.reranker else k)

        index: Bm25Index | None = None
        all_scores: np.ndarray | None = None
        lexical: list[tuple[str, float]] = []
        if self.mode in ("lexical", "hybrid"):
            t = time.perf_counter()
            index = self.lexical_index(namespace)
            all_scores = index.score_all(query)
            live = self.store.live_ids(namespace)
            lexical = [(cid, s) for cid, s in index.top(all_scores, pool, scopes) if cid in live]
            stages["lexical"] = (time.perf_counter() - t) * 1000
        dense: list[Hit] = []
        if self.mode in ("dense", "hybrid"):
            t = time.perf_counter()
            dense = self._dense(namespace, vector, pool, scopes, index)
            stages["dense"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        hits = self._combine(namespace, vector, dense, lexical)
        if index is not None:
            for hit in hits:
                if hit.lexical is None:
                    hit.lexical = index.score_of(all_scores, hit.chunk.id)
        if self.mode == "hybrid" and self.fusion == "convex" and hits:
            fused = convex_fuse(
                [h.dense or 0.0 for h in hits],
                [h.lexical or 0.0 for h in hits],
                (self.dense_weight, self.lexical_weight),
            )
            for hit, score in zip(hits, fused, strict=True):
                hit.score = score
            hits.sort(key=lambda h: h.score, reverse=True)
        stages["fuse"] = (time.perf_counter() - t) * 1000

        if self.reranker is not None and hits:
            t = time.perf_counter()
            head = hits[: self.rerank_candidates]
            scores = self.reranker.score(query, [h.chunk.embed_text for h in head])
            for hit, score in zip(head, scores, strict=True):
                hit.score = score
            hits = sorted(head, key=lambda h: h.score, reverse=True)
            stages["rerank"] = (time.perf_counter() - t) * 1000
        self.last = Timings(stages)
        return hits[:k]

    def _dense(
        self, namespace: str, vector: np.ndarray, k: int, scopes: frozenset[str] | None, index: Bm25Index | None
    ) -> list[Hit]:
        """Chroma's nearest chunks when every scope present is allowed (no cost); otherwise the
        in-process matrix with the other scopes masked (Chroma's `where` filter is slow, store/dense.py)."""
        if scopes is None or (index is not None and len(index) and index.scopes.covers(scopes)):
            return self.store.query(namespace, vector, k)
        generation = self.store.refresh(namespace)
        matrix = self.dense_matrices.get(self.store, namespace, generation)
        if matrix.scopes.covers(scopes):
            return self.store.query(namespace, vector, k)
        top = matrix.top(vector, k, scopes)
        by_id = {c.id: c for c in self.store.get_chunks(namespace, [cid for cid, _ in top])}
        return [Hit(chunk=by_id[cid], score=sim, dense=sim) for cid, sim in top if cid in by_id]

    def _combine(
        self, namespace: str, vector: np.ndarray, dense: list[Hit], lexical: list[tuple[str, float]]
    ) -> list[Hit]:
        """The union of both candidate lists, dense scores filled in, ordered by rank fusion."""
        if self.mode == "dense":
            return dense
        by_id = {h.chunk.id: h for h in dense}
        lex_scores = dict(lexical)
        missing = [cid for cid, _ in lexical if cid not in by_id]
        if missing:
            for chunk, sim in self._with_similarity(namespace, vector, missing):
                by_id[chunk.id] = Hit(chunk=chunk, score=0.0, dense=sim)
        for cid, hit in by_id.items():
            hit.lexical = lex_scores.get(cid)
        if self.mode == "lexical":
            ranking = [cid for cid, _ in lexical if cid in by_id]
            for cid in ranking:
                by_id[cid].score = lex_scores[cid]
            return [by_id[cid] for cid in ranking]
        fused = rrf_fuse(
            [[h.chunk.id for h in dense], [cid for cid, _ in lexical]],
            [self.dense_weight, self.lexical_weight],
            k=self.rrf_k,
        )
        for cid, score in fused.items():
            if cid in by_id:
                by_id[cid].score = score
        return sorted((by_id[c] for c in fused if c in by_id), key=lambda h: h.score, reverse=True)

    def _with_similarity(self, namespace: str, vector: np.ndarray, ids: list[str]) -> list[tuple]:  # type: ignore[type-arg]
        """Chunks for lexical-only candidates, with their cosine similarity to the query."""
        chunks = self.store.get_chunks(namespace, ids)
        if not chunks:
            return []
        vectors = self.store.get_vectors(namespace, [c.id for c in chunks])
        sims = vectors @ np.asarray(vector, dtype=np.float32)
        return list(zip(chunks, (float(s) for s in sims), strict=True))
