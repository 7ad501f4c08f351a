"""Keeps the cache of what each member may read (`RagBot.readable`) in step with the gateway.

Roles, channel overwrites, members and threads change what a member may read: each such
event drops the cached sets it may affect (bot/discord_app/permissions.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot


class Access(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    def _drop(self, guild_id: int | None, member_id: int | None = None) -> None:
        if guild_id is not None:
            self.bot.readable.invalidate(guild_id, member_id)

    @commands.Cog.listener()
    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        self._drop(after.guild.id, after.id)

    @commands.Cog.listener()
    async def on_raw_member_remove(self, payload: discord.RawMemberRemoveEvent) -> None:
        self._drop(payload.guild_id, payload.user.id)

    @commands.Cog.listener()
    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        self._drop(after.guild.id)

    @commands.Cog.listener()
    async def on_guild_role_delete(self, role: discord.Role) -> None:
        self._drop(role.guild.id)

    @commands.Cog.listener()
    async def on_guild_channel_update(self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel) -> None:
        self._drop(after.guild.id)

    @commands.Cog.listener()
    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        self._drop(channel.guild.id)

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        self._drop(channel.guild.id)

    @commands.Cog.listener()
    async def on_thread_update(self, before: discord.Thread, after: discord.Thread) -> None:
        self._drop(after.guild.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        self._drop(payload.guild_id)

    @commands.Cog.listener()
    async def on_thread_member_join(self, member: discord.ThreadMember) -> None:
        self._drop(member.thread.guild.id, member.id)

    @commands.Cog.listener()
    async def on_raw_thread_member_remove(self, payload: discord.RawThreadMembersUpdate) -> None:
        self._drop(payload.guild_id)


async def setup(bot: RagBot) -> None:
    await bot.add_cog(Access(bot))
