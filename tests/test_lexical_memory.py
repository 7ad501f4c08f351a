"""A lexical rebuild reads and tokenizes the namespace a page at a time (issue 13's 500k backfill)."""

from __future__ import annotations

import numpy as np
from chromadb.api.models.Collection import Collection

import store.lexical as lexical
from store.lexical import Bm25Index, LexicalIndexes
from store.retrieval import Retriever
from store.types import Chunk, DocumentInfo
from tests.fakes import FakeEmbedder

NS = "default"
WORDS = [
    "refund",
    "invoice",
    "garden",
    "roses",
    "design",
    "channel",
    "thread",
    "zeppelin",
    "hangar",
    "dawn",
    "quarterly",
    "the",
    "of",
    "and",
]
QUERIES = ["refund invoice", "garden roses", "zeppelin hangar dawn", "the of", "design thread", "unknownword"]


def _fill(store, embedder: FakeEmbedder, docs: int = 6, per_doc: int = 20) -> list[Chunk]:
    everything: list[Chunk] = []
    for d in range(docs):
        scope = ("guild", "111", "222")[d % 3]
        chunks = [
            Chunk(
                doc_id=f"doc{d}",
                index=i,
                text=" ".join(WORDS[(d * 7 + i * j) % len(WORDS)] for j in range(1 + i % 9)) + f" n{d}x{i}",
                title=f"Day {d}",
                source="discord",
                extra=(("scope", scope),),
            )
            for i in range(per_doc)
        ]
        store.add_chunks(NS, chunks, embedder.embed([c.embed_text for c in chunks]), "2026-12-01")
        info = DocumentInfo(
            doc_id=f"doc{d}",
            title=f"Day {d}",
            source="discord",
            kind="discord",
            chunks=per_doc,
            pages=0,
            ingested_at="2026-12-01",
            content_hash=f"h{d}",
            chunk_ids=[c.id for c in chunks],
            extra={"scope": scope},
        )
        store.commit_documents(NS, [info])
        everything.extend(chunks)
    return everything


def _same_index(a: Bm25Index, b: Bm25Index) -> None:
    assert a.ids == b.ids
    assert a.scopes.names() == b.scopes.names()
    for query in QUERIES:
        sa, sb = a.score_all(query), b.score_all(query)
        assert (sa is None) == (sb is None), query
        if sa is not None and sb is not None:
            np.testing.assert_allclose(sa, sb, rtol=1e-6)
        for scopes in (None, frozenset({"guild"}), frozenset({"guild", "111"})):
            assert a.search(query, 7, scopes) == b.search(query, 7, scopes)


def test_rebuild_reads_chunks_in_bounded_pages(store, monkeypatch):
    embedder = FakeEmbedder()
    chunks = _fill(store, embedder)
    retriever = Retriever(store, embedder, LexicalIndexes(None))
    retriever.lexical_page = 25

    served: list[int] = []
    original = Collection.get

    def recording_get(self, *args, **kwargs):
        got = original(self, *args, **kwargs)
        if not self.name.endswith("_docs") and "documents" in (kwargs.get("include") or []):  # chunks, not manifest
            served.append(len(got["ids"]))
        return got

    monkeypatch.setattr(Collection, "get", recording_get)
    index = retriever.lexical_index(NS)
    monkeypatch.undo()

    assert served and sum(served) == len(chunks) == 120
    assert max(served) <= 25  # before: one read of every chunk (120)

    # the same index as one built from every chunk at once
    reference = Bm25Index.build(sorted((c.id, c.embed_text, c.scope) for c in chunks), index.generation)
    _same_index(index, reference)
    assert index.search("zeppelin hangar", 3)


def test_paged_build_tokenizes_a_page_at_a_time_and_scores_the_same(monkeypatch):
    items = [
        (f"c{i:03d}", " ".join(WORDS[(i * j) % len(WORDS)] for j in range(i % 11)), ("guild", "7")[i % 2])
        for i in range(60)
    ]
    items.append(("empty", "", "guild"))
    items.append(("stops", "the of and", "7"))
    whole = Bm25Index.build(items, "g1")

    sizes: list[int] = []
    original = lexical.tokenize

    def recording_tokenize(texts, params):
        sizes.append(len(texts))
        return original(texts, params)

    monkeypatch.setattr(lexical, "tokenize", recording_tokenize)
    paged = Bm25Index.build(iter(items), "g1", page=7)
    monkeypatch.undo()

    assert max(sizes) <= 7 and sum(sizes) == len(items)
    _same_index(paged, whole)
    assert paged.score_of(paged.score_all("refund"), "c001") == whole.score_of(whole.score_all("refund"), "c001")
