"""The ONNX backend of the real encoder: exported once from the bundled model folder, same vectors."""

from __future__ import annotations

import numpy as np
import pytest

from store.embedder import SentenceTransformerEmbedder
from store.onnx_embedder import OnnxEmbedder

pytestmark = pytest.mark.slow

TEXTS = [
    "Invoices are sent on the first Monday of every month.",
    "The deploy script reads DISCORD_TOKEN from the environment. " * 30,  # over 256 word pieces: truncated alike
    "Roses need six hours of sun.",
    "",
]


@pytest.fixture(scope="module")
def torch_vectors():
    e = SentenceTransformerEmbedder()
    return e.embed(TEXTS), e.embed_query("when are invoices sent?")


@pytest.mark.parametrize("quantized, floor", [(False, 0.9999), (True, 0.97)])
def test_onnx_backend_matches_sentence_transformers(tmp_path, torch_vectors, quantized, floor):
    docs, query = torch_vectors
    e = OnnxEmbedder(cache_dir=tmp_path / "models", quantized=quantized, batch_size=2)
    got = e.embed(TEXTS)
    assert got.shape == docs.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    assert (got * docs).sum(1).min() >= floor
    assert float(e.embed_query("when are invoices sent?") @ query) >= floor
    # the export is kept and reused; the name differs from torch's, so fingerprints re-embed on a switch
    assert e.path.exists() and e.name.endswith("+onnx-int8" if quantized else "+onnx")
    again = OnnxEmbedder(cache_dir=tmp_path / "models", quantized=quantized)
    assert again.path == e.path
    alone = again.embed(TEXTS[:1])[0]
    # a text's vector does not move with its batch-mates (int8 activations are scaled per call, and
    # each text is its own call): re-embedding a chunk gives its stored vector back
    assert float(alone @ got[0]) >= 0.99999
    assert float(again.embed(TEXTS[1:3] + TEXTS[:1])[2] @ got[0]) >= 0.99999


ASK = """
import json, sys
from bot.service import RagService
from bot.settings import Settings

service = RagService.from_settings(Settings(data_dir=sys.argv[1], _env_file=None))
text = b"Invoices are sent on the first Monday of every month."
service.ingest_bytes("default", text, "billing.txt", source="billing.txt")
prepared = service.prepare_answer("default", "When are invoices sent?")
heavy = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
print(json.dumps({"encoder": service.store.encoder, "heavy": heavy, "hits": len(prepared.answer.hits)}))
"""


def test_with_the_default_backend_ingest_and_ask_never_import_torch_once_exported(tmp_path, monkeypatch):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from store.embedder import model_identity, resolve_model

    OnnxEmbedder(cache_dir=tmp_path / "models", quantized=True).embed(["export it"])  # the one-time export (torch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGCORD_")}
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", ASK, str(tmp_path)], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["encoder"] == model_identity(resolve_model(""), "onnx-int8") and got["hits"] >= 1
    assert got["heavy"] == []


def test_an_unrecorded_int8_namespace_is_accepted_by_its_own_encoder(tmp_path):
    """The check of a namespace written before encoders were recorded re-embeds 4 of its chunks and
    wants its stored vectors back (cosine >= 0.999): int8 vectors must not depend on their batch."""
    from dataclasses import replace

    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeLLM

    def service(embedder: OnnxEmbedder) -> RagService:
        settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
        store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
        return RagService(store, embedder, llm_factory=FakeLLM, lexical_dir=tmp_path / "lexical", settings=settings)

    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(12):  # short documents of varied lengths, encoded together at ingest
        text = f"Document {n} is about topic {n}. " + "Invoices are sent on the first Monday. " * (1 + n)
        (docs / f"d{n:02}.txt").write_text(text)
    first = service(OnnxEmbedder(cache_dir=tmp_path / "models", quantized=True))
    first.ingest_paths("ns", [docs])
    assert len(first.store.live_ids("ns")) >= 12
    first.store.refresh("ns", force=True)
    first.store._write_record("ns", replace(first.store._record("ns"), encoder="", dim=0))
    first.store.close()
    again = service(OnnxEmbedder(cache_dir=tmp_path / "models", quantized=True))
    assert again.retriever.search("ns", "When are invoices sent?", 3)  # batched int8 was refused: cosine 0.995
