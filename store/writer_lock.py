"""One writer per data directory: a file lock that `ingest`, `forget` and `reindex` hold.

Chroma has no transactions, and two processes writing one embedded store is not
something it promises to keep consistent, so every writer takes `writer.lock` in
the embedded store's folder (a Chroma server's clients on one machine share one in
RAGCORD_DATA_DIR). A second writer waits up to `timeout` seconds
(RAGCORD_WRITER_WAIT_S), then gives up with `StoreBusy` and a message saying what
to do. Readers (questions, `/sources`) never take it.

Inside one process the lock is shared: the bot's ingest threads (one per guild)
hold it together, and the store's own lock orders their writes.

Crash detection: while a writer holds the lock, `writer.dirty` lists the namespaces
it writes to, and is removed when the last writer of the process leaves cleanly. A
file still there when the lock is next taken means a writer died half-way: the
caller sweeps those namespaces' orphan chunks (`ChromaStore.sweep_orphans`) before
writing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from store.protocol import StoreBusy

log = logging.getLogger(__name__)


class WriterLock:
    def __init__(self, folder: Path, *, timeout: float = 10.0) -> None:
        from filelock import FileLock

        self.folder = folder
        self.timeout = timeout
        self._file = FileLock(str(folder / "writer.lock"), thread_local=False)
        self._dirty = folder / "writer.dirty"
        self._mutex = threading.Lock()
        self._holders = 0
        self._failed = False
        self._namespaces: set[str] = set()

    @contextmanager
    def hold(self, namespace: str, *, recover: Callable[[list[str]], None]) -> Iterator[None]:
        """Hold the lock while writing `namespace`; `recover(namespaces)` runs first after a crash."""
        self._enter(namespace, recover)
        ok = False
        try:
            yield
            ok = True
        except BaseException as exc:
            ok = getattr(exc, "wrote_nothing", False)
            raise
        finally:
            self._leave(ok)

    def mark_unclean(self) -> None:
        """Leave the crash mark when this process's writers are done: the next writer sweeps."""
        with self._mutex:
            self._failed = True

    def _enter(self, namespace: str, recover: Callable[[list[str]], None]) -> None:
        from filelock import Timeout

        with self._mutex:
            if self._holders == 0:
                self.folder.mkdir(parents=True, exist_ok=True)
                try:
                    self._file.acquire(timeout=self.timeout)
                except Timeout as exc:
                    raise StoreBusy(
                        f"another ragcord process is writing to {self.folder} (an ingest, forget or reindex) "
                        f"and did not finish within {self.timeout:g} s: try again when it is done "
                        "(or raise RAGCORD_WRITER_WAIT_S)"
                    ) from exc
                try:
                    crashed = self._read_dirty()
                    if crashed:
                        log.warning("a writer stopped half-way in %s; sweeping its leftovers", ", ".join(crashed))
                        recover(crashed)
                        self._dirty.unlink(missing_ok=True)
                except BaseException:
                    self._file.release()
                    raise
                self._failed = False
                self._namespaces = set()
            self._holders += 1
            if namespace not in self._namespaces:
                self._namespaces.add(namespace)
                self._write_dirty()

    def _leave(self, ok: bool) -> None:
        with self._mutex:
            self._failed = self._failed or not ok
            self._holders -= 1
            if self._holders:
                return
            if not self._failed:  # a failed writer leaves the mark: the next one sweeps
                self._dirty.unlink(missing_ok=True)
            self._file.release()

    def _read_dirty(self) -> list[str]:
        try:
            got = json.loads(self._dirty.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            log.warning("unreadable %s; treating it as a crash of unknown namespaces", self._dirty, exc_info=True)
            return ["*"]
        return [str(n) for n in got] if isinstance(got, list) else ["*"]

    def _write_dirty(self) -> None:
        tmp = self._dirty.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sorted(self._namespaces)), encoding="utf-8")
        os.replace(tmp, self._dirty)
