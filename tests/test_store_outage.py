"""Defect 5: a Chroma server outage is an outage (not an empty store), and the store recovers by itself.

A real `chroma run` server is started, killed and restarted on the same port.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.service import RagService
from bot.settings import Settings
from store.chroma import ChromaLocation, ChromaStore
from store.protocol import StoreUnavailable
from tests.fakes import FakeEmbedder, FakeLLM
from tests.servers import ChromaServer, free_port

NS = "g1"


def server_service(server: ChromaServer, tmp_path: Path) -> RagService:
    settings = Settings(chroma_host=server.url, data_dir=tmp_path, min_score=0.2, _env_file=None)  # type: ignore[call-arg]
    store = ChromaStore(ChromaLocation(host=settings.chroma_host), lock_dir=tmp_path)
    return RagService(store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=tmp_path / "lex", settings=settings)


def test_a_server_outage_is_reported_as_such_and_the_same_store_recovers(chroma_server, tmp_path, docs_dir):
    svc = server_service(chroma_server, tmp_path)
    assert {r.status for r in svc.ingest_paths(NS, [docs_dir])} == {"added"}
    assert len(svc.documents(NS)) == 3

    chroma_server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable") as down:
        svc.documents(NS)  # was: [] -> "No documents yet"
    assert time.monotonic() - started < 6  # a few bounded retries, not a hang
    assert "chroma run" in str(down.value) and "reconnects by itself" in str(down.value)
    with pytest.raises(StoreUnavailable):
        svc.retriever.search(NS, "When are invoices sent?", 3)  # was: no hits -> "couldn't find anything"
    with pytest.raises(StoreUnavailable):
        svc.status(NS)

    chroma_server.start()  # same port, same data
    assert len(svc.documents(NS)) == 3  # the same objects, no restart
    hits = svc.retriever.search(NS, "When are invoices sent?", 3)
    assert hits and "first Monday" in hits[0].chunk.text


def test_the_cli_says_the_store_is_unreachable_in_one_line(tmp_path, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("CHROMA_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("RAGCORD_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["sources"]) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines at the terminal width
    assert err.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err
    assert "unreachable" in err or "cannot reach" in err
    assert "chroma run" in err


def test_a_stalled_server_is_an_outage_too_not_a_hang(chroma_server, tmp_path, docs_dir):
    """chromadb's client waits for ever; the store bounds each request (30 s by default, 1 s here)."""
    svc = server_service(chroma_server, tmp_path)
    svc.ingest_paths(NS, [docs_dir])
    stalled = ChromaStore(ChromaLocation(host=chroma_server.url), request_timeout_s=1.0, refresh_interval=0.0)
    chroma_server.pause()  # SIGSTOP: the port accepts connections, nothing answers
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            stalled.documents(NS)
        assert time.monotonic() - started < 8
    finally:
        chroma_server.resume()
    assert len(stalled.documents(NS)) == 3
