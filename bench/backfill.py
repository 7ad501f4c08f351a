"""Channel-history backfill speed: messages/s, split into fetching and embedding, and peak RSS.

    python bench/backfill.py                      # 5,000 messages, FakeEmbedder
    python bench/backfill.py --messages 20000 --real   # the configured encoder (RAGCORD_EMBED_*)
    python bench/backfill.py --messages 3000 --real    # the bundled all-MiniLM-L6-v2, default backend

The real bot (discord.py) against the fake Discord (tests/discord_fake.py), whose history
pages cost what a loopback HTTP round trip costs (Discord's own pace, about 50 requests
a second per route, would add 0.02 s a page of 100: `--page-delay`). Messages are spread
over #general, #design and a thread of #design (the thread indexed through its parent).
It times the backfill from `/index add` until every window is ingested, and reports the
time spent waiting for pages (fetch), inside the encoder (embed) and writing to Chroma,
then checks none is missing and none twice. Memory: the process's RSS once the bot is
ready (encoder loaded), sampled every 0.1 s while it indexes (the peak of those samples),
and its lifetime peak (VmHWM; it includes building the fake's messages). The fake Discord
runs in the same process, and its messages count too (a few MB at these sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import add_project_to_path, current_rss_mb, machine, peak_rss_mb, say, table  # noqa: E402

add_project_to_path()


async def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from bot.service import RagService, build_embedder
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.discord_fake import FakeDiscord
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
    for i in range(args.messages):
        text = f"message {i}: the {i % 97} widget ships after review {i % 13} with owner user{i % 20}"
        fake.seed_message(places[i % 3], users[i % 20], text)
    if args.page_delay:
        table_ = []
        for verb, pattern, handler in fake._table:
            if handler.__name__ == "_history":

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--real", action="store_true", help="the configured encoder instead of FakeEmbedder")
    parser.add_argument("--page-delay", type=float, default=0.0, help="seconds added to each history page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(args, Path(tmp)))
    say(machine())
    rows = [
        ["encoder", r["encoder"]],
        ["messages", r["messages"]],
        ["indexed (unique)", f"{r['indexed']} ({r['unique']})"],
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
