"""A BM25 index per namespace (bm25s), kept in step with the Chroma collection.

The index is rebuilt from the namespace's live chunks whenever the store's generation
moves (ingest, forget, another process) and saved beside the store with the
generation it was built from, so a restart loads it instead of rebuilding.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")


class Bm25Index:
    """An immutable BM25 index over (id, text) pairs."""

    def __init__(self, ids: list[str], retriever: Any, generation: str) -> None:
        self.ids = ids
        self.generation = generation
        self._retriever = retriever
        self._stemmer = _stemmer()

    @classmethod
    def build(cls, items: Iterable[tuple[str, str]], generation: str) -> Bm25Index:
        import bm25s

        ids: list[str] = []
        texts: list[str] = []
        for cid, text in items:
            ids.append(cid)
            texts.append(text)
        if not ids:
            return cls([], None, generation)
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=False)
        retriever = bm25s.BM25(k1=1.2, b=0.75)
        retriever.index(tokens, show_progress=False)
        return cls(ids, retriever, generation)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Top-k (chunk id, BM25 score), best first; only positive scores."""
        if self._retriever is None or k <= 0:
            return []
        import bm25s

        q = bm25s.tokenize([query], stopwords="en", stemmer=self._stemmer, show_progress=False, return_ids=False)
        words = [w for w in q[0] if w in self._retriever.vocab_dict]
        if not words:
            return []
        scores = self._retriever.get_scores(words)
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top])]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def save(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self._retriever is not None:
            self._retriever.save(str(tmp / "bm25"))
        (tmp / "ids.json").write_text(json.dumps({"generation": self.generation, "ids": self.ids}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: Path) -> Bm25Index | None:
        import bm25s

        try:
            meta = json.loads((folder / "ids.json").read_text())
            retriever = bm25s.BM25.load(str(folder / "bm25")) if meta["ids"] else None
            return cls(list(meta["ids"]), retriever, str(meta["generation"]))
        except (OSError, ValueError, KeyError) as exc:
            log.info("lexical index at %s not loadable (%s); it will be rebuilt", folder, exc)
            return None


def _stemmer() -> Any:
    try:
        import Stemmer

        return Stemmer.Stemmer("english").stemWords
    except ImportError:  # pragma: no cover - PyStemmer is a dependency
        return None


class LexicalIndexes:
    """One BM25 index per namespace, cached in memory and on disk."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._indexes: dict[str, Bm25Index] = {}

    def _path(self, key: str) -> Path | None:
        return self.folder / key if self.folder is not None else None

    def get(self, key: str, generation: str, items: Any) -> Bm25Index:
        """The index for `generation`, loading or rebuilding it (from `items()`) if stale."""
        with self._lock:
            index = self._indexes.get(key)
            if index is not None and index.generation == generation:
                return index
            path = self._path(key)
            if path is not None and path.exists():
                loaded = Bm25Index.load(path)
                if loaded is not None and loaded.generation == generation:
                    self._indexes[key] = loaded
                    return loaded
            log.info("building lexical index for %s", key)
            index = Bm25Index.build(items(), generation)
            if path is not None:
                try:
                    index.save(path)
                except OSError as exc:
                    log.warning("could not save lexical index to %s: %s", path, exc)
            self._indexes[key] = index
            return index
