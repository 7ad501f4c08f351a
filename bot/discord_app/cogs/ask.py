"""Asking: a mention, a reply to an answer, a message in a bot-opened thread, or /ask.

A reply chain (or the bot's thread) is the conversation: its earlier turns become
the history the core uses to make a follow-up question retrievable on its own.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answer import Turn
from bot.discord_app.client import say
from bot.discord_app.errors import failure_text, log_failure
from bot.discord_app.streaming import NO_MENTIONS, ChannelTarget, InteractionTarget, StreamingReply

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot

log = logging.getLogger(__name__)

_STATUS_LINE = re.compile(r"^-# .*$", re.MULTILINE)


def question_text(message: discord.Message, bot_id: int) -> str:
    """The message without the bot's mention."""
    return re.sub(rf"<@!?{bot_id}>", "", message.content).strip()


def answer_text(message: discord.Message) -> str:
    """An answer message without its status lines (header, "done", notes), and without the
    evidence quote under a model-written answer (the answer itself is the turn)."""
    text = _STATUS_LINE.sub("", message.content).strip()
    answer, quote, _ = text.partition("\n> “")
    return answer.strip() if quote and answer.strip() else text


def thread_name(question: str) -> str:
    name = " ".join(question.split()) or "question"
    return name if len(name) <= 90 else name[:89].rsplit(" ", 1)[0] + "…"


class Conversation:
    """Builds the history of a question from its reply chain or the bot's thread."""

    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    @property
    def me(self) -> int:
        assert self.bot.user is not None
        return self.bot.user.id

    async def referenced(self, message: discord.Message) -> discord.Message | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        if ref.cached_message is not None:
            return ref.cached_message
        try:
            return await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    def in_bot_thread(self, channel: object) -> bool:
        return isinstance(channel, discord.Thread) and channel.owner_id == self.me

    async def history(self, message: discord.Message, turns: int) -> tuple[list[Turn], bool]:
        """(earlier turns, oldest first; whether older turns were left out)."""
        if turns <= 0:
            return [], False
        if message.reference is not None:
            chain = await self._reply_chain(message, turns)
        elif self.in_bot_thread(message.channel):
            chain = await self._thread_messages(message, turns)
        else:
            return [], False
        return self._turns(chain, turns)

    async def _reply_chain(self, message: discord.Message, turns: int) -> list[discord.Message]:
        chain: list[discord.Message] = []
        current = await self.referenced(message)
        limit = (turns + 1) * 6  # answers may span several messages
        while current is not None and len(chain) < limit:
            chain.append(current)
            current = await self.referenced(current)
        chain.reverse()
        return chain

    async def _thread_messages(self, message: discord.Message, turns: int) -> list[discord.Message]:
        thread = message.channel
        assert isinstance(thread, discord.Thread)
        found = [m async for m in thread.history(limit=(turns + 1) * 6, before=message)]
        found.reverse()
        if not found or found[0].id != thread.id:
            starter = await self._starter(thread)
            if starter is not None:
                found.insert(0, starter)
        return [m for m in found if m.type in (discord.MessageType.default, discord.MessageType.reply)]

    async def _starter(self, thread: discord.Thread) -> discord.Message | None:
        if not isinstance(thread.parent, discord.TextChannel):
            return None
        try:
            return await thread.parent.fetch_message(thread.id)
        except discord.HTTPException:
            return None

    def _turns(self, chain: list[discord.Message], turns: int) -> tuple[list[Turn], bool]:
        out: list[list[str]] = []  # [question, answer parts...]
        for m in chain:
            if m.author.id == self.me:
                if not out:
                    out.append([""])
                out[-1].append(answer_text(m))
            else:
                out.append([question_text(m, self.me)])
        result = [Turn(q[0], "\n".join(p for p in q[1:] if p)) for q in out]
        return result[-turns:], len(result) > turns


class Ask(commands.Cog):
    def __init__(self, bot: RagBot) -> None:
        self.bot = bot
        self.conversation = Conversation(bot)

    # -- messages ---------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_ragcord_message(self, message: discord.Message) -> None:
        try:
            if await self._is_question(message):
                await self.answer_message(message)
        except Exception as exc:
            ref = log_failure(log, f"answering message {message.id} failed", exc)
            with contextlib.suppress(discord.HTTPException):
                await message.reply(f"⚠️ {failure_text(ref)}", allowed_mentions=NO_MENTIONS)

    async def _is_question(self, message: discord.Message) -> bool:
        bot = self.bot
        if bot.user is None or message.author.bot or message.author.id == bot.user.id:
            return False
        if message.guild is None:
            return bot.settings.allow_dms
        if not bot.channel_allowed(message.channel):
            return False
        if bot.user in message.mentions or self.conversation.in_bot_thread(message.channel):
            return True
        if message.reference is not None:
            parent = await self.conversation.referenced(message)
            return parent is not None and parent.author.id == bot.user.id
        return False

    async def answer_message(self, message: discord.Message) -> None:
        bot = self.bot
        assert bot.user is not None
        question = question_text(message, bot.user.id)
        if not question:
            await message.reply(
                "Ask me a question about this server's documents, e.g. `@me how do I deploy?`",
                allowed_mentions=NO_MENTIONS,
            )
            return
        wait = bot.queue.rate.check(message.author.id)
        if wait:
            await message.reply(bot.queue.rate.message(wait), allowed_mentions=NO_MENTIONS)
            return
        turns = bot.settings.history_turns
        history, truncated = await self.conversation.history(message, turns)
        header = f"-# using the last {turns} turns of this conversation" if truncated else ""
        channel: discord.abc.Messageable = message.channel
        reference: discord.Message | None = message
        if bot.settings.thread_per_question and isinstance(message.channel, discord.TextChannel):
            try:
                channel = await message.create_thread(name=thread_name(question))
                reference = None
            except discord.HTTPException:
                log.warning("cannot open a thread in #%s; answering in place", message.channel, exc_info=True)
        namespace = bot.namespace_for(message.guild)
        # everyone in the channel sees the answer (a thread opened for it has the channel's audience)
        scopes = await bot.readable.for_reply(message.author, message.guild, message.channel, private=False)
        writer = StreamingReply(ChannelTarget(channel, reference), interval=bot.settings.edit_interval, header=header)
        label = f"message {message.id}"
        await bot.answer(writer, message.author.id, namespace, question, history, label=label, scopes=scopes)

    # -- /ask -------------------------------------------------------------------------------
    @app_commands.command(name="ask", description="Ask a question about this server's documents.")
    @app_commands.describe(
        question="What you want to know, in plain words.",
        private="Show the answer only to you; it may then use every channel you can read "
        "(default: everyone here sees it, so it uses only what this channel's members share).",
    )
    async def ask(self, interaction: discord.Interaction[RagBot], question: str, private: bool = False) -> None:
        bot = self.bot
        wait = bot.queue.rate.check(interaction.user.id)
        if wait:
            await say(interaction, bot.queue.rate.message(wait), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=private, thinking=True)
        namespace = bot.namespace_for(interaction.guild)
        scopes = await bot.readable.for_reply(interaction.user, interaction.guild, interaction.channel, private=private)
        writer = StreamingReply(InteractionTarget(interaction, ephemeral=private), interval=bot.settings.edit_interval)
        label = f"/ask {interaction.id}"
        await bot.answer(writer, interaction.user.id, namespace, question, (), label=label, scopes=scopes)


async def setup(bot: RagBot) -> None:
    await bot.add_cog(Ask(bot))
