"""The ingestion pipeline: files -> loaders -> chunks -> embeddings -> store.

Idempotent and atomic per document:
- a document's fingerprint (its bytes plus the chunking and embedding settings) is
  kept in its manifest; an unchanged file is recognised before it is even parsed;
- chunk ids are document id + content hash, so a changed document re-embeds only
  the chunks whose text changed;
- the manifest is written last (the commit point); a failure before it removes what
  this attempt added and leaves the previous version intact and answerable.

Loading and chunking run in a background thread while the encoder works, and chunks
of several documents are encoded together in large batches (the encoder sorts each
batch by length, so padding stays low).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from ingest.chunking import Chunker
from ingest.loaders import SUPPORTED_SUFFIXES, LoadError, load_bytes
from store.chroma import ChromaStore
from store.embedder import Embedder
from store.types import Chunk, DocumentInfo, LoadedDocument, document_id_for

log = logging.getLogger(__name__)

Status = Literal["added", "updated", "unchanged", "skipped", "failed"]


@dataclass(slots=True)
class IngestResult:
    source: str
    title: str
    status: Status
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

    @property
    def chunks_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.embedded / elapsed if elapsed > 0 else 0.0


ProgressCallback = Callable[[IngestProgress], None]


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
        store: ChromaStore,
        embedder: Embedder,
        chunker: Chunker,
        *,
        max_bytes: int = 50 * 1024 * 1024,
        pdf_password: str | None = None,
        batch_chunks: int = 256,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.chunker = chunker
        self.max_bytes = max_bytes
        self.pdf_password = pdf_password
        self.batch_chunks = batch_chunks
        self._settings_sig = f"{getattr(embedder, 'name', '?')}|{chunker.signature}"

    # -- public ---------------------------------------------------------------------
    def ingest_paths(
        self, namespace: str, paths: Sequence[Path], *, progress: ProgressCallback | None = None
    ) -> list[IngestResult]:
        files, refused = discover(paths)
        state = IngestProgress(files_total=len(files) + len(refused), files_done=len(refused))
        sources: Iterator[tuple] = ((lambda f=f: f.read_bytes(), f.name, str(f.resolve()), None, {}) for f in files)
        return refused + self._run(namespace, sources, state, progress)

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
        items = iter([(lambda: data, filename, source, title, extra or {})])
        return self._run(namespace, items, state, progress)[0]

    def forget(self, namespace: str, doc_id: str) -> DocumentInfo | None:
        return self.store.remove_document(namespace, doc_id)

    # -- the pipeline -------------------------------------------------------------------
    def _run(self, namespace: str, items: Iterator, state: IngestProgress, progress: ProgressCallback | None):  # type: ignore[type-arg, no-untyped-def]
        results: list[IngestResult] = []
        notify = progress or (lambda _s: None)
        pending: list[_Prepared] = []
        for prepared in _prefetch(lambda item: self._prepare(namespace, *item), items):
            state.current = prepared.result.title
            state.pages += prepared.result.pages
            if prepared.doc is None:  # refused, failed or unchanged: nothing to embed
                results.append(prepared.result)
                state.files_done += 1
                notify(state)
                continue
            state.chunks += len(prepared.chunks)
            pending.append(prepared)
            if sum(len(p.to_embed) for p in pending) >= self.batch_chunks:
                results.extend(self._flush(namespace, pending, state, notify))
                pending = []
            notify(state)
        results.extend(self._flush(namespace, pending, state, notify))
        return results

    def _prepare(
        self,
        namespace: str,
        read: Callable[[], bytes],
        filename: str,
        source: str,
        title: str | None,
        extra: dict[str, str],
    ) -> _Prepared:
        result = IngestResult(source, title or filename, "skipped", doc_id=document_id_for(source))
        try:
            data = read()
            if len(data) > self.max_bytes:
                raise LoadError(
                    f"{filename} is {len(data) / 1e6:.1f} MB, over the {self.max_bytes / 1e6:.0f} MB limit "
                    "(raise RAGCORD_MAX_FILE_MB)"
                )
            fingerprint = hashlib.sha256(data + self._settings_sig.encode()).hexdigest()[:24]
            previous = self.store.document(namespace, result.doc_id)
            if previous is not None and previous.content_hash == fingerprint and previous.extra == extra:
                result.status, result.title, result.chunks = "unchanged", previous.title, previous.chunks
                result.pages = previous.pages
                return _Prepared(result)
            doc = load_bytes(
                data, filename, max_bytes=self.max_bytes, pdf_password=self.pdf_password, source=source, title=title
            )
            doc.extra.update(extra)
            chunks = self.chunker.chunk(doc)
            if not chunks:
                raise LoadError(f"{filename} has no text to index")
        except LoadError as exc:
            result.reason = str(exc)
            log.info("skipped %s: %s", source, exc)
            return _Prepared(result)
        except OSError as exc:
            result.status, result.reason = "failed", f"cannot read {filename}: {exc.strerror or exc}"
            log.warning("failed to read %s", source, exc_info=True)
            return _Prepared(result)
        result.title, result.pages, result.chunks, result.warnings = doc.title, doc.pages, len(chunks), doc.warnings
        reused = self.store.existing_ids(namespace, [c.id for c in chunks])
        return _Prepared(result, doc, chunks, fingerprint, previous, reused)

    def _flush(
        self, namespace: str, pending: list[_Prepared], state: IngestProgress, notify: ProgressCallback
    ) -> list[IngestResult]:
        if not pending:
            return []
        todo = [(p, c) for p in pending for c in p.to_embed]
        for start in range(0, len(todo), self.batch_chunks):
            part = todo[start : start + self.batch_chunks]
            try:
                vectors = self.embedder.embed([c.embed_text for _, c in part])
            except Exception as exc:  # the encoder failing fails this batch's documents only
                log.exception("embedding failed")
                for p in {id(p): p for p, _ in part}.values():
                    p.result.status, p.result.reason = "failed", f"embedding failed: {exc}"
                continue
            for (p, c), vec in zip(part, vectors, strict=True):
                p.vectors[c.id] = vec
            state.embedded += len(part)
            notify(state)
        results = []
        for p in pending:
            if p.result.status != "failed":
                self._commit(namespace, p)
            results.append(p.result)
            state.files_done += 1
            notify(state)
        return results

    def _commit(self, namespace: str, p: _Prepared) -> None:
        assert p.doc is not None
        now = datetime.now(UTC).isoformat(timespec="seconds")
        new = p.to_embed
        added: list[str] = []
        try:
            vectors = np.stack([p.vectors[c.id] for c in new]) if new else np.zeros((0, 1), np.float32)
            self.store.add_chunks(namespace, new, vectors, now)
            added = [c.id for c in new]
            self.store.update_chunk_metadata(namespace, [c for c in p.chunks if c.id in p.reused], now)
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
            self.store.commit_document(namespace, info)
        except Exception as exc:
            log.exception("writing %s failed; rolling back its new chunks", p.doc.source)
            try:
                self.store.delete_chunks(namespace, added or [c.id for c in new])
            except Exception:
                log.exception("rollback of %s failed; leftovers are invisible and swept next time", p.doc.source)
            p.result.status, p.result.reason = "failed", f"store write failed: {exc}"
            return
        p.result.status = "updated" if p.previous is not None else "added"
        p.result.embedded = len(new)
        try:
            self.store.delete_chunks(namespace, self.store.orphan_ids(namespace, info.doc_id, keep=info.chunk_ids))
        except Exception:
            log.warning("could not sweep old chunks of %s; they stay invisible", p.doc.source, exc_info=True)


def _prefetch(work: Callable, items: Iterator, depth: int = 4) -> Iterator:  # type: ignore[type-arg]
    """Run `work(item)` for each item in a background thread, yielding results in order."""
    out: queue.Queue = queue.Queue(maxsize=depth)  # type: ignore[type-arg]
    done = object()

    def producer() -> None:
        try:
            for item in items:
                out.put(work(item))
        except BaseException as exc:  # re-raised in the consumer
            out.put(exc)
        out.put(done)

    thread = threading.Thread(target=producer, name="ingest-prefetch", daemon=True)
    thread.start()
    while True:
        got = out.get()
        if got is done:
            break
        if isinstance(got, BaseException):
            raise got
        yield got
    thread.join()
