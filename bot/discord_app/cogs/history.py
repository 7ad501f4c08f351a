"""Indexed channel history: `/index add|remove|status|optout`, the backfill and live following (issue 13).

An indexed channel's messages become chat windows (ingest/chat.py): one document per
channel (or thread, or forum post) and UTC day, one chunk per message, with the scope of
the channel (a public thread: its parent's id; a private thread: its own id) so that
what a member may read (bot/discord_app/permissions.py) applies unchanged. Indexing a
text channel indexes its threads too; a forum channel's posts are threads.

The messages themselves, each channel's checkpoint and the opt-outs live in
`{data_dir}/history.sqlite` (bot/discord_app/backfill.py). Every change (a backfill page,
a new message, an edit, a deletion, an opt-out) marks its window dirty; a flusher
re-ingests dirty windows within a fraction of a second (an empty window's document is
forgotten). At start every indexed channel catches up from its checkpoint.

Attachments in indexed channels become documents of their own, tied to their message
(its jump link cites them), by the watched channels' rules (bot/discord_app/cogs/watcher.py:
uploader roles, declared size, hourly limits; a backfill is an admin's act, so its files
are not counted against the hourly limits), readable by who may read the message's channel.
Deleting the message, the channel or the thread, or the author's opt-out, forgets them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.backfill import HistoryLog, Indexed, has_files, indexable, pages, to_chat
from bot.discord_app.client import say
from bot.discord_app.cogs.documents import admin_only
from bot.discord_app.cogs.watcher import source_key
from bot.discord_app.display import quoted
from bot.discord_app.errors import failure_text, log_failure
from bot.discord_app.permissions import origin
from bot.discord_app.streaming import NO_MENTIONS
from ingest.chat import ChatIngestor, Window, day_of, window_source
from store.types import document_id_for

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)

FLUSH_DELAY_S = 0.2  # changes that arrive this close together are ingested together
FLUSH_BATCH = 20_000  # messages ingested per step of a flush: a backlog of 500k holds this many in memory, not all
RESCAN = 200  # at each start, the newest stored messages of each channel re-read (offline edits, deletions)
INDEXABLE_TYPES = (discord.TextChannel, discord.Thread, discord.ForumChannel)


_MESSAGE_LINK = re.compile(r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(\d+)/\d+/(\d+)/?")


def message_id_of(text: str, guild_id: int) -> int | None:
    """The message id in a message link of guild `guild_id` (or a bare id); None otherwise."""
    raw = text.strip()
    if raw.isdigit() and 15 <= len(raw) <= 21:
        return int(raw)
    link = _MESSAGE_LINK.fullmatch(raw)
    if link is None or int(link.group(1)) != guild_id:
        return None
    return int(link.group(2))


def until_stopped(handler: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Coroutine[Any, Any, None]]:
    """A gateway event whose handler runs after `cog_unload` closed history.sqlite (the bot stopping:
    it was on its way) is dropped with a log line, not raised."""

    @functools.wraps(handler)
    async def run(self: History, *args: Any) -> None:
        try:
            await handler(self, *args)
        except sqlite3.ProgrammingError:
            if not self.closed:
                raise
            log.info(
                "%s arrived as the bot is stopping: not recorded (each start re-reads every indexed channel's "
                "newest %d stored messages)",
                handler.__name__,
                RESCAN,
            )

    return run


def channel_name(channel: object) -> str:
    if isinstance(channel, discord.Thread):
        return channel.name
    return f"#{getattr(channel, 'name', channel)}"


class History(commands.Cog):
    index = app_commands.Group(name="index", description="Index this server's channel history.", guild_only=True)

    def __init__(self, bot: RagBot) -> None:
        self.bot = bot
        self.log = HistoryLog(bot.settings.data_dir / "history.sqlite")
        self.chat = ChatIngestor(bot.service.ingestor)
        self.backfills: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._starter: asyncio.Task[None] | None = None
        self.started = asyncio.Event()  # set once every indexed channel's catch-up has been scheduled
        self.flushed = 0  # windows ingested or forgotten (tests and /index status read it)
        self.fetch_s = 0.0  # time spent waiting for history pages (bench/backfill.py reads it)
        # channel -> the day its running backfill has reached: that day's window may still grow, so it
        # waits until the backfill moves past it (each window is ingested once, not once a page)
        self._frontier: dict[int, str] = {}
        self.flush_s = 0.0  # time ingesting windows (chunking, encoding, writing, the lexical index)
        self.flush_batch = FLUSH_BATCH
        self.flushing = False  # a flush is running (its windows may be unmarked before its lexical index is built)
        self._rescanned: set[int] = set()  # channels whose newest messages were re-read since this start
        # indexed private threads, kept so that their members may read them once archived (discord.py drops
        # archived threads from its cache; bot/discord_app/permissions.py asks for these)
        self.private_threads: dict[int, discord.Thread] = {}
        self.closed = False  # cog_unload closed history.sqlite

    @property
    def idle(self) -> bool:
        """No backfill running, no window waiting or being ingested (tests and benchmarks wait for it)."""
        running = any(not t.done() for t in self.backfills.values())
        return (
            self.started.is_set()
            and not running
            and not self.flushing
            and not self._wake.is_set()
            and not self.log.dirty()
        )

    def _private_threads(self, guild: discord.Guild) -> list[discord.Thread]:
        return [t for t in self.private_threads.values() if t.guild.id == guild.id]

    async def cog_load(self) -> None:
        self.bot.readable.extra_threads = self._private_threads
        self._flusher = asyncio.create_task(self._flush_loop(), name="history-flush")
        self._starter = asyncio.create_task(self._start(), name="history-start")

    async def cog_unload(self) -> None:
        tasks = [t for t in (self._flusher, self._starter, *self.backfills.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.bot.readable.extra_threads == self._private_threads:
            self.bot.readable.extra_threads = None
        self.closed = True
        self.log.close()

    # -- start, backfill ------------------------------------------------------------------------
    async def _start(self) -> None:
        await self.bot.wait_until_ready()
        for cid in self.bot.settings.index_channels:
            channel = self.bot.get_channel(cid)
            if channel is None:
                log.warning("RAGCORD_INDEX_CHANNELS: channel %s is not visible to the bot; not indexed", cid)
                continue
            await self.add(channel)
        for known in await asyncio.to_thread(self.log.channels):
            self._backfill(known.channel)  # catch up from the checkpoint (messages sent while the bot was away)
            if known.scope_parent and self.bot.get_channel(known.channel) is None:  # an archived private thread
                try:
                    thread = await self.bot.fetch_channel(known.channel)
                except discord.HTTPException as exc:
                    log.warning("cannot fetch private thread %s (its members may not read it): %s", known.name, exc)
                else:
                    if isinstance(thread, discord.Thread):
                        self.private_threads[thread.id] = thread
        self.bot.readable.invalidate()
        self._wake.set()  # windows left dirty by a crash
        self.started.set()

    async def add(self, channel: object) -> list[str]:
        """Index `channel` (and its threads, or a forum's posts); returns the names added."""
        if not isinstance(channel, INDEXABLE_TYPES) or channel.guild is None:
            return []
        added = []
        scope, parent = origin(channel)
        if await asyncio.to_thread(
            self.log.add_channel, channel.id, channel.guild.id, channel_name(channel), scope, parent
        ):
            added.append(channel_name(channel))
        if not isinstance(channel, discord.ForumChannel):
            self._backfill(channel.id, channel)
        else:
            await asyncio.to_thread(self.log.mark_done, channel.id)  # a forum has no messages of its own
        if isinstance(channel, discord.Thread):
            if channel.is_private() and channel.id not in self.private_threads:
                self.private_threads[channel.id] = channel
                self.bot.readable.invalidate(channel.guild.id)  # its members may read it, archived or not
            return added
        threads = [t for t in channel.guild.threads if t.parent_id == channel.id]
        try:
            threads += [t async for t in channel.archived_threads(limit=None)]
        except discord.HTTPException as exc:
            log.warning("cannot list the archived threads of %s: %s", channel.id, exc)
        if isinstance(channel, discord.TextChannel):  # a forum's posts are public threads
            if channel.permissions_for(channel.guild.me).manage_threads:
                try:
                    threads += [t async for t in channel.archived_threads(limit=None, private=True)]
                except discord.HTTPException as exc:
                    log.warning("cannot list the private archived threads of %s: %s", channel.id, exc)
            else:
                log.info("private archived threads of %s are not indexed: the bot lacks Manage Threads", channel.id)
        for thread in {t.id: t for t in threads}.values():
            added += await self.add(thread)
        return added

    def _backfill(self, channel_id: int, channel: object = None) -> None:
        running = self.backfills.get(channel_id)
        if running is None or running.done():
            self.backfills[channel_id] = asyncio.create_task(
                self._run_backfill(channel_id, channel), name=f"backfill-{channel_id}"
            )

    async def _run_backfill(self, channel_id: int, channel_object: object = None) -> None:
        known = await asyncio.to_thread(self.log.channel, channel_id)
        channel = self.bot.get_channel(channel_id) or channel_object
        if channel is None and known is not None and not known.done:
            try:  # an archived thread is in no cache
                channel = await self.bot.fetch_channel(channel_id)
            except discord.HTTPException as exc:
                log.warning("cannot fetch channel %s to backfill it: %s", channel_id, exc)
        if known is None or channel is None or isinstance(channel, discord.ForumChannel):
            return
        if not isinstance(channel, discord.abc.Messageable):
            return
        bots = self.bot.settings.index_bot_messages
        if known.checkpoint and channel_id not in self._rescanned:
            self._rescanned.add(channel_id)  # once per start: what changed while the bot was away
            try:
                await self._rescan(channel, known)
            except discord.HTTPException as exc:
                log.warning("re-reading the newest messages of %s failed: %s", channel_id, exc)
        started, count = time.monotonic(), 0
        log.info("backfill of %s (%s) from message %s", known.name, channel_id, known.checkpoint or "the start")
        try:
            waited = time.perf_counter()
            async for page in pages(channel, known.checkpoint):
                self.fetch_s += time.perf_counter() - waited
                for m in page:  # before the checkpoint moves past them: a crash re-reads the page
                    if has_files(m):
                        await self._ingest_files(m, backfill=True)
                kept = [to_chat(m) for m in page if indexable(m, bots=bots)]
                newest = max(m.id for m in page)
                self._frontier[channel_id] = day_of(max(m.created_at.timestamp() for m in page))
                count += await asyncio.to_thread(self.log.store, channel_id, known.guild, kept, checkpoint=newest)
                self._wake.set()
                log.info("backfill of %s: %d messages so far", known.name, count)
                waited = time.perf_counter()
        except discord.Forbidden:
            log.warning("backfill of %s stopped: the bot lacks Read Message History there", channel_id)
            return
        except discord.HTTPException:
            log.exception("backfill of %s stopped; it resumes from its checkpoint at the next start", channel_id)
            return
        finally:
            self._frontier.pop(channel_id, None)
            self._wake.set()
        await asyncio.to_thread(self.log.mark_done, channel_id)
        log.info("backfill of %s done: %d messages in %.1f s", known.name, count, time.monotonic() - started)

    async def _rescan(self, channel: discord.abc.Messageable, known: Indexed) -> None:
        """Re-read the channel's newest RESCAN stored messages: edits and deletions made to them while
        the bot was offline (Discord replays no events) are applied. Older ones are not re-read."""
        stored = await asyncio.to_thread(self.log.newest, known.channel, RESCAN)
        with_files = await asyncio.to_thread(self.log.file_messages, known.channel, RESCAN)
        if not stored and not with_files:
            return
        bots = self.bot.settings.index_bot_messages
        seen: dict[int, str] = {}
        present: set[int] = set()
        low = min([mid for mid, _ in stored] + with_files)
        after, before = discord.Object(id=low - 1), discord.Object(id=known.checkpoint + 1)
        async for m in channel.history(limit=None, after=after, before=before, oldest_first=True):
            present.add(m.id)
            if indexable(m, bots=bots):
                seen[m.id] = to_chat(m).text
        gone = [mid for mid, _ in stored if mid not in seen] + [mid for mid in with_files if mid not in present]
        edited = [(mid, text, seen[mid]) for mid, text in stored if mid in seen and seen[mid] != text]
        for mid, old, new in edited:
            await asyncio.to_thread(self.log.edit, mid, new, expected=old)
        files = await self._deleted(known.guild, gone) if gone else 0
        if gone or edited:
            self._wake.set()
            log.info(
                "%s changed while the bot was away: %d edited, %d deleted (%d files)",
                known.name,
                len(edited),
                len(gone),
                files,
            )

    # -- ingesting windows ------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_DELAY_S)
            self._wake.clear()
            self.flushing = True
            try:
                await self.flush()
            except Exception:
                log.exception("indexing channel history failed; retried at the next change")
                await asyncio.sleep(1.0)
            finally:
                self.flushing = False

    async def flush(self) -> int:
        """Re-ingest every dirty window (forget the empty ones); returns how many."""
        dirty = await asyncio.to_thread(self.log.dirty)
        by_guild: dict[int, list[tuple[Indexed, str, int]]] = {}
        lost: list[tuple[int, str, int]] = []
        for cid, day, gen in dirty:
            if day >= self._frontier.get(cid, "~"):
                continue  # the backfill is still on this day
            known = await asyncio.to_thread(self.log.channel, cid)
            if known is None:
                lost.append((cid, day, gen))
            else:
                by_guild.setdefault(known.guild, []).append((known, day, gen))
        if lost:
            await asyncio.to_thread(self.log.clean, lost)
        done, t = 0, time.perf_counter()
        for gid, items in by_guild.items():
            namespace = f"g{gid}"
            async with self.bot.ingest_lock(namespace):
                done += await asyncio.to_thread(self._ingest, namespace, items)
                await asyncio.to_thread(self.bot.service.prepare_index, namespace)
        self.flushed += done
        self.flush_s += time.perf_counter() - t
        return done

    def _ingest(self, namespace: str, items: list[tuple[Indexed, str, int]]) -> int:
        """Ingest these windows, `flush_batch` messages at a time (each step's windows unmarked once
        ingested): a backfill's backlog of any size is read from history.sqlite a step at a time."""
        windows: list[Window] = []
        step: list[tuple[int, str, int]] = []
        size = 0

        def ingest() -> None:
            for result in self.chat.ingest_windows(namespace, windows):
                if result.status not in ("added", "updated", "unchanged"):
                    log.warning("chat window %s not indexed: %s %s", result.source, result.status, result.reason)
            self.log.clean(step)

        for known, day, gen in items:
            messages = self.log.window(known.channel, day)
            if messages:
                windows.append(Window(known.guild, known.channel, known.name, day, messages, known.extra))
            else:
                self.chat.forget(namespace, document_id_for(window_source(known.guild, known.channel, day)))
            step.append((known.channel, day, gen))
            size += len(messages)
            if size >= self.flush_batch:
                ingest()
                windows, step, size = [], [], 0
        ingest()
        return len(items)

    async def forget_channel(self, channel_id: int) -> int:
        """Stop indexing a channel (and its threads) and forget their windows; returns the documents forgotten."""
        known = await asyncio.to_thread(self.log.channel, channel_id)
        if known is None:
            return 0
        targets = [known] + [
            c
            for c in await asyncio.to_thread(self.log.channels, known.guild)
            if c.scope_parent == str(channel_id) or (c.scope == str(channel_id) and c.channel != channel_id)
        ]
        namespace = f"g{known.guild}"
        forgotten = 0
        for target in targets:
            self.private_threads.pop(target.channel, None)
            task = self.backfills.pop(target.channel, None)
            if task is not None:
                task.cancel()
            days = await asyncio.to_thread(self.log.remove_channel, target.channel)
            files = await asyncio.to_thread(self.log.take_files, channel=target.channel)
            forgotten += await self._forget_files(target.guild, files)
            async with self.bot.ingest_lock(namespace):
                for day in days:
                    doc_id = document_id_for(window_source(target.guild, target.channel, day))
                    if await asyncio.to_thread(self.chat.forget, namespace, doc_id) is not None:
                        forgotten += 1
                await asyncio.to_thread(self.bot.service.prepare_index, namespace)
        log.info("forgot the indexed history of %s: %d documents", known.name, forgotten)
        return forgotten

    # -- attachments --------------------------------------------------------------------------------
    async def _ingest_files(self, message: discord.Message, *, backfill: bool) -> list[str]:
        """Index the message's attachments as documents tied to it; the watcher's reply lines."""
        watcher = self.bot.get_cog("Watcher")
        if message.guild is None or watcher is None:
            return []
        gid, cid = message.guild.id, message.channel.id
        if await asyncio.to_thread(self.log.opted_out, gid, message.author.id):
            return []
        sources = [source_key(gid, cid, a.filename) for a in message.attachments]
        await asyncio.to_thread(self.log.add_files, message.id, cid, message.author.id, sources)
        watched = watcher.watching(cid)  # type: ignore[attr-defined]
        if watched and not backfill:
            return []  # the watcher ingests it, and replies
        try:
            # a watched channel's files keep the watcher's scope; else the message's channel's
            lines: list[str] = await watcher.ingest_message(  # type: ignore[attr-defined]
                message, limits=not backfill, visibility=None if watched else "channel"
            )
        except Exception as exc:
            ref = log_failure(log, f"indexing the attachments of message {message.id} failed", exc)
            return [f"⚠️ {failure_text(ref, 'Indexing these files failed')}"]
        log.info("attachments of message %s in %s: %s", message.id, cid, "; ".join(lines))
        return lines

    async def _forget_files(self, guild: int, files: list[tuple[int, str]]) -> int:
        """Forget the documents of these (message, source) attachments; returns how many."""
        if not files:
            return 0
        namespace, store, forgotten = f"g{guild}", self.bot.service.store, 0
        async with self.bot.ingest_lock(namespace):
            for mid, source in files:
                doc_id = document_id_for(source)
                info = await asyncio.to_thread(store.document, namespace, doc_id)
                if info is None or info.extra.get("message_id") != str(mid):
                    continue  # gone already, or replaced by a later post of a file of that name
                if await asyncio.to_thread(self.chat.forget, namespace, doc_id) is not None:
                    log.info("forgot %s: its message %s is gone", info.title, mid)
                    forgotten += 1
            if forgotten:
                await asyncio.to_thread(self.bot.service.prepare_index, namespace)
        return forgotten

    # -- live ---------------------------------------------------------------------------------------
    async def _indexed(self, channel: object) -> Indexed | None:
        cid = getattr(channel, "id", None)
        if cid is None:
            return None
        known = await asyncio.to_thread(self.log.channel, cid)
        thread = isinstance(channel, discord.Thread) and channel.parent_id is not None
        if known is None and thread and await asyncio.to_thread(self.log.channel, channel.parent_id) is not None:  # type: ignore[attr-defined]
            await self.add(channel)  # a new thread (or forum post) under an indexed channel
            known = await asyncio.to_thread(self.log.channel, cid)
        return known

    @commands.Cog.listener()
    @until_stopped
    async def on_message(self, message: discord.Message) -> None:
        text = indexable(message, bots=self.bot.settings.index_bot_messages)
        files = has_files(message)
        if message.guild is None or not (text or files):
            return
        known = await self._indexed(message.channel)
        if known is None:
            return
        if text:
            stored = await asyncio.to_thread(self.log.store, known.channel, known.guild, [to_chat(message)])
            if stored:
                self._wake.set()
        if files:
            refused = [line for line in await self._ingest_files(message, backfill=False) if line.startswith("⚠️")]
            if refused:  # what was indexed is not announced in a chat channel; what was not is
                await message.reply("\n".join(refused), allowed_mentions=NO_MENTIONS)

    @commands.Cog.listener()
    @until_stopped
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        content = payload.data.get("content")
        if content is None:
            return  # an embed-only update (link previews): the text did not change
        message = payload.cached_message
        text = str(content)
        if message is not None and message.guild is not None:
            message.content = text
            text = message.clean_content
        if await asyncio.to_thread(self.log.edit, payload.message_id, text, channel=payload.channel_id):
            self._wake.set()

    @commands.Cog.listener()
    @until_stopped
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted(payload.guild_id, [payload.message_id])

    @commands.Cog.listener()
    @until_stopped
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._deleted(payload.guild_id, list(payload.message_ids))

    async def _deleted(self, guild: int | None, ids: list[int]) -> int:
        """Messages deleted (or forgotten): tombstoned, their windows re-ingested without them, their
        files forgotten; returns how many files."""
        if guild is None:
            return 0
        if await asyncio.to_thread(self.log.delete, ids) > 0:
            self._wake.set()
        return await self._forget_files(guild, await asyncio.to_thread(self.log.take_files, messages=ids))

    async def forget_from(
        self, interaction: discord.Interaction[RagBot], *, message: str | None, channel: object | None
    ) -> None:
        """`/forget message:` (a link or id) and `/forget channel:` (a channel or thread), for an admin."""
        assert interaction.guild is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        gid, lines = interaction.guild.id, []
        if message is not None:
            mid = message_id_of(message, gid)
            if mid is None:
                lines.append(
                    f"“{quoted(message[:100])}” is not a link to a message of this server, nor a message id: "
                    "right-click the message > Copy Message Link, and paste that in `message:`."
                )
            elif await asyncio.to_thread(self.log.message_guild, mid) != gid:
                lines.append(f"Message {mid} is not indexed here: nothing to forget.")
            else:
                files = await self._deleted(gid, [mid])
                with_files = f" and {files} file(s) attached to it" if files else ""
                lines.append(
                    f"Forgot message {mid}{with_files}: it leaves answers within seconds, and stays out of the "
                    "index (an edit or a new backfill does not bring it back)."
                )
        cid = getattr(channel, "id", None)
        if cid is not None:
            known = await asyncio.to_thread(self.log.channel, cid)
            if known is None or known.guild != gid:
                lines.append(f"<#{cid}> is not indexed: nothing to forget.")
            else:
                forgotten = await self.forget_channel(cid)
                lines.append(f"Stopped indexing <#{cid}> and forgot its {forgotten} document(s) (days, files).")
        await say(interaction, "\n".join(lines), ephemeral=True)

    @commands.Cog.listener()
    @until_stopped
    async def on_thread_update(self, before: discord.Thread, after: discord.Thread) -> None:
        """A renamed thread retitles its windows; an unarchived one catches up from its checkpoint."""
        known = await asyncio.to_thread(self.log.channel, after.id)
        if known is None or (before.name == after.name and before.archived == after.archived):
            return
        await self.add(after)
        if before.name != after.name and await asyncio.to_thread(self.log.touch, after.id) > 0:
            self._wake.set()

    @commands.Cog.listener()
    @until_stopped
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self.forget_channel(payload.thread_id)

    @commands.Cog.listener()
    @until_stopped
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await self.forget_channel(channel.id)

    # -- commands -------------------------------------------------------------------------------------
    @index.command(name="add", description="Index a channel's history (its threads too; a forum's posts).")
    @app_commands.describe(channel="The channel, thread or forum to index (default: this one).")
    @admin_only()
    async def index_add(
        self,
        interaction: discord.Interaction[RagBot],
        channel: discord.TextChannel | discord.Thread | discord.ForumChannel | None = None,
    ) -> None:
        target = channel or interaction.channel
        assert interaction.guild is not None
        resolved = interaction.guild.get_channel_or_thread(target.id) if target is not None else None
        if not isinstance(resolved, INDEXABLE_TYPES):
            await say(interaction, "Only text channels, threads and forums can be indexed.", ephemeral=True)
            return
        me = interaction.guild.me
        perms = resolved.permissions_for(me)
        if not (perms.view_channel and perms.read_message_history):
            await say(
                interaction,
                f"I can't read the history of {resolved.mention}: give me **View Channel** and "
                "**Read Message History** there, then run /index add again.",
                ephemeral=True,
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        added = await self.add(resolved)
        names = ", ".join(added) or "nothing new"
        private = ""
        if isinstance(resolved, discord.TextChannel) and not perms.manage_threads:
            private = (
                "\n-# Its archived private threads are not indexed: give me **Manage Threads** there "
                "and run /index add again to include them."
            )
        await say(
            interaction,
            f"Indexing {resolved.mention}: added {names}. The backfill runs in the background; "
            f"see /index status. Members who may not read the channel never get its messages in answers.{private}",
            ephemeral=True,
        )

    @index.command(name="remove", description="Stop indexing a channel and forget its indexed messages.")
    @app_commands.describe(channel="The channel, thread or forum (default: this one).")
    @admin_only()
    async def index_remove(
        self,
        interaction: discord.Interaction[RagBot],
        channel: discord.TextChannel | discord.Thread | discord.ForumChannel | None = None,
    ) -> None:
        target = channel or interaction.channel
        cid = getattr(target, "id", 0)
        await interaction.response.defer(ephemeral=True, thinking=True)
        if await asyncio.to_thread(self.log.channel, cid) is None:
            await say(interaction, f"<#{cid}> is not indexed: nothing to remove.", ephemeral=True)
            return
        forgotten = await self.forget_channel(cid)
        await say(
            interaction, f"Stopped indexing <#{cid}> and forgot {forgotten} day(s) of its messages.", ephemeral=True
        )

    @index.command(name="status", description="Which channels are indexed, and how far their backfill is.")
    async def index_status(self, interaction: discord.Interaction[RagBot]) -> None:
        assert interaction.guild is not None
        rows = await asyncio.to_thread(self.log.channels, interaction.guild.id)
        scopes = await self.bot.readable.scopes(interaction.user, interaction.guild)
        rows = [r for r in rows if r.scope in scopes or str(r.channel) in scopes]
        if not rows:
            await say(
                interaction, "No channel you can read is indexed. Admins add one with /index add.", ephemeral=True
            )
            return
        messages, channels, files = await asyncio.to_thread(self.log.totals, interaction.guild.id)
        lines = [
            "**Indexed channels**",
            f"-# This server: {messages} indexed messages in {channels} channel{'s' * (channels != 1)} and "
            f"threads, and {files} attached file{'s' * (files != 1)} (those count among /status's documents).",
        ]
        for r in rows[:40]:
            count = await asyncio.to_thread(self.log.count, r.channel)
            state = "following live" if r.done else "backfilling"
            lines.append(f"<#{r.channel}>: {count} messages, {state}")
        if len(rows) > 40:
            lines.append(f"… and {len(rows) - 40} more")
        pending = len(await asyncio.to_thread(self.log.dirty))
        if pending:
            lines.append(f"-# {pending} day(s) waiting to be indexed")
        await say(interaction, "\n".join(lines), ephemeral=True)

    @index.command(name="optout", description="Keep your own messages out of the index (or let them back in).")
    @app_commands.describe(out="True: exclude your messages and forget those indexed; False: index them again.")
    async def index_optout(self, interaction: discord.Interaction[RagBot], out: bool = True) -> None:
        assert interaction.guild is not None
        gid, uid = interaction.guild.id, interaction.user.id
        if out:
            dropped = await asyncio.to_thread(self.log.opt_out, gid, uid)
            self._wake.set()
            dropped += await self._forget_files(gid, await asyncio.to_thread(self.log.take_files, author=(gid, uid)))
            text = (
                f"Your messages in this server are no longer indexed; {dropped} indexed message(s) of yours are "
                "being removed from answers now. Run `/index optout out:False` to let them back in."
            )
        else:
            await asyncio.to_thread(self.log.opt_in, gid, uid)
            text = "Your new messages will be indexed again (earlier ones return when an admin re-adds the channel)."
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: RagBot) -> None:
    await bot.add_cog(History(bot))
