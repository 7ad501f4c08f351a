"""`/forget`'s confirmation: the exact document, what will go, and two buttons.

Only the admin who asked may press them (the message is private to them anyway); a
press after the answer or the timeout changes nothing. The removal itself runs under
the server's ingest lock, like ingest does.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

import discord

from bot.discord_app.display import quoted
from bot.discord_app.errors import failure_text, log_failure
from bot.discord_app.streaming import NO_MENTIONS
from bot.service import DocumentNotFound

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot
    from store.types import DocumentInfo

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 60.0
YES, NO = "ragcord:forget:yes", "ragcord:forget:no"


def exact_document(docs: Sequence[DocumentInfo], key: str) -> DocumentInfo | None:
    """The document whose id is `key` (what the autocomplete sends); else the one whose exact title,
    source or file name is `key`, when only one has it. Never a partial match."""
    key = key.strip()
    for doc in docs:
        if doc.doc_id == key:
            return doc
    lowered = key.lower()
    same = [
        d for d in docs if lowered in (d.title.lower(), d.source.lower(), PurePath(d.source).name.lower()) and lowered
    ]
    return same[0] if len(same) == 1 else None


def describe(doc: DocumentInfo) -> str:
    """What /forget will remove, in one line."""
    pages = f", {doc.pages} pages" if doc.pages else ""
    chunks = f"{doc.chunks} chunk{'s' if doc.chunks != 1 else ''}"
    name = re.split(r"[/\\:]", doc.source)[-1] or doc.source  # a path, or discord:{guild}:{channel}:{file}
    return f"**{quoted(doc.title or doc.source)}** ({quoted(name)}, {doc.kind}{pages}, {chunks})"


class ConfirmForget(discord.ui.View):
    def __init__(
        self, bot: RagBot, origin: discord.Interaction[RagBot], namespace: str, doc: DocumentInfo, *, timeout: float
    ) -> None:
        super().__init__(timeout=timeout)
        self.bot = bot
        self.origin = origin
        self.namespace = namespace
        self.doc = doc
        self.answered = False

    async def interaction_check(self, interaction: discord.Interaction[RagBot]) -> bool:  # type: ignore[override]
        if interaction.user.id != self.origin.user.id:
            await interaction.response.send_message(
                "Only the admin who ran /forget can confirm it.", ephemeral=True, allowed_mentions=NO_MENTIONS
            )
            return False
        return not self.answered

    @discord.ui.button(label="Forget", style=discord.ButtonStyle.danger, custom_id=YES)
    async def forget(self, interaction: discord.Interaction[RagBot], button: discord.ui.Button[ConfirmForget]) -> None:
        self.answered = True
        self.stop()
        what = describe(self.doc)
        await interaction.response.edit_message(content=f"⏳ Forgetting {what}…", view=None)
        service = self.bot.service
        try:
            async with self.bot.ingest_lock(self.namespace):
                removed = await asyncio.to_thread(service.forget, self.namespace, self.doc.doc_id)
                await asyncio.to_thread(service.prepare_index, self.namespace)
            text = f"Forgot **{quoted(removed.title or removed.source)}** ({removed.chunks} chunks)."
        except DocumentNotFound:
            text = f"Nothing removed: {what} was already removed."
        except Exception as exc:
            text = "⚠️ " + failure_text(log_failure(log, f"/forget {self.doc.doc_id} failed", exc), "Nothing removed")
        log.info("/forget %s in %s by %s: %s", self.doc.doc_id, self.namespace, interaction.user.id, text)
        await interaction.edit_original_response(content=text, view=None, allowed_mentions=NO_MENTIONS)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id=NO)
    async def cancel(self, interaction: discord.Interaction[RagBot], button: discord.ui.Button[ConfirmForget]) -> None:
        self.answered = True
        self.stop()
        await interaction.response.edit_message(content=f"Nothing removed: {describe(self.doc)} stays.", view=None)

    async def on_timeout(self) -> None:
        if self.answered:
            return
        self.answered = True
        try:
            await self.origin.edit_original_response(
                content=f"Nothing removed: {describe(self.doc)} was not confirmed within {self.timeout:g} s.",
                view=None,
                allowed_mentions=NO_MENTIONS,
            )
        except discord.HTTPException:
            log.info("could not mark an unconfirmed /forget as expired", exc_info=True)
