"""Defect 3: vectors of one encoder are never compared with another encoder's; `ragcord reindex`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bot.service import RagService
from bot.settings import Settings
from store.chroma import ChromaLocation, ChromaStore
from store.protocol import EncoderMismatch
from tests.fakes import FakeEmbedder, FakeLLM

NS = "default"


def other_service(tmp_path: Path, embedder: FakeEmbedder) -> RagService:
    """Another process's view of the same data dir, with another encoder configured."""
    settings = Settings(data_dir=tmp_path, min_score=0.2, caution_score=0.3, _env_file=None)  # type: ignore[call-arg]
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    return RagService(store, embedder, llm_factory=FakeLLM, lexical_dir=tmp_path / "lexical2", settings=settings)


def renamed(name: str, dim: int = 256) -> FakeEmbedder:
    embedder = FakeEmbedder(dim=dim)
    embedder.name = name  # type: ignore[misc]
    return embedder


def test_another_encoder_of_the_same_dimension_is_refused_at_ingest_and_at_query(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir])
    other = other_service(tmp_path, renamed("other-model"))
    with pytest.raises(EncoderMismatch) as refused:
        other.ingest_paths(NS, [docs_dir])  # was: every document "unchanged", old vectors kept
    message = str(refused.value)
    assert "fake-embedder" in message and "other-model" in message and "ragcord reindex" in message
    assert other.embedder.embedded == 0  # type: ignore[attr-defined]
    with pytest.raises(EncoderMismatch):
        other.retriever.search(NS, "When are invoices sent?", 3)  # was: other-model's question vs fake's vectors
    assert service.retriever.search(NS, "When are invoices sent?", 3)  # the configured encoder still answers


def test_an_encoder_of_another_dimension_gets_the_mismatch_message_not_chromas_error(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir])
    other = other_service(tmp_path, FakeEmbedder(dim=128))
    with pytest.raises(EncoderMismatch, match="reindex"):
        other.retriever.search(NS, "roses", 3)


def _model_folder(path: Path, weights: bytes, hidden: int = 384) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(f'{{"hidden_size": {hidden}, "max_position_embeddings": 512}}')
    (path / "modules.json").write_text("[]")
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_model_folder_is_known_by_its_contents_and_backend_not_its_name(tmp_path):
    from store.embedder import SentenceTransformerEmbedder, encoder_identity, model_identity

    one = _model_folder(tmp_path / "a" / "model", b"\x01" * 3_000_000)
    two = _model_folder(tmp_path / "b" / "model", b"\x02" * 3_000_000)  # same name, other weights
    copy = tmp_path / "c" / "model"
    shutil.copytree(one, copy)
    ids = [encoder_identity(SentenceTransformerEmbedder(str(p))) for p in (one, two, copy)]
    assert ids[0] != ids[1] and ids[0] == ids[2]
    assert "384-d" in ids[0] and "torch" in ids[0]
    assert model_identity(str(one), "onnx-int8") != ids[0]


def test_reindex_switches_at_once_and_the_old_vectors_answer_until_then(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir])
    question = "When are invoices sent?"
    before = service.retriever.search(NS, question, 3)
    assert before and "Invoices" in before[0].chunk.text
    new = other_service(tmp_path, renamed("fake-b", dim=64))
    seen: list[tuple[int, int]] = []
    answered_meanwhile = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if 0 < done < total or (done == total and len(seen) == 2):
            answered_meanwhile.append(service.retriever.search(NS, question, 3))  # the old encoder, the old vectors

    count = new.reindex(NS, progress=progress)
    live = service.store.live_ids(NS)
    assert count == len(live) and seen[-1] == (count, count)
    assert answered_meanwhile and all(hits and "Invoices" in hits[0].chunk.text for hits in answered_meanwhile)
    hits = new.retriever.search(NS, question, 3)
    assert hits and "Invoices" in hits[0].chunk.text
    ids = sorted(live)
    stored = new.store.get_vectors(NS, ids)
    expected = new.embedder.embed([c.embed_text for c in new.store.get_chunks(NS, ids)])
    assert stored.shape == (len(ids), 64) and np.allclose(stored, expected, atol=1e-6)
    with pytest.raises(EncoderMismatch):
        service.retriever.search(NS, question, 3)  # the old encoder is now the wrong one
    # one chunk collection is left, and a re-ingest with the new encoder embeds nothing
    names = [c.name for c in new.store._client.list_collections()]
    assert len([n for n in names if not n.endswith("_docs")]) == 1
    assert new.store.namespaces() == [NS]
    embedded = new.embedder.embedded  # type: ignore[attr-defined]
    again = new.ingest_paths(NS, [docs_dir])
    assert {r.status for r in again} == {"unchanged"} and new.embedder.embedded == embedded  # type: ignore[attr-defined]


def test_cli_reindex_prints_progress_and_the_count(service, docs_dir, tmp_path, monkeypatch, capsys):
    import bot.cli as cli

    service.ingest_paths(NS, [docs_dir])
    new = other_service(tmp_path, renamed("fake-b", dim=64))
    monkeypatch.setattr(cli, "_service", lambda settings: new)
    monkeypatch.setenv("RAGCORD_DATA_DIR", str(tmp_path))
    assert cli.main(["reindex", "--namespace", NS]) == 0
    out = capsys.readouterr().out
    chunks = len(service.store.live_ids(NS))
    assert f"reindexed {chunks} chunks" in out and "fake-b" in out
    assert new.retriever.search(NS, "roses sun", 3)


def test_an_emptied_namespace_takes_a_new_encoder(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir / "billing.txt"])
    service.forget(NS, "billing.txt")
    other = other_service(tmp_path, renamed("other-model", dim=64))
    results = other.ingest_paths(NS, [docs_dir / "billing.txt"])
    assert [r.status for r in results] == ["added"]
    assert other.retriever.search(NS, "invoices monthly", 3)


def test_a_refused_ingest_leaves_no_crash_mark(service, docs_dir, tmp_path, caplog):
    service.ingest_paths(NS, [docs_dir])
    other = other_service(tmp_path, renamed("other-model"))
    with pytest.raises(EncoderMismatch):
        other.ingest_paths(NS, [docs_dir])
    assert not (tmp_path / "chroma" / "writer.dirty").exists()
    with caplog.at_level("WARNING"):
        other.reindex(NS)
    assert "stopped half-way" not in caplog.text


def test_a_crashed_reindex_leaves_only_an_unused_collection_that_the_next_writer_drops(service, docs_dir, tmp_path):
    service.ingest_paths("a", [docs_dir / "billing.txt"])
    service.ingest_paths("a__b", [docs_dir / "garden.html"])  # a namespace whose name starts like a's
    new = other_service(tmp_path, renamed("fake-b", dim=64))

    def crash(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt  # the reindex stops after its first batch

    with pytest.raises(KeyboardInterrupt):
        new.reindex("a", progress=crash)
    assert service.retriever.search("a", "invoices monthly", 3)  # still the old vectors
    with service.store.writer("a"):  # the next writer sees the crash mark and sweeps
        pass
    names = sorted(c.name for c in service.store._client.list_collections())
    assert [n for n in names if n.startswith("rc_a") and not n.endswith("_docs")] == ["rc_a", "rc_a__b"]
    assert service.retriever.search("a__b", "roses sun", 3)


class RolledEmbedder(FakeEmbedder):
    """Another encoder of the same dimension (its vectors are the fake's, rotated by one)."""

    name = "other-model"

    def embed(self, texts):  # type: ignore[no-untyped-def]
        return np.roll(super().embed(texts), 1, axis=1)

    def embed_query(self, text):  # type: ignore[no-untyped-def]
        return np.roll(super().embed_query(text), 1)


def unrecord_encoder(store: ChromaStore, ns: str) -> None:
    """Make the namespace look written before encoders were recorded (no encoder, no dimension)."""
    from dataclasses import replace

    store.refresh(ns, force=True)
    store._write_record(ns, replace(store._record(ns), encoder="", dim=0))


def test_a_namespace_written_before_encoders_were_recorded_is_checked_on_its_vectors(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir])
    unrecord_encoder(service.store, NS)
    other = other_service(tmp_path, RolledEmbedder())
    with pytest.raises(EncoderMismatch, match="unrecorded encoder"):
        other.retriever.search(NS, "When are invoices sent?", 3)  # other vectors: refused, not compared
    with pytest.raises(EncoderMismatch):
        other.ingest_paths(NS, [docs_dir])  # and not adopted
    same = other_service(tmp_path, FakeEmbedder())  # the encoder that wrote it: accepted, then recorded
    assert same.retriever.search(NS, "When are invoices sent?", 3)
    assert {r.status for r in same.ingest_paths(NS, [docs_dir])} == {"unchanged"}
    assert same.store._record(NS).encoder == "fake-embedder (256-d)"


# -- the default backend ("auto", issue 14 part 4) -------------------------------------------------------


def default_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str | None = None) -> Settings:
    monkeypatch.delenv("RAGCORD_EMBED_BACKEND", raising=False)
    monkeypatch.delenv("RAGCORD_EMBED_MODEL", raising=False)
    extra = {"embed_backend": backend} if backend else {}
    return Settings(data_dir=tmp_path, _env_file=None, **extra)  # type: ignore[call-arg]


def written_by(tmp_path: Path, docs_dir: Path, identity: str, ns: str = NS) -> None:
    """A store whose namespace `ns` holds vectors recorded as `identity`'s (written by an older ragcord)."""
    fake = FakeEmbedder()
    fake.identity = identity  # type: ignore[attr-defined]
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    RagService(store, fake, llm_factory=FakeLLM, lexical_dir=tmp_path / "lexical", settings=settings).ingest_paths(
        ns, [docs_dir]
    )
    store.close()


def bundled(backend: str) -> str:
    from store.embedder import model_identity, resolve_model

    return model_identity(resolve_model(""), backend)


def test_a_new_store_gets_the_int8_encoder_by_default(tmp_path, monkeypatch):
    service = RagService.from_settings(default_settings(tmp_path, monkeypatch))
    assert service.store.encoder == bundled("onnx-int8")  # was: torch


def test_a_store_built_with_torch_keeps_torch_under_the_default(tmp_path, docs_dir, monkeypatch):
    written_by(tmp_path, docs_dir, bundled("torch"))
    service = RagService.from_settings(default_settings(tmp_path, monkeypatch))
    assert service.store.encoder == bundled("torch")
    service.store.check_encoder(NS, service.store.encoder)  # questions and ingests are not refused
    service.store.close()


def test_a_store_written_before_encoders_were_recorded_keeps_torch_under_the_default(tmp_path, docs_dir, monkeypatch):
    written_by(tmp_path, docs_dir, bundled("torch"))
    old = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    unrecord_encoder(old, NS)
    old.close()
    service = RagService.from_settings(default_settings(tmp_path, monkeypatch))
    assert service.store.encoder == bundled("torch")  # torch was the only backend then
    service.store.close()


def test_a_store_reindexed_to_int8_stays_int8_and_an_explicit_backend_still_needs_reindex(
    tmp_path, docs_dir, monkeypatch
):
    written_by(tmp_path, docs_dir, bundled("onnx-int8"))
    service = RagService.from_settings(default_settings(tmp_path, monkeypatch))
    assert service.store.encoder == bundled("onnx-int8")
    service.store.close()
    explicit = RagService.from_settings(default_settings(tmp_path, monkeypatch, backend="torch"))
    assert explicit.store.encoder == bundled("torch")  # the setting wins over what the store records
    with pytest.raises(EncoderMismatch, match="ragcord reindex"):
        explicit.store.check_encoder(NS, explicit.store.encoder)
    explicit.store.close()


def test_auto_follows_the_namespaces_of_this_model_and_ignores_other_models():
    from store.embedder import auto_backend, resolve_model

    model = resolve_model("")
    torch_id, int8_id = bundled("torch"), bundled("onnx-int8")
    assert auto_backend(model, []) == "onnx-int8"
    assert auto_backend(model, ["other-model (torch, 384-d, abc)"]) == "onnx-int8"
    assert auto_backend(model, [torch_id, int8_id, torch_id]) == "torch"  # most namespaces keep working
    assert auto_backend(model, [torch_id, int8_id]) == "onnx-int8"  # a tie: the faster
    assert auto_backend(model, [""]) == "torch"  # vectors written before encoders were recorded
    assert auto_backend("sentence-transformers/all-MiniLM-L6-v2", []) == "torch"  # a hub name: no local folder


def test_auto_runs_a_model_the_onnx_export_cannot_build_with_torch(tmp_path):
    from store.embedder import auto_backend

    folder = _model_folder(tmp_path / "cls-model", b"\x01" * 1000)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert auto_backend(str(folder), []) == "torch"
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert auto_backend(str(folder), []) == "onnx-int8"
