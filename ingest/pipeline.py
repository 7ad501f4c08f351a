"""The ingestion pipeline: files -> loaders -> chunks -> embeddings -> store.

Idempotent and atomic per document:
- a document's fingerprint (its bytes plus the chunking and embedding settings) is
  kept in its manifest; an unchanged file is recognised before it is even parsed;
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
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from ingest.chunking import Chunker
from ingest.limits import check_declared_size, read_within_limit
from ingest.loaders import SUPPORTED_SUFFIXES, LoadError, load_bytes
from ingest.refusals import Refusals
from ingest.workers import PdfWorker, Prefetch
from store.embedder import Embedder, encoder_identity
from store.protocol import ReindexProgress, VectorStore
from store.types import Chunk, DocumentInfo, LoadedDocument, document_id_for

log = logging.getLogger(__name__)

IngestOutcome = Literal["added", "updated", "unchanged", "skipped", "failed"]


@dataclass(slots=True)
class IngestResult:
    source: str
    title: str
    status: IngestOutcome
    reason: str = ""
    chunks: int = 0
    embedded: int = 0
    pages: int = 0
    warnings: list[str] = field(default_factory=list)
    doc_id: str = ""


@dataclass(slots=True)
class IngestProgress:
    """Running totals, passed to the progress callback after every step."""

    files_total: int = 0
    files_done: int = 0
    pages: int = 0
    chunks: int = 0
    embedded: int = 0
    started: float = field(default_factory=time.perf_counter)
    current: str = ""
    wait_s: float = 0.0  # the encoder waiting for loading and chunking (the prefetch thread fell behind)
    encode_s: float = 0.0  # inside the encoder
    write_s: float = 0.0  # writing chunks and manifests to the store

    @property
    def chunks_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.embedded / elapsed if elapsed > 0 else 0.0


ProgressCallback = Callable[[IngestProgress], None]

# Above this many items one read of all manifests beats one read per file.
_SNAPSHOT_MIN_ITEMS = 16
# Encode what is pending (at least this many chunks) when the loader has nothing ready.
_EAGER_FLUSH_CHUNKS = 32
# From this many items, PDFs are parsed in a worker process (spawning it costs about a second).
_PDF_WORKER_MIN_ITEMS = 8


@dataclass(frozen=True, slots=True)
class Source:
    """One document to ingest from memory or anywhere: `read()` returns its bytes when needed."""

    read: Callable[[], bytes]
    filename: str
    source: str
    title: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Prepared:
    """A file after loading and chunking, waiting for embeddings."""

    result: IngestResult
    doc: LoadedDocument | None = None
    chunks: list[Chunk] = field(default_factory=list)
    fingerprint: str = ""
    previous: DocumentInfo | None = None
    reused: set[str] = field(default_factory=set)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    saved_metadata: dict[str, dict[str, object]] = field(default_factory=dict)  # reused chunks' before this attempt

    @property
    def to_embed(self) -> list[Chunk]:
        return [c for c in self.chunks if c.id not in self.reused]


def discover(paths: Iterable[Path]) -> tuple[list[Path], list[IngestResult]]:
    """Files to ingest under `paths` (folders walked, hidden entries skipped) and refusals."""
    found: list[Path] = []
    refused: list[IngestResult] = []
    for path in paths:
        if not path.exists():
            refused.append(IngestResult(str(path), path.name, "skipped", "no such file or folder"))
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    child = Path(root) / name
                    if child.suffix.lower() in SUPPORTED_SUFFIXES:
                        found.append(child)
                    else:
                        refused.append(
                            IngestResult(
                                str(child), name, "skipped", f"unsupported file type {child.suffix or '(none)'}"
                            )
                        )
        else:
            found.append(path)
    return found, refused


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
        self._settings_sig = chunker.signature
        self.refusals = Refusals(refusals_path)
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
        state = IngestProgress(files_total=1)
        items = iter([Source(lambda: data, filename, source, title, extra or {})])
        return self._run(namespace, items, state, progress)[0]

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
    def _run(self, namespace: str, items: Iterator, state: IngestProgress, progress: ProgressCallback | None):  # type: ignore[type-arg, no-untyped-def]
        """`items` yields `Source`s (or (read, filename, source, title, extra) tuples)."""
        notify = progress or (lambda _s: None)
        known: dict[str, DocumentInfo] | None = None
        if state.files_total - state.files_done >= _SNAPSHOT_MIN_ITEMS:
            known = {d.doc_id: d for d in self.store.documents(namespace)}
        worker = PdfWorker() if state.files_total - state.files_done >= _PDF_WORKER_MIN_ITEMS else None
        load = worker.load if worker is not None else load_bytes

        def prepare(item: Source | tuple) -> _Prepared:  # type: ignore[type-arg]
            src = item if isinstance(item, Source) else Source(*item)
            return self._prepare(namespace, src.read, src.filename, src.source, src.title, src.extra, known, load)

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
        pending: list[_Prepared] = []
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
    ) -> _Prepared:
        result = IngestResult(source, title or filename, "skipped", doc_id=document_id_for(source))
        refusal = ""
        try:
            data = read()
            check_declared_size(len(data), filename, self.max_bytes)
            fingerprint = hashlib.sha256(data + self._settings_sig.encode()).hexdigest()[:24]
            previous = known.get(result.doc_id) if known is not None else self.store.document(namespace, result.doc_id)
            if previous is not None and previous.content_hash == fingerprint and previous.extra == extra:
                result.status, result.title, result.chunks = "unchanged", previous.title, previous.chunks
                result.pages = previous.pages
                return _Prepared(result)
            refusal = Refusals.key(namespace, source, fingerprint, self._refusal_sig)
            if (reason := self.refusals.get(refusal)) is not None:
                result.reason = f"{reason} (unchanged since it was refused)"
                return _Prepared(result)
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
            return _Prepared(result)
        except OSError as exc:
            result.status, result.reason = "failed", f"cannot read {filename}: {exc.strerror or exc}"
            log.warning("failed to read %s", source, exc_info=True)
            return _Prepared(result)
        result.title, result.pages, result.chunks, result.warnings = doc.title, doc.pages, len(chunks), doc.warnings
        # Only an earlier version of this document can hold chunks with these ids (id = document + text).
        reused = self.store.existing_ids(namespace, [c.id for c in chunks]) if previous is not None else set()
        return _Prepared(result, doc, chunks, fingerprint, previous, reused)

    def _flush(
        self,
        namespace: str,
        pending: list[_Prepared],
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
            self._commit(namespace, ready, written=self._write_chunks(namespace, ready))
            state.files_done += len(batch)
            state.write_s += time.perf_counter() - t
            notify(state)

        writes.append(writer.submit(write))
        return [p.result for p in batch]  # final once the writer is done (`_pipeline` waits for it)

    def _write_chunks(self, namespace: str, ready: list[_Prepared]) -> bool:
        """New chunks of all ready documents in one batched write (invisible until each commit).

        False if that write failed: each document then writes (and rolls back) on its own.
        """
        new = [(p, c) for p in ready for c in p.to_embed]
        if len(ready) < 2 or not new:
            return False
        now = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            vectors = np.stack([p.vectors[c.id] for p, c in new])
            self.store.add_chunks(namespace, [c for _, c in new], vectors, now)
        except Exception:
            log.warning("batched write of %d chunks failed; writing document by document", len(new), exc_info=True)
            return False
        return True

    def _commit(self, namespace: str, ready: list[_Prepared], *, written: bool = False) -> None:
        """Make the ready documents live: their manifests in one write, then sweep old chunks.

        If the joint commit fails, each document commits on its own, so one bad document
        cannot fail the others; a document whose commit fails loses the chunks this
        attempt added and keeps its previous version.
        """
        now = datetime.now(UTC).isoformat(timespec="seconds")
        staged = [(p, info) for p in ready if (info := self._stage(namespace, p, now, written=written)) is not None]
        if not staged:
            return
        try:
            self.store.commit_documents(namespace, [info for _, info in staged])
            committed = staged
        except Exception as exc:
            if len(staged) == 1:
                self._roll_back(namespace, *staged[0], exc)
                return
            log.warning("joint commit of %d documents failed; committing one by one", len(staged), exc_info=True)
            committed = []
            for p, info in staged:
                try:
                    self.store.commit_document(namespace, info)
                    committed.append((p, info))
                except Exception as exc:
                    self._roll_back(namespace, p, info, exc)
        for p, _ in committed:
            p.result.status = "updated" if p.previous is not None else "added"
            p.result.embedded = len(p.to_embed)
        try:
            # older versions' chunks, and leftovers of any earlier attempt that crashed before its commit
            keep = {info.doc_id: info.chunk_ids for _, info in committed}
            self.store.delete_chunks(namespace, self.store.orphans(namespace, keep))
        except Exception:
            log.warning("could not sweep old chunks; they stay invisible and are swept next time", exc_info=True)

    def _stage(self, namespace: str, p: _Prepared, now: str, *, written: bool) -> DocumentInfo | None:
        """Write a document's new chunks (unless the batch write did) and its manifest record to be."""
        assert p.doc is not None
        info = DocumentInfo(
            doc_id=p.doc.doc_id,
            title=p.doc.title,
            source=p.doc.source,
            kind=p.doc.kind,
            chunks=len(p.chunks),
            pages=p.doc.pages,
            ingested_at=now,
            content_hash=p.fingerprint,
            chunk_ids=[c.id for c in p.chunks],
            extra=dict(p.doc.extra),
        )
        try:
            new = p.to_embed
            if not written:
                vectors = np.stack([p.vectors[c.id] for c in new]) if new else np.zeros((0, 1), np.float32)
                self.store.add_chunks(namespace, new, vectors, now)
            moved = [c for c in p.chunks if c.id in p.reused]
            if moved:  # live chunks of the previous version: their old metadata is put back if the commit fails
                p.saved_metadata = self.store.chunk_metadata(namespace, [c.id for c in moved])
                self.store.update_chunk_metadata(namespace, moved, now)
        except Exception as exc:
            self._roll_back(namespace, p, info, exc)
            return None
        return info

    def _roll_back(self, namespace: str, p: _Prepared, info: DocumentInfo, exc: Exception) -> None:
        """Mark the document failed (with `exc`) and remove what this attempt added."""
        log.error("writing %s failed; rolling back its new chunks", info.source, exc_info=exc)
        try:
            self.store.delete_chunks(namespace, [c.id for c in p.to_embed])
            self.store.restore_chunk_metadata(namespace, p.saved_metadata)
        except Exception:
            log.exception("rollback of %s failed; leftovers are invisible and swept next time", info.source)
        p.result.status, p.result.reason = "failed", f"store write failed: {exc}"
