"""Channel-history backfill speed: messages/s, split into fetching and embedding, and peak RSS.

    python bench/backfill.py                      # 5,000 messages, FakeEmbedder
    python bench/backfill.py --messages 20000 --real   # the configured encoder (RAGCORD_EMBED_*)
    python bench/backfill.py --messages 3000 --real    # the bundled all-MiniLM-L6-v2, default backend
    python bench/backfill.py --messages 500000 --days 1000   # a big server: 18 min here, ~3 GB RSS

The real bot (discord.py) against the fake Discord (tests/discord_fake.py), whose history
pages cost what a loopback HTTP round trip costs (Discord's own pace, about 50 requests
a second per route, would add 0.02 s a page of 100: `--page-delay`). Messages are spread
over #general, #design and a thread of #design (the thread indexed through its parent).
It times the backfill from `/index add` until every window is ingested, and reports the
time spent waiting for pages (fetch), inside the encoder (embed) and writing to Chroma,
then checks none is missing and none twice. Memory: the process's RSS once the bot is
ready (encoder loaded), sampled every 0.1 s while it indexes (the peak of those samples),
and its lifetime peak (VmHWM; it includes building the fake's messages). The fake Discord
runs in the same process; its messages are made when a page asks for them (`--seeded`: built
beforehand, about 1.3 KB each, as before 2026-12-01), so the RSS figures are the bot's.
`--days N` spreads the messages evenly over the N UTC days before today (one window per
channel a day); by default they all fall on yesterday (the worst case for a window).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import add_project_to_path, current_rss_mb, machine, peak_rss_mb, say, table  # noqa: E402

add_project_to_path()


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from bot.service import RagService, build_embedder
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.discord_fake import DISCORD_EPOCH_MS, FakeDiscord
    from tests.discord_harness import running_bot
    from tests.fakes import FakeEmbedder, FakeLLM

    fake = await FakeDiscord(heartbeat_interval=5.0).start()
    guild = fake.add_guild("bench")
    users = [fake.add_user(f"user{i}") for i in range(20)]
    for user in users:
        fake.add_member(guild["id"], user)
    general = fake.channel(guild)
    design = fake.add_channel(guild["id"], "design")
    thread = fake.add_public_thread(design, "launch plan")
    places = [general, design, thread]
    # message i: in places[i % 3], by users[i % 20], sent at start + i * step ms (ids ascending with i)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    start_ms = int((midnight - args.days * 86400) * 1000)
    step_ms = max(1, args.days * 86_400_000 // max(args.messages, 1))

    def text_of(i: int) -> str:
        return f"message {i}: the {i % 97} widget ships after review {i % 13} with owner user{i % 20}"

    def id_of(i: int) -> int:
        return ((start_ms + i * step_ms - DISCORD_EPOCH_MS) << 22) | (i & 0x3FFFFF)

    if args.seeded:
        for i in range(args.messages):
            fake.seed_message(places[i % 3], users[i % 20], text_of(i), at=(start_ms + i * step_ms) / 1000)
        history_handler = None
    else:
        history_handler = lazy_history(fake, places, users, args.messages, text_of, id_of, start_ms, step_ms)
    table_ = []
    for verb, pattern, handler in fake._table:
        if handler.__name__ == "_history":
            handler = history_handler or handler
            if args.page_delay:

                async def slow(self: Any, *a: Any, _h: Any = handler, **k: Any) -> Any:
                    await asyncio.sleep(args.page_delay)
                    return await _h(self, *a, **k)

                handler = slow
        table_.append((verb, pattern, handler))
    fake._table = table_
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        discord_token=fake.token,  # type: ignore[call-arg]
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        admin_user_ids=[int(users[0]["id"])],
    )
    store = ChromaStore(ChromaLocation(path=data_dir / "chroma"), refresh_interval=0.0)
    embedder = build_embedder(settings) if args.real else FakeEmbedder()
    service = RagService(
        store, embedder, llm_factory=lambda: FakeLLM(), lexical_dir=data_dir / "lexical", settings=settings
    )
    service.warm()
    try:
        async with running_bot(fake, settings, service, timeout=60) as bot:
            history = bot.get_cog("History")
            ready_rss = current_rss_mb()
            samples = [ready_rss]

            marks: dict[str, float] = {}

            async def sample() -> None:
                while True:
                    samples.append(current_rss_mb())
                    tasks = list(history.backfills.values())
                    if "read" not in marks and len(tasks) >= 3 and all(t.done() for t in tasks):
                        marks["read"] = time.perf_counter() - t0  # every page fetched and stored
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample())
            t0 = time.perf_counter()
            for channel in (general, design):
                await fake.slash(channel, users[0], "index add")

            def done() -> bool:
                return len(history.backfills) >= 3 and history.idle

            await fake.wait_for(done, 3600, interval=0.05)
            await asyncio.sleep(0.5)
            await fake.wait_for(done, 3600, interval=0.05)
            total = time.perf_counter() - t0
            sampler.cancel()
            ns = f"g{guild['id']}"
            docs = [d for d in service.documents(ns) if d.kind == "chat"]
            chunks = service.store.get_chunks(ns, [i for d in docs for i in d.chunk_ids])
            ids = [dict(c.extra)["message_id"] for c in chunks]
            return {
                "messages": args.messages,
                "indexed": len(ids),
                "unique": len(set(ids)),
                "total_s": total,
                "fetch_s": history.fetch_s,
                "embed_s": history.chat.encode_s,
                "write_s": history.chat.write_s,
                "flush_s": history.flush_s,
                "flushed": history.flushed,
                "windows": len(docs),
                "ready_rss": ready_rss,
                "read_s": marks.get("read", total),
                "indexing_rss": max(samples),
                "encoder": getattr(embedder, "name", type(embedder).__name__),
            }
    finally:
        store.close()
        await fake.close()


class _Ids:
    """The ids of one place's messages (i = place, place + 3, ...), as a sequence bisect can search."""

    def __init__(self, place: int, count: int, id_of: Any) -> None:
        self.place, self.count, self.id_of = place, count, id_of

    def __len__(self) -> int:
        return max(0, -(-(self.count - self.place) // 3))

    def __getitem__(self, k: int) -> int:
        return int(self.id_of(3 * k + self.place))


def lazy_history(
    fake: Any, places: list[Any], users: list[Any], count: int, text_of: Any, id_of: Any, start_ms: int, step_ms: int
) -> Any:
    """A history handler for the fake that makes each page's messages when asked (Discord's order and
    bounds, as the fake's own handler) instead of holding `count` payloads: the fake's memory stays
    out of the bot's RSS figures. Other channels go to the fake's handler."""
    original = type(fake)._history
    templates, index = {}, {}
    for p, place in enumerate(places):
        template = fake.seed_message(place, users[0], "template")  # a real payload, then dropped
        fake.messages.pop(int(template["id"]))
        templates[place["id"]] = template
        index[place["id"]] = _Ids(p, count, id_of)

    def payload(template: dict[str, Any], i: int) -> dict[str, Any]:
        at = datetime.fromtimestamp((start_ms + i * step_ms) / 1000, UTC).isoformat()
        return {**template, "id": str(id_of(i)), "content": text_of(i), "author": users[i % 20], "timestamp": at}

    async def _history(self: Any, channel: str, query: dict[str, str], **k: Any) -> Any:
        if channel not in index:
            return await original(self, channel, query, **k)
        ids, template = index[channel], templates[channel]
        lo = bisect.bisect_right(ids, int(query["after"])) if "after" in query else 0
        hi = bisect.bisect_left(ids, int(query["before"])) if "before" in query else len(ids)
        limit = int(query.get("limit", 50))
        ks = range(lo, min(hi, lo + limit)) if "after" in query else range(max(lo, hi - limit), hi)
        return 200, [payload(template, 3 * kk + ids.place) for kk in reversed(ks)], {}

    return _history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--real", action="store_true", help="the configured encoder instead of FakeEmbedder")
    parser.add_argument("--page-delay", type=float, default=0.0, help="seconds added to each history page")
    parser.add_argument("--days", type=int, default=1, help="UTC days the messages are spread over (default 1)")
    parser.add_argument("--seeded", action="store_true", help="build every message in the fake beforehand")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    say(machine())
    rows = [
        ["encoder", r["encoder"]],
        ["messages", r["messages"]],
        ["indexed (unique)", f"{r['indexed']} ({r['unique']})"],
        ["days", args.days],
        ["windows (documents)", r["windows"]],
        ["total s", f"{r['total_s']:.1f}"],
        ["messages/s overall", f"{r['messages'] / r['total_s']:.0f}"],
        ["history read and stored s (until the last backfill task ended)", f"{r['read_s']:.1f}"],
        ["fetching s (waiting for pages)", f"{r['fetch_s']:.1f}"],
        ["messages/s fetching", f"{r['messages'] / max(r['fetch_s'], 1e-9):.0f}"],
        ["embedding s", f"{r['embed_s']:.1f}"],
        ["messages/s embedding", f"{r['messages'] / max(r['embed_s'], 1e-9):.0f}"],
        ["writing s", f"{r['write_s']:.1f}"],
        ["ingesting windows s (all of it)", f"{r['flush_s']:.1f} ({r['flushed']} window ingests)"],
        ["RSS when ready MB", f"{r['ready_rss']:.0f}"],
        ["peak RSS while indexing MB (0.1 s samples)", f"{r['indexing_rss']:.0f}"],
        ["peak RSS MB (VmHWM)", f"{peak_rss_mb():.0f}"],
    ]
    say(table("backfill", ["", "value"], rows))
    if r["indexed"] != r["messages"] or r["unique"] != r["messages"]:
        raise SystemExit("missing or duplicated messages")


if __name__ == "__main__":
    main()
