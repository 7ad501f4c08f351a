"""`RagBot`: the `commands.Bot` that owns the service, the generation queue and the cogs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.answer import Answer, AnswerEvent, Turn
from bot.discord_app.errors import failure_text, log_failure
from bot.discord_app.permissions import ReadableScopes
from bot.discord_app.queue import GenerationQueue, Job, Producer, RateLimiter, failed_answer, position_text
from bot.discord_app.streaming import NO_MENTIONS, StreamingReply
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.service import RagService

log = logging.getLogger(__name__)


async def _events(events: Iterable[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    """Events computed already (no model ran), as the stream a writer consumes."""
    for event in events:
        yield event


COGS = (
    "bot.discord_app.cogs.ask",
    "bot.discord_app.cogs.documents",
    "bot.discord_app.cogs.summarize",
    "bot.discord_app.cogs.watcher",
    "bot.discord_app.cogs.status",
    "bot.discord_app.cogs.access",
    "bot.discord_app.cogs.history",
)


def configure_endpoints(settings: Settings) -> Callable[[], None]:
    """Point discord.py at a Discord-compatible server instead of Discord (before login); returns the undo.

    discord.py (2.7) has no per-client option for the REST base or the gateway URL: they are the
    class attributes `Route.BASE` (also used by interaction webhooks) and
    `DiscordWebSocket.DEFAULT_GATEWAY`. So they change only when the settings ask for it, and the
    bot puts them back when it closes.
    """
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)

    def restore() -> None:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved

    return restore


async def say(interaction: discord.Interaction, text: str, *, ephemeral: bool = False) -> None:
    """Answer an interaction with text, as its response or (after a defer) a follow-up; never pings."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
    else:
        await interaction.response.send_message(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)


class Refused(app_commands.CheckFailure):
    """An expected refusal (permissions, channel); its message is shown to the user, privately."""


class RagTree(app_commands.CommandTree["RagBot"]):
    async def interaction_check(self, interaction: discord.Interaction[RagBot]) -> bool:
        """The channel policy for every slash command (autocomplete is just left unanswered)."""
        bot = interaction.client
        refusal = ""
        if interaction.guild is None and not bot.settings.allow_dms:
            refusal = "I only answer in servers, not in direct messages."
        elif interaction.guild is not None and not bot.channel_allowed(interaction.channel):
            refusal = f"I only answer in {bot.allowed_channels_text()}."
        if refusal and interaction.type is not discord.InteractionType.autocomplete:
            raise Refused(refusal)
        return not refusal

    async def on_error(self, interaction: discord.Interaction[RagBot], error: app_commands.AppCommandError) -> None:
        """The last layer: refusals become a private message; anything else is logged with its traceback."""
        if isinstance(error, app_commands.CheckFailure):
            text = str(error) or "You can't use this command here."
        else:
            original = getattr(error, "original", error)
            command = interaction.command.name if interaction.command else "?"
            text = failure_text(log_failure(log, f"/{command} failed", original))
        try:
            await say(interaction, text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not report an error to the user", exc_info=True)


class RagBot(commands.Bot):
    def __init__(
        self,
        settings: Settings,
        *,
        service: RagService | None = None,
        service_factory: Callable[[], RagService] | None = None,
        sync_commands: bool = False,
        **options: object,
    ) -> None:
        if service is None and service_factory is None:
            raise ValueError("RagBot needs a service or a service_factory")
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: switched on in the Developer Portal
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            tree_cls=RagTree,
            help_command=None,
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self._service = service
        self._service_factory = service_factory
        self.sync_commands = sync_commands
        self.queue = GenerationQueue(rate_limit_per_minute=settings.rate_limit_per_minute)
        self._arrivals: asyncio.Future[None] | None = None  # the latest question's turn to be queued
        self._ingest_locks: dict[str, asyncio.Lock] = {}  # one per namespace: a slow file holds up only its server
        self.uploads_per_user = RateLimiter(settings.upload_files_per_user_hour, window=3600.0)
        self.uploads_per_guild = RateLimiter(settings.upload_files_per_guild_hour, window=3600.0)
        self.readable = ReadableScopes()  # what each member may read (cached; cogs/access.py invalidates it)
        self.started_at = time.monotonic()
        self._restore_endpoints: Callable[[], None] | None = None

    @property
    def service(self) -> RagService:
        if self._service is None:
            raise RuntimeError("the service is not built yet (setup_hook has not run)")
        return self._service

    # -- lifecycle ------------------------------------------------------------------------
    async def login(self, token: str) -> None:
        if self._restore_endpoints is None:
            self._restore_endpoints = configure_endpoints(self.settings)
        await super().login(token)

    async def setup_hook(self) -> None:
        if self._service is None:
            assert self._service_factory is not None
            log.info("loading the store, encoder and model…")
            self._service = await asyncio.to_thread(self._service_factory)
        await asyncio.to_thread(self._service.warm)
        self.queue.start()
        for extension in COGS:
            await self.load_extension(extension)
        if self.sync_commands:
            synced = await self.tree.sync()
            log.info("synced %d slash commands", len(synced))

    async def on_ready(self) -> None:
        s = self.settings
        if s.admin_role.strip() and not s.admin_role.strip().isdigit() and not (s.admin_role_ids or s.admin_user_ids):
            log.warning(
                "RAGCORD_ADMIN_ROLE=%r matches admins by role NAME: anyone who may create roles can make one. "
                "Set RAGCORD_ADMIN_ROLE_IDS (the role's id: Server Settings > Roles > Copy Role ID) instead.",
                s.admin_role,
            )
        namespaces = [self.namespace_for(g) for g in self.guilds]
        counts = await asyncio.to_thread(lambda: sum(len(self.service.documents(ns)) for ns in namespaces))
        model = self.service.model_name
        log.info("ready as %s in %d servers: model %s, %d documents", self.user, len(self.guilds), model, counts)

    async def close(self) -> None:
        await self.queue.close()
        await super().close()
        if self._restore_endpoints is not None:
            self._restore_endpoints()
            self._restore_endpoints = None

    async def on_message(self, message: discord.Message) -> None:
        """Owner text commands (`@bot sync`) run; everything else may be a question."""
        if message.author.bot:
            return
        if self.user is not None and self.user in message.mentions:
            ctx = await self.get_context(message)
            if ctx.valid and await self.is_owner(message.author):
                await self.invoke(ctx)
                return
        self.dispatch("ragcord_message", message)

    # -- policy -------------------------------------------------------------------------------
    def namespace_for(self, guild: discord.abc.Snowflake | None) -> str:
        return f"g{guild.id}" if guild is not None else self.settings.dm_namespace

    def channel_allowed(self, channel: object) -> bool:
        allowed = self.settings.allowed_channels
        if not allowed or channel is None:
            return True
        ids = {getattr(channel, "id", None), getattr(channel, "parent_id", None)}
        return any(i in allowed for i in ids if i is not None)

    def allowed_channels_text(self) -> str:
        return ", ".join(f"<#{c}>" for c in self.settings.allowed_channels)

    def ingest_lock(self, namespace: str) -> asyncio.Lock:
        """Serialises ingest and forget within one namespace (server); other servers go on."""
        return self._ingest_locks.setdefault(namespace, asyncio.Lock())

    def is_admin(self, member: discord.abc.User, permissions: discord.Permissions | None = None) -> bool:
        """Guild administrators (Administrator or Manage Server), RAGCORD_ADMIN_USER_IDS, and members of a
        RAGCORD_ADMIN_ROLE_IDS role. Only while no ids are set, RAGCORD_ADMIN_ROLE names a role, with a warning."""
        perms = permissions or getattr(member, "guild_permissions", None)
        if perms is not None and (perms.manage_guild or perms.administrator):
            return True
        settings = self.settings
        if member.id in settings.admin_user_ids:
            return True
        roles = getattr(member, "roles", [])
        if settings.admin_role_ids or settings.admin_user_ids:
            return any(r.id in settings.admin_role_ids for r in roles)
        wanted = settings.admin_role.strip()
        if not wanted:
            return False
        if wanted.isdigit():
            return any(r.id == int(wanted) for r in roles)
        for role in roles:
            if role.name.lower() == wanted.lower():
                log.warning(
                    "%s (%s) is treated as an admin because of a role NAMED %r; anyone who may create roles can "
                    "make one. Set RAGCORD_ADMIN_ROLE_IDS=%s to match this role by id instead.",
                    member,
                    member.id,
                    role.name,
                    role.id,
                )
                return True
        return False

    def admin_requirement(self, command: str) -> str:
        settings = self.settings
        if settings.admin_role_ids:
            roles = " or ".join(f"<@&{r}>" for r in settings.admin_role_ids)
            needed = f"the {roles} role or the **Manage Server** permission"
        elif settings.admin_role.strip() and not settings.admin_user_ids:
            name = discord.utils.escape_markdown(settings.admin_role.strip())
            needed = f"the **{name}** role or the **Manage Server** permission"
        else:
            needed = "the **Manage Server** permission"
        return f"/{command} needs {needed}."

    # -- generation -------------------------------------------------------------------------
    async def answer(
        self,
        writer: StreamingReply,
        user_id: int,
        namespace: str,
        question: str,
        history: Sequence[Turn],
        *,
        label: str,
        scopes: frozenset[str] | None = None,
    ) -> Answer | None:
        """Acknowledge, show the reader's evidence at once (retrieval runs outside the model's
        queue), then queue the model's part; a question that needs no model ends here.

        `scopes`: what the reply may show (bot/discord_app/permissions.py); None only outside Discord.

        Questions reach the model's queue in the order they arrived, however long each one's
        retrieval takes: each waits for the questions before it to be queued (or done)."""
        earlier, turn = self._arrivals, asyncio.get_running_loop().create_future()
        self._arrivals = turn
        try:
            await writer.start(position_text(self.queue.ahead_of_new(user_id)))
            if writer.broken:
                return None
            try:
                prepared = await asyncio.to_thread(self.service.prepare_answer, namespace, question, history, scopes)
            except Exception:
                await writer.finish(failed_answer(log_failure(log, f"retrieval failed ({label})"), question))
                return writer.answer
            if prepared.answer.lead is not None:
                writer.set_lead(prepared.answer.lead)
            if prepared.done:
                turn.set_result(None)
                await writer.consume(_events(self.service.finish_answer(prepared)))
                return writer.answer
            job = Job(
                user_id,
                lambda: self.service.finish_answer(prepared),
                writer.consume,
                on_position=writer.on_position,
                label=label,
            )
            if earlier is not None:
                await asyncio.shield(earlier)
            finished = self.queue.submit(job)
            turn.set_result(None)
            await finished
            return writer.answer
        finally:
            if not turn.done():
                turn.set_result(None)

    async def generate(self, writer: StreamingReply, user_id: int, produce: Producer, *, label: str) -> Answer | None:
        """Acknowledge with the writer's first message, queue the generation, wait for the answer."""
        await writer.start(position_text(self.queue.ahead_of_new(user_id)))
        if writer.broken:
            return None
        job = Job(user_id, produce, writer.consume, on_position=writer.on_position, label=label)
        await self.queue.submit(job)
        return writer.answer
