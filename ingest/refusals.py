"""Files refused before, remembered by fingerprint so an unchanged one is not parsed again.

A folder re-ingested every night may hold scanned or damaged PDFs: without this
memory each run would parse them again (pypdf over every page) only to refuse them
again. The memory is a small JSON file beside the store; losing it only costs a
re-parse, so every error reading or writing it is logged and ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_ENTRIES = 20_000


class Refusals:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, str] | None = None
        self._dirty = False

    @staticmethod
    def key(*parts: object) -> str:
        return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, reason: str) -> None:
        with self._lock:
            entries = self._load()
            entries.pop(key, None)
            entries[key] = reason  # newest last: the oldest are dropped first
            while len(entries) > MAX_ENTRIES:
                del entries[next(iter(entries))]
            self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty or self.path is None or self._entries is None:
                return
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(self._entries), encoding="utf-8")
                os.replace(tmp, self.path)
                self._dirty = False
            except OSError:
                log.warning("could not save the list of refused files to %s", self.path, exc_info=True)
                tmp.unlink(missing_ok=True)

    def _load(self) -> dict[str, str]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None and self.path.exists():
                try:
                    got = json.loads(self.path.read_text(encoding="utf-8"))
                    if isinstance(got, dict):
                        self._entries = {str(k): str(v) for k, v in got.items()}
                except (OSError, ValueError):
                    log.warning("ignoring unreadable %s", self.path, exc_info=True)
        return self._entries
