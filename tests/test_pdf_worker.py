"""The PDF worker process (issue 12, defect 10): a PDF that kills or stalls the worker is
refused with a reason and never parsed in the calling process; the worker restarts."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from ingest.loaders import LoadError
from ingest.workers import PdfWorker
from store.types import LoadedDocument
from tests.pdf_hooks import parse_or_misbehave
from tests.pdfgen import make_pdf

PDF = make_pdf(["Alpha page one.", "Bravo page two."])
KW = {"max_bytes": 1 << 20}
UP = 120.0  # seconds a worker may take to start on a loaded machine


@pytest.fixture
def worker() -> Iterator[PdfWorker]:
    w = PdfWorker(timeout=30.0, parse=parse_or_misbehave)
    assert w.wait_until_ready(UP)
    yield w
    w.close()


def parse(worker: PdfWorker, name: str) -> LoadedDocument:
    return worker.load(PDF, name, source=f"test://{name}", **KW)


def test_pdfs_are_parsed_in_the_worker_process(worker: PdfWorker) -> None:
    doc = parse(worker, "a.pdf")
    assert [s.page for s in doc.sections] == [1, 2]
    assert doc.extra["parsed_by"] == str(worker.pid) != str(os.getpid())
    text = worker.load(b"# Notes\n\nNot a PDF.", "notes.md", source="test://notes", **KW)
    assert text.kind == "markdown"  # other formats are parsed here, as before


def test_a_pdf_that_kills_the_worker_is_refused_and_the_worker_restarts(worker: PdfWorker) -> None:
    first = worker.pid
    with pytest.raises(LoadError) as info:
        parse(worker, "crash.pdf")  # today's code parsed it again here, in the bot's own process
    assert str(info.value) == "crash.pdf was not indexed: the PDF parser crashed on this file"
    assert worker.restarts == 1 and worker.pid != first
    assert parse(worker, "next.pdf").extra["parsed_by"] == str(worker.pid)


def test_a_word_file_that_kills_the_worker_is_not_called_a_pdf(worker: PdfWorker, tmp_path) -> None:
    import docx
    from PIL import Image

    picture = tmp_path / "p.png"
    Image.new("RGB", (200, 80), "white").save(picture)
    document = docx.Document()
    document.add_paragraph("Text beside a picture.")
    document.add_picture(str(picture))
    document.save(tmp_path / "crash.docx")
    with pytest.raises(LoadError) as info:  # a .docx with pictures is parsed (and OCR'd) in the worker
        worker.load((tmp_path / "crash.docx").read_bytes(), "crash.docx", source="test://crash.docx", **KW)
    assert str(info.value) == "crash.docx was not indexed: the parser crashed on this file"


def test_a_pdf_that_stalls_the_worker_is_refused_after_the_timeout(worker: PdfWorker) -> None:
    worker.timeout = 1.0
    first = worker.pid
    started = time.monotonic()
    with pytest.raises(LoadError) as info:
        parse(worker, "stall.pdf")  # today's code waited forever
    assert time.monotonic() - started < 10
    assert str(info.value) == (
        "stall.pdf was not indexed: the PDF parser was still working on it after 1 s "
        "(raise RAGCORD_PDF_TIMEOUT to allow more time)"
    )
    assert first is not None
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)  # the stalled worker was killed
    assert worker.restarts == 1 and worker.wait_until_ready(UP)
    worker.timeout = 30.0
    assert parse(worker, "next.pdf").extra["parsed_by"] == str(worker.pid)


def test_an_unexpected_parser_error_in_the_worker_refuses_only_that_pdf(worker: PdfWorker) -> None:
    pid = worker.pid
    with pytest.raises(LoadError, match=r"^bug.pdf was not indexed: the PDF parser failed on it \(ValueError\)$"):
        parse(worker, "bug.pdf")
    assert worker.pid == pid and worker.restarts == 0
    assert parse(worker, "fine.pdf").extra["parsed_by"] == str(pid)


def test_a_worker_that_died_while_idle_is_not_blamed_on_the_next_pdf(worker: PdfWorker) -> None:
    pid = worker.pid
    assert pid is not None
    os.kill(pid, 9)
    time.sleep(0.2)
    doc = parse(worker, "innocent.pdf")  # not refused: it waits for a new worker
    assert worker.restarts == 1 and worker.pid != pid
    assert doc.extra["parsed_by"] == str(worker.pid)


def test_after_a_crash_the_next_pdf_waits_for_the_new_worker(worker: PdfWorker) -> None:
    with pytest.raises(LoadError, match="crashed"):
        parse(worker, "crash-1.pdf")
    with pytest.raises(LoadError, match="crashed"):  # would have killed this process if parsed here
        parse(worker, "crash-2.pdf")
    assert worker.restarts == 2
    assert parse(worker, "fine.pdf").extra["parsed_by"] == str(worker.pid) != str(os.getpid())


def test_before_the_worker_is_up_pdfs_are_parsed_here() -> None:
    w = PdfWorker(parse=parse_or_misbehave)
    try:
        doc = parse(w, "early.pdf")  # starts the worker; this one is parsed here meanwhile
        assert doc.extra["parsed_by"] == str(os.getpid())
        assert w.wait_until_ready(UP)
        assert parse(w, "late.pdf").extra["parsed_by"] == str(w.pid)
    finally:
        w.close()


def test_a_worker_that_cannot_start_leaves_parsing_here() -> None:
    def local(data: bytes, filename: str, **kwargs: object) -> LoadedDocument:  # not importable: cannot be spawned
        return parse_or_misbehave(data, filename, **kwargs)

    w = PdfWorker(parse=local)
    try:
        assert parse(w, "a.pdf").extra["parsed_by"] == str(os.getpid())
        assert not w.wait_until_ready(1.0)
        assert parse(w, "b.pdf").extra["parsed_by"] == str(os.getpid())
    finally:
        w.close()


def test_an_uploaded_pdf_is_parsed_in_the_worker_so_a_crash_cannot_take_the_bot_down(tmp_path) -> None:
    # A Discord upload is a run of one file: it used to be parsed in the bot's own process,
    # where a PDF that kills or stalls the parser kills or stalls the bot.
    from ingest.chunking import Chunker
    from ingest.pipeline import Ingestor
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder

    embedder = FakeEmbedder()
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    chunker = Chunker(embedder.count_tokens, max_tokens=256, target_tokens=200, overlap_tokens=40)
    ingestor = Ingestor(store, embedder, chunker, pdf_parse=parse_or_misbehave, pdf_timeout=2.0)
    try:
        pdf = make_pdf(["Otters hold hands while they sleep."])
        crashed = ingestor.ingest_bytes("ns", pdf, "crash.pdf", source="upload:crash.pdf")
        assert crashed.status == "skipped" and "crashed" in crashed.reason  # and this process is alive
        stalled = ingestor.ingest_bytes("ns", pdf, "stall.pdf", source="upload:stall.pdf")
        assert stalled.status == "skipped" and "still working on it after 2 s" in stalled.reason
        fine = ingestor.ingest_bytes("ns", pdf, "otters.pdf", source="upload:otters.pdf")
        assert fine.status == "added"
        [doc] = [d for d in store.documents("ns") if d.source == "upload:otters.pdf"]
        assert doc.extra["parsed_by"] != str(os.getpid())
    finally:
        ingestor.close()
        store.close()
