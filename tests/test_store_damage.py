"""Chroma's embedded vector index, damaged by a crash, is rebuilt from the stored texts.

chromadb 1.5.9 saves an embedded collection's HNSW index every 1,000 writes by
truncating and rewriting its id map (`index_metadata.pickle`) in place. A process
killed inside that write leaves an empty file, and every later read of the
collection fails ("Error deserializing pickle file"); the fault test's SIGKILL
trials hit it about once in 200 kills. The texts and metadata are safe in SQLite,
so a process that holds the encoder rebuilds the collection and goes on; one that
does not says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from store.chroma import ChromaLocation, ChromaStore
from store.embedder import encoder_identity
from store.protocol import StoreDamaged
from store.types import Chunk, DocumentInfo
from tests.fakes import FakeEmbedder

NS = "team"
DOCS = 1100  # past Chroma's sync threshold (1,000 writes): both collections save their index to disk
PROBES = (0, 7, 733, DOCS - 1)


def encoder() -> FakeEmbedder:
    return FakeEmbedder()


def text(i: int) -> str:
    return f"Note {i}: " + " ".join(f"code{i}w{j}" for j in range(8))


def top3(store: ChromaStore, embedder: FakeEmbedder) -> dict[int, list[str]]:
    return {
        i: [h.chunk.doc_id for h in store.query(NS, embedder.embed_query(f"Doc {i}\n" + text(i)), 3)] for i in PROBES
    }


def open_store(location: ChromaLocation, embedder: FakeEmbedder | None) -> ChromaStore:
    """A store as a process opens it: with the encoder (the bot, an ingest) or without (listing tools)."""
    store = ChromaStore(location, encoder=encoder_identity(embedder) if embedder else None)
    if embedder is not None:
        store.embed_check = embedder.embed
    return store


def fill(location: ChromaLocation, embedder: FakeEmbedder) -> tuple[list[Chunk], dict[int, list[str]]]:
    store = open_store(location, embedder)
    chunks = [Chunk(doc_id=f"d{i}", index=0, text=text(i), title=f"Doc {i}", source=f"{i}.md") for i in range(DOCS)]
    store.add_chunks(NS, chunks, embedder.embed([c.embed_text for c in chunks]), "2026-12-02")
    store.commit_documents(
        NS,
        [DocumentInfo(c.doc_id, c.title, c.source, "text", 1, 0, "2026-12-02", "h", chunk_ids=[c.id]) for c in chunks],
    )
    before = top3(store, embedder)
    store.close()
    return chunks, before


def truncate_id_maps(folder: Path) -> list[Path]:
    """What a SIGKILL inside Chroma's save leaves: the id maps truncated to nothing."""
    maps = sorted(folder.glob("*/index_metadata.pickle"))
    for path in maps:
        path.write_bytes(b"")
    return maps


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[Path, list[Chunk], dict[int, list[str]]]:
    folder = tmp_path_factory.mktemp("damage") / "chroma"
    chunks, before = fill(ChromaLocation(path=folder), encoder())
    return folder, chunks, before


def damage_reported(location: ChromaLocation, embedder: FakeEmbedder | None) -> str:
    """What a process that cannot rebuild the damage says when it reads the documents."""
    store = open_store(location, embedder)
    try:
        with pytest.raises(StoreDamaged) as caught:
            store.documents(NS)
    finally:
        store.close()
    return str(caught.value)


def copy_of(filled: tuple[Path, list[Chunk], dict[int, list[str]]], tmp_path: Path) -> ChromaLocation:
    import shutil

    target = tmp_path / "chroma"
    shutil.copytree(filled[0], target)
    return ChromaLocation(path=target)


def test_a_truncated_index_is_rebuilt_by_the_next_process_and_nothing_is_lost(filled, tmp_path, caplog):
    caplog.set_level("WARNING", logger="store.chroma_repair")
    location = copy_of(filled, tmp_path)
    chunks = filled[1]
    assert len(truncate_id_maps(location.path)) == 2  # the chunks' index and the manifest's
    embedder = encoder()
    store = open_store(location, embedder)
    try:
        docs = store.documents(NS)
        assert len(docs) == DOCS
        after = top3(store, embedder)
        assert all(after[i][0] == f"d{i}" for i in PROBES), after  # each note finds itself
        assert len(store.get_chunks(NS, [c.id for c in chunks])) == DOCS
        # every vector was rebuilt, not only the writes Chroma still had in its log
        vectors = store.get_vectors(NS, [c.id for c in chunks])
        assert vectors.shape == (DOCS, embedder.dim) and bool((abs(vectors).sum(axis=1) > 0).all())
    finally:
        store.close()
    assert not list(location.path.glob("*.damaged*")), "the damaged copies are removed once rebuilt"
    said = [r.getMessage() for r in caplog.records]
    assert any("damaged; rebuilding" in m for m in said), said  # the admin learns what happened
    assert any(f"{DOCS} of {DOCS} chunks re-embedded" in m for m in said), said  # and how far the rebuild is
    reader = open_store(location, None)  # and a process without the encoder reads it again
    try:
        assert len(reader.documents(NS)) == DOCS
    finally:
        reader.close()


def test_a_process_without_the_encoder_says_what_to_do_and_changes_nothing(filled, tmp_path):
    location = copy_of(filled, tmp_path)
    truncate_id_maps(location.path)
    before = sorted(p.relative_to(location.path) for p in location.path.rglob("*") if p.is_file())
    message = damage_reported(location, None)
    assert "damaged" in message and "ragcord" in message  # what happened and what rebuilds it
    after = sorted(p.relative_to(location.path) for p in location.path.rglob("*") if p.is_file())
    assert after == before
    # the next process with the encoder still repairs it
    embedder = encoder()
    store = open_store(location, embedder)
    try:
        assert len(store.documents(NS)) == DOCS
        hits = store.query(NS, embedder.embed_query("Doc 42\n" + text(42)), 1)
        assert hits[0].chunk.doc_id == "d42"
    finally:
        store.close()


def test_a_repair_killed_half_way_is_finished_by_the_next_process(filled, tmp_path, monkeypatch):
    """The damaged index is set aside before the rebuild: if the rebuild stops, the next process
    must not take the half-empty index for a sound one."""
    import store.reindex as reindex

    location = copy_of(filled, tmp_path)
    truncate_id_maps(location.path)
    embedder = encoder()

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the process stops during the rebuild

    monkeypatch.setattr(reindex, "rebuild", stop)
    store = open_store(location, embedder)
    with pytest.raises(KeyboardInterrupt):
        store.documents(NS)
        store.query(NS, embedder.embed_query("Doc 5\n" + text(5)), 1)
    store.close()
    monkeypatch.undo()
    store = open_store(location, embedder)
    try:
        vectors = store.get_vectors(NS, [c.id for c in filled[1]])
        assert vectors.shape == (DOCS, embedder.dim) and bool((abs(vectors).sum(axis=1) > 0).all())
        hits = store.query(NS, embedder.embed_query("Doc 5\n" + text(5)), 1)
        assert hits[0].chunk.doc_id == "d5"
    finally:
        store.close()


@pytest.mark.parametrize("with_encoder", [True, False], ids=["with the encoder", "without"])
def test_damage_already_rebuilt_by_another_process_is_read_again_not_reported(
    filled, tmp_path, monkeypatch, with_encoder
):
    """Two processes meet the damage; the second looks (with the encoder: under the writer lock)
    after the first rebuilt the index, finds nothing damaged, and must read on, not report damage."""
    from chromadb.errors import InternalError

    location = copy_of(filled, tmp_path)  # sound: the other process's rebuild is done
    embedder = encoder()
    store = open_store(location, embedder if with_encoder else None)
    try:
        col = store._chunks(NS)
        real = type(col).query
        seen = []

        def damaged_once(self, *args, **kwargs):
            if not seen:
                seen.append(1)
                raise InternalError("Error creating hnsw segment reader: Error deserializing pickle file: EOF")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(type(col), "query", damaged_once)
        hits = store.query(NS, embedder.embed_query("Doc 9\n" + text(9)), 1)
        assert seen and hits[0].chunk.doc_id == "d9"
    finally:
        store.close()


def test_on_a_chroma_server_the_damage_is_reported_with_what_an_admin_does(chroma_server, tmp_path):
    """A server's files are not ragcord's: it rebuilds nothing there, and says what to do instead
    of promising a rebuild that will never come."""
    location = ChromaLocation(host="127.0.0.1", port=chroma_server.port)
    embedder = encoder()
    fill(location, embedder)  # 1,100 writes: the server saves the collections' index to its folder
    chroma_server.kill()
    assert len(truncate_id_maps(chroma_server.folder)) == 2
    chroma_server.start()
    message = damage_reported(location, embedder)
    assert "server" in message and "backup" in message, message
    assert "rebuilds it" not in message, message
