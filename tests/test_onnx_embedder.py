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
    # int8 activations are scaled per batch, so a text's vector moves slightly with its batch-mates
    assert float(alone @ got[0]) >= (0.98 if quantized else 0.99999)
