"""What a member may read, in the scopes the store records (issue 13, part 1).

Every document has a scope: "guild" (guild-wide: CLI ingests, documents an admin marked
public, and by default those ingested in a channel nobody is kept out of) or the id of
the channel it came from (a public thread's parent; a private thread's own id). At ask
time the bot computes the scopes the asking member can read, with discord.py's
`permissions_for` (roles, member overwrites, @everyone, administrators):

- a channel needs View Channel and Read Message History;
- a public thread follows its parent (its documents carry the parent's id);
- a private thread needs its parent's permissions and membership (or Manage Threads).

A reply everyone in a channel can see must not show what only the asker may read, so a
public reply is limited to what that channel's audience shares: guild-wide documents
and those of the channel itself (for a private thread, also its parent's). A private
reply (`/ask private:True`, autocomplete, ephemeral messages) uses all the asker's scopes.
Direct messages see guild-wide documents only.

The set is cached per (guild, member, roles) and dropped on the gateway's role, channel,
member and thread events; thread membership, which the gateway reports only with the
privileged members intent, is also re-checked after `CACHE_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import discord

from store.types import GUILD_SCOPE

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
MAX_CACHED = 10_000
GUILD_ONLY = frozenset({GUILD_SCOPE})


def can_read(perms: discord.Permissions) -> bool:
    return perms.view_channel and perms.read_message_history


def origin(channel: object) -> tuple[str, str]:
    """(scope, parent) of a document that arrives in `channel`: a public thread's parent id; a private
    thread's own id (its parent as the second value); a channel's id."""
    if isinstance(channel, discord.Thread):
        parent = str(channel.parent_id)
        return (str(channel.id), parent) if channel.is_private() else (parent, "")
    return str(getattr(channel, "id", "")), ""


def nobody_kept_out(channel: object) -> bool:
    """@everyone may read `channel` and no role or member overwrite denies reading it (for a thread:
    its parent; a private thread never): what makes `/ingest` there guild-wide by default."""
    if isinstance(channel, discord.Thread):
        if channel.is_private():
            return False
        channel = channel.parent
    if not isinstance(channel, discord.abc.GuildChannel):
        return False
    if not can_read(channel.permissions_for(channel.guild.default_role)):
        return False
    for overwrite in channel.overwrites.values():
        denied = overwrite.pair()[1]
        if denied.view_channel or denied.read_message_history:
            return False
    return True


def document_scope(channel: object, visibility: str | None) -> dict[str, str]:
    """The `extra` metadata recording where a document ingested in `channel` may be read.

    visibility "public": guild-wide; "channel": the channel's scope; None: guild-wide when
    `nobody_kept_out(channel)`, else the channel's scope."""
    public = visibility == "public" or (visibility is None and nobody_kept_out(channel))
    if public:
        return {"scope": GUILD_SCOPE}
    scope, parent = origin(channel)
    return {"scope": scope, "scope_parent": parent} if parent else {"scope": scope}


def audience(channel: object) -> frozenset[str]:
    """The scopes everyone who sees a public reply in `channel` may read, as far as the bot knows."""
    scope, parent = origin(channel)
    return frozenset({GUILD_SCOPE, scope, *([parent] if parent else [])})


class ReadableScopes:
    """Computes and caches the scopes each member may read."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self.cache_seconds = cache_seconds
        # private threads discord.py does not cache (archived ones) whose content is indexed: set by
        # the history cog (bot/discord_app/cogs/history.py), so their members may still read them
        self.extra_threads: Callable[[discord.Guild], Iterable[discord.Thread]] | None = None
        self._cache: dict[tuple[int, int, frozenset[int]], tuple[float, frozenset[str]]] = {}
        self.computed = 0  # sets computed (not served from the cache): tests read it

    def invalidate(self, guild_id: int | None = None, member_id: int | None = None) -> None:
        """Forget cached sets: of one member, of one guild, or all."""
        for key in list(self._cache):
            if (guild_id is None or key[0] == guild_id) and (member_id is None or key[1] == member_id):
                del self._cache[key]

    async def scopes(self, user: discord.abc.User, guild: discord.Guild | None) -> frozenset[str]:
        """Everything `user` may read in `guild` ("guild" plus channel and private-thread ids)."""
        if guild is None:
            return GUILD_ONLY
        member = user if isinstance(user, discord.Member) else guild.get_member(user.id)
        if member is None:
            return GUILD_ONLY
        key = (guild.id, member.id, frozenset(r.id for r in member.roles))
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        found = await self._compute(member, guild)
        if len(self._cache) >= MAX_CACHED:  # drop what has expired (sets of role sets a member no longer has)
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < self.cache_seconds}
        self._cache[key] = (now, found)
        self.computed += 1
        return found

    async def for_reply(
        self, user: discord.abc.User, guild: discord.Guild | None, channel: object, *, private: bool
    ) -> frozenset[str]:
        """What a reply to `user` in `channel` may show: all they may read when only they see it,
        else only what the channel's audience shares too."""
        readable = await self.scopes(user, guild)
        return readable if private or guild is None else readable & audience(channel)

    async def _compute(self, member: discord.Member, guild: discord.Guild) -> frozenset[str]:
        found = {GUILD_SCOPE}
        readable_channels: dict[int, discord.Permissions] = {}
        for channel in guild.channels:
            if isinstance(channel, discord.CategoryChannel):
                continue
            perms = channel.permissions_for(member)
            if can_read(perms):
                found.add(str(channel.id))
                readable_channels[channel.id] = perms
        more = self.extra_threads(guild) if self.extra_threads is not None else ()
        for thread in [*guild.threads, *(t for t in more if guild.get_thread(t.id) is None)]:
            if thread.parent_id not in readable_channels:
                continue
            if not thread.is_private():
                found.add(str(thread.id))  # its documents carry its parent's scope; its own id only if unresolved
            elif readable_channels[thread.parent_id].manage_threads or await self._joined(thread, member):
                found.add(str(thread.id))
        return frozenset(found)

    @staticmethod
    async def _joined(thread: discord.Thread, member: discord.Member) -> bool:
        if any(m.id == member.id for m in thread.members):
            return True
        try:
            await thread.fetch_member(member.id)
        except discord.NotFound:
            return False
        except discord.HTTPException:
            log.warning("cannot check whether %s joined thread %s: treated as not", member.id, thread.id, exc_info=True)
            return False
        return True
