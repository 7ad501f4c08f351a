"""The fake Discord's channel history pages (GET /channels/{id}/messages), served from a per-channel
index: Discord's order and bounds for `before`/`after`/`limit`, messages seeded at earlier times,
deleted ones skipped, and a page's cost independent of the messages elsewhere (bench/backfill.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.discord_fake import FakeDiscord


def ids(page: list[dict[str, Any]]) -> list[int]:
    return [int(m["id"]) for m in page]


def page(fake: FakeDiscord, channel: dict[str, Any], **query: int) -> list[int]:
    status, data, _ = asyncio.run(fake._history(channel["id"], {k: str(v) for k, v in query.items()}))
    assert status == 200
    return ids(data)


def test_history_pages_follow_discords_bounds_and_order() -> None:
    fake = FakeDiscord()
    guild = fake.add_guild("g")
    user = fake.add_user("anna")
    general, other = fake.channel(guild), fake.add_channel(guild["id"], "other")
    sent = [int(fake.seed_message(general, user, f"m{i}")["id"]) for i in range(10)]
    fake.seed_message(other, user, "elsewhere")
    old = int(fake.seed_message(general, user, "months ago", at=time.time() - 90 * 86400)["id"])
    gone = sent[5]
    fake.messages.pop(gone)  # deleted: as tests do
    live = sorted([old, *sent[:5], *sent[6:]])

    assert page(fake, general, limit=100) == live[::-1]  # newest first
    assert page(fake, general, limit=3) == live[-3:][::-1]
    assert page(fake, general, after=0, limit=3) == live[:3][::-1]  # the oldest after, newest first
    assert page(fake, general, after=sent[3], limit=100) == [i for i in live if i > sent[3]][::-1]
    assert page(fake, general, before=sent[7], limit=2) == [sent[6], sent[4]]  # the deleted one skipped
    assert page(fake, general, after=old, before=sent[2], limit=100) == [sent[1], sent[0]]
    assert fake.channel_messages(general) == [fake.messages[i] for i in live]


def test_a_history_page_does_not_scan_every_message() -> None:
    fake = FakeDiscord()
    guild = fake.add_guild("g")
    user = fake.add_user("anna")
    quiet, busy = fake.channel(guild), fake.add_channel(guild["id"], "busy")
    first = int(fake.seed_message(quiet, user, "hello")["id"])
    for i in range(200_000):
        fake.seed_message(busy, user, f"m{i}")

    async def pages() -> float:
        t = time.perf_counter()
        for _ in range(200):
            _, data, _ = await fake._history(quiet["id"], {"after": "0", "limit": "100"})
            assert ids(data) == [first]
        return (time.perf_counter() - t) / 200

    # a scan of the 200,000 messages took tens of ms a page; a bisection takes microseconds
    assert asyncio.run(pages()) < 0.005
