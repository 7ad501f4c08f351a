"""Load through the fake Discord: many members in several servers asking for minutes, while
admins /ingest and /forget, with the real model by default.

    python bench/load.py [--minutes 10] [--quick] [--members 50] [--guilds 5] [--fake-model]

Each member asks (a mention or /ask, half each), waits for the answer, thinks for a while
(exponential, mean `--think` seconds) and asks again. Each server's admin posts a small
document with /ingest every `--admin-every` seconds and later removes it with /forget
(autocomplete, then the confirmation button). Every server has a fact only it knows (a
code name), so content crossing servers is detectable. Reports:

- every question answered or told why (failed, rate-limited, unfinished at the end);
- fair order: answers per member (min / median / max), and the p95 wait;
- p50 / p95 acknowledgement (first visible reaction) and answer time (the "done" edit);
- the process's RSS at start (after the model loaded) and at the end;
- 0 cross-server content: no bot message in one server names another server's code name;
- 0 pings: every message body the bot sent has allowed_mentions {"parse": []}.

`--quick` runs one minute with 10 members in 2 servers. Prints a table; the last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, SAMPLE_CORPUS, bench_settings, setup_logging, table

sys.path.insert(0, str(ROOT))

CODES = ["Ocelot", "Quokka", "Narwhal", "Axolotl", "Pangolin", "Tapir", "Okapi", "Dugong", "Saola", "Kinkajou"]
CORPUS = {name: SAMPLE_CORPUS[name] for name in ("deploy.md", "billing.md", "backups.md")}
QUESTIONS = [
    "How do I start the bot?",
    "Where is the Discord token read from?",
    "When are invoices sent?",
    "How long do refunds take?",
    "When do backups run?",
    "What is our meeting room called?",
]


def room_doc(code: str) -> str:
    return f"# Rooms\n\nOur meeting room is called {code}. It is on the second floor next to the kitchen.\n"


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(v for v in values if v == v)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Asked:
    guild: int
    user: str
    kind: str  # "mention" or "slash"
    at: float
    ack: float = float("nan")
    done: float = float("nan")
    outcome: str = "unfinished"  # done, failed, refused, unfinished


@dataclass
class Observer:
    """Every bot message as the fake Discord stores it: content over time, and which message it replies to."""

    history: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    reply_of: dict[int, int] = field(default_factory=dict)  # question id -> the bot's first reply id
    changed: dict[int, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))

    def saw(self, message: dict[str, Any]) -> None:
        mid = int(message["id"])
        self.history[mid].append((time.monotonic(), message.get("content") or ""))
        parent = (message.get("message_reference") or {}).get("message_id")
        if parent is not None and int(parent) not in self.reply_of:
            self.reply_of[int(parent)] = mid
            self.changed[int(parent)].set()
        self.changed[mid].set()


def final(content: str) -> str:
    if "✅ done" in content or content.startswith("⚠️"):
        return "failed" if content.startswith("⚠️") else "done"
    if "Slow down" in content:
        return "refused"
    return ""


async def watch(observer: Observer, mid: int, asked: Asked, deadline: float) -> None:
    """Follow message `mid` until it shows a final state (or the deadline)."""
    event = observer.changed[mid]
    while time.monotonic() < deadline:
        for t, content in observer.history.get(mid, []):
            if asked.ack != asked.ack:
                asked.ack = t - asked.at
            state = final(content)
            if state:
                asked.done, asked.outcome = t - asked.at, state
                return
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return


async def member(
    fake: Any, observer: Observer, guild: int, channel: dict[str, Any], user: dict[str, Any], args: Any, end: float
) -> list[Asked]:
    rng = random.Random(f"{args.seed}:{user['id']}")
    out: list[Asked] = []
    await asyncio.sleep(min(rng.uniform(0, args.think), args.minutes * 60))
    while time.monotonic() < end:
        question = rng.choice(QUESTIONS)
        kind = "slash" if rng.random() < 0.5 else "mention"
        asked = Asked(guild, user["id"], kind, time.monotonic())
        out.append(asked)
        deadline = end + args.grace
        if kind == "mention":
            message = await fake.user_message(channel, user, question, mention=True)
            qid = int(message["id"])
            while qid not in observer.reply_of and time.monotonic() < deadline:
                observer.changed[qid].clear()
                try:
                    await asyncio.wait_for(observer.changed[qid].wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            if qid in observer.reply_of:
                await watch(observer, observer.reply_of[qid], asked, deadline)
        else:
            inter = await fake.slash(channel, user, "ask", {"question": question})
            while inter.callback is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if inter.callback is not None:
                asked.ack = inter.callback_at - asked.at
                if inter.original_id is not None:
                    await watch(observer, inter.original_id, asked, deadline)
                    asked.ack = inter.callback_at - asked.at  # the defer is the acknowledgement
        await asyncio.sleep(min(rng.expovariate(1 / args.think), max(0.0, end - time.monotonic())))
    return out


async def admin(
    fake: Any, bot: Any, guild: dict[str, Any], user: dict[str, Any], args: Any, end: float
) -> dict[str, int]:
    """/ingest a note, then /forget it (autocomplete + the confirm button), every `admin_every` seconds."""
    rng = random.Random(f"{args.seed}:admin:{guild['id']}")
    channel = fake.channel(guild)
    counts = {"ingested": 0, "forgotten": 0, "admin_failures": 0}
    n = 0
    await asyncio.sleep(rng.uniform(0, args.admin_every))
    while time.monotonic() < end:
        n += 1
        name = f"note-{guild['name']}-{n}.md"
        text = f"# Note {n}\n\nNote {n} of {guild['name']} lists the chairs in the meeting room.\n"
        attachment = fake.add_attachment(channel["id"], name, text.encode())
        try:
            inter = await fake.slash(channel, user, "ingest", {"file": attachment})
            await fake.wait_for(lambda i=inter: "Ingest report" in str(fake.interaction_messages(i)), 120, 0.2)
            counts["ingested"] += 1
            choices = await fake.autocomplete(channel, user, "forget", {"document": name}, "document", timeout=30)
            inter = await fake.slash(channel, user, "forget", {"document": choices[0]["value"]})
            await fake.wait_for(lambda i=inter: any(m["components"] for m in fake.interaction_messages(i)), 30, 0.2)
            [prompt] = fake.interaction_messages(inter)
            await fake.click(prompt, user, label="Forget")
            await fake.wait_for(lambda p=prompt: "Forgot" in p["content"], 120, 0.2)
            counts["forgotten"] += 1
        except (TimeoutError, IndexError, LookupError, ValueError):
            counts["admin_failures"] += 1
        await asyncio.sleep(min(rng.uniform(0.5, 1.5) * args.admin_every, max(0.0, end - time.monotonic())))
    return counts


def build_service(args: argparse.Namespace, data_dir: Path, settings: Any) -> Any:
    from bot.service import RagService

    if not args.fake_model:
        return RagService.from_settings(settings)
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder, FakeLLM, cite_first_passage

    llm = FakeLLM(default=cite_first_passage, delay=0.02)
    store = ChromaStore(ChromaLocation(path=data_dir / "chroma"), refresh_interval=0.0)
    return RagService(
        store, FakeEmbedder(), llm_factory=lambda: llm, lexical_dir=data_dir / "lexical", settings=settings
    )


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from tests.discord_fake import FakeDiscord
    from tests.discord_harness import message_payloads, running_bot

    fake = await FakeDiscord(heartbeat_interval=5.0).start()
    observer = Observer()
    dispatch = fake._dispatch_message

    async def observed(event: str, message: dict[str, Any]) -> None:
        await dispatch(event, message)
        if message["author"]["id"] == fake.bot_user["id"]:
            observer.saw(message)

    fake._dispatch_message = observed
    guilds, admins, roles, members = [], [], [], []
    for g in range(args.guilds):
        guild = fake.add_guild(f"server{g + 1}")
        role = fake.add_role(guild, "docs-admin")
        boss = fake.add_user(f"admin{g + 1}")
        fake.add_member(guild["id"], boss, [role])
        guilds.append(guild)
        admins.append(boss)
        roles.append(int(role["id"]))
    for i in range(args.members):
        guild = guilds[i % args.guilds]
        user = fake.add_user(f"member{i + 1}")
        fake.add_member(guild["id"], user)
        members.append((guild, user))
    settings = bench_settings(
        data_dir,
        discord_token=fake.token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        admin_role_ids=roles,
        rate_limit_per_minute=args.rate_limit,
    )
    service = build_service(args, data_dir, settings)
    for g, guild in enumerate(guilds):
        namespace = f"g{guild['id']}"
        for name, text in {**CORPUS, "rooms.md": room_doc(CODES[g % len(CODES)])}.items():
            service.ingest_bytes(namespace, text.encode(), name, source=f"bench:{name}")
        service.prepare_index(namespace)
    try:
        async with running_bot(fake, settings, service, timeout=300) as bot:
            rss_start = rss_mib()
            started = time.monotonic()
            end = started + args.minutes * 60
            tasks = [
                member(fake, observer, int(guild["id"]), fake.channel(guild), user, args, end)
                for guild, user in members
            ]
            admin_tasks = [admin(fake, bot, guild, boss, args, end) for guild, boss in zip(guilds, admins, strict=True)]
            results = await asyncio.gather(*tasks, *admin_tasks)
            wall = time.monotonic() - started
            rss_end = rss_mib()
            asked = [a for r in results[: len(tasks)] for a in r]  # type: ignore[union-attr]
            admin_counts: dict[str, int] = defaultdict(int)
            for counts in results[len(tasks) :]:
                for key, value in counts.items():  # type: ignore[union-attr]
                    admin_counts[key] += value
            # cross-server content: a bot message in one server naming another server's code name
            crossing = 0
            for message in list(fake.messages.values()):
                if message["author"]["id"] != fake.bot_user["id"] or not message.get("guild_id"):
                    continue
                g = next(i for i, guild in enumerate(guilds) if guild["id"] == message["guild_id"])
                shown = (message.get("content") or "") + json.dumps(message.get("embeds") or [])
                others = [c for i, c in enumerate(CODES[: args.guilds]) if i != g % len(CODES)]
                crossing += any(code in shown for code in others)
            pings = sum(1 for body in message_payloads(fake) if body.get("allowed_mentions") != {"parse": []})
            model = getattr(service.llm, "name", "?")
            return {
                "asked": asked,
                "wall": wall,
                "rss_start": rss_start,
                "rss_end": rss_end,
                "crossing": crossing,
                "pings": pings,
                "admin": dict(admin_counts),
                "rate_limited_edits": len(fake.rate_limited),
                "rejected_calls": len(fake.rejected),
                "model": model,
                "completed": bot.queue.completed,
            }
    finally:
        service.store.close()
        await fake.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long members keep asking (default 10)")
    parser.add_argument("--quick", action="store_true", help="1 minute, 10 members in 2 servers")
    parser.add_argument("--members", type=int, default=50, help="members asking (default 50)")
    parser.add_argument("--guilds", type=int, default=5, help="servers they are spread over (default 5)")
    parser.add_argument("--think", type=float, default=60.0, help="mean seconds between a member's questions")
    parser.add_argument("--admin-every", type=float, default=60.0, help="seconds between an admin's ingests")
    parser.add_argument("--rate-limit", type=int, default=6, help="questions a member may ask per minute")
    parser.add_argument("--grace", type=float, default=120.0, help="seconds to let open answers finish at the end")
    parser.add_argument("--fake-model", action="store_true", help="FakeEmbedder and a scripted FakeLLM (no model)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.members, args.guilds = min(args.minutes, 1.0), 10, 2
        args.think, args.admin_every = min(args.think, 20.0), min(args.admin_every, 20.0)
    args.guilds = max(1, min(args.guilds, len(CODES)))
    setup_logging(args.verbose)
    if not args.verbose:
        for noisy in ("bm25s", "discord"):
            logging.getLogger(noisy).setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="ragcord-bench-load-") as tmp:
        out = asyncio.run(run(args, Path(tmp)))
    asked: list[Asked] = out["asked"]
    outcomes: dict[str, int] = defaultdict(int)
    for a in asked:
        outcomes[a.outcome] += 1
    per_member: dict[str, int] = defaultdict(int)
    for a in asked:
        per_member[a.user] += a.outcome == "done"
    answered = [a.done for a in asked if a.outcome == "done"]
    acks = [a.ack for a in asked]
    counts = sorted(per_member.values()) or [0]
    rows = [
        ["questions asked", len(asked)],
        ["answered (done)", outcomes["done"]],
        ["told it failed", outcomes["failed"]],
        ["told to slow down", outcomes["refused"]],
        ["unfinished at the end", outcomes["unfinished"]],
        ["acknowledgement p50 (s)", percentile(acks, 50)],
        ["acknowledgement p95 (s)", percentile(acks, 95)],
        ["acknowledgement max (s)", max((a for a in acks if a == a), default=float("nan"))],
        ["answer p50 (s)", percentile(answered, 50)],
        ["answer p95 (s)", percentile(answered, 95)],
        ["answers per member min/median/max", f"{counts[0]}/{statistics.median(counts):g}/{counts[-1]}"],
        [
            "/ingest + /forget cycles",
            f"{out['admin'].get('forgotten', 0)} ({out['admin'].get('admin_failures', 0)} failed)",
        ],
        ["RSS start -> end (MiB)", f"{out['rss_start']:.0f} -> {out['rss_end']:.0f}"],
        ["cross-server content", out["crossing"]],
        ["pings", out["pings"]],
        ["rate-limited edits / rejected calls", f"{out['rate_limited_edits']} / {out['rejected_calls']}"],
    ]
    print(
        f"ragcord load: {args.members} members in {args.guilds} servers for {args.minutes:g} min "
        f"(think {args.think:g} s), model {out['model']}"
    )
    print(table(["measure", "value"], rows))

    def r(value: float) -> float:
        return round(value, 3)

    result = {
        "members": args.members,
        "guilds": args.guilds,
        "minutes": args.minutes,
        "model": out["model"],
        "asked": len(asked),
        "outcomes": dict(outcomes),
        "ack_p50_s": r(percentile(acks, 50)),
        "ack_p95_s": r(percentile(acks, 95)),
        "answer_p50_s": r(percentile(answered, 50)),
        "answer_p95_s": r(percentile(answered, 95)),
        "answers_per_member": [counts[0], statistics.median(counts), counts[-1]],
        "admin": out["admin"],
        "rss_start_mib": round(out["rss_start"]),
        "rss_end_mib": round(out["rss_end"]),
        "cross_server": out["crossing"],
        "pings": out["pings"],
    }
    if args.verbose:
        for a in asked:
            print(f"  {a.kind:8} ack {a.ack:.3f} s  done {a.done:.3f} s  {a.outcome}", file=sys.stderr)
    print(json.dumps(result))
    ok = outcomes["unfinished"] == 0 and out["crossing"] == 0 and out["pings"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
