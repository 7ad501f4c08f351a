from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.service import RagService
from bot.settings import Settings
from tests.fakes import FakeEmbedder, FakeLLM

NS = "default"


def statuses(results):
    return {Path(r.source).name: r.status for r in results}


def test_first_ingest_adds_and_reingest_embeds_nothing(service, docs_dir, embedder):
    first = service.ingest_paths(NS, [docs_dir])
    assert statuses(first) == {"billing.txt": "added", "deploy.md": "added", "garden.html": "added"}
    embedded = embedder.embedded
    assert embedded == sum(r.chunks for r in first) > 0

    again = service.ingest_paths(NS, [docs_dir])
    assert set(statuses(again).values()) == {"unchanged"}
    assert embedder.embedded == embedded  # nothing re-embedded
    assert len(service.documents(NS)) == 3


def test_changed_document_replaces_old_chunks(service, docs_dir, embedder):
    service.ingest_paths(NS, [docs_dir])
    before = embedder.embedded
    (docs_dir / "billing.txt").write_text(
        "Invoices are sent on the first Monday of every month. Refunds now take three business days.\n"
    )
    results = service.ingest_paths(NS, [docs_dir])
    assert statuses(results)["billing.txt"] == "updated"
    assert embedder.embedded > before
    hits = service.retriever.search(NS, "refunds business days", 5)
    texts = " ".join(h.chunk.text for h in hits)
    assert "three business days" in texts and "ten business days" not in texts
    # no leftovers in the collection: every stored chunk of the document is live
    info = service.find_document(NS, "billing.txt")
    assert service.store.orphan_ids(NS, info.doc_id, keep=info.chunk_ids) == []


def test_failure_half_way_leaves_previous_version_answerable(service, docs_dir, embedder):
    service.ingest_paths(NS, [docs_dir])
    old = service.find_document(NS, "billing.txt")
    (docs_dir / "billing.txt").write_text("Invoices are now sent weekly. POISON sentence breaks the encoder.\n")
    embedder.fail_on = "POISON"
    results = service.ingest_paths(NS, [docs_dir])
    assert statuses(results)["billing.txt"] == "failed"
    assert "embedding failed" in next(r.reason for r in results if r.source.endswith("billing.txt"))
    now = service.find_document(NS, "billing.txt")
    assert now.chunk_ids == old.chunk_ids and now.content_hash == old.content_hash
    hits = service.retriever.search(NS, "refunds ten business days", 3)
    assert any("ten business days" in h.chunk.text for h in hits)
    assert all("POISON" not in h.chunk.text for h in hits)


def test_store_write_failure_rolls_back(service, docs_dir, monkeypatch):
    service.ingest_paths(NS, [docs_dir])
    old = service.find_document(NS, "deploy.md")
    (docs_dir / "deploy.md").write_text("# Deploying\n\nEverything changed: use the launcher script now.\n")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(service.store, "commit_documents", boom)
    results = service.ingest_paths(NS, [docs_dir / "deploy.md"])
    assert results[0].status == "failed" and "disk full" in results[0].reason
    monkeypatch.undo()
    assert service.find_document(NS, "deploy.md").chunk_ids == old.chunk_ids
    # the new chunks written before the failure were removed again
    assert service.store.orphan_ids(NS, old.doc_id, keep=old.chunk_ids) == []


def test_one_documents_failed_commit_does_not_fail_the_batch(service, docs_dir, monkeypatch):
    """Documents commit together; if that write fails, each commits alone and only the bad one fails."""
    commit = service.store.commit_documents
    calls = []

    def flaky(ns, infos):
        calls.append([i.title for i in infos])
        if len(infos) > 1 or infos[0].title == "Deploying":
            raise RuntimeError("disk full")
        commit(ns, infos)

    monkeypatch.setattr(service.store, "commit_documents", flaky)
    results = service.ingest_paths(NS, [docs_dir])
    monkeypatch.undo()
    assert len(calls[0]) == 3  # one joint commit first
    assert statuses(results) == {"billing.txt": "added", "deploy.md": "failed", "garden.html": "added"}
    assert "disk full" in next(r.reason for r in results if r.status == "failed")
    assert sorted(d.title for d in service.documents(NS)) == ["Garden", "billing.txt"]
    # the failed document's chunks were removed, not left behind
    live = service.store.live_ids(NS)
    stored = service.store._chunks(NS).get(include=[])["ids"]
    assert set(stored) == live
    again = service.ingest_paths(NS, [docs_dir])
    assert statuses(again) == {"billing.txt": "unchanged", "deploy.md": "added", "garden.html": "unchanged"}


def test_batch_commit_sweeps_old_versions_of_every_document(service, docs_dir):
    service.ingest_paths(NS, [docs_dir])
    for name in ("billing.txt", "deploy.md"):
        (docs_dir / name).write_text((docs_dir / name).read_text() + "\nA new closing sentence about otters.\n")
    results = service.ingest_paths(NS, [docs_dir])
    assert statuses(results) == {"billing.txt": "updated", "deploy.md": "updated", "garden.html": "unchanged"}
    stored = set(service.store._chunks(NS).get(include=[])["ids"])
    assert stored == service.store.live_ids(NS)  # no chunk of an old version remains


def test_refused_file_is_not_parsed_again_until_it_changes(service, tmp_path, monkeypatch):
    import ingest.pipeline as pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage without xref")
    (folder / "ok.md").write_text("# Ok\n\nThe office opens at nine.\n")
    first = service.ingest_paths(NS, [folder])
    assert statuses(first) == {"broken.pdf": "skipped", "ok.md": "added"}
    reason = next(r.reason for r in first if r.status == "skipped")

    loaded = []
    real = service.ingestor._pdf_parse or pipeline.load_bytes  # what the ingestor parses with (OCR options bound)
    monkeypatch.setattr(
        service.ingestor, "_pdf_parse", lambda data, name, **kw: loaded.append(name) or real(data, name, **kw)
    )
    again = service.ingest_paths(NS, [folder])
    assert statuses(again) == {"broken.pdf": "skipped", "ok.md": "unchanged"}
    assert loaded == []  # neither file parsed again
    assert next(r.reason for r in again if r.status == "skipped").startswith(reason)

    # a changed file is parsed again; the memory is kept on disk beside the store
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n2 0 obj still garbage")
    third = service.ingest_paths(NS, [folder])
    assert loaded == ["broken.pdf"] and statuses(third)["broken.pdf"] == "skipped"
    assert len(json.loads((tmp_path / "refused-files.json").read_text())) == 2  # both versions remembered


def test_unsupported_and_missing_files_are_skipped_with_reason(service, tmp_path):
    (tmp_path / "a.exe").write_bytes(b"MZ\x00\x00binary")
    (tmp_path / "empty.txt").write_text("")
    results = service.ingest_paths(NS, [tmp_path / "a.exe", tmp_path / "empty.txt", tmp_path / "missing.md"])
    assert [r.status for r in results] == ["skipped", "skipped", "skipped"]
    assert all(r.reason for r in results)
    assert service.documents(NS) == []


def test_forget_removes_chunks_from_dense_and_lexical_search(service, docs_dir):
    service.ingest_paths(NS, [docs_dir])
    assert any("Roses" in h.chunk.text for h in service.retriever.search(NS, "roses sun watering", 3))
    service.forget(NS, "Garden")
    assert all("Roses" not in h.chunk.text for h in service.retriever.search(NS, "roses sun watering", 3))
    assert service.retriever.lexical_index(NS).search("roses", 5) == []
    assert [d.title for d in service.documents(NS)] == ["billing.txt", "Deploying"]


def test_lexical_index_follows_ingest_reingest_and_forget(service, docs_dir):
    service.ingest_paths(NS, [docs_dir])
    index = service.retriever.lexical_index(NS)
    live = service.store.live_ids(NS)
    assert set(index.ids) == live
    (docs_dir / "billing.txt").write_text("Quarterly invoices replace the monthly ones.\n")
    service.ingest_paths(NS, [docs_dir])
    index2 = service.retriever.lexical_index(NS)
    assert set(index2.ids) == service.store.live_ids(NS) != live
    assert index2.search("quarterly", 3)
    service.forget(NS, "billing.txt")
    assert service.retriever.lexical_index(NS).search("quarterly", 3) == []


def test_namespaces_are_isolated(service, docs_dir):
    service.ingest_paths("g1", [docs_dir / "billing.txt"])
    service.ingest_paths("g2", [docs_dir / "garden.html"])
    assert [d.title for d in service.documents("g1")] == ["billing.txt"]
    assert all("Roses" not in h.chunk.text for h in service.retriever.search("g1", "roses sun", 5))
    assert all("Invoices" not in h.chunk.text for h in service.retriever.search("g2", "invoices monthly", 5))


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder, FakeLLM
    data = Path(sys.argv[2])
    store = ChromaStore(ChromaLocation(path=data / "chroma"))
    svc = RagService(store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=data / "lexical",
                     settings=Settings(data_dir=data, _env_file=None))
    if sys.argv[3] == "ingest":
        print(svc.ingest_paths("default", [Path(sys.argv[4])])[0].status)
    else:
        print(svc.forget("default", sys.argv[4]).title)
    """
)


@pytest.mark.parametrize("dummy", [0])
def test_long_lived_reader_sees_another_process_writes(service, tmp_path, dummy):
    """A bot process keeps its store open while `ragcord ingest` runs in another process."""
    root = Path(__file__).resolve().parent.parent
    doc = tmp_path / "late.md"
    doc.write_text("# Late\n\nThe zeppelin hangar opens at dawn on Tuesdays.\n")
    other = tmp_path / "other.md"
    other.write_text("# Other\n\nA note about gardening tools and shovels.\n")
    service.ingest_paths(NS, [other])
    assert all("zeppelin" not in h.chunk.text for h in service.retriever.search(NS, "zeppelin hangar", 3))

    out = subprocess.run(
        [sys.executable, "-c", WRITER, str(root), str(tmp_path), "ingest", str(doc)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "added"
    hits = service.retriever.search(NS, "zeppelin hangar", 3)
    assert hits and "zeppelin" in hits[0].chunk.text  # dense and lexical both see it
    assert hits[0].dense is not None and hits[0].dense > 0.3

    out = subprocess.run(
        [sys.executable, "-c", WRITER, str(root), str(tmp_path), "forget", "Late"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert all("zeppelin" not in h.chunk.text for h in service.retriever.search(NS, "zeppelin hangar", 3))


def test_many_pdfs_ingest_whole_and_start_the_pdf_worker(service, tmp_path, monkeypatch):
    import ingest.workers as workers
    from tests.pdfgen import make_pdf

    started = []
    real_start = workers.PdfWorker.start
    monkeypatch.setattr(workers.PdfWorker, "start", lambda self: started.append(1) or real_start(self))
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(8):  # enough files for the PDF worker process
        (folder / f"report-{n}.pdf").write_bytes(make_pdf([f"Report {n} covers the routers.", f"Page two of {n}."]))
    (folder / "notes.md").write_text("# Notes\n\nThe office opens at nine.\n")
    results = service.ingest_paths(NS, [folder])
    assert set(statuses(results).values()) == {"added"} and len(results) == 9
    assert sorted(r.pages for r in results if r.source.endswith(".pdf")) == [2] * 8
    hits = service.retriever.search(NS, "Report 5 routers", 1)
    assert hits and hits[0].chunk.page == 1 and "Report 5" in hits[0].chunk.text
    assert started  # the worker was started (PDFs met before it is up are parsed here: next test)


# -- defect 4: the size limit is checked before a file is read --------------------------------


def test_a_file_over_the_limit_is_refused_from_its_size_without_reading_it(service, tmp_path, monkeypatch):
    import pathlib
    import tracemalloc

    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(60 * 1024 * 1024)  # sparse: 60 MB on paper, nothing on disk
    opened = []
    real_open, real_read = pathlib.Path.open, pathlib.Path.read_bytes
    monkeypatch.setattr(
        pathlib.Path, "open", lambda self, *a, **k: opened.append(self.name) or real_open(self, *a, **k)
    )
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: opened.append(self.name) or real_read(self))
    tracemalloc.start()
    try:
        results = service.ingest_paths(NS, [big])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r.status for r in results] == ["skipped"]
    assert "big.txt" not in opened  # refused from its stat, never read
    assert peak < 8 * 1024 * 1024  # was: the whole 60 MB read first
    reason = results[0].reason
    assert "over the 50 MB limit" in reason and "60 MB" in reason and "52" not in reason
    assert "RAGCORD_MAX_FILE_MB" in reason


def test_check_declared_size_says_the_limit_in_the_settings_unit():
    from ingest.limits import check_declared_size
    from ingest.loaders import LoadError

    limit = int(50.0 * 1024 * 1024)  # Settings.max_file_bytes for the default RAGCORD_MAX_FILE_MB=50
    check_declared_size(limit, "ok.pdf", limit)
    with pytest.raises(LoadError, match=r"ok.pdf is 50.5 MB, over the 50 MB limit"):
        check_declared_size(limit + 512 * 1024, "ok.pdf", limit)


# -- defect 9: live chunks' metadata, crashed writers, one writer per data directory ---------


def test_a_failed_commit_puts_back_the_metadata_of_the_previous_versions_chunks(service, tmp_path, monkeypatch):
    doc = tmp_path / "moves.md"
    doc.write_text("# Alpha\n\nThe alpha paragraph stays the same.\n\n# Beta\n\nThe beta paragraph stays too.\n")
    service.ingest_paths(NS, [doc])
    old = service.find_document(NS, "moves.md")
    before = {c.id: (c.index, c.section) for c in service.store.get_chunks(NS, old.chunk_ids)}
    # a new first section: the unchanged chunks keep their ids but move (index, section path)
    doc.write_text("# Zero\n\nA new first part.\n\n" + doc.read_text())

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(service.store, "commit_documents", boom)
    assert service.ingest_paths(NS, [doc])[0].status == "failed"
    monkeypatch.undo()
    after = {c.id: (c.index, c.section) for c in service.store.get_chunks(NS, old.chunk_ids)}
    assert after == before  # was: the live (old) version showed the new version's positions


CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder, FakeLLM
    data = Path(sys.argv[2])
    store = ChromaStore(ChromaLocation(path=data / "chroma"))
    svc = RagService(store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=data / "lexical",
                     settings=Settings(data_dir=data, _env_file=None))
    store.commit_documents = lambda *a, **k: os._exit(9)  # dies after writing the new chunks, before the commit
    svc.ingest_paths("default", [Path(sys.argv[3])])
    """
)


def test_the_leftovers_of_a_crashed_ingest_are_swept_by_the_next_writer(service, docs_dir, tmp_path):
    root = Path(__file__).resolve().parent.parent
    service.ingest_paths(NS, [docs_dir])
    (docs_dir / "billing.txt").write_text("Invoices are now sent every Friday. Refunds take a day.\n")
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(root), str(tmp_path), str(docs_dir / "billing.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 9, out.stderr
    stored = set(service.store._chunks(NS).get(include=[])["ids"])
    assert stored - service.store.live_ids(NS)  # the crash left invisible chunks behind
    other = tmp_path / "other.md"
    other.write_text("# Other\n\nA note about shovels.\n")
    service.ingest_paths(NS, [other])  # another document: the crashed one is not touched again
    stored = set(service.store._chunks(NS).get(include=[])["ids"])
    assert stored == service.store.live_ids(NS)  # was: swept only when billing.txt is re-ingested
    assert "ten business days" in " ".join(h.chunk.text for h in service.retriever.search(NS, "refunds", 3))


def test_a_second_writer_waits_then_is_refused_with_what_to_do(service, docs_dir, tmp_path):
    import time

    from store.chroma import ChromaLocation, ChromaStore
    from store.protocol import StoreBusy

    settings = Settings(data_dir=tmp_path, writer_wait_s=0.3, _env_file=None)  # type: ignore[call-arg]
    other_store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), writer_wait_s=settings.writer_wait_s)
    other = RagService(other_store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=None, settings=settings)
    with service.store.writer(NS):  # e.g. a `ragcord ingest` running in another process
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="another ragcord process is writing") as busy:
            other.ingest_paths(NS, [docs_dir])
        assert 0.25 < time.monotonic() - started < 5
        assert "try again" in str(busy.value)
        with pytest.raises(StoreBusy):
            other.ingestor.forget(NS, "whatever")
        upload = other.ingest_bytes(NS, b"Some text.", "up.txt", source="discord:1:up.txt")
        assert upload.status == "failed" and "another ragcord process is writing" in upload.reason
    assert {r.status for r in other.ingest_paths(NS, [docs_dir])} == {"added"}  # free again


def test_old_chunks_a_failed_sweep_left_are_swept_by_the_next_writer(service, docs_dir, tmp_path, monkeypatch):
    service.ingest_paths(NS, [docs_dir])
    (docs_dir / "billing.txt").write_text("Invoices are now sent every Friday.\n")

    def gone(*args, **kwargs):
        raise RuntimeError("server gone")

    monkeypatch.setattr(service.store, "orphans", gone)  # the sweep after the commit fails
    assert statuses(service.ingest_paths(NS, [docs_dir]))["billing.txt"] == "updated"
    monkeypatch.undo()
    stored = set(service.store._chunks(NS).get(include=[])["ids"])
    assert stored - service.store.live_ids(NS)  # the old version's chunks are still stored
    other = tmp_path / "other.md"
    other.write_text("# Other\n\nA note about shovels.\n")
    service.ingest_paths(NS, [other])  # billing.txt is unchanged now: only a full sweep removes them
    stored = set(service.store._chunks(NS).get(include=[])["ids"])
    assert stored == service.store.live_ids(NS)  # was: kept until billing.txt changes again


def test_a_fifo_in_a_folder_is_refused_without_blocking_the_ingest(service, tmp_path):
    import os
    import threading

    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "pipe.txt")  # opening it for reading would wait for a writer for ever
    (folder / "ok.md").write_text("# Ok\n\nThe office opens at nine.\n")
    results: list = []
    worker = threading.Thread(target=lambda: results.extend(service.ingest_paths(NS, [folder])), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive()  # was: blocked in open() on the FIFO
    assert statuses(results) == {"ok.md": "added", "pipe.txt": "skipped"}
    assert "not a regular file" in next(r.reason for r in results if r.status == "skipped")
