"""Test harness: the real `RagBot` (discord.py) running against `FakeDiscord`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from tests.discord_fake import EPHEMERAL, LOADING, FakeDiscord, FakeInteraction

__all__ = [
    "EPHEMERAL",
    "INTERVAL",
    "World",
    "answer_finished",
    "message_payloads",
    "running_bot",
    "script_answers",
    "world",
]


def answer_finished(messages: list[dict[str, Any]]) -> bool:
    """An answer's last message shows its final state: done, or the failure explanation."""
    return bool(messages) and ("✅ done" in messages[-1]["content"] or messages[-1]["content"].startswith("⚠️"))


@asynccontextmanager
async def running_bot(
    fake: FakeDiscord, settings: Any, service: Any, *, sync: bool = True, timeout: float = 10.0
) -> AsyncIterator[Any]:
    """Start `RagBot` (real discord.py) against the fake; yield it once READY; close it after.

    The bot points discord.py at the fake from its settings (DISCORD_API_BASE, DISCORD_GATEWAY_URL)
    and puts the endpoints back when it closes."""
    from bot.discord_app.client import RagBot

    bot = RagBot(settings, service=service, sync_commands=sync, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        await fake.wait_for(lambda: bot.is_ready() or task.done(), timeout)
        if task.done():
            task.result()  # start-up failed: raise its error
        yield bot
    finally:
        await bot.close()
        await asyncio.gather(task, return_exceptions=True)


INTERVAL = 0.25  # tests edit 4x faster than the default 1 s, and the fake's edit limit is scaled to match


@dataclass
class World:
    """One fake Discord with one guild ("one": #general; users ada (admin role), alice, bob, carol) and the bot."""

    fake: FakeDiscord
    bot: Any
    service: Any
    llm: Any
    guild: dict[str, Any]
    channel: dict[str, Any]
    admin: dict[str, Any]
    alice: dict[str, Any]
    bob: dict[str, Any]
    carol: dict[str, Any]
    admin_role: dict[str, Any] = field(default_factory=dict)  # ada's role, in RAGCORD_ADMIN_ROLE_IDS

    def namespace(self, guild: dict[str, Any] | None = None) -> str:
        return f"g{(guild or self.guild)['id']}"

    def add_document(self, filename: str, text: str | bytes, guild: dict[str, Any] | None = None) -> Any:
        data = text.encode() if isinstance(text, str) else text
        g = guild or self.guild
        result = self.service.ingest_bytes(self.namespace(g), data, filename, source=f"discord:{g['id']}:{filename}")
        assert result.status in ("added", "updated"), result
        self.service.prepare_index(self.namespace(g))
        return result

    async def ask(
        self,
        user: dict[str, Any],
        text: str,
        *,
        channel: dict[str, Any] | None = None,
        reply_to: dict[str, Any] | None = None,
        mention: bool = True,
    ) -> dict[str, Any]:
        return await self.fake.user_message(channel or self.channel, user, text, mention=mention, reply_to=reply_to)

    async def answer(self, question: dict[str, Any], timeout: float = 10.0) -> list[dict[str, Any]]:
        """The bot's messages answering `question` (a reply chain), once finished."""
        await self.fake.wait_for(lambda: answer_finished(self.fake.replies_to(question)), timeout)
        return self.fake.replies_to(question)

    async def command(
        self,
        user: dict[str, Any],
        name: str,
        options: dict[str, Any] | None = None,
        *,
        channel: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        return await self.fake.slash(channel or self.channel, user, name, options)

    async def reply(
        self, inter: FakeInteraction, *, streamed: bool = True, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """The messages answering an interaction, once final (streamed: ends done/failed)."""

        def ready() -> bool:
            msgs = self.fake.interaction_messages(inter)
            if streamed:
                return answer_finished(msgs)
            return bool(msgs) and not int(msgs[0]["flags"]) & LOADING

        await self.fake.wait_for(ready, timeout)
        return self.fake.interaction_messages(inter)


@asynccontextmanager
async def world(
    tmp_path: Any,
    llm: Any,
    *,
    guilds: int = 1,
    fake_options: dict[str, Any] | None = None,
    prepare: Callable[[FakeDiscord, dict[str, Any]], dict[str, Any]] | None = None,
    **overrides: Any,
) -> AsyncIterator[World]:
    """A fake Discord, a RagService (FakeEmbedder, real embedded Chroma, `llm`) and the running bot.

    `prepare(fake, guild)` may add users and roles before the bot starts and returns more settings.
    """
    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from tests.fakes import FakeEmbedder

    fake = await FakeDiscord(**{"edit_window": 5 * INTERVAL, **(fake_options or {})}).start()
    guild = fake.add_guild("one")
    role = fake.add_role(guild, "ragcord-admin")
    admin, alice, bob, carol = (fake.add_user(n) for n in ("ada", "alice", "bob", "carol"))
    fake.add_member(guild["id"], admin, [role])
    for user in (alice, bob, carol):
        fake.add_member(guild["id"], user)
    for i in range(1, guilds):
        other = fake.add_guild(f"guild{i + 1}")
        fake.add_member(other["id"], alice)
    options: dict[str, Any] = {
        "edit_interval": INTERVAL,
        "min_score": 0.2,
        "caution_score": 0.3,
        "admin_role_ids": [int(role["id"])],
        **(prepare(fake, guild) if prepare else {}),
        **overrides,
    }
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        discord_token=fake.token,  # type: ignore[call-arg]
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        **options,
    )
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    service = RagService(
        store, FakeEmbedder(), llm_factory=lambda: llm, lexical_dir=tmp_path / "lexical", settings=settings
    )
    try:
        async with running_bot(fake, settings, service) as bot:
            yield World(fake, bot, service, llm, guild, fake.channel(guild), admin, alice, bob, carol, role)
    finally:
        store.close()
        await fake.close()


def script_answers(service: Any, produce: Callable[[str], Iterator[Any]]) -> None:
    """Answer every question with the events `produce(question)` yields (the Discord layer alone).

    Replaces the service's answer entry points, whichever the bot calls: the one-shot stream, or
    the two steps (retrieval, then the model's part in the queue)."""
    service.ask_stream = lambda namespace, question, history=(), scopes=None: produce(question)
    if hasattr(service, "prepare_answer"):
        from bot.answer import Answer

        def prepare(namespace: str, question: str, history: Any = (), scopes: Any = None) -> Any:
            return SimpleNamespace(answer=Answer(question), done=False, question=question)

        service.prepare_answer = prepare
        service.finish_answer = lambda prepared: produce(prepared.question)


def message_payloads(fake: FakeDiscord) -> list[dict[str, Any]]:
    """Every REST body that creates or edits a message (what allowed_mentions must cover)."""
    out = []
    for call in fake.calls:
        body = call.json
        if call.method in ("POST", "PATCH") and isinstance(body, dict):
            data = body.get("data") if "/callback" in call.path else body
            if isinstance(data, dict) and ("content" in data or "embeds" in data):
                out.append(data)
    return out
