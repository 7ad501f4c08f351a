from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from bot.service import RagService
from bot.settings import Settings
from store.chroma import ChromaLocation, ChromaStore
from tests.fakes import FakeEmbedder, FakeLLM

# Fuzz tests (tests/test_fuzz.py): "ci" keeps `make test` to a few seconds; a longer run:
# HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py (or pytest --hypothesis-profile=long).
for _name, _examples in (("ci", 25), ("long", 2500)):
    hypothesis_settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,  # the machine is shared; time limits are the tests' own assertions
        database=None,  # no .hypothesis/ folder in the work tree; failures print a reproduction blob
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DOCS = {
    "deploy.md": "# Deploying\n\nThe bot runs on a single server. Start it with the command ragcord bot.\n\n"
    "## Tokens\n\nThe Discord token is read from the DISCORD_TOKEN environment variable only.\n",
    "billing.txt": "Invoices are sent on the first Monday of every month. Refunds take ten business days.\n",
    "garden.html": "<html><head><title>Garden</title><style>p{}</style></head><body><h1>Roses</h1>"
    "<p>Roses need six hours of sun and weekly watering.</p><script>alert(1)</script></body></html>",
}


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def store(tmp_path: Path):
    s = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    yield s
    s.close()


@pytest.fixture
def fake_llm() -> FakeLLM:
    return FakeLLM()


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def service(tmp_path: Path, store: ChromaStore, embedder: FakeEmbedder, fake_llm: FakeLLM) -> RagService:
    settings = Settings(data_dir=tmp_path, min_score=0.2, caution_score=0.3, _env_file=None)  # type: ignore[call-arg]
    return RagService(
        store, embedder, llm_factory=lambda: fake_llm, lexical_dir=tmp_path / "lexical", settings=settings
    )


@pytest.fixture
def chroma_server(tmp_path: Path):
    """A real `chroma run` on 127.0.0.1 (a free port, a folder of the test's), killed afterwards."""
    from tests.servers import ChromaServer

    server = ChromaServer(tmp_path / "server")
    server.start()
    try:
        yield server
    finally:
        server.kill()
