"""ChromaStore: locking, client lifecycle and error sorting (defects 5 and 9), on the embedded store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from store.chroma import ChromaLocation, ChromaStore
from store.protocol import StoreUnavailable
from store.types import Chunk, DocumentInfo

NS = "default"


def put(store: ChromaStore, ns: str, doc_id: str, text: str) -> Chunk:
    chunk = Chunk(doc_id=doc_id, index=0, text=text, title=doc_id, source=doc_id)
    vector = np.zeros((1, 4), dtype=np.float32)
    vector[0, len(text) % 4] = 1.0
    store.add_chunks(ns, [chunk], vector, "2026-01-01")
    info = DocumentInfo(doc_id, doc_id, doc_id, "text", 1, 0, "2026-01-01", "h", chunk_ids=[chunk.id])
    store.commit_documents(ns, [info])
    return chunk


def client_of(store: ChromaStore) -> Any:
    return store._conn.client


def set_client(store: ChromaStore, client: Any) -> None:
    store._conn.client = client


class LockCheckingClient:
    """A chromadb client (and its collections) that fails a call made without the store's lock."""

    def __init__(self, inner: Any, store: ChromaStore, unlocked: list[str], name: str = "client") -> None:
        self._inner, self._store, self._unlocked, self._name = inner, store, unlocked, name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self._store._lock._is_owned():  # type: ignore[attr-defined]
                self._unlocked.append(f"{self._name}.{attr}")
            out = value(*args, **kwargs)
            if hasattr(out, "upsert"):  # a collection
                return LockCheckingClient(out, self._store, self._unlocked, "collection")
            return out

        return call


def test_every_store_method_uses_the_client_under_the_store_lock(tmp_path):
    """refresh() may reopen the client at any time: no method may use it without the lock."""
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    chunk = put(store, NS, "d1", "alpha text")
    unlocked: list[str] = []
    set_client(store, LockCheckingClient(client_of(store), store, unlocked))
    store.existing_ids(NS, [chunk.id])
    store.orphans(NS, {"d1": [chunk.id]})
    store.generation(NS)
    store.namespaces()
    store.documents(NS)
    store.query(NS, np.eye(4, dtype=np.float32)[0], 2)
    store.get_chunks(NS, [chunk.id])
    store.get_vectors(NS, [chunk.id])
    list(store.iter_live_texts(NS))
    assert unlocked == []  # was: existing_ids, orphans, generation and namespaces ran without it


def open_files_under(folder: Path) -> int:
    import os

    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))
        except OSError:
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts open files through /proc")
def test_reopening_a_store_replaces_only_its_own_client(tmp_path):
    """Reopening used to clear Chroma's process-wide cache: other stores' systems were orphaned, never stopped."""
    import gc

    first = ChromaStore(ChromaLocation(path=tmp_path / "a"), refresh_interval=0.0)
    second = ChromaStore(ChromaLocation(path=tmp_path / "b"), refresh_interval=0.0)
    put(first, NS, "d1", "alpha text")
    kept = put(second, NS, "d2", "bravo text")
    for _ in range(3):
        first._reopen()  # what refresh() does when another process committed
        assert [d.doc_id for d in second.documents(NS)] == ["d2"]
        second._reopen()
    assert [h.chunk.id for h in second.query(NS, second.get_vectors(NS, [kept.id])[0], 1)] == [kept.id]
    assert [d.doc_id for d in first.documents(NS)] == ["d1"]
    first.close()
    second.close()
    gc.collect()
    assert open_files_under(tmp_path) == 0  # was: the orphaned systems kept the SQLite files open


def test_only_not_found_means_no_collection_other_errors_are_not_an_empty_store(tmp_path, monkeypatch):
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    put(store, NS, "d1", "alpha text")
    assert store.documents("never-written") == []  # Chroma's NotFoundError: no such namespace

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("corrupted segment")

    monkeypatch.setattr(client_of(store), "get_collection", broken)
    with pytest.raises(ValueError, match="corrupted"):
        store.documents(NS)  # was: [] ("No documents yet")


def test_a_transient_failure_is_retried_with_a_fresh_client_and_a_lasting_one_is_an_outage(tmp_path, monkeypatch):
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    put(store, NS, "d1", "alpha text")
    real_open = store._conn.open
    failures = {"left": 2, "opens": 0}

    def flaky_open() -> None:
        real_open()
        failures["opens"] += 1
        real_get = store._conn.client.get_collection

        def get_collection(*args: Any, **kwargs: Any) -> Any:
            if failures["left"] > 0:
                failures["left"] -= 1
                raise httpx.ConnectError("connection refused")
            return real_get(*args, **kwargs)

        store._conn.client.get_collection = get_collection

    monkeypatch.setattr(store._conn, "open", flaky_open)
    store._reopen()
    assert [d.doc_id for d in store.documents(NS)] == ["d1"]  # two refusals, then an answer
    assert failures["opens"] >= 3  # reopened between attempts

    failures["left"] = 10**6
    with pytest.raises(StoreUnavailable, match="unreachable") as down:
        store.documents(NS)
    assert "reconnects by itself" in str(down.value)
    failures["left"] = 0
    assert [d.doc_id for d in store.documents(NS)] == ["d1"]  # the same object recovers


def test_the_writer_lock_is_shared_inside_a_process(tmp_path):
    import threading

    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), writer_wait_s=0.2)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.writer("g1"):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    assert entered.wait(5)
    with store.writer("g2"):  # another guild's ingest in the same bot process does not wait for it
        put(store, "g2", "d1", "text")
    release.set()
    t.join()
    assert not (tmp_path / "chroma" / "writer.dirty").exists()


def test_namespaces_lists_written_namespaces_only(tmp_path: Path):
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"))
    put(store, "g1", "d1", "text")
    put(store, "g2", "d2", "text")
    assert store.namespaces() == ["g1", "g2"]
