"""The reader: code picks the sentences that answer the question.

A 135M model copies the wrong sentence about two times in three, while the passages
under it hold the answer nine times in ten. So the code reads: every sentence of the
top passages is scored against the question (the standalone form a follow-up gets)
by three signals, and the best one becomes the answer's lead evidence:

- lexical: idf-weighted share of the question's stemmed content terms the sentence
  holds (the weights come from the candidate sentences themselves: a word they all
  share, the topic, weighs less than one only the answer holds);
- dense: cosine between the question and the sentence, from the loaded encoder
  (a few dozen short sentences cost milliseconds);
- rank: the retrieval rank of the sentence's passage (1, 1/2, 1/3, ...).

The weights were measured on XQuAD dev questions (bench/reader.py); docs/how-it-works.md
has the table. A best sentence that is a fragment ("It did.", a heading) takes its
neighbour with it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.citations import shorten
from bot.prompts import instruction_like
from store.text import content_words, idf_of_terms, split_sentences, table_headers, terms, words
from store.types import Chunk, Hit

log = logging.getLogger(__name__)

# Measured on the tuning half of XQuAD dev (bench/reader.py --split tune); see docs/how-it-works.md.
LEXICAL_WEIGHT = 1.0
DENSE_WEIGHT = 1.0
RANK_WEIGHT = 0.25
FRAGMENT_WORDS = 6  # a best sentence shorter than this takes its neighbour
STUB_WORDS = 4  # a sentence shorter than this scores less, and never fills the room left in the lead
LEAD_CHARS = 300  # what a member reads first; a neighbour is added only within it
TITLE_ROOM = 5  # of which the quote marks take this much (the source and its number follow the quote)
HEADER_ROOM = 100  # what a table row leaves its header row, at least, when both do not fit
# A table row's first cell names what the row is about (a setting, an item): the share of the
# question's terms found there is added at this weight. "What is the default embedding model?" led
# with the RAGCORD_EMBED_BACKEND row, whose description says "embed model" too. bench/tables.py
# 0.726 -> 0.774, bench/identifiers.py 0.871 -> 0.900, bench/procedural.py tune unchanged (0.25 the
# same), held out +1; XQuAD has no tables.
KEY_CELL_WEIGHT = 0.5
EXTEND = True  # add the better neighbour when both fit (measured: bench/reader.py)
# Room that a part of a further sentence is worth: what is left beside the best sentence (and the
# sentence added to it) is filled with the start of the passage's best later sentence, cut with "…"
# (XQuAD dev replay, lead: 0.834 / 0.829 -> 0.847 / 0.832 when nothing else fits, 0.866 / 0.842
# also after a neighbour, tune / held out; 20-43 characters measured the same on tune; the part of
# it with the question's words instead of its start: tune 0.873 -> 0.876, held 0.848 -> 0.845, not kept).
ROOM_FOR_A_PART = 43
# A lead whose best sentence holds less than this idf-weighted share of the question's terms
# is shown with a caution (bench/reader.py: at 0.6, 66% of XQuAD answers go without one, and
# 4.6% / 5.4% (tune / held out) of answers are then wrong without a caution, against 14% / 16%).
SURE_LEXICAL = 0.6
# ... or whose best sentence outscores the best one it does not show by less than this: the
# reader could not tell them apart (tune: confidently wrong 0.052 -> 0.033, bench/reader.py).
SURE_MARGIN = 0.1

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True, slots=True)
class Weights:
    lexical: float = LEXICAL_WEIGHT
    dense: float = DENSE_WEIGHT
    rank: float = RANK_WEIGHT


@dataclass(frozen=True, slots=True)
class ScoredSentence:
    number: int  # 1-based passage number (its place among the retrieved hits)
    position: int  # index of the sentence inside its passage
    text: str  # verbatim sentence, whitespace collapsed
    lexical: float
    dense: float
    rank: float
    penalty: float  # short sentences ("Yes.", list numbers, headings) rarely answer
    score: float
    header: int | None = None  # a table row: the position of its table's header row in the passage
    key: float = 0.0  # a table row: the idf-weighted share of the question's terms in its first cell


@dataclass(frozen=True, slots=True)
class Lead:
    """The evidence that answers the question: verbatim text of one passage."""

    number: int
    chunk: Chunk
    text: str  # one sentence, or two adjacent ones (whitespace collapsed, verbatim otherwise)
    score: float
    lexical: float
    dense: float
    core: str = ""  # the best sentence alone (the text is it with a neighbour, or the same)
    margin: float = 1.0  # the best sentence's score minus that of the best sentence the lead does not show

    @property
    def sure(self) -> bool:
        """Shown without a caution: it holds most of the question's terms and clearly beats the rest."""
        return self.lexical >= SURE_LEXICAL and self.margin >= SURE_MARGIN


def _fragment(text: str) -> bool:
    """A heading or a stub ("It did."): too short, or not ended like a sentence."""
    return len(words(text)) < FRAGMENT_WORDS or not text.rstrip("\"')]”’").endswith((".", "!", "?", ":"))


def _stub(text: str) -> bool:
    """ "Yes.", a list number, a heading ("2. Chunking."): too short to answer, or to fill room with."""
    return len(words(text)) < STUB_WORDS


def _cut_row(row: str, limit: int, asked: set[str]) -> str:
    """A table row cut to `limit` around the question's words, keeping its first cell, what the row is
    about (a setting's name, an item), when that takes under a third of the room."""
    if len(row) <= limit:
        return row
    first, sep, rest = row.partition(" | ")
    if sep and len(first) + 3 < limit // 3:
        return f"{first} | {shorten(rest, limit - len(first) - 3, around=asked)}"
    return shorten(row, limit, around=asked)


def _combined(w: Weights, lexical: float, dense: float, rank: float, penalty: float, key: float) -> float:
    """A sentence's score from its signals (`score` and the benchmarks' `rescore` alike)."""
    return w.lexical * lexical + w.dense * dense + w.rank * rank - penalty + KEY_CELL_WEIGHT * key


def collapse(text: str) -> str:
    return " ".join(text.split())


class SentenceSelector:
    """Scores the sentences of the top passages; `select` returns the lead evidence."""

    def __init__(
        self, embed: Embed | None, *, weights: Weights | None = None, passages: int = 3, extend: bool = EXTEND
    ) -> None:
        self.embed = embed
        self.weights = weights or Weights()
        self.passages = passages
        self.extend = extend

    def score(self, question: str, hits: Sequence[Hit], query_vector: np.ndarray | None = None) -> list[ScoredSentence]:
        top = list(hits[: self.passages])
        if not top:
            return []
        items: list[tuple[int, int, str, int | None, str]] = []  # (number, position, text, header at, its text)
        for number, hit in enumerate(top, start=1):
            sentences = [collapse(s) for s in split_sentences(hit.chunk.text)]
            for position, (text, header) in enumerate(zip(sentences, table_headers(sentences), strict=True)):
                if text and not instruction_like(text):  # a sentence addressed to the model is no evidence
                    items.append((number, position, text, header, sentences[header] if header is not None else ""))
        if not items:
            return []
        # a table row is read with its header: "Pear | 5 | 0" answers a question about a price only
        # with "item | price | stock" above it
        read = [f"{head} {text}" if head else text for _, _, text, _, head in items]
        # idf over the candidate sentences: a word most of them share (the topic) tells less than
        # one only a few hold (tune: lead 0.870 -> 0.873 over idf taken over the passages)
        held = [terms(t) for t in read]  # each sentence's stemmed terms, stemmed once
        idf = idf_of_terms(held)
        asked = terms(question, parts=False)
        total = sum(idf.get(t, 1.0) for t in asked) or 1.0
        dense = self._dense(question, read, query_vector)
        w = self.weights
        scored = []
        for (number, position, text, header, _), cosine, has in zip(items, dense, held, strict=True):
            lexical = sum(idf.get(t, 1.0) for t in asked & has) / total
            rank = 1.0 / number
            penalty = 0.15 if _stub(text) else 0.0  # "Yes.", list numbers, headings rarely answer
            # a row is about its first cell: the question's words there count more
            key = (
                sum(idf.get(t, 1.0) for t in asked & terms(text.partition(" | ")[0])) / total
                if header is not None
                else 0.0
            )
            score = _combined(w, lexical, cosine, rank, penalty, key)
            scored.append(ScoredSentence(number, position, text, lexical, cosine, rank, penalty, score, header, key))
        return scored

    def _dense(self, question: str, sentences: list[str], query_vector: np.ndarray | None) -> list[float]:
        if self.embed is None or self.weights.dense == 0:
            return [0.0] * len(sentences)
        try:
            vectors = np.asarray(self.embed(sentences), dtype=np.float32)
            query = query_vector if query_vector is not None else np.asarray(self.embed([question]))[0]
            return [float(s) for s in vectors @ np.asarray(query, dtype=np.float32)]
        except (RuntimeError, ValueError) as exc:  # the encoder failed: the lexical signal still reads
            log.warning("sentence embeddings failed (%s); selecting by lexical overlap", exc)
            return [0.0] * len(sentences)

    def rescore(self, s: ScoredSentence) -> ScoredSentence:
        """The same sentence scored with this selector's weights (benchmarks replay features)."""
        return dataclasses.replace(s, score=_combined(self.weights, s.lexical, s.dense, s.rank, s.penalty, s.key))

    def select(self, question: str, hits: Sequence[Hit], query_vector: np.ndarray | None = None) -> Lead | None:
        return self.lead_from(self.score(question, hits, query_vector), hits, question)

    def lead_from(self, scored: Sequence[ScoredSentence], hits: Sequence[Hit], question: str = "") -> Lead | None:
        """The best sentence, with its better neighbour when both fit in what a member reads first
        (always when it is a fragment); a sentence too long for it is cut around the question's words."""
        if not scored:
            return None
        best = max(scored, key=lambda s: (s.score, -s.number, -s.position))
        fragment = _fragment(best.text)
        at = {(s.number, s.position) for s in scored}
        if fragment and (best.number, best.position + 1) not in at:
            # a heading that ends its passage: chunks overlap, so the next passage may hold it
            # with the text it heads; read it there
            twins = [s for s in scored if s.text == best.text and (s.number, s.position + 1) in at]
            best = max(twins, key=lambda s: (s.score, -s.number), default=best)
        chunk = hits[best.number - 1].chunk
        text = best.text
        siblings = {s.position: s for s in scored if s.number == best.number}
        after, before = siblings.get(best.position + 1), siblings.get(best.position - 1)
        present = [s for s in (after, before) if s is not None]
        if fragment:  # a heading, "It did.": the text after it (whole, or its start below), else the one before
            neighbours = [after] if after is not None else present
        elif self.extend:  # room left in what a member reads first: the better-scoring neighbour that fits
            # (not a heading after it, "2. Chunking.": that heads the next section, not this answer)
            neighbours = sorted((s for s in present if s is before or not _stub(s.text)), key=lambda s: -s.score)
        else:
            neighbours = []
        room = LEAD_CHARS - TITLE_ROOM
        shown = [best]
        head = siblings.get(best.header) if best.header is not None else None
        if head is not None:  # a table row: under its header row, both cut around the question's words if need be
            asked = set(content_words(question, parts=False))
            text = _cut_row(text, room - min(len(head.text), HEADER_ROOM) - 3, asked)
            header = shorten(head.text, room - len(text) - 3, around=asked)
            text = f"{header} {text}" if head.position == best.position - 1 else f"{header} … {text}"
            shown.append(head)
        elif len(text) > room:  # one long sentence: the part around the question's words, cut with "…"
            text = shorten(text, room, around=set(content_words(question, parts=False)))
        else:
            for neighbour in neighbours:
                if len(text) + len(neighbour.text) + 1 <= room:
                    text = f"{text} {neighbour.text}" if neighbour is after else f"{neighbour.text} {text}"
                    shown.append(neighbour)
                    break
            else:  # no neighbour fits: the passage's next-best sentence that does, after a "…" (not a heading's)
                if self.extend and not fragment:
                    others = [s for s in siblings.values() if s not in present and s is not best and not _stub(s.text)]
                    fits = [s for s in others if len(text) + len(s.text) + 3 <= room]
                    if fits:
                        other = max(fits, key=lambda s: s.score)
                        text = f"{text} … {other.text}" if other.position > best.position else f"{other.text} … {text}"
                        shown.append(other)
            if self.extend and room - len(text) >= ROOM_FOR_A_PART:
                # room left: the start of the passage's best sentence after what is shown, cut with "…"
                last = max(s.position for s in shown)
                later = [s for s in siblings.values() if s.position > last and not _stub(s.text)]
                if later:  # a heading's: the start of the text it heads
                    other = (
                        siblings[last + 1] if fragment and last + 1 in siblings else max(later, key=lambda s: s.score)
                    )
                    gap = " " if other.position == last + 1 else " … "
                    part = other.text[: room - len(text) - len(gap) - 1].rsplit(" ", 1)[0]
                    if part:
                        text = f"{text}{gap}{part}…"  # only in part: it still counts against the margin
        # a copy of a shown sentence in an overlapping passage is the same evidence, not a rival
        texts = {s.text for s in shown}
        rest = max((s.score for s in scored if s.text not in texts), default=None)
        margin = best.score - rest if rest is not None else 1.0
        return Lead(best.number, chunk, text, best.score, best.lexical, best.dense, best.text, margin)
