"""Summaries of a document or of a conversation, map-reduce when the text is long.

Same citation rules as answers: the summary cites numbered passages, the code keeps
the valid numbers and quotes the passages itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from bot.answer import Answer, AnswerEvent, Completed, Token, tidy
from bot.citations import consulted, verify
from store.text import content_words
from bot.llm import LLM, GenerationParams, LLMError
from bot.prompts import STOP, summary_messages
from bot.repetition import stop_when_repeating
from store.types import Chunk

log = logging.getLogger(__name__)


class Summarizer:
    def __init__(
        self,
        llm: LLM,
        *,
        params: GenerationParams | None = None,
        window_chars: int = 2400,
        max_passage_chars: int = 600,
        max_windows: int = 8,
    ) -> None:
        self.llm = llm
        self.params = params or GenerationParams(max_tokens=200, stop=STOP)
        self.window_chars = window_chars
        self.max_passage_chars = max_passage_chars
        self.max_windows = max_windows

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
        answer = Answer(question=f"Summary of {title}" if title else "Summary")
        if not chunks:
            answer.status, answer.note = "declined", "There is nothing to summarise."
            yield Completed(answer)
            return
        groups = self.windows(chunks)
        if len(groups) > self.max_windows:
            # Too long to read whole on this hardware: sample evenly, and say so.
            step = len(groups) / self.max_windows
            groups = [groups[int(i * step)] for i in range(self.max_windows)]
            answer.note = f"Long document: summarised from {self.max_windows} evenly spread parts."
        try:
            final_chunks = groups[0] if len(groups) == 1 else [self._map(g, title, focus) for g in groups]
            pieces: list[str] = []
            messages = summary_messages(final_chunks, max_passage_chars=self.max_passage_chars, focus=focus)
            for piece in stop_when_repeating(self.llm.stream(messages, self.params)):
                pieces.append(piece)
                yield Token(piece)
        except LLMError as exc:
            log.exception("summary failed")
            answer.status, answer.note = "failed", f"the model failed: {exc}; try again"
            yield Completed(answer)
            return
        raw = tidy("".join(pieces))
        # Quotes must be document text: map each partial summary back to its window's
        # most similar real chunk.
        shown = (
            final_chunks
            if len(groups) == 1
            else [_anchor(g, p.text) for g, p in zip(groups, final_chunks, strict=True)]
        )
        scores = [1.0] * len(shown)
        answer.text, answer.citations = verify(raw, shown, scores, focus or title)
        if not answer.citations:
            answer.consulted = consulted(shown, scores, focus or title, answer.text)
        yield Completed(answer)

    def _map(self, group: list[Chunk], title: str, focus: str) -> Chunk:
        """Summarise one window into a pseudo-chunk that keeps the window's first location."""
        messages = summary_messages(group, max_passage_chars=self.max_passage_chars, focus=focus)
        text = tidy("".join(stop_when_repeating(self.llm.stream(messages, self.params))))
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


def _anchor(group: list[Chunk], summary: str) -> Chunk:
    target = set(content_words(summary))
    return max(group, key=lambda c: len(target & set(content_words(c.text))))


def _drop_markers(text: str) -> str:
    import re

    return re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", text).strip()
