"""Defect 5: a Chroma server outage is an outage (not an empty store), and the store recovers by itself.

A real `chroma run` server is started, killed and restarted on the same port.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.service import RagService
from bot.settings import Settings
from store.chroma import ChromaLocation, ChromaStore
from store.protocol import StoreUnavailable
from tests.fakes import FakeEmbedder, FakeLLM

NS = "g1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """`chroma run` on a fixed port and folder, which a test can kill and start again."""

    def __init__(self, folder: Path) -> None:
        found = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
        if found is None:
            pytest.fail("the `chroma` command is missing (it comes with chromadb)")
        self.command = found
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self.proc = subprocess.Popen(
            [self.command, "run", "--host", "127.0.0.1", "--port", str(self.port), "--path", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"chroma run did not start within {timeout:g} s")

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def chroma_server(tmp_path: Path):
    server = ChromaServer(tmp_path / "server")
    server.start()
    try:
        yield server
    finally:
        server.kill()


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
