"""/status, and the owner's `@bot sync` text command that registers the slash commands."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import PurePath
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.streaming import NO_MENTIONS

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def public_name(name: str) -> str:
    """A model or encoder name without its server URL or folder (those are for admins)."""
    name = name.split(" @ ", 1)[0]
    return PurePath(name).name or name


class StatusCog(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    @app_commands.command(name="status", description="Model, documents, queue and uptime of the bot.")
    @app_commands.describe(private="Show the status only to you (default: yes).")
    async def status(self, interaction: discord.Interaction[RagBot], private: bool = True) -> None:
        await interaction.response.defer(ephemeral=private, thinking=True)
        bot = self.bot
        admin = interaction.guild is not None and bot.is_admin(interaction.user, interaction.permissions)
        namespace = bot.namespace_for(interaction.guild)
        st = await asyncio.to_thread(bot.service.status, namespace)
        queue = bot.queue
        embed = discord.Embed(title="ragcord status", colour=discord.Colour.blurple())
        embed.add_field(name="Model", value=st.model if admin else public_name(st.model), inline=False)
        embed.add_field(name="Embedder", value=st.embedder if admin else public_name(st.embedder), inline=False)
        # indexed channel history apart from documents: its day windows are documents in the store
        docs = await asyncio.to_thread(bot.service.documents, namespace)
        chat = [d for d in docs if d.kind == "chat"]
        embed.add_field(name="Documents", value=str(st.documents - len(chat)))
        embed.add_field(name="Chunks", value=str(st.chunks - sum(d.chunks for d in chat)))
        history = bot.get_cog("History")
        if history is not None and interaction.guild is not None:
            messages, channels, _files = await asyncio.to_thread(history.log.totals, interaction.guild.id)  # type: ignore[attr-defined]
            if channels:
                where = f"{channels} channel{'s' * (channels != 1)}, {len(chat)} day{'s' * (len(chat) != 1)}"
                embed.add_field(name="Indexed messages", value=f"{messages} ({where})")
        state = "generating" if queue.busy else "idle"
        embed.add_field(name="Queue", value=f"{queue.waiting} waiting ({state})")
        embed.add_field(name="Uptime", value=duration(time.monotonic() - bot.started_at))
        embed.add_field(name="Answered", value=str(queue.completed))
        # paths and URLs only to admins (by the id check); private by default, but `private: False` posts it
        embed.set_footer(text=f"store: {st.store} · namespace {namespace}" if admin else f"namespace {namespace}")
        await interaction.followup.send(embed=embed, allowed_mentions=NO_MENTIONS)

    @commands.command(name="sync", hidden=True)
    @commands.is_owner()
    async def sync(self, ctx: commands.Context[RagBot]) -> None:
        """Register the slash commands with Discord (owner only): `@ragcord sync`."""
        synced = await self.bot.tree.sync()
        log.info("synced %d slash commands at the owner's request", len(synced))
        await ctx.reply(f"Synced {len(synced)} slash commands.", allowed_mentions=NO_MENTIONS)


async def setup(bot: RagBot) -> None:
    await bot.add_cog(StatusCog(bot))
