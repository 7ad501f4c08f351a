"""/summarize: a document, this thread, or the recent messages of this channel."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.client import say
from bot.discord_app.cogs.documents import document_choices
from bot.discord_app.permissions import origin
from bot.discord_app.streaming import InteractionTarget, StreamingReply, sanitize
from bot.service import DocumentNotFound

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)

SCOPES = [
    app_commands.Choice(name="this thread", value="thread"),
    app_commands.Choice(name="recent messages in this channel", value="channel"),
]


class Summarize(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    @app_commands.command(name="summarize", description="Summarise a document, this thread, or recent messages here.")
    @app_commands.describe(
        document="A document to summarise: start typing to search this server's documents.",
        scope="Without a document: summarise this thread, or the recent messages of this channel.",
        messages="How many recent messages to read for a channel summary (default 50).",
    )
    @app_commands.autocomplete(document=document_choices)
    @app_commands.choices(scope=SCOPES)
    async def summarize(
        self,
        interaction: discord.Interaction[RagBot],
        document: str | None = None,
        scope: app_commands.Choice[str] | None = None,
        messages: app_commands.Range[int, 2, 200] = 50,
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
            readable = await bot.readable.scopes(interaction.user, interaction.guild)
            if interaction.guild is not None and origin(channel)[0] not in readable:
                # the bot reads the history with its own permissions: not for someone who may not
                await say(interaction, "You can't read this channel's history, so I won't summarise it.")
                return
            try:
                items, title = await self._read(channel, limit)
            except discord.Forbidden:
                await say(interaction, "I can't read this channel's history (I need Read Message History).")
                return
            if not items:
                await say(interaction, "There are no messages here to summarise.")
                return
            produce = lambda: bot.service.summarize_texts_stream(items, title)  # noqa: E731
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


async def setup(bot: RagBot) -> None:
    await bot.add_cog(Summarize(bot))
