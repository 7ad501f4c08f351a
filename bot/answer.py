"""The answering core: retrieve, read, generate, check. No Discord here.

The code reads and the model writes (docs/how-it-works.md, "How an answer is chosen"):
the reader (bot/reader.py) picks the sentence that answers the question from the top
passages, and that verbatim quote is the lead evidence, shown before the model writes
a word. The model then phrases an answer from it; its words lead the reply only when
they pass the checks (bot/checks.py): backed by the passage they cite, grounded in the
lead evidence and relevant to the question, and free of degenerate output. Otherwise
the quote itself leads. `RAGCORD_ANSWER_MODE`: auto (that), extract (no model call),
generate (the model's checked text always leads, for a big model).

`Answerer.stream()` yields events so any front end (terminal, Discord) can show the
answer as it is written; `Answerer.ask()` collects them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bot.checks import check_answer, tidy
from bot.citations import Citation, consulted, verify
from bot.llm import LLM, GenerationParams, LLMError
from bot.prompts import PASSAGE_CHARS, STOP, answer_messages
from bot.reader import SURE_LEXICAL, Lead, SentenceSelector
from bot.repetition import stop_when_degenerate
from store.protocol import STORE_DAMAGED_NOTICE, STORE_OUTAGE_NOTICE, EncoderMismatch, StoreDamaged, StoreUnavailable
from store.retrieval import Retriever
from store.text import content_words, terms
from store.types import Hit

log = logging.getLogger(__name__)

AnswerStatus = Literal["answered", "cautious", "declined", "failed"]
AnswerMode = Literal["auto", "extract", "generate"]
LeadSource = Literal["model", "quote", ""]

DECLINE = "I couldn't find anything about that in the documents I have."
CAUTION = "The closest passages are only loosely related, so treat this answer with care."
PARTIAL = "The quoted sentence matches only part of your question: check it against the sources."
CLOSE_CALL = "Other sentences of the sources match your question almost as well: check the quote against them."
QUOTED = "Quoted from the documents: the model's phrasing did not pass the checks."
QUOTED_MODEL_FAILED = "Quoted from the documents: the model failed while phrasing an answer."
ENCODER_CHANGED = (
    "The documents were indexed with another embedding model than the one configured now, so they cannot be "
    "searched until an admin runs `ragcord reindex`."
)
QUESTION_TOO_LONG = (
    "Your question is {length} characters long; the limit is {limit} (RAGCORD_MAX_QUESTION_CHARS). "
    "Ask it in fewer words."
)


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange of a conversation."""

    question: str
    answer: str


@dataclass(slots=True)
class Answer:
    question: str
    text: str = ""  # the model's checked answer (empty when the quote leads)
    status: AnswerStatus = "answered"
    note: str = ""  # a caution, a refusal or an error explanation shown to the user
    citations: list[Citation] = field(default_factory=list)  # cited by the answer, verified
    consulted: list[Citation] = field(default_factory=list)  # the other top passages, with code-chosen quotes
    hits: list[Hit] = field(default_factory=list)
    search_query: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    lead: Citation | None = None  # the reader's verbatim evidence
    led_by: LeadSource = ""  # what leads the reply: the model's checked text or the quote
    model_text: str = ""  # what the model wrote (tidied), shown or not
    rejected: str = ""  # why the model's text does not lead ("" when it does, or no model ran)
    mode: AnswerMode = "auto"
    checked_text: str = ""  # the model's text after the citation check (benchmarks replay the checks on it)
    lead_core: str = ""  # the reader's best sentence (the lead may add its neighbour)
    best_sentence: float = 0.0  # the highest cosine of a top sentence (the decision's sentence rescue)

    @property
    def model_rejected(self) -> bool:
        """The model's text failed the checks (or the model failed) and the quote leads instead."""
        return self.led_by == "quote" and bool(self.rejected) and self.status != "failed"

    @property
    def evidence(self) -> list[Citation]:
        """What the user is shown: the lead, the verified citations, then the other top passages."""
        lead = [self.lead] if self.lead is not None and self.led_by in ("quote", "model") else []
        return lead + self.citations + self.consulted

    @property
    def reply(self) -> str:
        """The reply as plain text, in the order a member reads it: the lead, then its quote."""
        if self.status in ("declined", "failed"):
            return self.note
        quote = quote_line(self.lead) if self.lead is not None else ""
        if self.led_by == "model":
            return f"{self.text}\n{quote}".strip()
        return quote or self.text


def quote_line(c: Citation) -> str:
    """A verbatim quote shown as what it is, its source after it: '"…" (*Title*, Section) [n]'."""
    where = f", {c.location}" if c.location and c.location != c.chunk.title else ""
    return f'"{c.quote}" (*{c.chunk.title or c.chunk.source}*{where}) [{c.number}]'


@dataclass(frozen=True, slots=True)
class Retrieved:
    hits: list[Hit]


@dataclass(frozen=True, slots=True)
class Evidence:
    """The reader's lead evidence, known as soon as retrieval ends (before the model's first token)."""

    lead: Citation


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Completed:
    answer: Answer


AnswerEvent = Retrieved | Evidence | Token | Completed


@dataclass(slots=True)
class Prepared:
    """A question up to the model's turn (`Answerer.prepare`); `Answerer.finish` completes it."""

    answer: Answer
    events: list[AnswerEvent]  # what happened so far: Retrieved, then Evidence when the reader found some
    lead: Lead | None
    done: bool  # nothing for the model to do (declined, refused, extract mode)
    # the reader's score of each sentence (passage number -> sentence index -> score): it picks the quotes
    sentence_scores: dict[int, dict[int, float]] = field(default_factory=dict)


def standalone_query(question: str, history: Sequence[Turn], max_turns: int) -> str:
    """Make a follow-up ("and how do I remove it?") retrievable on its own.

    A 135M model rewrites queries badly, so this is done by code: the earlier
    questions' content words that the follow-up lacks are appended to it.
    """
    recent = list(history)[-max_turns:] if max_turns > 0 else []
    if not recent:
        return question
    have = set(content_words(question, parts=False))
    carried: list[str] = []
    for turn in reversed(recent):
        for w in content_words(turn.question, parts=False):
            if w not in have and w not in carried:
                carried.append(w)
    return f"{question} ({' '.join(carried[:12])})" if carried else question


class Answerer:
    def __init__(
        self,
        retriever: Retriever,
        llm: LLM | None,
        *,
        top_k: int = 4,
        min_score: float = 0.31,
        caution_score: float = 0.45,
        min_sentence_score: float = 0.45,
        params: GenerationParams | None = None,
        passage_chars: int = PASSAGE_CHARS,
        history_turns: int = 4,
        mode: AnswerMode = "auto",
        max_question_chars: int = 600,
        selector: SentenceSelector | None = None,
    ) -> None:
        self.retriever = retriever
        self.llm = llm
        self.top_k = top_k
        self.min_score = min_score
        self.caution_score = caution_score
        self.min_sentence_score = min_sentence_score
        self.params = params or GenerationParams(stop=STOP)
        if not self.params.stop:
            self.params = dataclasses.replace(self.params, stop=STOP)
        self.passage_chars = passage_chars
        self.history_turns = history_turns
        self.mode: AnswerMode = mode if llm is not None else "extract"
        self.max_question_chars = max_question_chars
        self.selector = selector or SentenceSelector(retriever.embedder.embed)

    def ask(
        self, namespace: str, question: str, history: Sequence[Turn] = (), scopes: frozenset[str] | None = None
    ) -> Answer:
        answer = Answer(question)
        for event in self.stream(namespace, question, history, scopes):
            if isinstance(event, Completed):
                answer = event.answer
        return answer

    def retrieve(
        self, namespace: str, question: str, history: Sequence[Turn], scopes: frozenset[str] | None
    ) -> tuple[str, list[Hit], np.ndarray | None]:
        """The standalone query, its hits and its embedding (embedded once: retrieval and the reader use it)."""
        query = standalone_query(question, history, self.history_turns)
        vector = self._query_vector(query)
        return query, self.retriever.search(namespace, query, self.top_k, scopes=scopes, vector=vector), vector

    def stream(
        self, namespace: str, question: str, history: Sequence[Turn] = (), scopes: frozenset[str] | None = None
    ) -> Iterator[AnswerEvent]:
        prepared = self.prepare(namespace, question, history, scopes)
        yield from prepared.events
        yield from self.finish(prepared)

    def prepare(
        self, namespace: str, question: str, history: Sequence[Turn] = (), scopes: frozenset[str] | None = None
    ) -> Prepared:
        """Everything before the model: retrieval, the decision, the reader's lead evidence.

        `scopes`: what the asker may read (None: everything, the CLI); see `Retriever.search`.

        Cheap (tens of milliseconds), so a front end runs it at once, outside the model's
        queue, and shows the evidence while the question waits for its turn."""
        answer = Answer(question, mode=self.mode)
        if len(question) > self.max_question_chars:
            answer.status = "failed"
            answer.note = QUESTION_TOO_LONG.format(length=len(question), limit=self.max_question_chars)
            return Prepared(answer, [], None, done=True)
        t0 = time.perf_counter()
        try:
            answer.search_query, hits, vector = self.retrieve(namespace, question, history, scopes)
            rarity = self.retriever.term_rarity(namespace, question, scopes) if hits else {}
        except StoreUnavailable:  # an outage is said as one, never as "nothing found"
            log.warning("retrieval failed: the store is unreachable", exc_info=True)
            answer.status, answer.note = "failed", STORE_OUTAGE_NOTICE
            return Prepared(answer, [], None, done=True)
        except StoreDamaged:
            log.error("retrieval failed: the store's vector index is damaged", exc_info=True)
            answer.status, answer.note = "failed", STORE_DAMAGED_NOTICE
            return Prepared(answer, [], None, done=True)
        except EncoderMismatch:
            log.error("retrieval refused: the namespace was embedded by another encoder", exc_info=True)
            answer.status, answer.note = "failed", ENCODER_CHANGED
            return Prepared(answer, [], None, done=True)
        answer.hits = hits
        answer.timings["retrieve_ms"] = (time.perf_counter() - t0) * 1000
        events: list[AnswerEvent] = [Retrieved(hits)]

        t1 = time.perf_counter()
        scored = self.selector.score(answer.search_query, hits, vector)
        answer.best_sentence = best_sentence = max((s.dense for s in scored), default=0.0)
        answer.status = judge(
            question, hits, self.min_score, self.caution_score, best_sentence, self.min_sentence_score, rarity
        )
        if answer.status == "declined":
            answer.note = DECLINE
            return Prepared(answer, events, None, done=True)
        if answer.status == "cautious":
            answer.note = CAUTION
        scores = [h.dense or 0.0 for h in hits]
        lead = self.selector.lead_from(scored, hits, answer.search_query)
        by_passage: dict[int, dict[int, float]] = {}
        for s in scored:
            by_passage.setdefault(s.number, {})[s.position] = s.score
        answer.timings["read_ms"] = (time.perf_counter() - t1) * 1000
        if lead is not None:
            answer.lead = Citation(lead.number, lead.chunk, lead.text, scores[lead.number - 1])
            answer.lead_core = lead.core
            if not lead.sure and answer.status == "answered":
                answer.status = "cautious"
                answer.note = PARTIAL if lead.lexical < SURE_LEXICAL else CLOSE_CALL
            events.append(Evidence(answer.lead))
        answer.led_by = "quote"
        return Prepared(answer, events, lead, self.mode == "extract" or self.llm is None, by_passage)

    def finish(self, prepared: Prepared) -> Iterator[AnswerEvent]:
        """The model's part (none in extract mode), the checks, and the completed answer."""
        answer, lead = prepared.answer, prepared.lead
        if answer.status == "declined" or (answer.status == "failed" and not answer.hits):
            yield Completed(answer)
            return
        chunks = [h.chunk for h in answer.hits]
        scores = [h.dense or 0.0 for h in answer.hits]
        if not prepared.done:
            yield from self._generate(answer, answer.question, chunks, lead)
        shown = {answer.lead.number: answer.lead.quote} if answer.lead is not None else {}
        answer.consulted = consulted(
            chunks,
            scores,
            answer.search_query,
            answer.text,
            skip=[c.number for c in answer.citations],
            sentence_scores=prepared.sentence_scores,
            avoid=shown,
        )
        if answer.model_rejected:
            why = QUOTED_MODEL_FAILED if answer.rejected == "the model failed" else QUOTED
            answer.note = " ".join(p for p in (answer.note, why) if p)
        yield Completed(answer)

    def _query_vector(self, query: str) -> np.ndarray | None:
        try:
            return np.asarray(self.retriever.embedder.embed_query(query), dtype=np.float32)
        except (RuntimeError, ValueError):
            return None

    def _generate(self, answer: Answer, question: str, chunks: list, lead: Lead | None) -> Iterator[AnswerEvent]:  # type: ignore[type-arg]
        assert self.llm is not None
        evidence = (lead.number, lead.text) if lead is not None else None
        messages = answer_messages(question, chunks, passage_chars=self.passage_chars, evidence=evidence)
        pieces: list[str] = []
        t1 = time.perf_counter()
        try:
            for piece in stop_when_degenerate(self.llm.stream(messages, self.params)):
                if not pieces:
                    answer.timings["first_token_ms"] = (time.perf_counter() - t1) * 1000
                pieces.append(piece)
                yield Token(piece)
        except (LLMError, RuntimeError, OSError, ValueError) as exc:
            log.exception("generation failed")
            answer.rejected = "the model failed"
            if answer.lead is None:
                answer.status, answer.note = "failed", f"the model failed: {exc}; try again"
            return
        finally:
            answer.timings["generate_ms"] = (time.perf_counter() - t1) * 1000
            answer.timings["tokens"] = float(len(pieces))
        raw = tidy("".join(pieces))
        answer.model_text = raw
        scores = [1.0] * len(chunks)
        text, citations = verify(raw, chunks, scores, answer.search_query)
        answer.checked_text = text
        verdict = check_answer(question, text, citations, lead)
        if verdict and self.mode == "auto":
            answer.rejected = verdict
            log.info("the model's answer does not lead: %s", verdict)
            return
        if not text.strip() or verdict in ("the model gave no answer", "degenerate output"):
            answer.rejected = verdict or "the model gave no answer"
            return
        answer.text = text
        answer.citations = [dataclasses.replace(c, score=h.dense or 0.0) for c, h in _cited_hits(citations, answer)]
        answer.led_by = "model"
        answer.rejected = verdict  # generate mode: shown anyway, the reason kept for the record


def _cited_hits(citations: list[Citation], answer: Answer) -> list[tuple[Citation, Hit]]:
    return [(c, answer.hits[c.number - 1]) for c in citations]


def judge(
    question: str,
    hits: Sequence[Hit],
    min_score: float,
    caution_score: float,
    best_sentence: float = 0.0,
    min_sentence_score: float = 0.0,
    rarity: Mapping[str, float] | None = None,
) -> AnswerStatus:
    """Answer, answer with a caution, or decline, from the retrieval scores.

    Short questions embed far from long passages ("How do I use a bigger model?" scores
    0.29 against the section titled "Using a bigger model"), so a passage that holds
    (nearly) every term of the question, each weighed by its `rarity` in the namespace (a
    common "name" or "one" cannot vouch for it), is answered too, with the caution; and so is a
    question one of whose top sentences (`best_sentence`, the reader's best cosine) reaches
    `min_sentence_score` (0: off): a long passage dilutes the one sentence that answers.
    """
    best = max((h.dense or 0.0 for h in hits), default=0.0)
    if not hits:
        return "declined"
    if best < min_score and lexical_coverage(question, hits[0], rarity) < 0.75:
        rescued = min_sentence_score > 0 and best_sentence >= min_sentence_score
        return "cautious" if rescued else "declined"
    return "cautious" if best < caution_score else "answered"


def lexical_coverage(question: str, hit: Hit, rarity: Mapping[str, float] | None = None) -> float:
    """Share of the question's stemmed content terms found in the passage, title and section (0 if < 2 terms),
    each term weighed by its `rarity` (1 each without it)."""
    asked = terms(question, parts=False)
    if len(asked) < 2:
        return 0.0
    chunk = hit.chunk
    weight = rarity or {}
    held = asked & terms(f"{chunk.title} {chunk.section} {chunk.text}")
    return sum(weight.get(t, 1.0) for t in held) / (sum(weight.get(t, 1.0) for t in asked) or 1.0)
