"""Small, deterministic fakes for the transport seams: embedder and LLM."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from bot.llm import GenerationParams, LLMError, Message

_WORD = re.compile(r"\w+")


class FakeEmbedder:
    """Bag-of-words hashed into a fixed number of dimensions, L2-normalised.

    Texts sharing words get high cosine similarity, unrelated texts near zero,
    so retrieval behaves meaningfully in tests without a model.
    """

    name = "fake-embedder"

    def __init__(self, dim: int = 256, max_tokens: int = 256, fail_on: str | None = None) -> None:
        self.dim = dim
        self.max_tokens = max_tokens
        self.fail_on = fail_on  # raise when a batch contains this text (to test failures)
        self.calls: list[int] = []  # batch sizes of embed() calls
        self.embedded = 0

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
            vec[h % self.dim] += 1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError("fake encoder failure")
        self.calls.append(len(texts))
        self.embedded += len(texts)
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # word pieces: words, plus one extra piece per 6 characters of a long word, plus [CLS]/[SEP]
        return [sum(1 + len(w) // 6 for w in re.findall(r"\w+|[^\w\s]", t)) + 2 for t in texts]


Script = Callable[[Sequence[Message]], str] | str


class FakeLLM:
    """A scripted chat model: replies come from a list (or a function of the messages).

    Records every call's messages so tests can inspect the prompt.
    """

    name = "fake-llm"

    def __init__(
        self,
        replies: Sequence[Script] = (),
        *,
        default: Script = "I don't know.",
        delay: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self.replies = list(replies)
        self.default = default
        self.delay = delay  # seconds per streamed piece (to exercise streaming and queues)
        self.fail_after = fail_after  # raise LLMError after this many pieces
        self.calls: list[list[Message]] = []
        self.params: list[GenerationParams] = []
        self._lock = threading.Lock()

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        with self._lock:
            self.calls.append(list(messages))
            self.params.append(params)
            script = self.replies.pop(0) if self.replies else self.default
        text = script(messages) if callable(script) else script
        for i, piece in enumerate(re.findall(r"\S+\s*|\s+", text)):
            if self.fail_after is not None and i >= self.fail_after:
                raise LLMError("fake model crashed")
            if self.delay:
                time.sleep(self.delay)
            yield piece

    @property
    def last_prompt(self) -> str:
        return "\n".join(m.content for m in self.calls[-1]) if self.calls else ""


def cite_first_passage(messages: Sequence[Message]) -> str:
    """A reply that restates passage [1]'s first sentence and cites it."""
    user = messages[-1].content
    match = re.search(r"^\[1\] (.+?[.!?])(?:\s|$)", user, re.MULTILINE)
    return f"{match.group(1)} [1]" if match else "I don't know."
