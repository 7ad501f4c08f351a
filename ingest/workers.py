"""The ingest pipeline's helpers for running work beside the encoder."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from ingest.loaders import load_bytes
from store.types import LoadedDocument

log = logging.getLogger(__name__)


class PdfWorker:
    """Parses PDFs in one spawned worker process, the rest in the calling thread.

    pypdf is pure Python: parsed in a thread beside the encoder it holds the GIL in 5 ms
    slices, and every torch op of the encoder waits for it to be released, which slowed
    the encoder more than the parsing itself costs. In a process it only takes a core's
    share. The process starts in the background (about a second: Python, then pypdf);
    PDFs met before it is up are parsed in the calling thread, when the encoder has
    nothing to encode yet anyway. If the worker cannot start or dies, parsing goes back
    to the calling thread for the rest of the run (as it is for small runs).
    """

    def __init__(self) -> None:
        self._pool: Any = None
        self._ready: Future[None] | None = None
        self._disabled = False

    def start(self) -> None:
        """Spawn the worker process now, without waiting for it."""
        if self._pool is not None or self._disabled:
            return
        try:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: this process runs torch and Chroma threads
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(logging.getLogger().getEffectiveLevel(),),
            )
            self._ready = self._pool.submit(_warm_up)
        except (OSError, ImportError, RuntimeError) as exc:
            self._give_up(exc)

    def load(self, data: bytes, filename: str, **kwargs: Any) -> LoadedDocument:
        head = data[:1024].lstrip(b"\x00\t\n\r\x0c ")
        if not (head.startswith(b"%PDF") or filename.lower().endswith(".pdf")):
            return load_bytes(data, filename, **kwargs)
        from concurrent.futures.process import BrokenProcessPool

        self.start()
        if self._disabled or self._ready is None or not self._ready.done():
            return load_bytes(data, filename, **kwargs)
        try:
            self._ready.result()  # re-raises what stopped the worker from starting
            future = self._pool.submit(load_bytes, data, filename, **kwargs)
        except (BrokenProcessPool, OSError, ImportError, RuntimeError) as exc:  # RuntimeError: pool shut down
            self._give_up(exc)
            return load_bytes(data, filename, **kwargs)
        try:
            doc: LoadedDocument = future.result()
        except (BrokenProcessPool, OSError, ImportError, AttributeError) as exc:
            self._give_up(exc)
            return load_bytes(data, filename, **kwargs)
        return doc

    def _give_up(self, exc: BaseException) -> None:
        log.warning("PDF worker process unusable (%s); parsing PDFs in this process", exc)
        self.close()
        self._disabled = True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._ready = None


def _warm_up() -> None:
    """Run first in the worker: the imports a PDF needs, before the first PDF arrives."""
    import pypdf  # noqa: F401

    import ingest.loaders.pdf  # noqa: F401


def _init_worker(level: int) -> None:
    """The worker logs (pypdf's warnings among them) at the level the parent process does."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Prefetch:
    """Runs `work(item)` for each item in a background thread; iterating yields the results in order."""

    _DONE = object()

    def __init__(self, work: Callable, items: Iterator, depth: int = 4) -> None:  # type: ignore[type-arg]
        self._out: queue.Queue = queue.Queue(maxsize=depth)  # type: ignore[type-arg]
        self._work = work
        self._items = items
        self._thread = threading.Thread(target=self._produce, name="ingest-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                self._out.put(self._work(item))
        except BaseException as exc:  # re-raised in the consumer
            self._out.put(exc)
        self._out.put(self._DONE)

    def idle(self) -> bool:
        """Nothing is ready: the next item would be waited for."""
        return self._out.empty()

    def __iter__(self) -> Iterator:  # type: ignore[type-arg]
        while True:
            got = self._out.get()
            if got is self._DONE:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
        self._thread.join()
