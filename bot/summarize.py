"""Summaries of a document or of a conversation, by the same rule as answers: the
model's words are shown only when they pass the checks, else the code's own.

The model summarises (map-reduce when the text is long); its stream is cut where it
turns degenerate (`stop_when_degenerate`). Each summary sentence must be backed by a
chunk of the document, with the citation checks answers use (`verify`): a sentence
no chunk backs is dropped. The model's summary is shown (`led_by == "model"`) only
when it passes `check_summary`. Otherwise, or when the model fails, the reply is an
extractive summary (`led_by == "quote"`): key sentences chosen by code
(`key_sentences`), central to the document and spread across it, verbatim, in
document order, each cited with its location.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from bot.answer import Answer, AnswerEvent, AnswerMode, Completed, Token
from bot.checks import check_answer, tidy
from bot.citations import (
    QUOTE_CHARS,
    Citation,
    attribute,
    cited_numbers,
    claims,
    drop_unsupported,
    shorten,
    strip_invalid_markers,
    verify,
)
from bot.llm import LLM, GenerationParams, LLMError
from bot.prompts import STOP, summary_messages
from bot.repetition import degenerate_at, sentence_key, stop_when_degenerate
from store.text import content_words, split_sentences, stem, table_headers, words
from store.types import Chunk

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], np.ndarray]

# The model's summary leads only with at least this many backed sentences (one for a document
# of fewer than 3 * MIN_BACKED sentences), and only if at least half of what it wrote is backed.
MIN_BACKED = 2
KEY_SENTENCES = 5  # at most this many key sentences in an extractive summary
KEY_MIN_WORDS = 5  # shorter sentences (headings, "Yes.", list numbers) are not key sentences
CENTROID_TERMS = 30  # the document's most frequent terms (tf-idf) that make its lexical centroid
MMR_LAMBDA = 0.7  # centrality against redundancy with the key sentences already picked
MAX_EMBED = 256  # sentences embedded at most; a longer document is pre-selected lexically
PROSE_ONLY = 0.5  # centrality factor for what is not prose: used when a window has nothing better

EXTRACTIVE = "Key sentences chosen from the document: the model's summary did not pass the checks ({reason})."
EXTRACTIVE_MODEL_FAILED = "Key sentences chosen from the document: the model failed to summarise it."
EXTRACTIVE_ONLY = "Key sentences chosen from the document."
NOTHING = "There is nothing to summarise."


class Summarizer:
    def __init__(
        self,
        llm: LLM | None,
        *,
        params: GenerationParams | None = None,
        window_chars: int = 2400,
        max_passage_chars: int = 600,
        max_windows: int = 8,
        embed: Embed | None = None,
        mode: AnswerMode = "auto",
    ) -> None:
        """`embed` (the loaded encoder's `embed`) makes the extractive summary's centrality
        dense; without it, lexical. `mode` as RAGCORD_ANSWER_MODE: extract never calls the
        model, generate shows the model's backed sentences even when they are few."""
        self.llm = llm
        self.params = params or GenerationParams(max_tokens=200, stop=STOP)
        self.window_chars = window_chars
        self.max_passage_chars = max_passage_chars
        self.max_windows = max_windows
        self.embed = embed
        self.mode: AnswerMode = mode if llm is not None else "extract"

    def windows(self, chunks: Sequence[Chunk]) -> list[list[Chunk]]:
        """Consecutive groups of chunks that fit one prompt."""
        groups: list[list[Chunk]] = [[]]
        size = 0
        for chunk in chunks:
            length = min(len(chunk.text), self.max_passage_chars)
            if groups[-1] and size + length > self.window_chars:
                groups.append([])
                size = 0
            groups[-1].append(chunk)
            size += length
        return [g for g in groups if g]

    def stream(self, chunks: Sequence[Chunk], *, title: str = "", focus: str = "") -> Iterator[AnswerEvent]:
        """Summarise `chunks` (in document order); the final pass streams."""
        answer = Answer(question=f"Summary of {title}" if title else "Summary", mode=self.mode)
        if not chunks:
            answer.status, answer.note = "declined", NOTHING
            yield Completed(answer)
            return
        if self.mode == "extract" or self.llm is None:
            yield Completed(self._extractive(answer, chunks, reason="", note=EXTRACTIVE_ONLY))
            return
        llm = self.llm
        groups = self.windows(chunks)
        sampled = ""
        if len(groups) > self.max_windows:
            # Too long to read whole on this hardware: sample evenly, and say so.
            step = len(groups) / self.max_windows
            groups = [groups[int(i * step)] for i in range(self.max_windows)]
            sampled = f"Long document: summarised from {self.max_windows} evenly spread parts."
        produced: list[str] = []  # what the model wrote in the final pass, before any cut
        pieces: list[str] = []
        try:
            final_chunks = groups[0] if len(groups) == 1 else [self._map(g, title, focus) for g in groups]
            messages = summary_messages(final_chunks, max_passage_chars=self.max_passage_chars, focus=focus)
            for piece in stop_when_degenerate(_recorded(llm.stream(messages, self.params), produced)):
                pieces.append(piece)
                yield Token(piece)
        except (LLMError, RuntimeError, OSError, ValueError):
            log.exception("the model failed to summarise; showing key sentences instead")
            yield Completed(self._extractive(answer, chunks, reason="the model failed", note=EXTRACTIVE_MODEL_FAILED))
            return
        raw = tidy("".join(pieces))
        answer.model_text = raw
        # Quotes must be document text: map each partial summary back to its window's
        # most similar real chunk.
        shown = (
            final_chunks
            if len(groups) == 1
            else [_anchor(g, p.text) for g, p in zip(groups, final_chunks, strict=True)]
        )
        text, citations, verdict = check_summary(
            raw,
            shown,
            question=focus or title,
            produced="".join(produced),
            document_sentences=len(_sentences(chunks)),
            min_backed=1 if self.mode == "generate" else MIN_BACKED,
        )
        if verdict:
            log.info("the model's summary is not shown: %s", verdict)
            yield Completed(self._extractive(answer, chunks, reason=verdict, note=EXTRACTIVE.format(reason=verdict)))
            return
        answer.text, answer.citations, answer.led_by = text, citations, "model"
        answer.note = sampled
        yield Completed(answer)

    def _extractive(self, answer: Answer, chunks: Sequence[Chunk], *, reason: str, note: str) -> Answer:
        """The answer as an extractive summary: key sentences as bullet lines citing their locations."""
        keys = key_sentences(chunks, embed=self.embed)
        answer.rejected = reason
        if not keys:  # chunks of whitespace only
            answer.status, answer.note = "declined", NOTHING
            return answer
        answer.led_by, answer.status, answer.note = "quote", "answered", note
        answer.citations = keys
        answer.text = "\n".join(f"• {c.quote} [{c.number}]" for c in keys)
        return answer

    def _map(self, group: list[Chunk], title: str, focus: str) -> Chunk:
        """Summarise one window into a pseudo-chunk that keeps the window's first location."""
        assert self.llm is not None
        messages = summary_messages(group, max_passage_chars=self.max_passage_chars, focus=focus)
        text = tidy("".join(stop_when_degenerate(self.llm.stream(messages, self.params))))
        first = group[0]
        return Chunk(
            doc_id=first.doc_id,
            index=first.index,
            text=_drop_markers(text) or first.text,
            title=first.title or title,
            source=first.source,
            page=first.page,
            section=first.section,
            extra=first.extra,
        )


def check_summary(
    raw: str,
    chunks: Sequence[Chunk],
    *,
    question: str = "",
    produced: str | None = None,
    document_sentences: int | None = None,
    min_backed: int = MIN_BACKED,
) -> tuple[str, list[Citation], str]:
    """The model's summary reduced to its backed sentences, their citations, and why it must
    not be shown ("" when it may). `chunks` are the passages it cites by number.

    A sentence is backed when a chunk it cites backs it, or, uncited, when a chunk clearly
    supports it (`attribute`); the others are dropped. The summary is rejected when:
    - the model wrote nothing, or its output turned degenerate (`degenerate_at` on what it
      produced, before the stream was cut: a loop, an echoed passage list, a role label);
    - it says "I don't know" / "not available" instead of summarising;
    - fewer than `min_backed` sentences are backed (one is enough for a document of fewer
      than 3 * `min_backed` sentences), or fewer than half of the sentences it wrote.
    """
    whole = tidy(produced) if produced is not None else raw
    if not raw.strip():
        return "", [], "the model gave no answer"
    bad = degenerate_at(whole) or degenerate_at(raw)
    if bad is not None:
        return "", [], f"degenerate output: {bad[1]}"
    valid = set(range(1, len(chunks) + 1))
    marked = attribute(drop_unsupported(strip_invalid_markers(raw, valid), chunks), chunks)
    written = [s for s in claims(marked) if sentence_key(s) is not None]
    backed = [s for s in written if cited_numbers(s)]
    text, citations = verify(" ".join(backed), chunks, [1.0] * len(chunks), question)
    verdict = check_answer(question, raw, citations, None)
    if verdict:
        return "", [], verdict
    needed = min(min_backed, document_sentences // 3) if document_sentences is not None else min_backed
    if len(backed) < max(needed, 1) or 2 * len(backed) < len(written):
        return "", [], f"{len(backed)} of its {len(written)} sentences are backed by the document"
    return text, citations, ""


# -- the extractive summary --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sentence:
    chunk: Chunk
    text: str  # verbatim, whitespace collapsed, without a leading list marker
    terms: tuple[str, ...]  # stemmed content words, with repeats
    prose: bool  # ends like a sentence and is no table row (not a heading, code line or fragment)
    header: str = ""  # a table row: its table's header row


_LIST_MARKER = re.compile(r"^(?:[-*+•‣◦▪–]|\d{1,3}[.)]|\(\w{1,3}\))\s+")


def _sentences(chunks: Sequence[Chunk]) -> list[_Sentence]:
    """Every distinct sentence of the chunks, in document order (overlapping chunks repeat some)."""
    out: list[_Sentence] = []
    seen: set[str] = set()
    for chunk in chunks:
        texts = [_LIST_MARKER.sub("", " ".join(s.split())) for s in split_sentences(chunk.text)]
        headers = table_headers(texts)
        rows = {i for i, h in enumerate(headers) if h is not None} | {h for h in headers if h is not None}
        for i, (text, header) in enumerate(zip(texts, headers, strict=True)):
            if not text or text in seen:
                continue
            seen.add(text)
            ended = text.rstrip("\"')]”’»").endswith((".", "!", "?", "…", "。", "！", "？"))
            prose = ended and i not in rows and text.count("|") < 2  # the last: a lone "a | b | c" line
            head = texts[header] if header is not None else ""
            out.append(_Sentence(chunk, text, tuple(stem(w) for w in content_words(text)), prose, head))
    return out


def key_sentences(chunks: Sequence[Chunk], *, embed: Embed | None = None, count: int | None = None) -> list[Citation]:
    """The document's key sentences, as citations numbered 1.. in document order.

    Central: each sentence's similarity to the document's centroid, the mean of its
    sentence embeddings when `embed` is given, else the tf-idf weights of its
    CENTROID_TERMS most frequent terms (cosine with the sentence's terms). Spread: the
    sentences are cut into `count` consecutive windows and at most one is picked per
    window, greedily by MMR (centrality against similarity to those already picked).
    `count` defaults to about the square root of the number of sentences, 1 to
    KEY_SENTENCES. Each quote is a verbatim sentence (whitespace collapsed, a list item's
    marker left out); sentences of fewer than KEY_MIN_WORDS words are used only when there
    is nothing else, and what is not prose (table rows, code lines, headings) counts PROSE_ONLY.
    A key table row comes with its table's header row, added once, in document order.
    Time: linear in the document's length (each sentence is compared with <= count others).
    """
    every = _sentences(chunks)
    sentences = [s for s in every if len(words(s.text)) >= KEY_MIN_WORDS] or every
    if not sentences:
        return []
    k = count or min(KEY_SENTENCES, max(1, math.ceil(math.sqrt(len(sentences)))))
    k = min(k, len(sentences))
    window = [i * k // len(sentences) for i in range(len(sentences))]
    central = _lexical_centrality(sentences)
    similar: Callable[[int, int], float] = lambda i, j: _jaccard(sentences[i].terms, sentences[j].terms)  # noqa: E731
    if embed is not None:
        dense = _dense_centrality(sentences, central, window, k, embed)
        if dense is not None:
            pool, vectors, scores = dense
            sentences = [sentences[i] for i in pool]
            window = [window[i] for i in pool]
            central = scores
            similar = lambda i, j: float(vectors[i] @ vectors[j])  # noqa: E731
    # headings, code lines, table rows and cut-off fragments rarely summarise anything
    central = [c if s.prose else c - abs(c) * (1 - PROSE_ONLY) for c, s in zip(central, sentences, strict=True)]
    picked: list[int] = []
    for _ in range(k):
        taken = {window[j] for j in picked}
        best, best_value = -1, -math.inf
        for i in range(len(sentences)):
            if window[i] in taken:
                continue
            redundancy = max((similar(i, j) for j in picked), default=0.0)
            value = MMR_LAMBDA * central[i] - (1 - MMR_LAMBDA) * redundancy
            if value > best_value:
                best, best_value = i, value
        if best < 0:
            break
        picked.append(best)
    keys = [(sentences[i], round(central[i], 4)) for i in picked]
    # a key table row comes under its table's header row (once): its values mean nothing without it
    shown = {s.text for s, _ in keys}
    where = {s.text: s for s in every}
    for s, _ in list(keys):
        if s.header and s.header not in shown:  # (it came before its row, so `every` holds it)
            keys.append((where[s.header], 0.0))
            shown.add(s.header)
    order = {id(s): n for n, s in enumerate(every)}
    keys.sort(key=lambda k: order[id(k[0])])
    return [Citation(n, s.chunk, shorten(s.text, QUOTE_CHARS), score) for n, (s, score) in enumerate(keys, start=1)]


def _lexical_centrality(sentences: Sequence[_Sentence]) -> list[float]:
    """Cosine between each sentence's terms and the document's tf-idf centroid (its top terms)."""
    tf: Counter[str] = Counter()
    df: Counter[str] = Counter()
    for s in sentences:
        tf.update(s.terms)
        df.update(set(s.terms))
    n = len(sentences)
    weight = {t: c * math.log(1 + n / df[t]) for t, c in tf.items()}
    top = dict(sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))[:CENTROID_TERMS])
    norm = math.sqrt(sum(w * w for w in top.values())) or 1.0
    scores = []
    for s in sentences:
        have = set(s.terms)
        scores.append(sum(top.get(t, 0.0) for t in have) / (norm * math.sqrt(len(have))) if have else 0.0)
    return scores


def _dense_centrality(
    sentences: Sequence[_Sentence], lexical: Sequence[float], window: Sequence[int], k: int, embed: Embed
) -> tuple[list[int], np.ndarray, list[float]] | None:
    """(the sentences scored, their unit vectors, cosine to the centroid), or None if the encoder
    fails. Beyond MAX_EMBED sentences, each window's lexically most central ones are embedded."""
    pool = list(range(len(sentences)))
    if len(pool) > MAX_EMBED:
        per = max(1, MAX_EMBED // k)
        pool = sorted(
            i for w in range(k) for i in sorted((i for i in pool if window[i] == w), key=lambda i: -lexical[i])[:per]
        )
    try:
        vectors = np.asarray(embed([sentences[i].text for i in pool]), dtype=np.float32)
    except (RuntimeError, ValueError, OSError) as exc:
        log.warning("sentence embeddings failed (%s); choosing key sentences by term overlap", exc)
        return None
    if vectors.ndim != 2 or len(vectors) != len(pool):
        return None
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centroid = vectors.mean(axis=0)
    centroid = centroid / max(float(np.linalg.norm(centroid)), 1e-12)
    return pool, vectors, [float(x) for x in vectors @ centroid]


def _jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa and sb else 0.0


def _recorded(pieces: Iterable[str], into: list[str]) -> Iterator[str]:
    """Pass `pieces` through, keeping a copy; closing this closes the model's stream."""
    stream = iter(pieces)
    try:
        for piece in stream:
            into.append(piece)
            yield piece
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _anchor(group: list[Chunk], summary: str) -> Chunk:
    target = set(content_words(summary, parts=False))
    return max(group, key=lambda c: len(target & set(content_words(c.text))))


# -- the time range of a conversation summary (`/summarize since: until:`) ------------------------------

_SPAN = re.compile(r"(\d{1,5})\s*([hdw])")
_SPAN_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
WHEN_HELP = (
    "a date like 2026-03-04, a date and UTC time like 2026-03-04 14:30, or a span back from now like 12h, 7d, 2w"
)


def parse_when(text: str, now: datetime, *, end: bool = False) -> datetime:
    """A `since:` / `until:` value as an aware UTC time. A date alone is the start of that UTC day
    (`end`: the start of the next, so `until:2026-03-04` includes the 4th); "today" and
    "yesterday" are dates; "7d" is seven days before `now`. ValueError says what to type."""
    raw = " ".join(text.strip().lower().split())
    span = _SPAN.fullmatch(raw)
    if span:
        return now - int(span.group(1)) * _SPAN_UNITS[span.group(2)]
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = {"today": today, "yesterday": today - timedelta(days=1)}
    if raw in days:
        return days[raw] + timedelta(days=1) if end else days[raw]
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dt%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dt%H:%M:%S"):
        try:
            return datetime.strptime(raw.removesuffix("z"), fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"`{text.strip()[:40]}` is not a time I can read: use {WHEN_HELP}") from None
    return day + timedelta(days=1) if end else day


def parse_range(since: str | None, until: str | None, now: datetime) -> tuple[datetime | None, datetime]:
    """(start or None, end) of `since:` .. `until:` (end defaults to `now`); ValueError when unreadable or reversed."""
    start = parse_when(since, now) if since else None
    stop = parse_when(until, now, end=True) if until else now
    if start is not None and start >= stop:
        raise ValueError("`since:` must be before `until:`")
    return start, stop


def _drop_markers(text: str) -> str:
    return re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", text).strip()
