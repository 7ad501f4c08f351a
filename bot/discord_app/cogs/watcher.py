"""Watched channels: attachments posted there are ingested; deleting the post forgets them.

A document's source key is `discord:{guild}:{channel}:{filename}`, so posting a file
with the same name again replaces the earlier version. The carrying message's id is
kept in the document's extra metadata, to find it again on deletion.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.discord_app.display import quoted
from bot.discord_app.errors import failure_text, log_failure
from bot.discord_app.streaming import NO_MENTIONS, sanitize

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)


def source_key(guild_id: int, channel_id: int, filename: str) -> str:
    return f"discord:{guild_id}:{channel_id}:{filename}"


class Watcher(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    def watching(self, channel_id: int | None) -> bool:
        return channel_id is not None and channel_id in self.bot.settings.watch_channels

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or not message.attachments:
            return
        if not self.watching(message.channel.id):
            return
        try:
            lines = await self.ingest_message(message)
        except Exception as exc:
            ref = log_failure(log, f"auto-ingest of message {message.id} failed", exc)
            lines = [f"⚠️ {failure_text(ref, 'Indexing these files failed')}"]
        if lines:
            await message.reply("\n".join(lines), allowed_mentions=NO_MENTIONS)

    async def ingest_message(self, message: discord.Message) -> list[str]:
        assert message.guild is not None
        bot = self.bot
        service = bot.service
        namespace = bot.namespace_for(message.guild)
        extra = {"jump_url": message.jump_url, "message_id": str(message.id)}
        lines = []
        async with bot.ingest_lock:
            for attachment in message.attachments:
                name = quoted(attachment.filename)
                if attachment.size > service.settings.max_file_bytes:
                    lines.append(f"⚠️ **{name}** not indexed: over the {service.settings.max_file_mb:g} MB limit")
                    continue
                data = await attachment.read()
                result = await asyncio.to_thread(
                    service.ingest_bytes,
                    namespace,
                    data,
                    attachment.filename,
                    source=source_key(message.guild.id, message.channel.id, attachment.filename),
                    extra=extra,
                )
                log.info("auto-ingested %s: %s %s", attachment.filename, result.status, result.reason)
                if result.status in ("added", "updated", "unchanged"):
                    lines.append(f"📥 **{name}** {result.status} ({result.chunks} chunks)")
                else:
                    lines.append(f"⚠️ **{name}** not indexed: {sanitize(result.reason)}")
            await asyncio.to_thread(service.prepare_index, namespace)
        return lines

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is None or not self.watching(payload.channel_id):
            return
        service = self.bot.service
        namespace = f"g{payload.guild_id}"
        wanted = str(payload.message_id)
        try:
            async with self.bot.ingest_lock:
                docs = await asyncio.to_thread(service.documents, namespace)
                gone = [d for d in docs if d.extra.get("message_id") == wanted]
                for doc in gone:
                    await asyncio.to_thread(service.forget, namespace, doc.doc_id)
                    log.info("forgot %s: its message %s was deleted", doc.title, wanted)
                if gone:
                    await asyncio.to_thread(service.prepare_index, namespace)
        except Exception:
            log.exception("forgetting the documents of deleted message %s failed", wanted)


async def setup(bot: RagBot) -> None:
    await bot.add_cog(Watcher(bot))
