"""A fake Discord (REST + gateway websocket) on 127.0.0.1 that drives the real discord.py.

Point discord.py at it with `fake.configure()` (sets `discord.http.Route.BASE` and
`DiscordWebSocket.DEFAULT_GATEWAY`; `fake.restore()` undoes it). The fake keeps
what Discord keeps (messages per channel, threads, interactions, commands), records
every REST call, and enforces the limits the bot must respect:

- message content over 2,000 characters: 400, code 50035;
- an interaction callback later than 3 s: 404, code 10062;
- more than `edit_limit` edits of one message within `edit_window` seconds: 429 with
  a `Via` header and `retry_after` (what Discord's per-message edit limit looks like).

Tests act as users: `user_message`, `delete_message`, `slash`, `autocomplete`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
SUPPRESS_EMBEDS = 1 << 2
EPHEMERAL = 1 << 6
LOADING = 1 << 7
MESSAGE_CONTENT_INTENT = 1 << 15
ALL_PERMISSIONS = (1 << 50) - 1
MANAGE_GUILD = 1 << 5
MANAGE_THREADS = 1 << 34
# view channels, send messages, embed links, attach files, read history, send in threads
BASIC_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 38)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Call:
    method: str
    path: str  # below /api/v10
    query: dict[str, str]
    json: Any
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass
class Fault:
    """The next matching REST calls get these statuses instead of an answer (429s carry Retry-After)."""

    method: str
    pattern: str  # re.search on the path below /api/v10
    statuses: list[int]
    retry_after: float = 0.05
    served: int = 0


@dataclass
class FakeInteraction:
    id: int
    token: str
    type: int
    name: str
    channel_id: int
    guild_id: int | None
    user: dict[str, Any]
    created: float = field(default_factory=time.monotonic)
    callback: dict[str, Any] | None = None
    callback_at: float | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    choices: list[dict[str, Any]] | None = None
    message_id: int | None = None  # a component interaction: the message whose button was pressed

    @property
    def deferred(self) -> bool:
        return self.callback is not None and self.callback["type"] == 5

    @property
    def ephemeral(self) -> bool:
        data = (self.callback or {}).get("data") or {}
        return bool(int(data.get("flags", 0)) & EPHEMERAL)


class FakeDiscord:
    def __init__(
        self,
        *,
        token: str = "fake-token",
        heartbeat_interval: float = 0.5,
        edit_limit: int = 5,
        edit_window: float = 5.0,
        interaction_timeout: float = 3.0,
        message_content_allowed: bool = True,
    ) -> None:
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.edit_limit = edit_limit
        self.edit_window = edit_window
        self.interaction_timeout = interaction_timeout
        self.message_content_allowed = message_content_allowed
        self._ids = itertools.count(1)
        self._users: dict[str, dict[str, Any]] = {}  # everyone who has acted or joined a guild
        self.bot_user = self._user_payload(self.snowflake(), "ragcord", bot=True)
        self.app_id = int(self.bot_user["id"])
        self.owner = self.add_user("owner")
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}  # id -> message payload (current state)
        # channel id -> ids of the messages ever created in it, ascending: a history page is a bisection,
        # not a scan of every message (ids gone from `messages`, deleted, are skipped when read)
        self._channel_ids: dict[str, list[int]] = defaultdict(list)
        self.deleted: set[int] = set()
        self.edits: dict[int, list[float]] = defaultdict(list)  # message id -> edit times
        self.timeline: list[tuple[float, int, str]] = []  # (time, message id, content) of every create and edit
        self.interactions: dict[str, FakeInteraction] = {}
        self.commands: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.cdn_hits: list[str] = []
        self.calls: list[Call] = []
        self.rate_limited: list[Call] = []
        self.rejected: list[Call] = []  # 4xx answers other than 429
        self.heartbeats: list[float] = []
        self.identified: list[dict[str, Any]] = []
        self.resumed: list[dict[str, Any]] = []  # RESUME payloads (op 6) received
        self.faults: list[Fault] = []
        self.thread_members: dict[int, set[str]] = {}  # private thread id -> ids of the users who joined it
        self.refuse_resume = False  # answer the next RESUME with INVALID_SESSION (op 9): a fresh IDENTIFY follows
        self.invalidated = 0
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._saved: tuple[str, yarl.URL] | None = None

    # -- life -------------------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/cdn/attachments/{path:.*}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.restore()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def configure(self) -> None:
        """Point discord.py here (what the bot does from settings), remembering the old values."""
        if self._saved is None:
            self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def restore(self) -> None:
        if self._saved is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._saved = None

    # -- the world --------------------------------------------------------------------------
    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._ids) & 0x3FFFFF)

    @staticmethod
    def _user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
        return {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }

    def add_user(self, name: str) -> dict[str, Any]:
        return self._user_payload(self.snowflake(), name)

    def add_guild(
        self, name: str, channels: tuple[str, ...] = ("general",), owner: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        gid = self.snowflake()
        owner = owner or self.owner
        guild = {
            "id": str(gid),
            "name": name,
            "owner_id": owner["id"],
            "icon": None,
            "roles": [self._role(gid, "@everyone", BASIC_PERMISSIONS, role_id=gid)],
            "members": {},
            "channels": [],
        }
        self.guilds[gid] = guild
        self.add_member(gid, self.bot_user)
        self.add_member(gid, owner)
        for channel in channels:
            self.add_channel(gid, channel)
        return guild

    @staticmethod
    def _role(gid: int, name: str, permissions: int, *, role_id: int) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": name,
            "permissions": str(permissions),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def add_role(self, guild: dict[str, Any], name: str, permissions: int = 0) -> dict[str, Any]:
        role = self._role(int(guild["id"]), name, permissions, role_id=self.snowflake())
        role["position"] = len(guild["roles"])
        guild["roles"].append(role)
        return role

    def add_member(self, gid: int | str, user: dict[str, Any], roles: Sequence[dict[str, Any]] = ()) -> None:
        self._users[user["id"]] = user
        self.guilds[int(gid)]["members"][user["id"]] = [r["id"] for r in roles]

    def add_channel(self, gid: int | str, name: str) -> dict[str, Any]:
        guild = self.guilds[int(gid)]
        channel = {
            "id": str(self.snowflake()),
            "type": 0,
            "name": name,
            "guild_id": guild["id"],
            "position": len(guild["channels"]),
            "permission_overwrites": [],
            "parent_id": None,
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        guild["channels"].append(channel)
        self.channels[int(channel["id"])] = channel
        return channel

    def set_overwrites(self, channel: dict[str, Any], *overwrites: tuple[dict[str, Any], int, int]) -> None:
        """Channel permission overwrites: (role or user payload, allow bits, deny bits), before the bot starts."""
        channel["permission_overwrites"] = [
            {"id": target["id"], "type": 0 if "permissions" in target else 1, "allow": str(allow), "deny": str(deny)}
            for target, allow, deny in overwrites
        ]

    def add_private_thread(
        self, parent: dict[str, Any], name: str, members: Sequence[dict[str, Any]] = ()
    ) -> dict[str, Any]:
        """A private thread (type 12) under a text channel; only `members` (and the bot) have joined it."""
        tid = self.snowflake()
        thread = {
            "id": str(tid),
            "type": 12,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": members[0]["id"] if members else self.bot_user["id"],
            "name": name,
            "message_count": 0,
            "member_count": len(members) + 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "last_message_id": None,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now_iso(),
                "locked": False,
                "invitable": False,
            },
        }
        self.channels[tid] = thread
        self.thread_members[tid] = {self.bot_user["id"], *(m["id"] for m in members)}
        return thread

    async def leave_thread(self, thread: dict[str, Any], user: dict[str, Any]) -> None:
        """`user` leaves a private thread while the bot runs: THREAD_MEMBERS_UPDATE."""
        self.thread_members[int(thread["id"])].discard(user["id"])
        data = {"id": thread["id"], "guild_id": thread["guild_id"], "member_count": 1}
        data["removed_member_ids"] = [user["id"]]
        await self.dispatch("THREAD_MEMBERS_UPDATE", data)

    async def set_member_roles(
        self, guild: dict[str, Any], user: dict[str, Any], roles: Sequence[dict[str, Any]]
    ) -> None:
        """Change a member's roles while the bot runs: GUILD_MEMBER_UPDATE (later payloads carry the new roles)."""
        gid = int(guild["id"])
        guild["members"][user["id"]] = [r["id"] for r in roles]
        await self.dispatch("GUILD_MEMBER_UPDATE", {"guild_id": guild["id"], **self.member_payload(gid, user)})

    def add_dm(self, user: dict[str, Any]) -> dict[str, Any]:
        """A direct-message channel between `user` and the bot."""
        self._users[user["id"]] = user
        channel = {"id": str(self.snowflake()), "type": 1, "recipients": [user], "last_message_id": None}
        self.channels[int(channel["id"])] = channel
        return channel

    def channel(self, guild: dict[str, Any], name: str = "general") -> dict[str, Any]:
        return next(c for c in guild["channels"] if c["name"] == name)

    def member_payload(self, guild_id: int, user: dict[str, Any], *, with_user: bool = True) -> dict[str, Any]:
        guild = self.guilds[guild_id]
        role_ids = guild["members"].get(user["id"], [])
        perms = 0
        for role in guild["roles"]:
            if role["id"] == guild["id"] or role["id"] in role_ids:
                perms |= int(role["permissions"])
        if user["id"] == guild["owner_id"] or perms & 8:
            perms = ALL_PERMISSIONS
        data = {
            "roles": role_ids,
            "joined_at": now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "pending": False,
            "permissions": str(perms),
        }
        if with_user:
            data["user"] = user
        return data

    def add_attachment(
        self, channel_id: int | str, filename: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        aid = self.snowflake()
        path = f"{channel_id}/{aid}/{filename}"
        self.files[path] = data
        url = f"http://127.0.0.1:{self.port}/cdn/attachments/{path}"
        return {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    # -- acting as users ----------------------------------------------------------------------
    async def user_message(
        self,
        channel: dict[str, Any],
        author: dict[str, Any],
        content: str,
        *,
        mention: bool = False,
        reply_to: dict[str, Any] | None = None,
        attachments: Sequence[tuple[str, bytes]] = (),
    ) -> dict[str, Any]:
        mentions = []
        if mention:
            content = f"<@{self.bot_user['id']}> {content}"
            mentions.append(self.bot_user)
        files = [self.add_attachment(channel["id"], name, data) for name, data in attachments]
        message = self._new_message(channel, author, content, mentions=mentions, attachments=files, reply_to=reply_to)
        await self._dispatch_message("MESSAGE_CREATE", message)
        return message

    async def delete_message(self, channel: dict[str, Any], message: dict[str, Any]) -> None:
        mid = int(message["id"])
        self.messages.pop(mid, None)
        self.deleted.add(mid)
        data = {"id": message["id"], "channel_id": channel["id"]}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
        await self.dispatch("MESSAGE_DELETE", data)

    # -- channel history (issue 13): messages already there, edits and deletions by members, threads, forums --
    def seed_message(
        self,
        channel: dict[str, Any],
        author: dict[str, Any],
        content: str,
        *,
        reply_to: dict[str, Any] | None = None,
        at: float | None = None,
        attachments: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """A message already in the channel's history when the bot looks (no gateway event); `at`: sent
        at that POSIX time (its id and timestamp say so), e.g. months ago; `attachments` from add_attachment."""
        mid = None
        if at is not None:
            mid = ((int(at * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF)
        message = self._new_message(
            channel, author, content, reply_to=reply_to, message_id=mid, attachments=attachments
        )
        if at is not None:
            message["timestamp"] = datetime.fromtimestamp(at, UTC).isoformat()
        return message

    async def edit_user_message(self, message: dict[str, Any], content: str) -> None:
        """A member edits their message: MESSAGE_UPDATE carries the new content."""
        message["content"] = content
        message["edited_timestamp"] = now_iso()
        self.timeline.append((time.monotonic(), int(message["id"]), content))
        await self._dispatch_message("MESSAGE_UPDATE", message)

    async def bulk_delete(self, channel: dict[str, Any], messages: Sequence[dict[str, Any]]) -> None:
        """A moderator deletes several messages at once: MESSAGE_DELETE_BULK."""
        for message in messages:
            self.messages.pop(int(message["id"]), None)
            self.deleted.add(int(message["id"]))
        data = {"ids": [m["id"] for m in messages], "channel_id": channel["id"], "guild_id": channel["guild_id"]}
        await self.dispatch("MESSAGE_DELETE_BULK", data)

    def add_public_thread(
        self, parent: dict[str, Any], name: str, *, archived: bool = False, owner: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A public thread (type 11) under a text channel, or a post in a forum channel (type 15)."""
        tid = self.snowflake()
        thread = {
            "id": str(tid),
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": (owner or self.bot_user)["id"],
            "name": name,
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "last_message_id": None,
            "thread_metadata": {
                "archived": archived,
                "auto_archive_duration": 1440,
                "archive_timestamp": now_iso(),
                "locked": False,
            },
        }
        self.channels[tid] = thread
        return thread

    def add_forum(self, gid: int | str, name: str) -> dict[str, Any]:
        """A forum channel (type 15): its posts are threads (`add_public_thread`)."""
        forum = self.add_channel(gid, name)
        forum.update({"type": 15, "available_tags": [], "default_reaction_emoji": None, "flags": 0})
        return forum

    async def delete_thread(self, thread: dict[str, Any]) -> None:
        self.channels.pop(int(thread["id"]), None)
        data = {k: thread[k] for k in ("id", "guild_id", "parent_id", "type")}
        await self.dispatch("THREAD_DELETE", data)

    async def delete_channel(self, channel: dict[str, Any]) -> None:
        self.channels.pop(int(channel["id"]), None)
        guild = self.guilds[int(channel["guild_id"])]
        guild["channels"] = [c for c in guild["channels"] if c["id"] != channel["id"]]
        await self.dispatch("CHANNEL_DELETE", channel)

    async def slash(
        self,
        channel: dict[str, Any],
        user: dict[str, Any],
        name: str,
        options: dict[str, Any] | None = None,
        *,
        focused: str | None = None,
    ) -> FakeInteraction:
        """Dispatch an application command (or, with `focused`, an autocomplete) interaction.

        Option values: str, int, bool, or an attachment dict from `add_attachment`.
        """
        opts, resolved = [], {}
        for key, value in (options or {}).items():
            if isinstance(value, dict) and "filename" in value:
                opts.append({"name": key, "type": 11, "value": value["id"]})
                resolved.setdefault("attachments", {})[value["id"]] = value
            elif isinstance(value, dict) and "type" in value and "guild_id" in value:  # a channel or thread option
                opts.append({"name": key, "type": 7, "value": value["id"]})
                resolved.setdefault("channels", {})[value["id"]] = {**value, "permissions": str(ALL_PERMISSIONS)}
            else:
                kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 3
                opt = {"name": key, "type": kind, "value": value}
                if key == focused:
                    opt["focused"] = True
                opts.append(opt)
        name, _, sub = name.partition(" ")  # "index add": a subcommand (option type 1) of "index"
        if sub:
            opts = [{"name": sub, "type": 1, "options": opts}]
        command = next((c for c in self.commands if c["name"] == name), None)
        data = {
            "id": command["id"] if command else str(self.snowflake()),
            "name": name,
            "type": 1,
            "options": opts,
            "resolved": resolved,
        }
        return await self._interact(channel, user, 4 if focused else 2, name, data)

    async def click(
        self, message: dict[str, Any], user: dict[str, Any], *, label: str | None = None, custom_id: str | None = None
    ) -> FakeInteraction:
        """Press a button of a bot message (by label or custom_id): INTERACTION_CREATE of type 3.

        The buttons are those of `message` as the caller saw it (a member's client may still show
        buttons the bot has since removed), else of the message now.
        """
        current = self.messages[int(message["id"])]
        rows = message.get("components") or current.get("components") or []
        buttons = [c for row in rows for c in row.get("components") or []]
        button = next((b for b in buttons if b.get("custom_id") == custom_id or b.get("label") == label), None)
        if button is None:
            raise LookupError(f"no button {label or custom_id!r} on message {message['id']}: {buttons}")
        channel = self.channels[int(current["channel_id"])]
        data = {"custom_id": button["custom_id"], "component_type": 2}
        return await self._interact(channel, user, 3, button["custom_id"], data, message=current)

    async def _interact(
        self,
        channel: dict[str, Any],
        user: dict[str, Any],
        kind: int,
        name: str,
        data: dict[str, Any],
        *,
        message: dict[str, Any] | None = None,
    ) -> FakeInteraction:
        iid = self.snowflake()
        token = f"tok{iid}"
        gid = int(channel["guild_id"]) if channel.get("guild_id") else None
        inter = FakeInteraction(iid, token, kind, name, int(channel["id"]), gid, user)
        if message is not None:
            inter.message_id = int(message["id"])
        self.interactions[token] = inter
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": inter.type,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": channel["id"],
            "channel": channel,
            "app_permissions": str(ALL_PERMISSIONS),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": channel.get("guild_id")},
            "context": 0,
            "attachment_size_limit": 25 * 1024 * 1024,
        }
        if gid is not None:
            payload["guild_id"] = str(gid)
            payload["guild_locale"] = "en-US"
            payload["member"] = self.member_payload(gid, user)
        else:
            payload["user"] = user
        if message is not None:
            payload["message"] = message
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    async def autocomplete(
        self,
        channel: dict[str, Any],
        user: dict[str, Any],
        name: str,
        options: dict[str, Any],
        focused: str,
        timeout: float = 5.0,
    ) -> list[dict[str, Any]]:
        inter = await self.slash(channel, user, name, options, focused=focused)
        await self.wait_for(lambda: inter.choices is not None, timeout)
        return inter.choices or []

    # -- observing --------------------------------------------------------------------------
    def channel_messages(self, channel: dict[str, Any] | int | str) -> list[dict[str, Any]]:
        cid = str(channel["id"] if isinstance(channel, dict) else channel)
        return [m for m in map(self.messages.get, self._channel_ids.get(cid, ())) if m is not None]

    def bot_messages(self, channel: dict[str, Any] | int | str) -> list[dict[str, Any]]:
        return [m for m in self.channel_messages(channel) if m["author"]["id"] == self.bot_user["id"]]

    def interaction_messages(self, inter: FakeInteraction) -> list[dict[str, Any]]:
        ids = ([inter.original_id] if inter.original_id else []) + inter.followup_ids
        return [self.messages[i] for i in ids if i in self.messages]

    def replies_to(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Bot messages in the reply chain under `message` (an answer split over messages)."""
        out, parent = [], message["id"]
        while True:
            nxt = next(
                (
                    m
                    for m in self.messages.values()
                    if (m.get("message_reference") or {}).get("message_id") == parent
                    and m["author"]["id"] == self.bot_user["id"]
                ),
                None,
            )
            if nxt is None:
                return out
            out.append(nxt)
            parent = nxt["id"]

    def rest_calls(self, method: str | None = None, pattern: str = "") -> list[Call]:
        return [c for c in self.calls if (method is None or c.method == method) and re.search(pattern, c.path)]

    @staticmethod
    async def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            await asyncio.sleep(interval)

    # -- gateway ----------------------------------------------------------------------------
    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        self._seq += 1
        frame = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(frame)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op = frame.get("op")
            if op == 1:
                self.heartbeats.append(time.monotonic())
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identified.append(frame["d"])
                if not self.message_content_allowed and int(frame["d"].get("intents", 0)) & MESSAGE_CONTENT_INTENT:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                self._sockets.append(ws)
                await self._ready(ws)
            elif op == 6 and self.refuse_resume:  # the session is gone: INVALID_SESSION, not resumable
                self.refuse_resume = False
                self.invalidated += 1
                await ws.send_str(json.dumps({"op": 9, "d": False}))
            elif op == 6:
                self.resumed.append(frame["d"])
                self._sockets.append(ws)
                self._seq += 1
                await ws.send_str(json.dumps({"op": 0, "t": "RESUMED", "s": self._seq, "d": {}}))
        if ws in self._sockets:
            self._sockets.remove(ws)
        return ws

    async def _ready(self, ws: web.WebSocketResponse) -> None:
        ready = {
            "v": 10,
            "user": self.bot_user,
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
            "application": {"id": str(self.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        for gid in self.guilds:
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": self._seq, "d": self._guild_create(gid)}))

    def _guild_create(self, gid: int) -> dict[str, Any]:
        g = self.guilds[gid]
        members = [self.member_payload(gid, self._users[uid]) for uid in g["members"]]
        threads = [
            c
            for c in self.channels.values()
            if c.get("guild_id") == g["id"] and c["type"] in (11, 12) and not c["thread_metadata"]["archived"]
        ]
        return {
            "id": g["id"],
            "name": g["name"],
            "icon": None,
            "owner_id": g["owner_id"],
            "roles": g["roles"],
            "channels": g["channels"],
            "threads": threads,
            "members": members,
            "member_count": len(members),
            "large": False,
            "unavailable": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "joined_at": now_iso(),
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "system_channel_id": None,
            "afk_channel_id": None,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "description": None,
            "banner": None,
            "splash": None,
        }

    # -- messages ---------------------------------------------------------------------------
    def _new_message(
        self,
        channel: dict[str, Any],
        author: dict[str, Any],
        content: str,
        *,
        mentions: Sequence[dict[str, Any]] = (),
        attachments: Sequence[dict[str, Any]] = (),
        embeds: Sequence[dict[str, Any]] = (),
        reply_to: dict[str, Any] | None = None,
        flags: int = 0,
        webhook: bool = False,
        message_id: int | None = None,
        components: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        mid = message_id or self.snowflake()
        message: dict[str, Any] = {
            "id": str(mid),
            "channel_id": channel["id"],
            "author": author,
            "content": content,
            "timestamp": now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": list(mentions),
            "mention_roles": [],
            "attachments": list(attachments),
            "embeds": list(embeds),
            "pinned": False,
            "type": 0,
            "flags": flags,
            "components": list(components),
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
        if webhook:
            message["webhook_id"] = str(self.app_id)
            message["application_id"] = str(self.app_id)
        if reply_to is not None:
            message["type"] = 19
            message["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                "guild_id": reply_to.get("guild_id"),
            }
            message["referenced_message"] = {k: v for k, v in reply_to.items() if k != "referenced_message"}
        if mid not in self.messages:
            ids = self._channel_ids[channel["id"]]
            if ids and mid < ids[-1]:
                bisect.insort(ids, mid)  # seeded at an earlier time
            else:
                ids.append(mid)
        self.messages[mid] = message
        self.timeline.append((time.monotonic(), mid, content))
        if not author.get("bot"):
            self._users[author["id"]] = author
        if channel["type"] == 11:
            channel["message_count"] = channel.get("message_count", 0) + 1
        return message

    async def _dispatch_message(self, event: str, message: dict[str, Any]) -> None:
        if int(message.get("flags", 0)) & EPHEMERAL:
            return  # nobody else sees ephemeral messages
        data = dict(message)
        gid = message.get("guild_id")
        if gid and not message["author"].get("bot"):
            data["member"] = self.member_payload(int(gid), message["author"], with_user=False)
        await self.dispatch(event, data)

    def _check_message(self, body: dict[str, Any], *, editing: bool = False) -> tuple[int, dict[str, Any]] | None:
        content = body.get("content")
        if content is not None and len(content) > 2000:
            return 400, {
                "code": 50035,
                "message": "Invalid Form Body",
                "errors": {
                    "content": {
                        "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]
                    }
                },
            }
        for embed in body.get("embeds") or []:
            if len(embed.get("description") or "") > 4096 or len(embed.get("title") or "") > 256:
                return 400, {"code": 50035, "message": "Invalid Form Body", "errors": {"embeds": "too long"}}
        if not editing and not content and not body.get("embeds") and not body.get("attachments"):
            return 400, {"code": 50006, "message": "Cannot send an empty message"}
        return None

    def _edit_limited(self, mid: int) -> float:
        """Seconds to wait if this edit breaks the per-message edit limit, else 0 (edit recorded)."""
        now = time.monotonic()
        times = [t for t in self.edits[mid] if now - t < self.edit_window]
        if len(times) >= self.edit_limit:
            return self.edit_window - (now - times[0])
        self.edits[mid].append(now)
        return 0.0

    async def _edit(self, mid: int, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        message = self.messages.get(mid)
        if message is None:
            return 404, {"code": 10008, "message": "Unknown Message"}, {}
        bad = self._check_message(body, editing=True)
        if bad:
            return bad[0], bad[1], {}
        wait = self._edit_limited(mid)
        if wait:
            return (
                429,
                {"message": "You are being rate limited.", "retry_after": round(wait, 3), "global": False},
                {"Via": "1.1 google", "X-RateLimit-Scope": "user"},
            )
        for key in ("content", "embeds", "attachments", "components"):
            if key in body and body[key] is not None:
                message[key] = body[key]
        flags = int(message.get("flags", 0)) & ~LOADING
        if body.get("flags") is not None:  # an edit may set or clear only SUPPRESS_EMBEDS
            flags = (flags & ~SUPPRESS_EMBEDS) | (int(body["flags"]) & SUPPRESS_EMBEDS)
        message["flags"] = flags
        message["edited_timestamp"] = now_iso()
        self.timeline.append((time.monotonic(), mid, message["content"]))
        await self._dispatch_message("MESSAGE_UPDATE", message)
        return 200, message, {}

    # -- REST -------------------------------------------------------------------------------
    async def _cdn(self, request: web.Request) -> web.Response:
        self.cdn_hits.append(request.match_info["path"])
        data = self.files.get(request.match_info["path"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, headers={"Content-Type": "application/octet-stream"})

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body: Any = None
        if request.content_type == "application/json" and request.can_read_body:
            body = await request.json()
        elif request.content_type.startswith("multipart/"):
            form = await request.post()
            body = json.loads(str(form.get("payload_json") or "{}"))
        call = Call(request.method, path, dict(request.query), body)
        self.calls.append(call)
        fault = self._fault(request.method, path)
        if fault is not None:
            status, data, headers = fault
        elif (
            request.headers.get("Authorization", "").startswith("Bot ")
            and request.headers["Authorization"] != f"Bot {self.token}"
        ):
            status, data, headers = 401, {"code": 0, "message": "401: Unauthorized"}, {}
        else:
            status, data, headers = await self._route(request.method, path, dict(request.query), body or {})
        call.status = status
        if status == 429:
            self.rate_limited.append(call)
        elif status >= 400:
            self.rejected.append(call)
        if status == 204:
            return web.Response(status=204)
        return web.Response(
            status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json", **headers}
        )

    def inject(self, method: str, pattern: str, statuses: Sequence[int], *, retry_after: float = 0.05) -> Fault:
        """Answer the next len(statuses) `method` calls whose path matches `pattern` with those statuses."""
        fault = Fault(method, pattern, list(statuses), retry_after)
        self.faults.append(fault)
        return fault

    def _fault(self, method: str, path: str) -> tuple[int, Any, dict[str, str]] | None:
        for fault in self.faults:
            if fault.method == method and fault.statuses and re.search(fault.pattern, path):
                status = fault.statuses.pop(0)
                fault.served += 1
                if status == 429:
                    body = {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}
                    headers = {
                        "Via": "1.1 google",
                        "Retry-After": str(max(1, math.ceil(fault.retry_after))),
                        "X-RateLimit-Scope": "user",
                    }
                    return 429, body, headers
                return status, {"code": 0, "message": f"{status}: fake server error"}, {}
        return None

    async def reconnect(self, *, close_code: int | None = None) -> None:
        """Ask every gateway connection to reconnect (op 7), or drop it with `close_code`: discord.py RESUMEs."""
        for ws in list(self._sockets):
            if close_code is None:
                await ws.send_str(json.dumps({"op": 7, "d": None}))
            else:
                await ws.close(code=close_code, message=b"fake gateway dropped the connection")

    async def _route(
        self, method: str, path: str, query: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, Any, dict[str, str]]:
        for verb, pattern, handler in self._table:
            if verb == method and (m := re.fullmatch(pattern, path)):
                return await handler(self, query=query, body=body, **m.groupdict())
        return 404, {"code": 0, "message": f"fake Discord has no {method} {path}"}, {}

    async def _me(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self.bot_user, {}

    async def _app(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        return (
            200,
            {
                "id": str(self.app_id),
                "name": "ragcord",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.owner,
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
            },
            {},
        )

    async def _gateway_info(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        return (
            200,
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1},
            },
            {},
        )

    async def _put_commands(self, body: Any, **_: Any) -> tuple[int, Any, dict[str, str]]:
        self.commands = []
        for cmd in body:
            self.commands.append(
                {
                    **cmd,
                    "id": str(self.snowflake()),
                    "application_id": str(self.app_id),
                    "version": str(self.snowflake()),
                    "type": cmd.get("type", 1),
                }
            )
        return 200, self.commands, {}

    async def _get_commands(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        return 200, self.commands, {}

    async def _get_channel(self, channel: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        data = self.channels.get(int(channel))
        return (200, data, {}) if data else (404, {"code": 10003, "message": "Unknown Channel"}, {})

    async def _history(self, channel: str, query: dict[str, str], **_: Any) -> tuple[int, Any, dict[str, str]]:
        ids = self._channel_ids.get(channel, [])
        lo = bisect.bisect_right(ids, int(query["after"])) if "after" in query else 0
        hi = bisect.bisect_left(ids, int(query["before"])) if "before" in query else len(ids)
        limit = int(query.get("limit", 50))
        # with `after`, the oldest `limit` after it; else the newest before `before`: newest first either way
        order = range(lo, hi) if "after" in query else range(hi - 1, lo - 1, -1)
        found: list[dict[str, Any]] = []
        for i in order:
            if len(found) >= limit:
                break
            m = self.messages.get(ids[i])
            if m is not None and not int(m.get("flags", 0)) & EPHEMERAL:
                found.append(m)
        return 200, found[::-1] if "after" in query else found, {}

    async def _archived_threads(self, channel: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        found = [
            c
            for c in self.channels.values()
            if c.get("parent_id") == channel and c["type"] == 11 and c["thread_metadata"]["archived"]
        ]
        return 200, {"threads": found, "members": [], "has_more": False}, {}

    async def _archived_private_threads(self, channel: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        """GET /channels/{id}/threads/archived/private: needs Manage Threads (here: from the bot's roles)."""
        parent = self.channels.get(int(channel)) or {}
        guild = self.guilds.get(int(parent.get("guild_id") or 0))
        if guild is None:
            return 404, {"code": 10003, "message": "Unknown Channel"}, {}
        mine = {guild["id"], *guild["members"].get(self.bot_user["id"], [])}
        granted = 0
        for role in guild["roles"]:
            if role["id"] in mine:
                granted |= int(role["permissions"])
        if not granted & (MANAGE_THREADS | (1 << 3)):  # Manage Threads, or Administrator
            return 403, {"code": 50013, "message": "Missing Permissions"}, {}
        found = [
            c
            for c in self.channels.values()
            if c.get("parent_id") == channel and c["type"] == 12 and c["thread_metadata"]["archived"]
        ]
        return 200, {"threads": found, "members": [], "has_more": False}, {}

    async def _get_message(self, channel: str, message: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        data = self.messages.get(int(message))
        if data is None or data["channel_id"] != channel:
            return 404, {"code": 10008, "message": "Unknown Message"}, {}
        return 200, data, {}

    async def _create_message(self, channel: str, body: dict[str, Any], **_: Any) -> tuple[int, Any, dict[str, str]]:
        target = self.channels.get(int(channel))
        if target is None:
            return 404, {"code": 10003, "message": "Unknown Channel"}, {}
        bad = self._check_message(body)
        if bad:
            return bad[0], bad[1], {}
        ref = body.get("message_reference") or {}
        reply_to = self.messages.get(int(ref["message_id"])) if ref.get("message_id") else None
        if ref.get("message_id") and reply_to is None and ref.get("fail_if_not_exists", True):
            return 400, {"code": 50035, "message": "Invalid Form Body", "errors": {"message_reference": "Unknown"}}, {}
        message = self._new_message(
            target,
            self.bot_user,
            body.get("content") or "",
            embeds=body.get("embeds") or [],
            reply_to=reply_to,
            flags=int(body.get("flags") or 0),
            components=body.get("components") or [],
        )
        await self._dispatch_message("MESSAGE_CREATE", message)
        return 200, message, {}

    async def _edit_message(
        self, channel: str, message: str, body: dict[str, Any], **_: Any
    ) -> tuple[int, Any, dict[str, str]]:
        return await self._edit(int(message), body)

    async def _delete_message(self, channel: str, message: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        data = self.messages.get(int(message))
        if data is None:
            return 404, {"code": 10008, "message": "Unknown Message"}, {}
        await self.delete_message(self.channels[int(channel)], data)
        return 204, None, {}

    async def _create_thread(
        self, channel: str, message: str, body: dict[str, Any], **_: Any
    ) -> tuple[int, Any, dict[str, str]]:
        parent = self.channels[int(channel)]
        thread = {
            "id": message,
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": self.bot_user["id"],
            "name": body["name"],
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "flags": 0,
            "total_message_sent": 0,
            "last_message_id": None,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration") or 1440,
                "archive_timestamp": now_iso(),
                "locked": False,
            },
        }
        self.channels[int(message)] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 200, thread, {}

    async def _thread_member(self, channel: str, user: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        members = self.thread_members.get(int(channel))
        thread = self.channels.get(int(channel))
        if thread is None or thread["type"] not in (11, 12):
            return 404, {"code": 10003, "message": "Unknown Channel"}, {}
        if members is not None and user not in members:
            return 404, {"code": 10007, "message": "Unknown Member"}, {}
        return 200, {"id": channel, "user_id": user, "join_timestamp": now_iso(), "flags": 0}, {}

    async def _no_content(self, **_: Any) -> tuple[int, Any, dict[str, str]]:
        return 204, None, {}

    # -- interactions -------------------------------------------------------------------------
    async def _callback(self, iid: str, token: str, body: dict[str, Any], **_: Any) -> tuple[int, Any, dict[str, str]]:
        inter = self.interactions.get(token)
        if inter is None or time.monotonic() - inter.created > self.interaction_timeout:
            return 404, {"code": 10062, "message": "Unknown interaction"}, {}
        if inter.callback is not None:
            return 400, {"code": 40060, "message": "Interaction has already been acknowledged."}, {}
        inter.callback, inter.callback_at = body, time.monotonic()
        kind, data = body["type"], body.get("data") or {}
        info: dict[str, Any] = {"id": str(inter.id), "type": inter.type}
        resource: dict[str, Any] = {"type": kind}
        if kind == 8:
            inter.choices = data.get("choices", [])
        elif kind in (6, 7) and inter.message_id is not None:  # a component's message: (deferred) update
            inter.original_id = inter.message_id
            if kind == 7:
                status, message, _ = await self._edit(inter.message_id, data)
                if status != 200:
                    inter.callback = None
                    return status, message, {}
                resource["message"] = message
        elif kind in (4, 5):
            bad = self._check_message(data) if kind == 4 else None
            if bad:
                inter.callback = None
                return bad[0], bad[1], {}
            flags = int(data.get("flags") or 0) | (LOADING if kind == 5 else 0)
            channel = self.channels[inter.channel_id]
            message = self._new_message(
                channel,
                self.bot_user,
                data.get("content") or "",
                embeds=data.get("embeds") or [],
                flags=flags,
                webhook=True,
                components=data.get("components") or [],
            )
            inter.original_id = int(message["id"])
            await self._dispatch_message("MESSAGE_CREATE", message)
            info.update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=bool(flags & EPHEMERAL),
            )
            resource["message"] = message
        return 200, {"interaction": info, "resource": resource}, {}

    def _interaction_message(self, token: str, message: str) -> int | None:
        inter = self.interactions.get(token)
        if inter is None:
            return None
        return inter.original_id if message == "@original" else int(message)

    async def _followup(self, token: str, body: dict[str, Any], **_: Any) -> tuple[int, Any, dict[str, str]]:
        inter = self.interactions.get(token)
        if inter is None or inter.callback is None:
            return 404, {"code": 10015, "message": "Unknown Webhook"}, {}
        bad = self._check_message(body)
        if bad:
            return bad[0], bad[1], {}
        original = self.messages.get(inter.original_id or 0)
        if original is not None and int(original["flags"]) & LOADING:
            # Discord: the first follow-up after a "thinking" defer replaces the loading message.
            return await self._edit(int(original["id"]), body)
        flags = int(body.get("flags") or 0)
        channel = self.channels[inter.channel_id]
        message = self._new_message(
            channel,
            self.bot_user,
            body.get("content") or "",
            embeds=body.get("embeds") or [],
            flags=flags,
            webhook=True,
            components=body.get("components") or [],
        )
        inter.followup_ids.append(int(message["id"]))
        await self._dispatch_message("MESSAGE_CREATE", message)
        return 200, message, {}

    async def _webhook_get(self, token: str, message: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        mid = self._interaction_message(token, message)
        data = self.messages.get(mid or 0)
        return (200, data, {}) if data else (404, {"code": 10008, "message": "Unknown Message"}, {})

    async def _webhook_edit(
        self, token: str, message: str, body: dict[str, Any], **_: Any
    ) -> tuple[int, Any, dict[str, str]]:
        mid = self._interaction_message(token, message)
        if mid is None:
            return 404, {"code": 10015, "message": "Unknown Webhook"}, {}
        return await self._edit(mid, body)

    async def _webhook_delete(self, token: str, message: str, **_: Any) -> tuple[int, Any, dict[str, str]]:
        mid = self._interaction_message(token, message)
        data = self.messages.get(mid or 0)
        if data is None:
            return 404, {"code": 10008, "message": "Unknown Message"}, {}
        await self.delete_message(self.channels[int(data["channel_id"])], data)
        return 204, None, {}

    _table: list[tuple[str, str, Callable[..., Any]]] = [
        ("GET", r"/users/@me", _me),
        ("GET", r"/oauth2/applications/@me", _app),
        ("GET", r"/gateway(?:/bot)?", _gateway_info),
        ("PUT", r"/applications/\d+/commands", _put_commands),
        ("GET", r"/applications/\d+/commands", _get_commands),
        ("PUT", r"/applications/\d+/guilds/\d+/commands", _put_commands),
        ("GET", r"/channels/(?P<channel>\d+)", _get_channel),
        ("GET", r"/channels/(?P<channel>\d+)/messages", _history),
        ("POST", r"/channels/(?P<channel>\d+)/messages", _create_message),
        ("GET", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", _get_message),
        ("GET", r"/channels/(?P<channel>\d+)/threads/archived/public", _archived_threads),
        ("GET", r"/channels/(?P<channel>\d+)/threads/archived/private", _archived_private_threads),
        ("PATCH", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", _edit_message),
        ("DELETE", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)", _delete_message),
        ("POST", r"/channels/(?P<channel>\d+)/messages/(?P<message>\d+)/threads", _create_thread),
        ("POST", r"/channels/\d+/typing", _no_content),
        ("GET", r"/channels/(?P<channel>\d+)/thread-members/(?P<user>\d+)", _thread_member),
        ("PUT", r"/channels/\d+/messages/\d+/reactions/.+", _no_content),
        ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback", _callback),
        ("POST", r"/webhooks/\d+/(?P<token>[^/]+)", _followup),
        ("GET", r"/webhooks/\d+/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)", _webhook_get),
        ("PATCH", r"/webhooks/\d+/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)", _webhook_edit),
        ("DELETE", r"/webhooks/\d+/(?P<token>[^/]+)/messages/(?P<message>@original|\d+)", _webhook_delete),
    ]
