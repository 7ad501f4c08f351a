"""/summarize: a document, this thread, or the recent messages of this channel.

With `since:` / `until:` a conversation summary covers a time range: the bot fetches the
range's newest messages from Discord (up to RANGE_FETCH), and when the range goes back
further and the channel is indexed (/index add), the older part comes from the index
(history.sqlite: the indexed messages, with their edits, deletions and opt-outs), evenly
thinned to RANGE_MAX when it is long. The reply says when a limit applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answer import AnswerEvent, Completed
from bot.discord_app.client import say
from bot.discord_app.cogs.documents import document_choices
from bot.discord_app.permissions import origin
from bot.discord_app.streaming import InteractionTarget, StreamingReply, sanitize
from bot.service import DocumentNotFound
from bot.summarize import parse_range

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)

RANGE_FETCH = 200  # with since/until: the range's newest messages read from Discord (two history pages)
RANGE_MAX = 2000  # ... and at most this many older ones from the index (evenly spread)

SCOPES = [
    app_commands.Choice(name="this thread", value="thread"),
    app_commands.Choice(name="recent messages in this channel", value="channel"),
]


class Summarize(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot
        self.range_fetch = RANGE_FETCH
        self.range_max = RANGE_MAX

    @app_commands.command(name="summarize", description="Summarise a document, this thread, or recent messages here.")
    @app_commands.describe(
        document="A document to summarise: start typing to search this server's documents.",
        scope="Without a document: summarise this thread, or the recent messages of this channel.",
        messages="How many recent messages to read for a channel summary (default 50; not with since/until).",
        since="Summarise messages from this time: 2026-03-04, 2026-03-04 14:30 (UTC), or 7d, 12h, 2w back.",
        until="...up to this time (a date includes that day; default: now).",
    )
    @app_commands.autocomplete(document=document_choices)
    @app_commands.choices(scope=SCOPES)
    async def summarize(
        self,
        interaction: discord.Interaction[RagBot],
        document: str | None = None,
        scope: app_commands.Choice[str] | None = None,
        messages: app_commands.Range[int, 2, 200] = 50,
        since: str | None = None,
        until: str | None = None,
    ) -> None:
        bot = self.bot
        wait = bot.queue.rate.check(interaction.user.id)
        if wait:
            await say(interaction, bot.queue.rate.message(wait), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        namespace = bot.namespace_for(interaction.guild)
        if document:
            # the summary is public: only documents this channel's audience may read
            user, guild = interaction.user, interaction.guild
            scopes = await bot.readable.for_reply(user, guild, interaction.channel, private=False)
            try:
                info = await asyncio.to_thread(bot.service.find_document, namespace, document, scopes)
            except DocumentNotFound as exc:
                text = f"Nothing to summarise: {sanitize(str(exc))}."
                await say(interaction, text)
                return
            doc_id = info.doc_id
            produce = lambda: bot.service.summarize_document_stream(namespace, doc_id, scopes)  # noqa: E731
        else:
            channel = interaction.channel
            where = scope.value if scope else ("thread" if isinstance(channel, discord.Thread) else "channel")
            if where == "thread" and not isinstance(channel, discord.Thread):
                await say(interaction, "This isn't a thread: pick a document, or the channel scope.")
                return
            limit = 1000 if where == "thread" else messages
            start: datetime | None = None
            stop: datetime | None = None
            if since or until:
                try:
                    start, stop = parse_range(since, until, datetime.now(UTC))
                except ValueError as exc:
                    await say(interaction, f"{sanitize(str(exc))}.")  # it quotes what was typed
                    return
            readable = await bot.readable.scopes(interaction.user, interaction.guild)
            if interaction.guild is not None and origin(channel)[0] not in readable:
                # the bot reads the history with its own permissions: not for someone who may not
                await say(interaction, "You can't read this channel's history, so I won't summarise it.")
                return
            note = ""
            try:
                if stop is not None:
                    items, title, note = await self._read_range(channel, start, stop)
                else:
                    items, title = await self._read(channel, limit)
            except discord.Forbidden:
                await say(interaction, "I can't read this channel's history (I need Read Message History).")
                return
            if not items:
                if stop is not None:
                    span = f"since {_shown(start)} " if start is not None else ""
                    await say(interaction, f"There are no messages here {span}before {_shown(stop)} to summarise.")
                else:
                    await say(interaction, "There are no messages here to summarise.")
                return
            produce = lambda: _noted(bot.service.summarize_texts_stream(items, title), note)  # noqa: E731
        writer = StreamingReply(InteractionTarget(interaction), interval=bot.settings.edit_interval)
        await bot.generate(writer, interaction.user.id, produce, label=f"/summarize {interaction.id}")

    async def _read(self, channel: object, limit: int) -> tuple[list[tuple[str, str, str]], str]:
        """(author, text, jump url) of the channel's last `limit` messages, oldest first."""
        if not isinstance(channel, discord.abc.Messageable):
            return [], ""
        me = self.bot.user.id if self.bot.user else 0
        items = []
        async for m in channel.history(limit=limit):
            if m.author.id == me or not m.content.strip():
                continue
            items.append((m.author.display_name, m.content, m.jump_url))
        items.reverse()
        name = getattr(channel, "name", "this channel")
        title = f"thread {name}" if isinstance(channel, discord.Thread) else f"#{name}"
        return items, title

    async def _read_range(
        self, channel: object, start: datetime | None, stop: datetime
    ) -> tuple[list[tuple[str, str, str]], str, str]:
        """(author, text, jump url) of the channel's messages from `start` to `stop`, oldest first, its
        title, and a note when a limit applied. The newest come from Discord; if the range reaches
        further back than `range_fetch` messages, the rest come from the index."""
        if not isinstance(channel, discord.abc.Messageable):
            return [], "", ""
        me = self.bot.user.id if self.bot.user else 0
        live: list[tuple[str, str, str]] = []
        fetched, oldest, reached = 0, 0, False
        async for m in channel.history(limit=self.range_fetch, before=stop):
            if start is not None and m.created_at < start:
                reached = True
                break
            fetched, oldest = fetched + 1, m.id
            if m.author.id != me and m.content.strip():
                live.append((m.author.display_name, m.content, m.jump_url))
        live.reverse()
        reached = reached or fetched < self.range_fetch  # the whole range, or the channel's beginning
        name = getattr(channel, "name", "this channel")
        title = f"thread {name}" if isinstance(channel, discord.Thread) else f"#{name}"
        if reached:
            return live, title, ""
        history = self.bot.get_cog("History")
        cid = getattr(channel, "id", 0)
        known = await asyncio.to_thread(history.log.channel, cid) if history is not None else None  # type: ignore[attr-defined]
        if known is None:
            note = (
                f"Only the range's last {fetched} messages were read: an admin can index this channel "
                "(/index add) to summarise further back."
            )
            return live, title, note
        older, total = await asyncio.to_thread(
            history.log.between,  # type: ignore[union-attr]
            cid,
            start.timestamp() if start is not None else None,
            oldest,
            limit=self.range_max,
        )
        notes = []
        if total > len(older):
            notes.append(f"A long range: read {len(older)} of its {total} older messages, evenly spread.")
        if not known.done:
            notes.append("This channel's backfill is still running: some older messages may be missing.")
        return [(m.author, m.text, m.jump_url) for m in older] + live, title, " ".join(notes)


def _shown(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when is not None else "the start"


def _noted(events: Iterator[AnswerEvent], note: str) -> Iterator[AnswerEvent]:
    """The summary's events, with `note` (a limit that applied) added to its final answer."""
    for event in events:
        if note and isinstance(event, Completed):
            event.answer.note = " ".join(n for n in (event.answer.note, note) if n)
        yield event


async def setup(bot: RagBot) -> None:
    await bot.add_cog(Summarize(bot))
