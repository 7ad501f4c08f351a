"""One generation at a time, fairly shared between users.

The model runs on one worker thread (llama.cpp is one CPU-bound stream); its events
are handed back to the event loop with `loop.call_soon_threadsafe`, so the loop keeps
serving Discord (heartbeats, other commands) while an answer is written.

Waiting jobs are taken round-robin across users (the user served least recently goes
next): a user with five questions queued gets one turn, then everyone else gets theirs.
Each waiting job hears its position ("2 questions ahead of you") whenever it changes.

When the bot stops (Ctrl-C, SIGTERM, a restart), `close` ends every job it holds with
a notice instead of leaving messages at "writing…" or "queued" for ever: the answer
being written stops at its next token, and it and every waiting question are told to
ask again; questions arriving while it closes are told the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bot.answer import Answer, AnswerEvent, Completed
from bot.discord_app.errors import log_failure

log = logging.getLogger(__name__)

Producer = Callable[[], Iterator[AnswerEvent]]  # blocking: runs on the generation thread
Consumer = Callable[[AsyncIterator[AnswerEvent]], Awaitable[object]]  # runs on the loop


class _End:
    pass


class _Stopped:
    pass


@dataclass(frozen=True)
class _Failed:
    reference: str  # the log line with the traceback carries it


_Item = AnswerEvent | _Failed | _End | _Stopped
_END = _End()
_STOPPED = _Stopped()  # the queue is closing: the answer ends with `stopped_answer`
STOPPED_NOTE = "the bot is shutting down and stopped before answering; ask again once it is back"
CLOSE_GRACE_SECONDS = 5.0  # for the stopped notices to reach Discord before the connection closes


@dataclass(eq=False)
class Job:
    user_id: int
    produce: Producer
    consume: Consumer
    on_position: Callable[[int], None] | None = None  # called with the number of jobs ahead (0 = started)
    label: str = ""
    done: asyncio.Future[None] | None = field(default=None, repr=False)
    _position: int = field(default=-1, repr=False)


def failed_answer(reference: str, question: str = "") -> Answer:
    """The exception stays in the log (it can hold paths or server URLs); the user gets its reference."""
    return Answer(
        question,
        status="failed",
        note=f"the model failed (reference `{reference}`); it has been logged, try again",
    )


def stopped_answer() -> Answer:
    return Answer("", status="failed", note=STOPPED_NOTE)


def position_text(ahead: int) -> str:
    if ahead <= 0:
        return "✍️ writing…"
    return f"⏳ {ahead} question{'s' if ahead != 1 else ''} ahead of you"


class RateLimiter:
    """At most `per_minute` requests per user in any 60-second window (0: unlimited)."""

    def __init__(self, per_minute: int, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._seen: dict[int, deque[float]] = {}

    def check(self, user_id: int) -> float:
        """Record a request and return 0, or return the seconds to wait (nothing recorded)."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        times = self._seen.setdefault(user_id, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.per_minute:
            return max(self.window - (now - times[0]), 0.1)
        times.append(now)
        return 0.0

    def undo(self, key: int) -> None:
        """Forget `key`'s last recorded request (another limit refused it after all)."""
        times = self._seen.get(key)
        if times:
            times.pop()

    def message(self, retry_after: float) -> str:
        per = self.per_minute
        return (
            f"Slow down a little: you can ask {per} question{'s' if per != 1 else ''} a minute. "
            f"Try again in {math.ceil(retry_after)} s."
        )


class GenerationQueue:
    def __init__(self, *, rate_limit_per_minute: int = 0) -> None:
        self.rate = RateLimiter(rate_limit_per_minute)
        self._waiting: dict[int, deque[Job]] = {}  # user -> waiting jobs (users in order of arrival)
        self._served: dict[int, int] = {}  # user -> serial number of their latest turn
        self._serial = 0
        self._running: Job | None = None
        self._running_events: asyncio.Queue[_Item] | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._consumers: set[asyncio.Task[object]] = set()
        self._closing = False
        self.completed = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragcord-generate")
            self._worker = asyncio.create_task(self._work(), name="ragcord-generation-queue")

    async def close(self, *, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Stop: every job still held ends with the stopped notice (given `grace` seconds to
        show it), then anything left is cancelled. Safe to call twice."""
        if self._closing:
            return
        self._closing = True  # the generation thread stops at its next event
        running = self._running_events
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if running is not None:
            running.put_nowait(_STOPPED)
        waiting = [job for jobs in self._waiting.values() for job in jobs]
        self._waiting.clear()
        for job in waiting:
            self._stop(job)
        if self._consumers:
            _, late = await asyncio.wait(set(self._consumers), timeout=grace)
            if late:
                log.warning("%d answers could not be told the bot is stopping in %.0f s", len(late), grace)
        for task in list(self._consumers):
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _stop(self, job: Job) -> None:
        """End a job that will not run: its consumer shows the stopped notice."""
        events: asyncio.Queue[_Item] = asyncio.Queue()
        events.put_nowait(_STOPPED)
        self._start_consumer(job, events)

    # -- state ------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        return sum(len(jobs) for jobs in self._waiting.values())

    @property
    def busy(self) -> bool:
        return self._running is not None

    def __len__(self) -> int:
        """Jobs waiting plus the one being generated."""
        return self.waiting + (1 if self._running else 0)

    def ahead_of_new(self, user_id: int) -> int:
        """How many jobs would run before a job this user submits now."""
        probe = Job(user_id, produce=lambda: iter(()), consume=_ignore)
        return self._schedule(extra=probe).index(probe) + (1 if self._running else 0)

    # -- submitting -------------------------------------------------------------------------
    def submit(self, job: Job) -> asyncio.Future[None]:
        """Queue a job; the future resolves once its consumer has finished."""
        if self._closing:
            job.done = asyncio.get_running_loop().create_future()
            self._stop(job)
            return job.done
        if self._worker is None or self._wakeup is None:
            raise RuntimeError("the generation queue is not started")
        job.done = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job.user_id, deque()).append(job)
        self._announce()
        self._wakeup.set()
        return job.done

    def _schedule(self, extra: Job | None = None) -> list[Job]:
        """Waiting jobs in the order they will run.

        Next is always the user served least recently (never-served users first, in order
        of arrival), so a user's second question waits until everyone else has had a turn.
        """
        queues = {user: list(jobs) for user, jobs in self._waiting.items()}
        if extra is not None:
            queues.setdefault(extra.user_id, []).append(extra)
        served = dict(self._served)
        serial = self._serial
        order: list[Job] = []
        while any(queues.values()):
            user = min((u for u, jobs in queues.items() if jobs), key=lambda u: served.get(u, -1))
            order.append(queues[user].pop(0))
            serial += 1
            served[user] = serial
        return order

    def _pop(self) -> Job | None:
        order = self._schedule()
        if not order:
            return None
        job = order[0]
        jobs = self._waiting[job.user_id]
        jobs.popleft()
        if not jobs:
            del self._waiting[job.user_id]
        self._serial += 1
        self._served[job.user_id] = self._serial
        return job

    def _announce(self) -> None:
        offset = 1 if self._running else 0
        for index, job in enumerate(self._schedule()):
            self._tell(job, index + offset)
        if self._running is not None:
            self._tell(self._running, 0)

    @staticmethod
    def _tell(job: Job, ahead: int) -> None:
        if job._position == ahead or job.on_position is None:
            return
        job._position = ahead
        try:
            job.on_position(ahead)
        except Exception:
            log.exception("position callback failed")

    # -- the worker -------------------------------------------------------------------------
    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            job = self._pop()
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._running = job
            self._announce()
            try:
                await self._generate(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # never lose the worker
                log.exception("generation job %s failed", job.label)
            finally:
                self._running = None
                self.completed += 1

    async def _generate(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[_Item] = asyncio.Queue()
        self._running_events = events
        self._start_consumer(job, events)

        def hand_over(item: _Item) -> None:
            with contextlib.suppress(RuntimeError):  # RuntimeError: the loop closed (shutting down)
                loop.call_soon_threadsafe(events.put_nowait, item)

        def pump() -> None:
            try:
                for event in job.produce():
                    if self._closing:
                        break
                    hand_over(event)
            except Exception as exc:
                hand_over(_Failed(log_failure(log, f"generation failed ({job.label})", exc)))
            finally:
                hand_over(_END)

        assert self._executor is not None
        try:
            await loop.run_in_executor(self._executor, pump)
        finally:
            self._running_events = None

    def _start_consumer(self, job: Job, events: asyncio.Queue[_Item]) -> None:
        consumer = asyncio.create_task(self._consume(job, events), name=f"ragcord-consume-{job.label}")
        self._consumers.add(consumer)
        consumer.add_done_callback(self._consumers.discard)

    async def _consume(self, job: Job, events: asyncio.Queue[_Item]) -> None:
        async def stream() -> AsyncIterator[AnswerEvent]:
            while True:
                item = await events.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Stopped):
                    yield Completed(stopped_answer())
                    return
                if isinstance(item, _Failed):
                    yield Completed(failed_answer(item.reference))
                    return
                yield item

        try:
            await job.consume(stream())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("showing the answer failed (%s)", job.label)
        finally:
            if job.done is not None and not job.done.done():
                job.done.set_result(None)


async def _ignore(events: AsyncIterator[AnswerEvent]) -> None:
    async for _ in events:
        pass
