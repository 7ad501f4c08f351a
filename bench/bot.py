"""The Discord layer's cost: N users asking at once through the fake Discord, against the core alone.

    python bench/bot.py [--users 8] [--delay 0.02] [--words 50] [--real]

Every user asks one question at the same moment (even users by mention, odd users by
/ask). Measured from each question's arrival:
- acknowledge: the bot's first visible reaction (placeholder message, or the /ask defer);
  it must stay under Discord's 3 s interaction limit whatever the queue length;
- first useful content: the first edit showing something that answers: the reader's
  quoted evidence (shown as soon as retrieval ends, before the model's turn), or text;
- first token: the first edit showing the model's words;
- answered: the final "done" edit.
The same questions also go to `RagService.ask_stream` directly, one after another as
the single model would serve them, all "asked" at the same moment, once before and once
after the Discord run; the faster of the two is the baseline. The ratio is what the
Discord layer (queue, REST round trips, edit throttle) adds.

Default model: the scripted FakeLLM with a per-token delay (about SmolLM2-135M's speed on
two cores); `--real` uses the real encoder and GGUF model. Prints a table; the last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import ROOT, SAMPLE_CORPUS, bench_settings, fake_guild, setup_logging, table

QUESTIONS = [
    "How do I start the bot?",
    "Where is the Discord token read from?",
    "When are invoices sent?",
    "How long do refunds take?",
    "What do new people get on their first day?",
    "When does the office open?",
    "When do backups run?",
    "How long are backups kept?",
    "Where do I ask for a restore?",
    "Which currency are card payments charged in?",
]


@dataclass
class Timing:
    ack: float = float("nan")
    useful: float = float("nan")
    first_token: float = float("nan")
    done: float = float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def scripted_reply(words: int) -> Any:
    """A FakeLLM script: passage 1's first sentence, padded to about `words` words, cited."""
    from tests.fakes import cite_first_passage

    def reply(messages: Any) -> str:
        first = cite_first_passage(messages).removesuffix(" [1]")
        text, n = first, 0
        while len(text.split()) < words:  # distinct words: a phrase said twice is a loop, and loops are cut
            n += 1
            text += f" Step {n} then checks item {n}."
        return text + " [1]"

    return reply


def build_service(args: argparse.Namespace, data_dir: Path) -> Any:
    from bot.service import RagService

    settings = bench_settings(data_dir, discord_token="bench-token", rate_limit_per_minute=60)
    if args.real:
        service = RagService.from_settings(settings)
    else:
        from store.chroma import ChromaLocation, ChromaStore
        from tests.fakes import FakeEmbedder, FakeLLM

        llm = FakeLLM(default=scripted_reply(args.words), delay=args.delay)
        store = ChromaStore(ChromaLocation(path=data_dir / "chroma"), refresh_interval=0.0)
        service = RagService(
            store, FakeEmbedder(), llm_factory=lambda: llm, lexical_dir=data_dir / "lexical", settings=settings
        )
    service.warm()
    return service


def ingest(service: Any, namespace: str) -> None:
    for name, text in SAMPLE_CORPUS.items():
        service.ingest_bytes(namespace, text.encode(), name, source=f"bench:{name}")
    service.prepare_index(namespace)


class TokenCount:
    """Wraps `service.ask_stream` to count the tokens generated (answers may differ run to run)."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.real = service.ask_stream
        self.real_finish = service.finish_answer
        self.tokens = 0

    def __enter__(self) -> TokenCount:
        from bot.answer import Completed

        def counting(real: Any) -> Any:
            def counted(*args: Any) -> Any:
                for event in real(*args):
                    if isinstance(event, Completed):
                        self.tokens += int(event.answer.timings.get("tokens", 0))
                    yield event

            return counted

        self.service.ask_stream = counting(self.real)  # the core directly
        self.service.finish_answer = counting(self.real_finish)  # the bot: the model's part of each question
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.ask_stream = self.real
        self.service.finish_answer = self.real_finish


def direct(service: Any, namespace: str, questions: Sequence[str]) -> tuple[list[Timing], float, int]:
    """The core alone: the questions answered one after another, all asked at t0."""
    from bot.answer import Evidence, Token

    timings = []
    with TokenCount(service) as count:
        t0 = time.perf_counter()
        for question in questions:
            timing = Timing(ack=0.0)
            for event in service.ask_stream(namespace, question, ()):
                if isinstance(event, Evidence | Token) and timing.useful != timing.useful:
                    timing.useful = time.perf_counter() - t0
                if isinstance(event, Token) and timing.first_token != timing.first_token:
                    timing.first_token = time.perf_counter() - t0
            timing.done = time.perf_counter() - t0
            timings.append(timing)
    return timings, time.perf_counter() - t0, count.tokens


def _body(content: str) -> bool:
    return any(line.strip() and not line.startswith("-# ") for line in content.splitlines())


def _model_text(content: str) -> bool:
    """The model's words are on show: streaming under the evidence, or leading the final reply."""
    from bot.discord_app.streaming import PHRASING

    if PHRASING in content:
        return True
    first = next((line for line in content.splitlines() if line.strip() and not line.startswith("-# ")), "")
    return bool(first) and not first.startswith("“")  # the evidence line is a quote


async def through_discord(service: Any, questions: Sequence[str]) -> tuple[list[Timing], float, dict[str, int]]:
    from tests.discord_harness import running_bot

    fake, guild, channel, users = await fake_guild(len(questions))
    settings = service.settings.model_copy(
        update={"discord_api_base": fake.api_base, "discord_gateway_url": fake.gateway_url}
    )
    ingest(service, f"g{guild['id']}")
    try:
        async with running_bot(fake, settings, service, timeout=120) as bot:
            asked: list[tuple[float, Any]] = []
            t0 = time.monotonic()
            for i, (user, question) in enumerate(zip(users, questions, strict=True)):
                at = time.monotonic()
                if i % 2:
                    asked.append((at, await fake.slash(channel, user, "ask", {"question": question})))
                else:
                    asked.append((at, await fake.user_message(channel, user, question, mention=True)))

            def ids(item: Any) -> list[int]:
                if isinstance(item, dict):
                    return [int(m["id"]) for m in fake.replies_to(item)]
                return [int(m["id"]) for m in fake.interaction_messages(item)]

            def finished() -> bool:
                return all(
                    any("✅ done" in c or c.startswith("⚠️") for _, mid, c in fake.timeline if mid in ids(item))
                    for _, item in asked
                )

            await fake.wait_for(finished, timeout=600, interval=0.1)
            wall = time.monotonic() - t0
            timings = []
            for at, item in asked:
                mine = set(ids(item))
                events = [(t, c) for t, mid, c in fake.timeline if mid in mine]
                timing = Timing()
                timing.ack = (item.callback_at if not isinstance(item, dict) else events[0][0]) - at
                timing.useful = next((t for t, c in events if _body(c)), float("nan")) - at
                timing.first_token = next((t for t, c in events if _model_text(c)), float("nan")) - at
                timing.done = next(t for t, c in events if "✅ done" in c or c.startswith("⚠️")) - at
                timings.append(timing)
            counts = {
                "rate_limited": len(fake.rate_limited),
                "rejected": len(fake.rejected),
                "heartbeats": len(fake.heartbeats),
                "completed": bot.queue.completed,
            }
            return timings, wall, counts
    finally:
        await fake.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=8, help="simulated users asking at once (default 8)")
    parser.add_argument("--delay", type=float, default=0.02, help="FakeLLM seconds per token (default 0.02)")
    parser.add_argument("--words", type=int, default=50, help="FakeLLM answer length in words (default 50)")
    parser.add_argument("--real", action="store_true", help="use the real encoder and GGUF model")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not args.verbose:
        for noisy in ("bm25s", "discord"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.users)]

    with tempfile.TemporaryDirectory(prefix="ragcord-bench-bot-") as tmp:
        service = build_service(args, Path(tmp))
        ingest(service, "bench")
        direct(service, "bench", questions[:1])  # warm caches (and the model's prompt prefix)
        before = direct(service, "bench", questions)
        with TokenCount(service) as count:
            bot, bot_wall, counts = asyncio.run(through_discord(service, questions))
        bot_tokens = count.tokens
        after = direct(service, "bench", questions)
        core, core_wall, core_tokens = min(before, after, key=lambda run: run[1])  # the faster: a conservative ratio
        model = getattr(service.llm, "name", "?")
        service.store.close()

    def stats(rows: list[Timing], key: str) -> tuple[float, float]:
        values = [getattr(r, key) for r in rows]
        return percentile(values, 50), percentile(values, 95)

    core_rate, bot_rate = len(core) / core_wall * 60, len(bot) / bot_wall * 60
    rows = []
    steps = (("acknowledge", "ack"), ("first useful content", "useful"), ("first token", "first_token"))
    for label, key in (*steps, ("answered", "done")):
        c50, c95 = stats(core, key)
        b50, b95 = stats(bot, key)
        rows.append([f"{label} p50 (s)", c50 if key != "ack" else None, b50, b50 / c50 if key != "ack" else None])
        rows.append([f"{label} p95 (s)", c95 if key != "ack" else None, b95, b95 / c95 if key != "ack" else None])
    rows.append(["answers / minute", core_rate, bot_rate, bot_rate / core_rate])
    rows.append(["wall time (s)", core_wall, bot_wall, bot_wall / core_wall])
    rows.append(["tokens generated", core_tokens, bot_tokens, bot_tokens / max(core_tokens, 1)])
    core_ms, bot_ms = core_wall / max(core_tokens, 1) * 1000, bot_wall / max(bot_tokens, 1) * 1000
    rows.append(["wall ms per token", core_ms, bot_ms, bot_ms / core_ms])
    print(
        f"ragcord bot bench: {args.users} users at once, model {model}"
        + ("" if args.real else f" (FakeLLM {args.delay * 1000:.0f} ms/token, ~{args.words} words)")
    )
    print(table(["measure", "core directly", "through Discord", "ratio"], rows))
    ack_max = max(t.ack for t in bot)
    print(
        f"slowest acknowledgement {ack_max:.3f} s (Discord allows 3 s); "
        f"rate-limited edits {counts['rate_limited']}, rejected calls {counts['rejected']}"
    )

    def r(value: float) -> float:
        return round(value, 3)

    result = {
        "users": args.users,
        "model": model,
        "real": args.real,
        "ack_p50_s": r(stats(bot, "ack")[0]),
        "ack_p95_s": r(stats(bot, "ack")[1]),
        "ack_max_s": r(ack_max),
        "first_token_p50_s": {"core": r(stats(core, "first_token")[0]), "discord": r(stats(bot, "first_token")[0])},
        "first_useful_p50_s": {"core": r(stats(core, "useful")[0]), "discord": r(stats(bot, "useful")[0])},
        "first_useful_p95_s": {"core": r(stats(core, "useful")[1]), "discord": r(stats(bot, "useful")[1])},
        "answered_p50_s": {"core": r(stats(core, "done")[0]), "discord": r(stats(bot, "done")[0])},
        "answered_p95_s": {"core": r(stats(core, "done")[1]), "discord": r(stats(bot, "done")[1])},
        "answers_per_minute": {"core": r(core_rate), "discord": r(bot_rate)},
        "tokens": {"core": core_tokens, "discord": bot_tokens},
        "overhead_ratio": r(bot_wall / core_wall),
        "overhead_ratio_per_token": r(bot_ms / core_ms),
        **counts,
    }
    print(json.dumps(result, sort_keys=True))
    return 0 if ack_max < 3.0 and not counts["rate_limited"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
