"""Permission scopes in the core: each chunk records who may read it, and retrieval filters
before the top k (dense and BM25 both), so a member gets the best passages *they* may read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from store.chroma import ChromaStore
from store.lexical import Bm25Index, LexicalIndexes
from store.retrieval import Retriever
from store.types import GUILD_SCOPE, Chunk, DocumentInfo
from tests.fakes import FakeEmbedder

NS = "g1"


def put(store: ChromaStore, embedder: FakeEmbedder, name: str, text: str, scope: str | None) -> Chunk:
    now = datetime.now(UTC).isoformat()
    extra = (("scope", scope),) if scope else ()
    chunk = Chunk(doc_id=f"d-{name}", index=0, text=text, title=name, source=f"discord:{name}", extra=extra)
    store.add_chunks(NS, [chunk], embedder.embed([chunk.embed_text]), now)
    info = DocumentInfo(chunk.doc_id, name, chunk.source, "text", 1, 0, now, "h", [chunk.id], dict(extra))
    store.commit_document(NS, info)
    return chunk


@pytest.fixture
def world(store: ChromaStore, tmp_path):
    embedder = FakeEmbedder()
    # many hidden chunks that match the question better than the one readable chunk
    for i in range(30):
        put(store, embedder, f"secret{i}", f"launch date launch date launch date plan {i}", "111")
    put(store, embedder, "open", "The launch date is in March, says the plan.", None)  # no scope: guild-wide
    put(store, embedder, "team", "Team notes: the launch date moved.", "222")
    return store, embedder


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_filter_applies_before_the_top_k(world, tmp_path, mode):
    store, embedder = world
    retriever = Retriever(store, embedder, LexicalIndexes(tmp_path / f"lex-{mode}"), mode=mode, candidates=5)
    everything = retriever.search(NS, "launch date", 3)
    assert {h.chunk.title for h in everything} <= {f"secret{i}" for i in range(30)}  # the hidden ones win overall

    guild_only = retriever.search(NS, "launch date", 3, scopes=frozenset({GUILD_SCOPE}))
    assert [h.chunk.title for h in guild_only] == ["open"]
    assert guild_only[0].dense is not None and guild_only[0].dense > 0

    team = retriever.search(NS, "launch date", 3, scopes=frozenset({GUILD_SCOPE, "222"}))
    assert {h.chunk.title for h in team} == {"open", "team"}
    assert retriever.search(NS, "launch date", 3, scopes=frozenset({"999"})) == []


def test_scope_is_its_own_chroma_key_and_legacy_chunks_are_guild_wide(world):
    store, _ = world
    col = store._chunks(NS)
    got = col.get(where={"scope": "222"}, include=["metadatas"])
    assert [m["title"] for m in got["metadatas"]] == ["team"]
    assert store.documents(NS, frozenset({GUILD_SCOPE}))[0].title == "open"
    assert {d.title for d in store.documents(NS, frozenset({"222", GUILD_SCOPE}))} == {"open", "team"}
    assert len(store.documents(NS)) == 32

    # a chunk written before scopes existed: no `scope` key, no scope in `extra`
    legacy = store._chunks(NS).get(where={"title": "open"}, include=["metadatas"])
    meta = dict(legacy["metadatas"][0])
    meta.pop("scope")
    meta["extra"] = json.dumps({})
    store._chunks(NS).update(ids=legacy["ids"], metadatas=[meta])
    from store.dense import row_scope

    assert row_scope(meta) == GUILD_SCOPE


def test_lexical_index_saves_its_scopes(tmp_path):
    index = Bm25Index.build([("a", "roses need sun", "5"), ("b", "roses need water", GUILD_SCOPE)], "g1")
    assert [c for c, _ in index.search("roses", 5, frozenset({GUILD_SCOPE}))] == ["b"]
    index.save(tmp_path / "ix")
    loaded = Bm25Index.load(tmp_path / "ix")
    assert loaded is not None and loaded.scopes.names() == ["5", GUILD_SCOPE]
    assert [c for c, _ in loaded.search("roses", 5, frozenset({"5"}))] == ["a"]


def test_dense_matrix_follows_the_generation(world, tmp_path):
    store, embedder = world
    retriever = Retriever(store, embedder, LexicalIndexes(None), mode="dense")
    scopes = frozenset({GUILD_SCOPE})
    assert [h.chunk.title for h in retriever.search(NS, "launch", 5, scopes)] == ["open"]
    assert retriever.dense_matrices.builds == 1
    retriever.search(NS, "launch", 5, scopes)
    assert retriever.dense_matrices.builds == 1  # same generation: reused
    put(store, embedder, "later", "A later launch note for everyone.", None)
    assert {h.chunk.title for h in retriever.search(NS, "launch", 5, scopes)} == {"open", "later"}
    assert retriever.dense_matrices.builds == 2
    # every scope allowed: Chroma answers, no matrix needed
    retriever.search(NS, "launch", 5, frozenset({GUILD_SCOPE, "111", "222"}))
    assert retriever.dense_matrices.builds == 2
