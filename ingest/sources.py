"""What the ingest pipeline takes and gives: sources, discovered files, results, progress, prepared documents."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ingest.loaders import SUPPORTED_SUFFIXES
from store.types import Chunk, DocumentInfo, LoadedDocument

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
    ocr_page: int = 0  # the page of `current` being OCR'd now (0: none), of `ocr_pages` to OCR in it
    ocr_pages: int = 0

    @property
    def chunks_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.embedded / elapsed if elapsed > 0 else 0.0


ProgressCallback = Callable[[IngestProgress], None]


@dataclass(frozen=True, slots=True)
class Source:
    """One document to ingest from memory or anywhere: `read()` returns its bytes when needed."""

    read: Callable[[], bytes]
    filename: str
    source: str
    title: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
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
