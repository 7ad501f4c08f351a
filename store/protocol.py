"""What the ingest pipeline and the retriever need from a store, and the errors a store raises.

`ChromaStore` implements `VectorStore`; a test can pass any object with these
methods (a fake store). Vectors are L2-normalised float32 rows; ids are `Chunk.id`.

Errors
------
`StoreError` is anything the user can act on; its message is one line that says
what to do. `StoreUnavailable` is an outage (the server is down or unreachable):
the store retried a few times and will reconnect by itself on a later call.
`EncoderMismatch` means the namespace's vectors come from another embedding model
than the configured one (`ragcord reindex` re-embeds it). `StoreBusy` means another
process holds the data directory's writer lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from store.types import Chunk, DocumentInfo, Hit

ReindexProgress = Callable[[int, int], None]  # (chunks done, chunks total)


class StoreError(RuntimeError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (a Chroma server down, a network failure)."""


# What a front end tells a user during an outage (the log and admins get the cause).
STORE_OUTAGE_NOTICE = "The document store is unreachable right now. Please try again in a minute."


# What a user is told when the index needs the rebuild that only a process with the encoder does.
STORE_DAMAGED_NOTICE = "The document index is damaged and needs a repair; an admin finds what to do in the log."


class StoreDamaged(StoreError):
    """A collection's vector index on disk is unreadable (a process was killed while Chroma saved it).

    The texts are intact; a process that holds the encoder rebuilds the vectors from them
    (store/chroma_repair.py)."""


class EncoderMismatch(StoreError):
    """The namespace was embedded by another encoder than the configured one."""

    wrote_nothing = True  # a refusal before any write: no crash mark for the next writer


class StoreBusy(StoreError):
    """Another process is writing to the same data directory."""


class VectorStore(Protocol):
    """The store as the ingest pipeline and the retriever use it."""

    # -- freshness -------------------------------------------------------------
    def refresh(self, ns: str, *, force: bool = False) -> str: ...

    # -- documents -------------------------------------------------------------
    def documents(self, ns: str, scopes: frozenset[str] | None = None) -> list[DocumentInfo]: ...

    def document(self, ns: str, doc_id: str) -> DocumentInfo | None: ...

    def live_ids(self, ns: str) -> set[str]: ...

    # -- writing ---------------------------------------------------------------
    def writer(self, ns: str) -> AbstractContextManager[None]: ...

    def check_encoder(self, ns: str, encoder: str) -> None: ...

    def note_leftovers(self, ns: str) -> None: ...

    def existing_ids(self, ns: str, ids: Sequence[str]) -> set[str]: ...

    def add_chunks(self, ns: str, chunks: Sequence[Chunk], vectors: np.ndarray, ingested_at: str) -> None: ...

    def chunk_metadata(self, ns: str, ids: Sequence[str]) -> dict[str, dict[str, object]]: ...

    def update_chunk_metadata(self, ns: str, chunks: Sequence[Chunk], ingested_at: str) -> None: ...

    def restore_chunk_metadata(self, ns: str, saved: Mapping[str, Mapping[str, object]]) -> None: ...

    def delete_chunks(self, ns: str, ids: Iterable[str]) -> None: ...

    def commit_document(self, ns: str, info: DocumentInfo) -> None: ...

    def commit_documents(self, ns: str, infos: Sequence[DocumentInfo]) -> None: ...

    def remove_document(self, ns: str, doc_id: str) -> DocumentInfo | None: ...

    def orphans(self, ns: str, keep: Mapping[str, Iterable[str]]) -> list[str]: ...

    def reindex(
        self,
        ns: str,
        embed: Callable[[Sequence[str]], np.ndarray],
        encoder: str,
        *,
        batch: int = 256,
        progress: ReindexProgress | None = None,
    ) -> int: ...

    # -- reading ---------------------------------------------------------------
    def query(self, ns: str, vector: np.ndarray, k: int) -> list[Hit]: ...

    def get_chunks(self, ns: str, ids: Sequence[str]) -> list[Chunk]: ...

    def get_vectors(self, ns: str, ids: Sequence[str]) -> np.ndarray: ...

    def iter_live_texts(self, ns: str) -> Iterator[tuple[str, str]]: ...
