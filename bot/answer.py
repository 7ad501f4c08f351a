"""The answering core: retrieve, decide, generate, verify. No Discord here.

`Answerer.stream()` yields events so any front end (terminal, Discord) can show the
answer as it is written; `Answerer.ask()` collects them.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bot.citations import Citation, consulted, content_words, terms, verify
from bot.llm import LLM, GenerationParams, LLMError
from bot.prompts import PASSAGE_CHARS, STOP, answer_messages
from bot.repetition import drop_repeated_sentences, stop_when_repeating
from store.retrieval import Retriever
from store.types import Hit

log = logging.getLogger(__name__)

Status = Literal["answered", "cautious", "declined", "failed"]

DECLINE = "I couldn't find anything about that in the documents I have."
CAUTION = "The closest passages are only loosely related, so treat this answer with care."


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange of a conversation."""

    question: str
    answer: str


@dataclass(slots=True)
class Answer:
    question: str
    text: str = ""
    status: Status = "answered"
    note: str = ""  # a caution, a refusal or an error explanation shown to the user
    citations: list[Citation] = field(default_factory=list)  # cited by the answer, verified
    consulted: list[Citation] = field(default_factory=list)  # the other top passages, with code-chosen quotes
    hits: list[Hit] = field(default_factory=list)
    search_query: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def evidence(self) -> list[Citation]:
        """What the user is shown: the verified citations first, then the other top passages."""
        return self.citations + self.consulted


@dataclass(frozen=True, slots=True)
class Retrieved:
    hits: list[Hit]


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Completed:
    answer: Answer


AnswerEvent = Retrieved | Token | Completed


def standalone_query(question: str, history: Sequence[Turn], max_turns: int) -> str:
    """Make a follow-up ("and how do I remove it?") retrievable on its own.

    A 135M model rewrites queries badly, so this is done by code: the earlier
    questions' content words that the follow-up lacks are appended to it.
    """
    recent = list(history)[-max_turns:] if max_turns > 0 else []
    if not recent:
        return question
    have = set(content_words(question))
    carried: list[str] = []
    for turn in reversed(recent):
        for w in content_words(turn.question):
            if w not in have and w not in carried:
                carried.append(w)
    return f"{question} ({' '.join(carried[:12])})" if carried else question


class Answerer:
    def __init__(
        self,
        retriever: Retriever,
        llm: LLM,
        *,
        top_k: int = 4,
        min_score: float = 0.30,
        caution_score: float = 0.45,
        params: GenerationParams | None = None,
        passage_chars: int = PASSAGE_CHARS,
        history_turns: int = 4,
    ) -> None:
        self.retriever = retriever
        self.llm = llm
        self.top_k = top_k
        self.min_score = min_score
        self.caution_score = caution_score
        self.params = params or GenerationParams(stop=STOP)
        if not self.params.stop:
            self.params = dataclasses.replace(self.params, stop=STOP)
        self.passage_chars = passage_chars
        self.history_turns = history_turns

    def ask(self, namespace: str, question: str, history: Sequence[Turn] = ()) -> Answer:
        answer = Answer(question)
        for event in self.stream(namespace, question, history):
            if isinstance(event, Completed):
                answer = event.answer
        return answer

    def retrieve(self, namespace: str, question: str, history: Sequence[Turn] = ()) -> tuple[str, list[Hit]]:
        query = standalone_query(question, history, self.history_turns)
        return query, self.retriever.search(namespace, query, self.top_k)

    def stream(self, namespace: str, question: str, history: Sequence[Turn] = ()) -> Iterator[AnswerEvent]:
        answer = Answer(question)
        t0 = time.perf_counter()
        answer.search_query, hits = self.retrieve(namespace, question, history)
        answer.hits = hits
        answer.timings["retrieve_ms"] = (time.perf_counter() - t0) * 1000
        yield Retrieved(hits)

        answer.status = judge(question, hits, self.min_score, self.caution_score)
        if answer.status == "declined":
            answer.note = DECLINE
            yield Completed(answer)
            return
        if answer.status == "cautious":
            answer.note = CAUTION

        chunks = [h.chunk for h in hits]
        scores = [h.dense or 0.0 for h in hits]
        messages = answer_messages(question, chunks, passage_chars=self.passage_chars)
        pieces: list[str] = []
        t1 = time.perf_counter()
        try:
            for piece in stop_when_repeating(self.llm.stream(messages, self.params)):
                if not pieces:
                    answer.timings["first_token_ms"] = (time.perf_counter() - t1) * 1000
                pieces.append(piece)
                yield Token(piece)
        except (LLMError, RuntimeError, OSError, ValueError) as exc:
            log.exception("generation failed")
            answer.status, answer.note = "failed", f"the model failed: {exc}; try again"
        answer.timings["generate_ms"] = (time.perf_counter() - t1) * 1000
        answer.timings["tokens"] = float(len(pieces))

        raw = tidy("".join(pieces))
        answer.text, answer.citations = verify(raw, chunks, scores, question)
        answer.consulted = consulted(chunks, scores, question, answer.text, skip=[c.number for c in answer.citations])
        yield Completed(answer)


def judge(question: str, hits: Sequence[Hit], min_score: float, caution_score: float) -> Status:
    """Answer, answer with a caution, or decline, from the retrieval scores alone.

    Short questions embed far from long passages ("How do I use a bigger model?" scores
    0.29 against the section titled "Using a bigger model"), so a passage that holds
    (nearly) every term of the question is answered too, with the caution.
    """
    best = max((h.dense or 0.0 for h in hits), default=0.0)
    if not hits or (best < min_score and lexical_coverage(question, hits[0]) < 0.75):
        return "declined"
    return "cautious" if best < caution_score else "answered"


def lexical_coverage(question: str, hit: Hit) -> float:
    """Share of the question's stemmed content terms found in the passage, title and section (0 if < 2 terms)."""
    asked = terms(question)
    if len(asked) < 2:
        return 0.0
    chunk = hit.chunk
    return len(asked & terms(f"{chunk.title} {chunk.section} {chunk.text}")) / len(asked)


def tidy(text: str) -> str:
    """Trim what small models append: role labels, echoed passage headers, sentences said twice."""
    text = re.split(r"\n(?:User|Assistant|Question|Passages?)\s*:", text)[0]
    # echoed passage headers: "[2] (Title, p. 3)" or "Passage [2]:"
    text = re.sub(r"(?m)^\s*(?:Passage\s*)?\[?\d+\]?[.:]?\s*\([^()\n]{0,120}\)\s*", "", text)
    text = re.sub(r"(?m)^\s*Passage\s*\[\d+\]\s*:\s*", "", text)
    text = drop_repeated_sentences(text)
    text = re.sub(r"\s*\[[^\]\n]{0,12}$", "", text)  # a citation cut off by a stop: "… citations. ["
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text
