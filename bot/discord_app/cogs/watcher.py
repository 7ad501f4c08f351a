"""Watched channels: attachments posted there are ingested; deleting the post forgets them.

A document's source key is `discord:{guild}:{channel}:{filename}`, so posting a file
with the same name again replaces the earlier version. The carrying message's id is
kept in the document's extra metadata, to find it again on deletion.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.discord_app.cogs.documents import declared_size_refusal
from bot.discord_app.display import quoted
from bot.discord_app.errors import failure_text, log_failure
from bot.discord_app.permissions import document_scope
from bot.discord_app.streaming import NO_MENTIONS, sanitize
from ingest.fetch import FetchOptions

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)


def source_key(guild_id: int, channel_id: int, filename: str) -> str:
    return f"discord:{guild_id}:{channel_id}:{filename}"


_POSTED_URL = re.compile(r"https?://[^\s<>|]+")  # one forward scan per URL
_URL_TAIL = re.compile(r"[.,;:!?)\]'\"*_~`]+$")  # punctuation after a URL belongs to the sentence
MAX_URLS = 3  # web pages fetched from one message


def posted_urls(content: str) -> list[str]:
    """The http(s) URLs in a message (`<…>` and bare ones), each once, at most `MAX_URLS`."""
    found: list[str] = []
    for match in _POSTED_URL.finditer(content or ""):
        tail = _URL_TAIL.search(match.group(0))
        url = match.group(0)[: tail.start()] if tail else match.group(0)
        if url not in found and len(url) > len("https://"):
            found.append(url)
        if len(found) == MAX_URLS:
            break
    return found


class Watcher(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    def watching(self, channel_id: int | None) -> bool:
        return channel_id is not None and channel_id in self.bot.settings.watch_channels

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.guild is None or not (message.attachments or posted_urls(message.content)):
            return
        if not self.watching(message.channel.id):
            return
        try:
            lines = await self.ingest_message(message, links=True)
        except Exception as exc:
            ref = log_failure(log, f"auto-ingest of message {message.id} failed", exc)
            lines = [f"⚠️ {failure_text(ref, 'Indexing these files failed')}"]
        if lines:
            await message.reply("\n".join(lines), allowed_mentions=NO_MENTIONS)

    def uploader_refusal(self, member: discord.abc.User) -> str:
        """Why this member's files are not indexed here ('' when they are): the uploader roles."""
        wanted = self.bot.settings.uploader_role_ids
        if not wanted or any(r.id in wanted for r in getattr(member, "roles", [])):
            return ""
        roles = " or ".join(f"<@&{r}>" for r in wanted)
        return f"indexing files posted here needs the {roles} role (or ask an admin to /ingest them)"

    def upload_refusal(self, user_id: int, guild_id: int) -> str:
        """Why one more file is not indexed now ('' when it is, and then it is counted): the hourly limits."""
        bot = self.bot
        wait = bot.uploads_per_guild.check(guild_id) if bot.uploads_per_guild.per_minute else 0.0
        if wait:
            n = bot.uploads_per_guild.per_minute
            minutes = math.ceil(wait / 60)
            return f"this server can index {n} files an hour from watched channels; try again in {minutes} min"
        wait = bot.uploads_per_user.check(user_id)
        if wait:
            n = bot.uploads_per_user.per_minute
            bot.uploads_per_guild.undo(guild_id)  # not counted: refused
            return f"you can index {n} files an hour here; try again in {math.ceil(wait / 60)} min"
        return ""

    async def ingest_message(
        self, message: discord.Message, *, limits: bool = True, visibility: str | None = None, links: bool = False
    ) -> list[str]:
        """Ingest the message's attachments; one reply line per file. `limits=False`: the hourly limits
        do not apply (an admin's backfill of an indexed channel); `visibility` as /ingest's."""
        assert message.guild is not None
        bot = self.bot
        service = bot.service
        namespace = bot.namespace_for(message.guild)
        # readable where the message is: guild-wide only if nobody is kept out of its channel
        scope = document_scope(message.channel, visibility)
        extra = {"jump_url": message.jump_url, "message_id": str(message.id), **scope}
        admin = bot.is_admin(message.author)
        refusal = "" if admin else self.uploader_refusal(message.author)
        urls = posted_urls(message.content) if links else []  # `links`: web pages posted here are fetched too
        if refusal:
            log.info("not indexing the files of %s in %s: no uploader role", message.author.id, namespace)
            # links are everyday chat: a member without the role gets no reply for them, files do
            return [f"⚠️ **{quoted(a.filename)}** not indexed: {refusal}" for a in message.attachments]
        lines = []
        async with bot.ingest_lock(namespace):
            for attachment in message.attachments:
                name = quoted(attachment.filename)
                refusal = declared_size_refusal(attachment, service.settings)  # before downloading
                if not refusal and not admin and limits:
                    refusal = self.upload_refusal(message.author.id, message.guild.id)
                if refusal:
                    lines.append(f"⚠️ **{name}** not indexed: {refusal}")
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
            for url in urls:
                lines.append(await self._ingest_url(message, url, admin=admin, limits=limits, scope=scope))
            await asyncio.to_thread(service.prepare_index, namespace)
        return lines

    async def _ingest_url(
        self, message: discord.Message, url: str, *, admin: bool, limits: bool, scope: dict[str, str]
    ) -> str:
        """A web page posted in a watched channel: fetched and ingested; the citation links to the page."""
        assert message.guild is not None
        service = self.bot.service
        shown = quoted(url)
        refusal = "" if admin or not limits else self.upload_refusal(message.author.id, message.guild.id)
        if refusal:
            return f"⚠️ **{shown}** not indexed: {refusal}"
        result = await asyncio.to_thread(
            service.ingestor.ingest_url,
            self.bot.namespace_for(message.guild),
            url,
            fetch=FetchOptions.from_settings(service.settings),
            source=source_key(message.guild.id, message.channel.id, url),
            extra={"message_id": str(message.id), **scope},  # deleting the post forgets the page
            isolated=True,
        )
        log.info("auto-ingested %s: %s %s", url, result.status, result.reason)
        if result.status in ("added", "updated", "unchanged"):
            return f"📥 **{quoted(result.title)}** ({shown}) {result.status} ({result.chunks} chunks)"
        return f"⚠️ **{shown}** not indexed: {sanitize(result.reason)}"

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is None or not self.watching(payload.channel_id):
            return
        service = self.bot.service
        namespace = f"g{payload.guild_id}"
        wanted = str(payload.message_id)
        try:
            async with self.bot.ingest_lock(namespace):
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
