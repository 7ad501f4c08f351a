"""Indexed channels' messages, checkpoints and opt-outs, kept in `{data_dir}/history.sqlite` (issue 13).

The backfill reads a channel's history oldest first, a page at a time (discord.py's
`history(after=...)`; its rate-limit buckets and 429 handling pace it). Each page's
messages and the channel's checkpoint (the newest message id stored) are written in one
transaction, with the days they touch marked dirty; a dirty day's window is then
re-ingested and unmarked. A crash between the two leaves the day dirty, and the restart
ingests it: nothing is missing, and since messages are keyed by id and windows by
channel and day, nothing is duplicated. Deleted ids are kept as tombstones, so a page
fetched just before a deletion cannot bring the message back.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import discord

from ingest.chat import ChatMessage, day_of

log = logging.getLogger(__name__)

PAGE = 100  # Discord's largest history page

# a window changed: mark it dirty, or bump its generation if it is already (a flush reading it meanwhile keeps it)
_MARK = "INSERT INTO dirty (channel, day) VALUES (?,?) ON CONFLICT DO UPDATE SET gen=gen+1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS channels (
    channel INTEGER PRIMARY KEY, guild INTEGER NOT NULL, name TEXT NOT NULL, scope TEXT NOT NULL,
    scope_parent TEXT NOT NULL DEFAULT '', checkpoint INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
    fetched INTEGER NOT NULL DEFAULT 0, started REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, channel INTEGER NOT NULL, day TEXT NOT NULL, author_id INTEGER NOT NULL,
    author TEXT NOT NULL, ts REAL NOT NULL, text TEXT NOT NULL, jump TEXT NOT NULL, reply_to INTEGER);
CREATE INDEX IF NOT EXISTS messages_window ON messages (channel, day);
CREATE TABLE IF NOT EXISTS dirty (
    channel INTEGER NOT NULL, day TEXT NOT NULL, gen INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (channel, day));
CREATE TABLE IF NOT EXISTS tombstones (id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS optout (guild INTEGER NOT NULL, user INTEGER NOT NULL, PRIMARY KEY (guild, user));
CREATE TABLE IF NOT EXISTS files (
    message INTEGER NOT NULL, channel INTEGER NOT NULL, author INTEGER NOT NULL, source TEXT NOT NULL,
    PRIMARY KEY (message, source));
CREATE INDEX IF NOT EXISTS files_channel ON files (channel);
CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, channel INTEGER NOT NULL, text TEXT NOT NULL);
"""


@dataclass(slots=True)
class Indexed:
    channel: int
    guild: int
    name: str
    scope: str
    scope_parent: str
    checkpoint: int
    done: bool
    fetched: int

    @property
    def extra(self) -> dict[str, str]:
        extra = {"scope": self.scope, "channel_id": str(self.channel)}
        if self.scope_parent:
            extra["scope_parent"] = self.scope_parent
        return extra


class HistoryLog:
    """Blocking; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no commit; power loss at most the last
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction under the lock (the connection autocommits otherwise: `with db:` begins none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- channels -------------------------------------------------------------------------
    def add_channel(self, channel: int, guild: int, name: str, scope: str, scope_parent: str = "") -> bool:
        """Start indexing `channel` (False: it already was; its name and scope are refreshed)."""
        with self._lock:
            known = self._db.execute("SELECT 1 FROM channels WHERE channel=?", (channel,)).fetchone()
            if known:
                self._db.execute(
                    "UPDATE channels SET name=?, scope=?, scope_parent=? WHERE channel=?",
                    (name, scope, scope_parent, channel),
                )
                return False
            self._db.execute(
                "INSERT INTO channels (channel, guild, name, scope, scope_parent, started) VALUES (?,?,?,?,?,?)",
                (channel, guild, name, scope, scope_parent, time.time()),
            )
            return True

    def remove_channel(self, channel: int) -> list[str]:
        """Stop indexing `channel` and drop its messages; returns the days it had (their documents to forget)."""
        with self._transaction():
            days = [r[0] for r in self._db.execute("SELECT DISTINCT day FROM messages WHERE channel=?", (channel,))]
            self._db.execute("DELETE FROM messages WHERE channel=?", (channel,))
            self._db.execute("DELETE FROM dirty WHERE channel=?", (channel,))
            self._db.execute("DELETE FROM pending WHERE channel=?", (channel,))
            self._db.execute("DELETE FROM channels WHERE channel=?", (channel,))
            return days

    def channel(self, channel: int) -> Indexed | None:
        with self._lock:
            row = self._db.execute(
                "SELECT channel, guild, name, scope, scope_parent, checkpoint, done, fetched FROM channels "
                "WHERE channel=?",
                (channel,),
            ).fetchone()
        return _indexed(row) if row else None

    def channels(self, guild: int | None = None) -> list[Indexed]:
        with self._lock:
            rows = self._db.execute(
                "SELECT channel, guild, name, scope, scope_parent, checkpoint, done, fetched FROM channels "
                "WHERE ? IS NULL OR guild=? ORDER BY channel",
                (guild, guild),
            ).fetchall()
        return [_indexed(r) for r in rows]

    def mark_done(self, channel: int) -> None:
        with self._transaction():
            self._db.execute("UPDATE channels SET done=1 WHERE channel=?", (channel,))
            self._db.execute("DELETE FROM pending WHERE channel=?", (channel,))  # edits of what was not indexable

    def count(self, channel: int) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages WHERE channel=?", (channel,)).fetchone()[0])

    # -- messages -------------------------------------------------------------------------
    def store(self, channel: int, guild: int, messages: Iterable[ChatMessage], *, checkpoint: int = 0) -> int:
        """Insert or replace messages (not opted-out authors', not tombstoned ids), mark their days dirty
        and, for a backfill page, move the checkpoint: one transaction. Returns how many were stored."""
        stored = 0
        with self._transaction():
            out = {r[0] for r in self._db.execute("SELECT user FROM optout WHERE guild=?", (guild,))}
            for m in messages:
                if m.author_id in out or self._db.execute("SELECT 1 FROM tombstones WHERE id=?", (m.id,)).fetchone():
                    continue
                edited = self._db.execute("DELETE FROM pending WHERE id=? RETURNING text", (m.id,)).fetchall()
                if edited:  # edited while its page was on its way: the edit is newer
                    m = replace(m, text=str(edited[0][0]))
                self._db.execute(
                    "INSERT OR REPLACE INTO messages VALUES (?,?,?,?,?,?,?,?,?)",
                    (m.id, channel, m.day, m.author_id, m.author, m.ts, m.text, m.jump_url, m.reply_to),
                )
                self._db.execute(_MARK, (channel, m.day))
                stored += 1
            if checkpoint:
                self._db.execute(
                    "UPDATE channels SET checkpoint=MAX(checkpoint, ?), fetched=fetched+? WHERE channel=?",
                    (checkpoint, stored, channel),
                )
        return stored

    def edit(self, message_id: int, text: str, *, expected: str | None = None, channel: int | None = None) -> bool:
        """Set a stored message's text; with `expected`, only if its text still is that (a page read
        earlier must not undo a live edit that came since). A live edit (`channel`) of a message not
        stored yet, in a channel still backfilling, is kept until its page is stored: that page may
        have been read before the edit."""
        with self._transaction():
            row = self._db.execute(
                "SELECT channel, day FROM messages WHERE id=? AND (? IS NULL OR text=?)",
                (message_id, expected, expected),
            ).fetchone()
            if row is None:
                if (
                    channel is not None
                    and self._db.execute("SELECT 1 FROM channels WHERE channel=? AND done=0", (channel,)).fetchone()
                ):
                    self._db.execute("INSERT OR REPLACE INTO pending VALUES (?,?,?)", (message_id, channel, text))
                return False
            self._db.execute("UPDATE messages SET text=? WHERE id=?", (text, message_id))
            self._db.execute(_MARK, row)
            return True

    def delete(self, message_ids: Iterable[int]) -> int:
        """Tombstone and remove messages; their days become dirty. Returns how many were stored."""
        gone = 0
        with self._transaction():
            for mid in message_ids:
                self._db.execute("INSERT OR IGNORE INTO tombstones VALUES (?)", (mid,))
                row = self._db.execute("SELECT channel, day FROM messages WHERE id=?", (mid,)).fetchone()
                if row is not None:
                    self._db.execute("DELETE FROM messages WHERE id=?", (mid,))
                    self._db.execute(_MARK, row)
                    gone += 1
        return gone

    def opt_out(self, guild: int, user: int) -> int:
        """Exclude a member's messages in `guild` from now on and drop those stored; returns how many."""
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO optout VALUES (?,?)", (guild, user))
            rows = self._db.execute(
                "SELECT m.id, m.channel, m.day FROM messages m JOIN channels c ON c.channel=m.channel "
                "WHERE c.guild=? AND m.author_id=?",
                (guild, user),
            ).fetchall()
            for mid, channel, day in rows:
                self._db.execute("DELETE FROM messages WHERE id=?", (mid,))
                self._db.execute(_MARK, (channel, day))
        return len(rows)

    def opt_in(self, guild: int, user: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM optout WHERE guild=? AND user=?", (guild, user))

    def opted_out(self, guild: int, user: int) -> bool:
        with self._lock:
            return bool(self._db.execute("SELECT 1 FROM optout WHERE guild=? AND user=?", (guild, user)).fetchone())

    def touch(self, channel: int) -> int:
        """Mark every window of `channel` dirty (its name changed); returns how many."""
        with self._transaction():
            cur = self._db.execute(
                "INSERT INTO dirty (channel, day) SELECT DISTINCT channel, day FROM messages WHERE channel=? "
                "ON CONFLICT DO UPDATE SET gen=gen+1",
                (channel,),
            )
            return cur.rowcount

    def dirty(self) -> list[tuple[int, str, int]]:
        """The windows to re-ingest: (channel, day, generation)."""
        with self._lock:
            rows = self._db.execute("SELECT channel, day, gen FROM dirty ORDER BY channel, day")
            return [(int(c), str(d), int(g)) for c, d, g in rows]

    def window(self, channel: int, day: str) -> list[ChatMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, author_id, author, ts, text, jump, reply_to FROM messages WHERE channel=? AND day=? "
                "ORDER BY id",
                (channel, day),
            ).fetchall()
        return [ChatMessage(*r) for r in rows]

    def between(
        self, channel: int, start: float | None, before_id: int, *, limit: int
    ) -> tuple[list[ChatMessage], int]:
        """The stored messages of `channel` from time `start` (None: the first) up to id `before_id`,
        oldest first, evenly thinned to at most `limit`; and how many there are in all."""
        where = "channel=? AND day>=? AND ts>=? AND id<?"
        args = (channel, day_of(start) if start is not None else "", start if start is not None else -1e18, before_id)
        with self._lock:
            total = int(self._db.execute(f"SELECT COUNT(*) FROM messages WHERE {where}", args).fetchone()[0])
            step = max(1, -(-total // max(limit, 1)))  # every step-th message: at most `limit`, none held in memory
            rows = self._db.execute(
                "SELECT id, author_id, author, ts, text, jump, reply_to FROM (SELECT *, ROW_NUMBER() OVER "
                f"(ORDER BY id) - 1 AS n FROM messages WHERE {where}) WHERE n % ? = 0 ORDER BY id LIMIT ?",
                (*args, step, limit),
            ).fetchall()
        return [ChatMessage(*r) for r in rows], total

    def newest(self, channel: int, count: int) -> list[tuple[int, str]]:
        """(id, text) of the channel's newest `count` stored messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, text FROM messages WHERE channel=? ORDER BY id DESC LIMIT ?", (channel, count)
            ).fetchall()
        return [(int(i), str(t)) for i, t in reversed(rows)]

    def totals(self, guild: int) -> tuple[int, int, int]:
        """(messages stored, indexed channels and threads, attached files) of `guild`."""
        with self._lock:
            row = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM messages m JOIN channels c ON c.channel=m.channel WHERE c.guild=?), "
                "(SELECT COUNT(*) FROM channels WHERE guild=?), "
                "(SELECT COUNT(*) FROM files f JOIN channels c ON c.channel=f.channel WHERE c.guild=?)",
                (guild, guild, guild),
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def file_messages(self, channel: int, count: int) -> list[int]:
        """Ids of the channel's newest `count` messages with indexed attachments."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT message FROM files WHERE channel=? ORDER BY message DESC LIMIT ?", (channel, count)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def message_guild(self, message: int) -> int | None:
        """The guild of an indexed message (its text, or its attachments), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT c.guild FROM messages m JOIN channels c ON c.channel=m.channel WHERE m.id=? UNION "
                "SELECT c.guild FROM files f JOIN channels c ON c.channel=f.channel WHERE f.message=? LIMIT 1",
                (message, message),
            ).fetchone()
        return int(row[0]) if row else None

    # -- attachments: documents of their own, tied to their message --------------------------------
    def add_files(self, message: int, channel: int, author: int, sources: Iterable[str]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO files VALUES (?,?,?,?)", [(message, channel, author, s) for s in sources]
            )

    def take_files(
        self, *, messages: Iterable[int] = (), channel: int | None = None, author: tuple[int, int] | None = None
    ) -> list[tuple[int, str]]:
        """Remove and return the (message, source) of the attachments of `messages`, of `channel`, or of
        `author` (guild, user): their documents are then forgotten."""
        with self._transaction():
            if channel is not None:
                rows = self._db.execute("SELECT message, source FROM files WHERE channel=?", (channel,)).fetchall()
            elif author is not None:
                rows = self._db.execute(
                    "SELECT f.message, f.source FROM files f JOIN channels c ON c.channel=f.channel "
                    "WHERE c.guild=? AND f.author=?",
                    author,
                ).fetchall()
            else:
                rows = [
                    r
                    for mid in messages
                    for r in self._db.execute("SELECT message, source FROM files WHERE message=?", (mid,))
                ]
            self._db.executemany("DELETE FROM files WHERE message=? AND source=?", rows)
        return [(int(m), str(s)) for m, s in rows]

    def clean(self, done: Iterable[tuple[int, str, int]]) -> None:
        """Unmark windows ingested as of `generation` (one changed since stays dirty)."""
        with self._transaction():
            self._db.executemany("DELETE FROM dirty WHERE channel=? AND day=? AND gen=?", list(done))


def _indexed(row: tuple[Any, ...]) -> Indexed:
    channel, guild, name, scope, parent, checkpoint, done, fetched = row
    return Indexed(
        int(channel), int(guild), str(name), str(scope), str(parent), int(checkpoint), bool(done), int(fetched)
    )


def to_chat(message: discord.Message) -> ChatMessage:
    """What is kept of a Discord message: id, author's display name, time, text, link, what it replies to."""
    ref = message.reference
    reply = ref.message_id if ref is not None and ref.channel_id == message.channel.id else None
    return ChatMessage(
        id=message.id,
        author_id=message.author.id,
        author=message.author.display_name,
        ts=message.created_at.timestamp(),
        text=message.clean_content if message.guild is not None else message.content,
        jump_url=message.jump_url,
        reply_to=reply,
    )


def has_files(message: discord.Message) -> bool:
    """A member's ordinary message or reply carrying attachments: they become documents (watched-channel rules)."""
    ordinary = message.type in (discord.MessageType.default, discord.MessageType.reply)
    return ordinary and bool(message.attachments) and not message.author.bot and message.webhook_id is None


def indexable(message: discord.Message, *, bots: bool) -> bool:
    """Ordinary messages and replies (and a thread's starter); bots' and webhooks' only with `bots`; no
    system messages (joins, pins, boosts)."""
    if message.type not in (discord.MessageType.default, discord.MessageType.reply):
        return False
    if (message.author.bot or message.webhook_id is not None) and not bots:
        return False
    return bool(message.content.strip())


async def pages(channel: discord.abc.Messageable, after: int) -> AsyncIterator[list[discord.Message]]:
    """The channel's messages after id `after`, oldest first, a page at a time."""
    batch: list[discord.Message] = []
    async for message in channel.history(limit=None, after=discord.Object(id=after), oldest_first=True):
        batch.append(message)
        if len(batch) >= PAGE:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["PAGE", "HistoryLog", "Indexed", "day_of", "has_files", "indexable", "pages", "to_chat"]
