from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from store.chroma import ChromaStore
from store.lexical import LexicalIndexes
from store.retrieval import Retriever, convex_fuse, min_max, rrf_fuse
from store.types import Chunk, DocumentInfo
from tests.fakes import FakeEmbedder

NS = "toy"


def put(store: ChromaStore, embedder, docs: dict[str, str]) -> dict[str, Chunk]:
    """One single-chunk document per (name, text), written and committed like the ingestor does."""
    now = datetime.now(UTC).isoformat()
    out = {}
    for name, text in docs.items():
        chunk = Chunk(doc_id=f"d-{name}", index=0, text=text, title=name, source=f"/toy/{name}.txt")
        store.add_chunks(NS, [chunk], embedder.embed([chunk.embed_text]), now)
        store.commit_document(
            NS,
            DocumentInfo(chunk.doc_id, name, chunk.source, "text", 1, 0, now, "h", chunk_ids=[chunk.id]),
        )
        out[name] = chunk
    return out


def names(hits) -> list[str]:
    return [h.chunk.title for h in hits]


# -- fusion arithmetic ----------------------------------------------------------------------
def test_rrf_orders_by_summed_reciprocal_ranks():
    fused = rrf_fuse([["a", "b", "c"], ["c", "a", "d"]], [1.0, 1.0], k=60)
    assert sorted(fused, key=fused.get, reverse=True) == ["a", "c", "b", "d"]
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)


def test_rrf_weights_and_k_change_the_order():
    rankings = [["a", "b"], ["b", "c"]]
    assert max(rrf_fuse(rankings, [1.0, 1.0]).items(), key=lambda kv: kv[1])[0] == "b"
    heavy_first = rrf_fuse(rankings, [3.0, 1.0], k=1)
    assert sorted(heavy_first, key=heavy_first.get, reverse=True)[0] == "a"


def test_convex_fusion_normalises_each_signal():
    assert min_max([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert min_max([0.5, 0.5]) == [1.0, 1.0]
    fused = convex_fuse([0.9, 0.8, 0.1], [0.0, 5.0, 10.0], (1.0, 1.0))
    assert fused[1] > fused[0] and fused[1] > fused[2]  # good on both beats best on one
    assert convex_fuse([0.9, 0.1], [0.0, 10.0], (1.0, 0.0)) == [1.0, 0.0]


# -- hybrid on a toy corpus ---------------------------------------------------------------------
class ConceptEmbedder(FakeEmbedder):
    """Maps texts to hand-made vectors by a marker word: a 'semantic' encoder that ignores spelling."""

    VECTORS = {
        "query": [1.0, 0.0, 0.0],
        "dense": [0.95, 0.31, 0.0],  # the encoder's favourite: no query words at all
        "target": [0.8, 0.6, 0.0],  # good for both
        "lexical": [0.1, 0.2, 0.97],  # the query's rare words, repeated, but about something else
    }

    def _vector(self, text: str) -> np.ndarray:
        for marker, vec in self.VECTORS.items():
            if f"<{marker}>" in text:
                v = np.asarray(vec, dtype=np.float32)
                return v / np.linalg.norm(v)
        other = np.asarray([0.3, 0.0, 0.95], dtype=np.float32)  # everything else: off-topic
        return other / np.linalg.norm(other)


TOY = {
    "dense": "<dense> Automobile servicing and vehicle maintenance advice for drivers.",
    "target": "<target> Mechanic notes: the catalytic converter code P0420 on a car.",
    "lexical": "<lexical> P0420 P0420 P0420 catalytic converter code list.",
    "filler1": "Gardening tips for roses in spring.",
    "filler2": "Baking bread needs flour, water and patience.",
    "filler3": "Tax forms are due in April each year.",
    "filler4": "Swimming pools need chlorine and filters.",
}
QUERY = "<query> catalytic converter code P0420"


@pytest.fixture
def toy(store, tmp_path):
    embedder = ConceptEmbedder(dim=3)
    put(store, embedder, TOY)
    return store, embedder, LexicalIndexes(tmp_path / "lexical")


@pytest.mark.parametrize("fusion", ["convex", "rrf"])
def test_hybrid_beats_either_retriever_alone(toy, fusion):
    store, embedder, lexical = toy
    make = lambda mode: Retriever(store, embedder, lexical, mode=mode, fusion=fusion, candidates=10)  # noqa: E731
    dense, lex, hybrid = (make(m).search(NS, QUERY, 3) for m in ("dense", "lexical", "hybrid"))
    assert names(dense)[0] == "dense" and names(lex)[0] == "lexical"
    assert names(hybrid)[0] == "target"
    # every hit carries its cosine (the answerer's confidence) and, in hybrid mode, its BM25 score
    assert all(h.dense is not None for h in dense + lex + hybrid)
    assert all(h.lexical is not None for h in hybrid)


def test_lexical_mode_fills_in_dense_scores_and_stages_are_timed(toy):
    store, embedder, lexical = toy
    retriever = Retriever(store, embedder, lexical, mode="lexical")
    hits = retriever.search(NS, QUERY, 5)
    assert {"lexical", "target"} <= set(names(hits)) and "filler1" not in names(hits)
    assert hits[0].dense == pytest.approx(float(np.dot(embedder._vector(QUERY), embedder._vector(TOY["lexical"]))))
    hybrid = Retriever(store, embedder, lexical, mode="hybrid")
    hybrid.search(NS, QUERY, 3)
    assert {"embed", "dense", "lexical", "fuse"} <= set(hybrid.last.stages)


# -- the reranker seam --------------------------------------------------------------------------
class FakeReranker:
    """Scores a passage by how often it says 'roses' (a stand-in for a cross-encoder)."""

    name = "fake-reranker"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append((query, list(passages)))
        return [float(p.lower().count("roses")) for p in passages]


def test_reranker_reorders_the_fused_candidates(store, tmp_path):
    embedder = FakeEmbedder()
    put(
        store,
        embedder,
        {
            "a": "Garden notes: watering the garden every morning keeps the garden green.",
            "b": "Roses in the garden: roses need sun, roses need water.",
            "c": "The garden shed holds tools.",
        },
    )
    lexical = LexicalIndexes(tmp_path / "lexical")
    plain = Retriever(store, embedder, lexical, mode="hybrid").search(NS, "garden watering", 3)
    assert names(plain)[0] == "a"
    reranker = FakeReranker()
    retriever = Retriever(store, embedder, lexical, mode="hybrid", reranker=reranker, rerank_candidates=3)
    hits = retriever.search(NS, "garden watering", 3)
    assert names(hits) == ["b", "a", "c"] and hits[0].score == 3.0
    query, passages = reranker.calls[-1]
    assert query == "garden watering" and len(passages) == 3
    assert all(p.startswith(("a\n", "b\n", "c\n")) for p in passages)  # the reranker sees title + text
    assert "rerank" in retriever.last.stages
    # only the head of the fused list is scored (a cross-encoder is slow) and returned
    retriever.rerank_candidates = 2
    assert len(retriever.search(NS, "garden watering", 3)) == 2
    assert len(reranker.calls[-1][1]) == 2
