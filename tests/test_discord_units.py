"""The Discord layer's pure parts: splitting, sanitising, rendering, the fair queue, the rate limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from bot.answer import Answer, AnswerEvent, Completed, Token
from bot.citations import Citation
from bot.discord_app.queue import STOPPED_NOTE, GenerationQueue, Job, RateLimiter, position_text
from bot.discord_app.streaming import BODY_LIMIT, StreamingReply, sanitize, sources_embed, split_text
from store.types import Chunk


def test_split_text_keeps_every_character_and_cuts_at_boundaries():
    text = ("A paragraph of words. " * 60 + "\n\n") * 5 + "x" * 4500
    pieces = split_text(text, 1900)
    assert "".join(pieces) == text
    assert all(len(p) <= 1900 for p in pieces)
    for a, b in zip(pieces, pieces[1:], strict=False):  # cut between words; only the 4,500-char "word" is cut
        assert a[-1].isspace() or b[0].isspace() or set(a[-1] + b[0]) == {"x"}
    assert split_text("short") == ["short"]


def test_sanitize_neutralises_mass_mentions():
    assert sanitize("@everyone @here @hereford") == "@\u200beveryone @\u200bhere @\u200bhereford"
    assert sanitize("mail me@example.com") == "mail me@example.com"


def _citation(n: int, *, title: str = "Guide", page: int | None = 3, url: str | None = None) -> Citation:
    extra = (("jump_url", url),) if url else ()
    chunk = Chunk(
        doc_id="d1", index=n, text="Backups run nightly.", title=title, source="guide.pdf", page=page, extra=extra
    )
    return Citation(n, chunk, "Backups run nightly.", 0.8)


class _Target:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[object]]] = []

    async def send(self, content: str, embeds: list[object]) -> object:
        self.sent.append((content, embeds))
        return self


def test_render_cautious_declined_and_consulted():
    writer = StreamingReply(_Target())
    cautious = Answer(
        "q",
        text="Nightly. [1]",
        status="cautious",
        note="Treat this with care.",
        citations=[_citation(1, url="https://discord.com/channels/1/2/3")],
    )
    [(content, embeds)] = writer.render_answer(cautious)
    assert content == "Nightly. [1]\n\n-# ⚠️ Treat this with care.\n-# ✅ done"
    assert embeds[0].title == "Sources"
    expected = "**[1] Guide** · p. 3 · [jump](https://discord.com/channels/1/2/3)\n> Backups run nightly."
    assert embeds[0].description == expected

    [(content, embeds)] = writer.render_answer(Answer("q", status="declined", note="I couldn't find anything."))
    assert content.startswith("I couldn't find anything.") and not embeds

    consulted = Answer("q", text="Something.", consulted=[_citation(1), _citation(2, page=None)])
    assert sources_embed(consulted).title == "Sources consulted"  # type: ignore[union-attr]


def test_rate_limiter_window():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.check(1) == 0 and limiter.check(1) == 0
    assert limiter.check(1) == pytest.approx(60.0)
    assert limiter.check(2) == 0  # per user
    now[0] = 30.0
    assert limiter.check(1) == pytest.approx(30.0)
    now[0] = 60.5
    assert limiter.check(1) == 0
    assert "2 questions a minute" in limiter.message(12.2) and "13 s" in limiter.message(12.2)
    assert RateLimiter(0).check(1) == 0


def test_position_text():
    assert position_text(0) == "✍️ writing…"
    assert position_text(1) == "⏳ 1 question ahead of you"
    assert position_text(2) == "⏳ 2 questions ahead of you"


async def test_queue_is_one_at_a_time_round_robin_and_off_the_loop():
    queue = GenerationQueue()
    queue.start()
    order: list[str] = []
    positions: dict[str, list[int]] = {}
    threads: set[str] = set()
    running = 0
    peak = 0
    gate = threading.Event()

    def producer(label: str):  # type: ignore[no-untyped-def]
        def produce() -> Iterator[AnswerEvent]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            threads.add(threading.current_thread().name)
            gate.wait(5)
            time.sleep(0.02)  # blocking work
            order.append(label)
            yield Token(label)
            running -= 1
            yield Completed(Answer(label, text=label))

        return produce

    async def consume(events: AsyncIterator[AnswerEvent]) -> None:
        async for _ in events:
            pass

    futures = []
    for user, label in ((1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"), (3, "c1"), (2, "b2")):
        positions[label] = []
        futures.append(
            queue.submit(Job(user, producer(label), consume, on_position=positions[label].append, label=label))
        )
    await asyncio.sleep(0.05)
    assert queue.ahead_of_new(4) == 3  # a newcomer waits for a1 (running), b1 and c1 only
    gate.set()
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    await queue.close()

    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert peak == 1 and threads == {"ragcord-generate_0"}
    assert positions["c1"][0] == 2 and positions["c1"][-1] == 0  # "2 questions ahead", then writing
    assert positions["a3"][0] == 2 and max(positions["a3"]) == 5  # b1, c1, b2 were put ahead of a3
    assert queue.completed == 6


async def test_queue_turns_producer_errors_into_a_failed_answer():
    queue = GenerationQueue()
    queue.start()
    got: list[Answer] = []

    def produce() -> Iterator[AnswerEvent]:
        yield Token("half an ans")
        raise OSError("disk on fire")

    async def consume(events: AsyncIterator[AnswerEvent]) -> None:
        async for event in events:
            if isinstance(event, Completed):
                got.append(event.answer)

    await queue.submit(Job(1, produce, consume))
    await queue.close()
    assert got[0].status == "failed" and got[0].note.startswith("the model failed (reference `")
    assert "disk on fire" not in got[0].note  # the cause goes to the log, under that reference


async def test_closing_the_queue_tells_the_running_and_waiting_questions_to_ask_again():
    queue = GenerationQueue()
    queue.start()
    produced: list[str] = []
    ended: dict[str, Answer] = {}
    seen: dict[str, list[str]] = {}

    def produce() -> Iterator[AnswerEvent]:
        for i in range(200):  # 10 s if nobody stops it
            produced.append(str(i))
            yield Token(f"{i} ")
            time.sleep(0.05)
        yield Completed(Answer("q", text="finished"))

    def consumer(label: str):  # type: ignore[no-untyped-def]
        seen[label] = []

        async def consume(events: AsyncIterator[AnswerEvent]) -> None:
            async for event in events:
                if isinstance(event, Completed):
                    ended[label] = event.answer
                else:
                    seen[label].append(event.text)

        return consume

    running = queue.submit(Job(1, produce, consumer("running"), label="running"))
    waiting = [queue.submit(Job(u, produce, consumer(f"waiting{u}"), label=f"waiting{u}")) for u in (2, 3)]
    while len(produced) < 3:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(queue.close(), 5)

    assert sorted(ended) == ["running", "waiting2", "waiting3"]
    assert all(a.status == "failed" and a.note == STOPPED_NOTE for a in ended.values())
    assert seen["running"] and not seen["waiting2"] and not seen["waiting3"]  # the waiting ones never ran
    assert all(f.done() and not f.cancelled() for f in (running, *waiting))  # their askers are not left hanging
    time.sleep(0.2)
    assert len(produced) < 10  # the generation thread stopped at its next token
    late = queue.submit(Job(4, produce, consumer("late"), label="late"))  # asked while stopping
    await asyncio.wait_for(late, 5)
    assert ended["late"].note == STOPPED_NOTE and not seen["late"]
    await queue.close()  # twice is harmless


def test_body_limit_leaves_room_for_status_lines():
    assert BODY_LIMIT + len("\n\n-# ⚠️ ") + 120 < 2000
