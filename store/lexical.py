"""A BM25 index per namespace (bm25s), kept in step with the Chroma collection.

The index is rebuilt from the namespace's live chunks whenever the store's generation
moves (ingest, forget, another process) and saved beside the store with the
generation it was built from, so a restart loads it instead of rebuilding. The
BM25 settings are part of the saved index too: changing them rebuilds it once.

Each indexed chunk's scope (who may read it: "guild" or a channel id) is kept beside
its id, so a search for one member masks the chunks they may not read before the top k.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from store.text import STOPWORDS, identifier_parts, stem
from store.types import GUILD_SCOPE

log = logging.getLogger(__name__)

# Bumped when what the index is built from changes (e.g. titles now included; 3: the project's stop words;
# 4: each chunk's scope; 5: an identifier's words beside it; 6: words in their dictionary form before stemming;
# 7: a clipped word as the word it shortens, "docs" as "documents").
INDEX_FORMAT = 7

# Chunks tokenized at a time while an index is built: only their token ids are kept, so a
# rebuild over 500k chunks never holds every text at once (bench/README.md, backfill).
BUILD_PAGE = 2000


@dataclass(frozen=True, slots=True)
class Bm25Params:
    """How text becomes BM25 terms and how terms are weighted.

    Defaults measured on SciFact train claims (bench/retrieval.py): Lucene BM25 with
    English stemming and the project's stop words (store.text, one list for BM25, citations
    and the reader); k1/b near the usual values.
    """

    k1: float = 1.2
    b: float = 0.75
    method: str = "lucene"  # bm25s variants: lucene, robertson, atire, bm25l, bm25+
    stem: bool = True
    stopwords: bool = True

    @property
    def signature(self) -> str:
        return json.dumps({"format": INDEX_FORMAT, **asdict(self)}, sort_keys=True)


def tokenize(texts: list[str], params: Bm25Params, *, parts: bool = True) -> list[list[str]]:
    """Lower-cased word terms (2+ characters), stop words dropped, stemmed: as the index sees them.
    With `parts` (indexed text, not queries), an identifier is also the words it is made of
    (`RAGCORD_ANSWER_MODE`: answer, mode), as in store.text.content_words."""
    import bm25s

    expanded = [f"{t} {' '.join(found)}" if parts and (found := identifier_parts(t)) else t for t in texts]
    tokens = bm25s.tokenize(
        expanded,
        stopwords=sorted(STOPWORDS) if params.stopwords else None,
        stemmer=_stemmer() if params.stem else None,
        show_progress=False,
        return_ids=False,
    )
    return [list(t) for t in tokens]


class Bm25Index:
    """An immutable BM25 index over (id, text) or (id, text, scope) items (scope "guild" if absent)."""

    def __init__(
        self,
        ids: list[str],
        retriever: Any,
        generation: str,
        params: Bm25Params | None = None,
        scopes: list[str] | None = None,
    ) -> None:
        self.ids = ids
        self.generation = generation
        self.params = params or Bm25Params()
        self._retriever = retriever
        self._position = {cid: i for i, cid in enumerate(ids)}
        self.scopes = ScopeColumn(scopes if scopes is not None else [GUILD_SCOPE] * len(ids))

    @classmethod
    def build(
        cls,
        items: Iterable[tuple[str, str] | tuple[str, str, str]],
        generation: str,
        params: Bm25Params | None = None,
        page: int = BUILD_PAGE,
    ) -> Bm25Index:
        """The index of `items`, read and tokenized `page` at a time (texts are not kept)."""
        import bm25s

        params = params or Bm25Params()
        ids: list[str] = []
        scopes: list[str] = []
        names: dict[str, str] = {}  # one string object per scope, not one per chunk
        vocab: dict[str, int] = {}  # term -> id, in order of first use; each id is one shared int
        corpus: list[list[int]] = []
        stream = iter(items)
        while part := list(islice(stream, max(1, page))):
            texts: list[str] = []
            for item in part:
                ids.append(item[0])
                texts.append(item[1])
                scope = item[2] if len(item) > 2 else GUILD_SCOPE  # type: ignore[misc]
                scopes.append(names.setdefault(scope, scope))
            del part
            for terms in tokenize(texts, params):
                corpus.append([vocab.setdefault(t, len(vocab)) for t in terms])
        if not ids:
            return cls([], None, generation, params)
        retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        retriever.index((corpus, vocab), show_progress=False)
        return cls(ids, retriever, generation, params, scopes)

    def __len__(self) -> int:
        return len(self.ids)

    def score_all(self, query: str) -> np.ndarray | None:
        """BM25 score of every indexed chunk for `query` (aligned with `ids`); None if no term matches."""
        if self._retriever is None:
            return None
        terms = [w for w in tokenize([query], self.params, parts=False)[0] if w in self._retriever.vocab_dict]
        if not terms:
            return None
        return np.asarray(self._retriever.get_scores(terms), dtype=np.float32)

    def score_of(self, scores: np.ndarray | None, chunk_id: str) -> float:
        """One chunk's entry of a `score_all` result (0 when unknown or nothing matched)."""
        pos = self._position.get(chunk_id)
        return float(scores[pos]) if scores is not None and pos is not None else 0.0

    def search(self, query: str, k: int, scopes: frozenset[str] | None = None) -> list[tuple[str, float]]:
        """Top-k (chunk id, BM25 score), best first; only positive scores; only `scopes` (None: all)."""
        return self.top(self.score_all(query), k, scopes)

    def top(self, scores: np.ndarray | None, k: int, scopes: frozenset[str] | None = None) -> list[tuple[str, float]]:
        """The k best of `scores`; with `scopes`, chunks of other scopes are masked out before the top k."""
        if scores is None or k <= 0:
            return []
        mask = self.scopes.mask(scopes)
        if mask is not None:
            scores = np.where(mask, scores, np.float32(0.0))
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def term_rarity(self, terms: Iterable[str], scopes: frozenset[str] | None = None) -> dict[str, float]:
        """BM25's idf of each stemmed term over the chunks `scopes` may read: a term most of them
        hold weighs little; one none of them holds weighs most, also when only hidden chunks hold it
        (what a member may not read must not change how their question is judged)."""
        mask = self.scopes.mask(scopes)
        total = len(self.ids) if mask is None else int(mask.sum())
        vocab: dict[str, int] = self._retriever.vocab_dict if self._retriever is not None else {}
        postings = self._retriever.scores if self._retriever is not None else {}
        rarity = {}
        for term in terms:
            held = 0
            if (column := vocab.get(term)) is not None:
                docs = postings["indices"][postings["indptr"][column] : postings["indptr"][column + 1]]
                held = len(docs) if mask is None else int(mask[docs].sum())
            rarity[term] = math.log(1.0 + (total - held + 0.5) / (held + 0.5))
        return rarity

    def save(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self._retriever is not None:
            self._retriever.save(str(tmp / "bm25"))
        meta = {"generation": self.generation, "params": self.params.signature, "ids": self.ids}
        meta["scopes"] = self.scopes.names()
        (tmp / "ids.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)

    @classmethod
    def load(cls, folder: Path, params: Bm25Params | None = None) -> Bm25Index | None:
        """The saved index, or None if missing, unreadable or built with other settings."""
        import bm25s

        params = params or Bm25Params()
        try:
            meta = json.loads((folder / "ids.json").read_text())
            if meta.get("params") != params.signature:
                log.info("lexical index at %s was built with other settings; it will be rebuilt", folder)
                return None
            retriever = bm25s.BM25.load(str(folder / "bm25")) if meta["ids"] else None
            ids = list(meta["ids"])
            scopes = [str(s) for s in meta["scopes"]]
            if len(scopes) != len(ids):
                raise ValueError("scopes and ids differ in length")
            return cls(ids, retriever, str(meta["generation"]), params, scopes)
        except (OSError, ValueError, KeyError) as exc:
            log.info("lexical index at %s not loadable (%s); it will be rebuilt", folder, exc)
            return None


class ScopeColumn:
    """The scope of each row of an index, as small integer codes, with a row mask per set of scopes."""

    def __init__(self, scopes: list[str]) -> None:
        codes: dict[str, int] = {}
        self.codes = np.fromiter((codes.setdefault(s, len(codes)) for s in scopes), dtype=np.int32, count=len(scopes))
        self._code_of = codes
        self.present = frozenset(codes)

    def __len__(self) -> int:
        return len(self.codes)

    def names(self) -> list[str]:
        by_code = {code: name for name, code in self._code_of.items()}
        return [by_code[int(c)] for c in self.codes]

    def covers(self, scopes: frozenset[str] | None) -> bool:
        """True when `scopes` allows every row (None allows everything): no mask needed."""
        return scopes is None or self.present <= scopes

    def mask(self, scopes: frozenset[str] | None) -> np.ndarray | None:
        """Rows whose scope is in `scopes` (None when every row is allowed)."""
        if self.covers(scopes):
            return None
        assert scopes is not None
        allowed = [self._code_of[s] for s in scopes if s in self._code_of]
        return np.isin(self.codes, np.asarray(allowed, dtype=np.int32))


def _stemmer() -> Any:
    """bm25s's stemmer: store.text.stem over a list of words (the index's terms and the reader's agree)."""
    return lambda words: [stem(w) for w in words]


class LexicalIndexes:
    """One BM25 index per namespace, cached in memory and on disk."""

    def __init__(self, folder: Path | None, params: Bm25Params | None = None) -> None:
        self.folder = folder
        self.params = params or Bm25Params()
        self._lock = threading.Lock()
        self._indexes: dict[str, Bm25Index] = {}
        self.builds = 0  # indexes built (not loaded) by this process: tests and benchmarks read it

    def _path(self, key: str) -> Path | None:
        return self.folder / key if self.folder is not None else None

    def get(
        self, key: str, generation: str, items: Callable[[], Iterable[tuple[str, str] | tuple[str, str, str]]]
    ) -> Bm25Index:
        """The index for `generation`, loading or rebuilding it (from `items()`) if stale."""
        with self._lock:
            index = self._indexes.get(key)
            if index is not None and index.generation == generation:
                return index
            path = self._path(key)
            if path is not None and path.exists():
                loaded = Bm25Index.load(path, self.params)
                if loaded is not None and loaded.generation == generation:
                    self._indexes[key] = loaded
                    return loaded
            log.info("building lexical index for %s", key)
            index = Bm25Index.build(items(), generation, self.params)
            self.builds += 1
            if path is not None:
                try:
                    index.save(path)
                except OSError as exc:
                    log.warning("could not save lexical index to %s: %s", path, exc)
            self._indexes[key] = index
            return index
