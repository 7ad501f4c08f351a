"""Integration: the real CLI, real GGUF model, real encoder, real on-disk Chroma, and a real `chroma run` server.

Slower than the unit tests (tens of seconds) but part of `make test`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def ragcord(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAGCORD_", "CHROMA_", "DISCORD_"))}
    clean.update(RAGCORD_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1", COLUMNS="200", PYTHONPATH=str(ROOT))
    return clean


def test_cli_ingests_docs_and_answers_with_a_verified_citation(env, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    out = ragcord("ingest", str(docs), env=env)
    assert out.returncode == 0, out.stderr
    assert "added" in out.stdout and "failed" not in out.stdout.split("ingest summary")[-1].split("\n", 1)[0]

    again = ragcord("ingest", str(docs), env=env)
    assert again.returncode == 0 and "0 added" in again.stdout and "0 updated" in again.stdout

    out = ragcord("ask", "How does ragcord check the citations in its answers?", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Sources" in out.stdout
    assert "how-it-works" in out.stdout.lower() or "How ragcord works" in out.stdout
    # the lead, printed first, is the sentence that explains the check, quoted with its source
    # (SmolLM2 alone led with a sentence from the wrong passage here: "A weakly relevant best passage ...")
    lead = " ".join(out.stdout.split("the model's phrasing")[0].split())
    assert lead.startswith('"') and "— How ragcord works, The path of a question [" in lead, out.stdout
    assert "citation numbers that point to a passage that exists" in lead, out.stdout
    number = lead.rsplit("[", 1)[1].split("]")[0]
    assert f"[{number}] How ragcord works" in out.stdout  # its citation number names a listed source
    # the model's answer, when shown, says no sentence twice
    from bot.repetition import sentence_key, sentence_spans

    if "\nAnswer" in out.stdout:
        final = out.stdout.split("\nAnswer", 1)[1].split("Sources")[0].split("Also consulted")[0]
        keys = [k for k in map(sentence_key, sentence_spans(final)) if k]
        assert len(keys) == len(set(keys)), final

    out = ragcord("ask", "What is the boiling point of liquid nitrogen on Neptune?", env=env)
    assert out.returncode == 2 and "couldn't find" in out.stdout

    listed = ragcord("sources", env=env)
    assert listed.returncode == 0 and "How ragcord works" in listed.stdout
    gone = ragcord("forget", "How ragcord works", env=env)
    assert gone.returncode == 0 and "forgot" in gone.stdout
    missing = ragcord("forget", "How ragcord works", env=env)
    assert missing.returncode == 1 and "no document called" in missing.stderr


def test_cli_errors_are_one_line_with_nonzero_exit(env):
    out = ragcord("forget", "nothing-here", env=env)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error:") and "Traceback" not in out.stderr
    bad = dict(env, RAGCORD_TOP_K="many")
    out = ragcord("stats", env=bad)
    assert out.returncode == 1 and "top_k" in out.stderr


def test_service_on_a_real_chroma_server(chroma_server, tmp_path, docs_dir):
    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder, FakeLLM, cite_first_passage

    host = chroma_server.url
    settings = Settings(chroma_host=host, data_dir=tmp_path, min_score=0.2, _env_file=None)
    store = ChromaStore(ChromaLocation(host=settings.chroma_host))
    llm = FakeLLM([cite_first_passage])
    svc = RagService(store, FakeEmbedder(), llm_factory=lambda: llm, lexical_dir=tmp_path / "lex", settings=settings)
    results = svc.ingest_paths("g1", [docs_dir])
    assert {r.status for r in results} == {"added"}
    answer = svc.ask("g1", "When are invoices sent?")
    assert answer.citations and "first Monday" in answer.citations[0].quote
    # a second client (another process, another machine) sees the same store at once
    other = ChromaStore(ChromaLocation(host=settings.chroma_host))
    assert len(other.documents("g1")) == 3 and other.documents("g2") == []
    svc.forget("g1", "billing.txt")
    assert len(other.documents("g1")) == 2
