"""The ingestion pipeline: files -> loaders -> chunks -> embeddings -> store.

Idempotent and atomic per document:
- a document's fingerprint (its bytes plus the chunking settings, the OCR settings that
  change the text for PDFs and images, and the caller's metadata) is kept in its
  manifest; an unchanged file is recognised before it is even parsed;
- chunk ids are document id + content hash, so a changed document re-embeds only
  the chunks whose text changed;
- the manifest is written last (the commit point); a failure before it removes what
  this attempt added and leaves the previous version intact and answerable.

Loading and chunking run in a background thread, up to a batch of documents ahead of
the encoder (`IngestProgress.wait_s` shows any time the encoder starved); in runs of
many files, PDFs are parsed in a worker process so that pure-Python pypdf does not
hold the GIL the encoder needs between its torch ops (the worker starts in the
background; PDFs met before it is up are parsed here, so the encoder starts at once).
A writer thread commits each encoded batch while the encoder works on the next.
Chunks of several documents are encoded together in large calls (the encoder sorts
each call by length, so padding stays low), and the new chunks of all documents in a
batch go to Chroma in as few writes as its batch limit allows, and their manifest
records in one more (each document's switch is still its own record; if that joint
write fails, each document commits alone so one bad document fails only itself).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.chunking import Chunker
from ingest.commit import Committer
from ingest.limits import check_declared_size, read_within_limit
from ingest.loaders import DEFAULT_MAX_PAGES, DEFAULT_MAX_TEXT_CHARS, LoadError, load_bytes
from ingest.loaders.image import image_format
from ingest.loaders.ocr import TEXT_VERSION as OCR_TEXT_VERSION
from ingest.loaders.ocr import OcrOptions, progress_to
from ingest.loaders.office import has_pictures
from ingest.refusals import Refusals
from ingest.sources import (
    IngestOutcome,
    IngestProgress,
    IngestResult,
    Prepared,
    ProgressCallback,
    Source,
    discover,
)
from ingest.workers import DEFAULT_PDF_TIMEOUT, PdfWorker, Prefetch
from store.embedder import Embedder, encoder_identity
from store.protocol import ReindexProgress, StoreError, VectorStore
from store.types import DocumentInfo, LoadedDocument, document_id_for

if TYPE_CHECKING:
    from ingest.fetch import FetchOptions, WebCache

__all__ = ["IngestOutcome", "IngestProgress", "IngestResult", "Ingestor", "ProgressCallback", "Source", "discover"]

log = logging.getLogger(__name__)

# Above this many items one read of all manifests beats one read per file.
_SNAPSHOT_MIN_ITEMS = 16
# Encode what is pending (at least this many chunks) when the loader has nothing ready.
_EAGER_FLUSH_CHUNKS = 32
# From this many items, PDFs are parsed in a worker process (spawning it costs about a second).
_PDF_WORKER_MIN_ITEMS = 8
_UPLOAD_WAIT_S = 60.0  # an upload's PDF waits this long for the worker process rather than being parsed here


class Ingestor:
    """Writes documents into one namespace of a store. Blocking; thread-safe per call."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        chunker: Chunker,
        *,
        max_bytes: int = 50 * 1024 * 1024,
        pdf_password: str | None = None,
        batch_chunks: int = 256,
        refusals_path: Path | None = None,
        pdf_timeout: float = DEFAULT_PDF_TIMEOUT,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        pdf_parse: Callable[..., LoadedDocument] | None = None,
        ocr: OcrOptions | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.max_bytes = max_bytes
        self.pdf_password = pdf_password
        self.batch_chunks = batch_chunks
        self.encoder = encoder_identity(embedder)
        # Part of every document's fingerprint. The encoder is not: each namespace records its
        # encoder and refuses another one (`check_encoder`), and `reindex` keeps the documents.
        self._settings_sig = f"{chunker.signature}|pages={max_pages}|chars={max_text_chars}"
        # The OCR settings that change what is read are part of the fingerprint of the files OCR may
        # read (PDFs, images), so changing one re-reads them; threads and the time budget are not.
        self.ocr = ocr  # None: the loaders' defaults (or what `pdf_parse` binds)
        o = ocr or OcrOptions()
        self._ocr_sig = (
            f"|ocr={o.dpi}:{o.det_side}:{o.min_confidence:g}:{o.max_pages}:v{OCR_TEXT_VERSION}"
            if o.enabled
            else "|ocr=off"
        )
        self._ocr_kwargs: dict[str, Any] = {"ocr": ocr} if ocr is not None else {}
        self.pdf_timeout, self.max_pages, self.max_text_chars = pdf_timeout, max_pages, max_text_chars
        self._pdf_parse = pdf_parse  # None: `load_bytes` (tests pass one that misbehaves on purpose)
        # Uploads (one document a run: Discord attachments) are parsed in a long-lived worker
        # process, so a PDF that kills or stalls the parser cannot take the bot's process with it.
        self._upload_worker: PdfWorker | None = None
        self._upload_lock = threading.Lock()
        self._web_cache: WebCache | None = None  # created by the first `ingest_url`
        self.refusals = Refusals(refusals_path)
        self._committer = Committer(store)
        password_sig = hashlib.sha256((pdf_password or "").encode()).hexdigest()[:12]
        self._refusal_sig = f"{self._settings_sig}|{max_bytes}|{password_sig}"

    # -- public ---------------------------------------------------------------------
    def ingest_paths(
        self, namespace: str, paths: Sequence[Path], *, progress: ProgressCallback | None = None
    ) -> list[IngestResult]:
        files, refused = discover(paths)
        state = IngestProgress(files_total=len(files) + len(refused), files_done=len(refused))
        limit = self.max_bytes
        sources = (Source(functools.partial(read_within_limit, f, limit), f.name, str(f.resolve())) for f in files)
        return refused + self._run(namespace, sources, state, progress)

    def ingest_sources(
        self,
        namespace: str,
        sources: Iterable[Source],
        *,
        total: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[IngestResult]:
        """Ingest many documents from memory (a JSONL corpus, a channel export) in shared encoder batches."""
        if total is None and isinstance(sources, Sequence):
            total = len(sources)
        return self._run(namespace, iter(sources), IngestProgress(files_total=total or 0), progress)

    def ingest_bytes(
        self,
        namespace: str,
        data: bytes,
        filename: str,
        *,
        source: str,
        title: str | None = None,
        extra: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestResult:
        """One document (a Discord upload). A store that refuses or fails (busy, another encoder,
        unreachable) fails the document with the store's message, for the uploader's report."""
        state = IngestProgress(files_total=1)
        items = iter([Source(lambda: data, filename, source, title, extra or {})])
        try:
            return self._run(namespace, items, state, progress, isolated=True)[0]
        except StoreError as exc:
            log.warning("ingest of %s into %s failed: %s", source, namespace, exc)
            return IngestResult(source, title or filename, "failed", str(exc), doc_id=document_id_for(source))

    def ingest_source(
        self,
        namespace: str,
        item: Source,
        *,
        progress: ProgressCallback | None = None,
        isolated: bool = False,
        loader: Callable[..., LoadedDocument] | None = None,
    ) -> IngestResult:
        """One document; `isolated`: parsed in the uploads' worker process (as `ingest_bytes`)."""
        state = IngestProgress(files_total=1)
        try:
            return self._run(namespace, iter([item]), state, progress, isolated=isolated, loader=loader)[0]
        except StoreError as exc:
            log.warning("ingest of %s into %s failed: %s", item.source, namespace, exc)
            title = item.title or item.filename
            return IngestResult(item.source, title, "failed", str(exc), doc_id=document_id_for(item.source))

    def ingest_url(
        self,
        namespace: str,
        url: str,
        *,
        fetch: FetchOptions | None = None,
        source: str | None = None,
        extra: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
        isolated: bool = False,
    ) -> IngestResult:
        """Fetch a web page (or a PDF or Office file by URL) and ingest it (ingest/fetch.py).

        `source` (default: the URL) names the document; a re-fetch sends the ETag and Last-Modified
        recorded beside the store (web-cache.json), so an unchanged page embeds nothing."""
        from ingest.fetch import FetchOptions, WebCache, ingest_url

        with self._upload_lock:
            if self._web_cache is None:
                path = self.refusals.path.with_name("web-cache.json") if self.refusals.path else None
                self._web_cache = WebCache(path)
        options = fetch or FetchOptions(max_bytes=self.max_bytes)
        try:
            return ingest_url(
                self,
                namespace,
                url,
                options=options,
                cache=self._web_cache,
                source=source,
                extra=extra,
                progress=progress,
                isolated=isolated,
            )
        except StoreError as exc:  # as `ingest_bytes`: the store's message, for the report
            log.warning("ingest of %s into %s failed: %s", url, namespace, exc)
            return IngestResult(source or url, url, "failed", str(exc), doc_id=document_id_for(source or url))

    def _parse_here(self, data: bytes, filename: str, **kwargs: Any) -> LoadedDocument:
        return (self._pdf_parse or load_bytes)(data, filename, **kwargs)

    def _isolated_load(self, data: bytes, filename: str, **kwargs: Any) -> LoadedDocument:
        with self._upload_lock:  # one upload at a time through the worker's pipe
            if self._upload_worker is None:
                parse = self._pdf_parse or load_bytes
                self._upload_worker = PdfWorker(timeout=self.pdf_timeout, parse=parse, wait=_UPLOAD_WAIT_S)
            return self._upload_worker.load(
                data, filename, max_pages=self.max_pages, max_chars=self.max_text_chars, **self._ocr_kwargs, **kwargs
            )

    def close(self) -> None:
        """Stop the uploads' PDF worker process (if one was started)."""
        with self._upload_lock:
            if self._upload_worker is not None:
                self._upload_worker.close()
                self._upload_worker = None

    def forget(self, namespace: str, doc_id: str) -> DocumentInfo | None:
        with self.store.writer(namespace):
            return self.store.remove_document(namespace, doc_id)

    def reindex(self, namespace: str, *, progress: ReindexProgress | None = None) -> int:
        """Re-embed `namespace` from its stored texts with this ingestor's encoder (`ragcord reindex`)."""
        with self.store.writer(namespace):
            return self.store.reindex(
                namespace, self.embedder.embed, self.encoder, batch=self.batch_chunks, progress=progress
            )

    # -- the pipeline -------------------------------------------------------------------
    def _run(  # type: ignore[no-untyped-def]
        self,
        namespace: str,
        items: Iterator,  # type: ignore[type-arg]
        state: IngestProgress,
        progress: ProgressCallback | None,
        *,
        isolated: bool = False,
        loader: Callable[..., LoadedDocument] | None = None,
    ):
        """`items` yields `Source`s (or (read, filename, source, title, extra) tuples).

        `loader`: parses every item instead of the format loaders (web pages' extracted text)."""
        notify = progress or (lambda _s: None)
        known: dict[str, DocumentInfo] | None = None
        if state.files_total - state.files_done >= _SNAPSHOT_MIN_ITEMS:
            known = {d.doc_id: d for d in self.store.documents(namespace)}
        worker: PdfWorker | None = None
        load: Callable[..., LoadedDocument]
        if loader is not None:
            load = functools.partial(loader, max_pages=self.max_pages, max_chars=self.max_text_chars)
        elif isolated:
            load = self._isolated_load
        else:
            if state.files_total - state.files_done >= _PDF_WORKER_MIN_ITEMS:
                worker = PdfWorker(timeout=self.pdf_timeout, parse=self._pdf_parse or load_bytes)
            load = functools.partial(
                worker.load if worker is not None else self._parse_here,
                max_pages=self.max_pages,
                max_chars=self.max_text_chars,
                **self._ocr_kwargs,
            )

        def prepare(item: Source | tuple) -> Prepared:  # type: ignore[type-arg]
            src = item if isinstance(item, Source) else Source(*item)

            def ocr_page(page: int, pages: int) -> None:  # from the loader, here or in the worker process
                state.current, state.ocr_page, state.ocr_pages = src.title or src.filename, page, pages
                notify(state)

            try:
                with progress_to(ocr_page):
                    return self._prepare(
                        namespace, src.read, src.filename, src.source, src.title, src.extra, known, load
                    )
            finally:
                state.ocr_page = state.ocr_pages = 0

        try:
            with self.store.writer(namespace):
                self.store.check_encoder(namespace, self.encoder)
                return self._pipeline(namespace, items, prepare, state, notify)
        finally:
            if worker is not None:
                worker.close()
            self.refusals.save()

    def _pipeline(
        self,
        namespace: str,
        items: Iterator,  # type: ignore[type-arg]
        prepare: Callable,  # type: ignore[type-arg]
        state: IngestProgress,
        notify: ProgressCallback,
    ) -> list[IngestResult]:
        results: list[IngestResult] = []
        pending: list[Prepared] = []
        # One writer thread commits a batch while the encoder works on the next one; a
        # document's own steps (add, commit, sweep) stay in order, as do the batches.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
        writes: list[Future[None]] = []
        try:
            waited = time.perf_counter()
            # Deep enough that the loader keeps working through a whole encoder batch: with a few
            # documents of look-ahead the encoder idled while the next batch was parsed.
            feed = Prefetch(prepare, items, depth=max(8, self.batch_chunks // 4))
            for prepared in feed:
                state.wait_s += time.perf_counter() - waited
                state.current = prepared.result.title
                state.pages += prepared.result.pages
                if prepared.doc is None:  # refused, failed or unchanged: nothing to embed
                    results.append(prepared.result)
                    state.files_done += 1
                    notify(state)
                    waited = time.perf_counter()
                    continue
                state.chunks += len(prepared.chunks)
                pending.append(prepared)
                ready = sum(len(p.to_embed) for p in pending)
                # A full batch, or enough for one encoder step while the loader has nothing
                # ready: the encoder starts at once instead of idling while a batch fills.
                if ready >= self.batch_chunks or (ready >= _EAGER_FLUSH_CHUNKS and feed.idle()):
                    results.extend(self._flush(namespace, pending, state, notify, writer, writes))
                    pending = []
                notify(state)
                waited = time.perf_counter()
            results.extend(self._flush(namespace, pending, state, notify, writer, writes))
        finally:
            writer.shutdown(wait=True)  # every batch handed over is committed (or rolled back) before returning
        for write in writes:
            write.result()  # an unexpected error in the writer surfaces here
        return results

    def _prepare(
        self,
        namespace: str,
        read: Callable[[], bytes],
        filename: str,
        source: str,
        title: str | None,
        extra: dict[str, str],
        known: dict[str, DocumentInfo] | None = None,
        load: Callable[..., LoadedDocument] = load_bytes,
    ) -> Prepared:
        result = IngestResult(source, title or filename, "skipped", doc_id=document_id_for(source))
        refusal = ""
        try:
            data = read()
            check_declared_size(len(data), filename, self.max_bytes)
            fingerprint = hashlib.sha256(data + self._fingerprint_sig(data, filename, extra).encode()).hexdigest()[:24]
            previous = known.get(result.doc_id) if known is not None else self.store.document(namespace, result.doc_id)
            # the caller's extra is in the fingerprint: the stored extra also holds the loader's (ocr_pages, ...)
            if previous is not None and previous.content_hash == fingerprint:
                result.status, result.title, result.chunks = "unchanged", previous.title, previous.chunks
                result.pages = previous.pages
                return Prepared(result)
            refusal = Refusals.key(namespace, source, fingerprint, self._refusal_sig)
            if (reason := self.refusals.get(refusal)) is not None:
                result.reason = f"{reason} (unchanged since it was refused)"
                return Prepared(result)
            doc = load(
                data, filename, max_bytes=self.max_bytes, pdf_password=self.pdf_password, source=source, title=title
            )
            doc.extra.update(extra)
            chunks = self.chunker.chunk(doc)
            if not chunks:
                raise LoadError(f"{filename} has no text to index")
        except LoadError as exc:
            result.reason = str(exc)
            log.info("skipped %s: %s", source, exc)
            if refusal:
                self.refusals.put(refusal, result.reason)
            return Prepared(result)
        except OSError as exc:
            result.status, result.reason = "failed", f"cannot read {filename}: {exc.strerror or exc}"
            log.warning("failed to read %s", source, exc_info=True)
            return Prepared(result)
        result.title, result.pages, result.chunks, result.warnings = doc.title, doc.pages, len(chunks), doc.warnings
        # Only an earlier version of this document can hold chunks with these ids (id = document + text).
        reused = self.store.existing_ids(namespace, [c.id for c in chunks]) if previous is not None else set()
        return Prepared(result, doc, chunks, fingerprint, previous, reused)

    def _fingerprint_sig(self, data: bytes, filename: str, extra: dict[str, str]) -> str:
        """What besides the bytes a document's fingerprint covers: the settings, the OCR settings for
        files OCR may read, and the caller's metadata (a changed scope re-commits the document)."""
        sig = self._settings_sig
        head = data[:1024].lstrip(b"\x00\t\n\r\x0c ")
        if (
            head.startswith(b"%PDF")
            or filename.lower().endswith(".pdf")
            or image_format(data[:16])
            or has_pictures(data)  # Word and PowerPoint files with pictures, which OCR reads
        ):
            sig += self._ocr_sig
        if extra:
            sig += "|extra=" + json.dumps(sorted(extra.items()))
        return sig

    def _flush(
        self,
        namespace: str,
        pending: list[Prepared],
        state: IngestProgress,
        notify: ProgressCallback,
        writer: ThreadPoolExecutor,
        writes: list[Future[None]],
    ) -> list[IngestResult]:
        """Encode the pending documents' new chunks, then hand them to the writer thread."""
        if not pending:
            return []
        todo = [(p, c) for p in pending for c in p.to_embed]
        for start in range(0, len(todo), self.batch_chunks):
            part = todo[start : start + self.batch_chunks]
            t = time.perf_counter()
            try:
                vectors = self.embedder.embed([c.embed_text for _, c in part])
            except Exception as exc:  # the encoder failing fails this batch's documents only
                log.exception("embedding failed")
                for p in {id(p): p for p, _ in part}.values():
                    p.result.status, p.result.reason = "failed", f"embedding failed: {exc}"
                continue
            finally:
                state.encode_s += time.perf_counter() - t
            for (p, c), vec in zip(part, vectors, strict=True):
                p.vectors[c.id] = vec
            state.embedded += len(part)
            notify(state)
        batch = list(pending)

        def write() -> None:
            t = time.perf_counter()
            ready = [p for p in batch if p.result.status != "failed"]
            self._committer.commit(namespace, ready, written=self._committer.write_chunks(namespace, ready))
            state.files_done += len(batch)
            state.write_s += time.perf_counter() - t
            notify(state)

        writes.append(writer.submit(write))
        return [p.result for p in batch]  # final once the writer is done (`_pipeline` waits for it)
