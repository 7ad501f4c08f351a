"""This server's documents: /ingest, /sources, /forget (and the document autocomplete)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app.client import Refused, say
from bot.discord_app.confirm import CONFIRM_SECONDS, ConfirmForget, describe, exact_document
from bot.discord_app.display import quoted
from bot.discord_app.errors import log_failure
from bot.discord_app.permissions import document_scope
from bot.discord_app.streaming import NO_MENTIONS, InteractionTarget, StreamingReply
from ingest.fetch import FetchOptions
from ingest.limits import check_declared_size
from ingest.loaders import LoadError
from store.protocol import STORE_DAMAGED_NOTICE, STORE_OUTAGE_NOTICE, StoreDamaged, StoreUnavailable
from store.types import GUILD_SCOPE

if TYPE_CHECKING:
    from bot.discord_app.client import RagBot
    from bot.settings import Settings
    from ingest.pipeline import IngestProgress, IngestResult

log = logging.getLogger(__name__)

T = TypeVar("T")
PAGE_SIZE = 10
RESULT_WORDS = {"skipped": "refused"}
VISIBILITY = [
    app_commands.Choice(name="this channel's readers", value="channel"),
    app_commands.Choice(name="the whole server", value="public"),
]


def admin_only() -> Callable[[T], T]:
    """Slash-command check: the admin role or Manage Server; the refusal says what is needed."""

    async def predicate(interaction: discord.Interaction[RagBot]) -> bool:
        bot = interaction.client
        command = interaction.command.name if interaction.command else "this command"
        if interaction.guild is None:
            raise Refused(f"/{command} only works in a server.")
        if not bot.is_admin(interaction.user, interaction.permissions):
            raise Refused(f"Sorry: {bot.admin_requirement(command)}")
        return True

    return app_commands.check(predicate)


async def document_choices(interaction: discord.Interaction[RagBot], current: str) -> list[app_commands.Choice[str]]:
    """Documents of this server only (its namespace), filtered by what was typed."""
    bot = interaction.client
    namespace = bot.namespace_for(interaction.guild)
    scopes = await bot.readable.scopes(interaction.user, interaction.guild)  # only the typist sees the choices
    docs = await asyncio.to_thread(bot.service.documents, namespace, scopes)
    key = current.strip().lower()
    choices = []
    for doc in docs:
        name = doc.title or doc.source
        if key and key not in name.lower() and key not in doc.source.lower():
            continue
        choices.append(app_commands.Choice(name=name[:100], value=doc.doc_id))
        if len(choices) == 25:
            break
    return choices


def result_table(rows: list[tuple[str, str, str, str]]) -> str:
    """A fixed-width table in a code block (Discord renders no Markdown tables)."""
    head = ("file", "result", "chunks", "note")
    width = min(max(len(r[0]) for r in [head, *rows]), 28)

    def line(r: tuple[str, str, str, str]) -> str:
        file, result, chunks, note = (cell.replace("`", "'") for cell in r)  # no cell closes the code block
        name = file if len(file) <= width else file[: width - 1] + "…"
        return f"{name:<{width}}  {result:<9} {chunks:>6}  {note}".rstrip()

    return "```\n" + "\n".join(line(r) for r in [head, *rows]) + "\n```"


def result_row(filename: str, result: IngestResult) -> tuple[str, str, str, str]:
    note = result.reason
    if not note and result.pages:
        note = f"{result.pages} pages"
    if result.warnings:
        note = "; ".join([note, *result.warnings]) if note else "; ".join(result.warnings)
    chunks = str(result.chunks) if result.status in ("added", "updated", "unchanged") else "-"
    return filename, RESULT_WORDS.get(result.status, result.status), chunks, note[:120]


def declared_size_refusal(attachment: discord.Attachment, settings: Settings) -> str:
    """Why an attachment is refused from the size Discord declares, before downloading it ('' if it is not)."""
    try:
        check_declared_size(attachment.size, attachment.filename, settings.max_file_bytes)
    except LoadError as exc:
        return str(exc)
    return ""


class Documents(commands.Cog):
    confirm_seconds = CONFIRM_SECONDS

    def __init__(self, bot: RagBot) -> None:
        self.bot = bot

    # -- /ingest ----------------------------------------------------------------------------
    @app_commands.command(
        name="ingest",
        description="Add or update documents (PDF, Office, OpenDocument, EPUB, RTF, e-mail, images, text).",
    )
    @app_commands.describe(
        file="A document to add (re-uploading a file with the same name updates it).",
        file2="Another document (optional).",
        file3="Another document (optional).",
        file4="Another document (optional).",
        file5="Another document (optional).",
        visibility="Who may get answers from these files: this channel's readers (the default where not "
        "everyone may read it) or the whole server (the default where everyone may).",
        url="A web page (or a PDF or Office file) to fetch by its http(s):// address; fetching it again updates it.",
    )
    @app_commands.choices(visibility=VISIBILITY)
    @app_commands.guild_only()
    @admin_only()
    async def ingest(
        self,
        interaction: discord.Interaction[RagBot],
        file: discord.Attachment | None = None,
        file2: discord.Attachment | None = None,
        file3: discord.Attachment | None = None,
        file4: discord.Attachment | None = None,
        file5: discord.Attachment | None = None,
        visibility: app_commands.Choice[str] | None = None,
        url: str | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        bot = self.bot
        files = [f for f in (file, file2, file3, file4, file5) if f is not None]
        url = (url or "").strip()
        if not files and not url:
            await say(interaction, "Nothing to add: attach a file in `file:` or give a web page's address in `url:`.")
            return
        writer = StreamingReply(InteractionTarget(interaction), interval=bot.settings.edit_interval)
        what = [f"{len(files)} file{'s' if len(files) != 1 else ''}"] if files else []
        await writer.start(f"⏳ reading {' and '.join([*what, *(['a web page'] if url else [])])}…")
        assert interaction.guild is not None
        namespace = bot.namespace_for(interaction.guild)
        scope = document_scope(interaction.channel, visibility.value if visibility else None)
        rows = []
        async with bot.ingest_lock(namespace):
            for i, attachment in enumerate(files, start=1):
                step = f"{i}/{len(files)}"
                rows.append(await self._ingest_one(namespace, interaction.guild.id, attachment, writer, step, scope))
            if url:
                rows.append(await self._ingest_url(namespace, url, writer, scope))
            if any(r[1] in ("added", "updated") for r in rows):
                writer.set_status("⏳ indexing…")
                await asyncio.to_thread(bot.service.prepare_index, namespace)
        who = "everyone in this server" if scope["scope"] == GUILD_SCOPE else "members who can read this channel"
        await writer.finish_text(f"**Ingest report** (answers from these files go to {who})\n{result_table(rows)}")

    async def _ingest_one(
        self,
        namespace: str,
        guild_id: int,
        attachment: discord.Attachment,
        writer: StreamingReply,
        step: str,
        scope: dict[str, str],
    ) -> tuple[str, str, str, str]:
        service = self.bot.service
        name = attachment.filename
        refusal = declared_size_refusal(attachment, service.settings)
        if refusal:  # before downloading anything
            return name, "refused", "-", refusal
        writer.set_status(f"⏳ {step} downloading {name}…")
        try:
            data = await attachment.read()
        except discord.HTTPException as exc:
            ref = log_failure(log, f"downloading {name} failed", exc)
            return name, "failed", "-", f"download failed (reference {ref}); try again"
        loop = asyncio.get_running_loop()

        def progress(p: IngestProgress) -> None:
            text = f"⏳ {step} {name}: {p.embedded}/{p.chunks} chunks embedded"
            if p.ocr_page:  # the worker process is OCR'ing a scanned page or an image
                what = f"page {p.ocr_page} of {p.ocr_pages}" if p.ocr_pages > 1 else "its text"
                text = f"⏳ {step} {name}: reading {what} (OCR)…"
            loop.call_soon_threadsafe(writer.set_status, text)

        writer.set_status(f"⏳ {step} reading {name}…")
        result = await asyncio.to_thread(
            service.ingest_bytes,
            namespace,
            data,
            name,
            source=f"discord:{guild_id}:{name}",
            extra=scope,
            progress=progress,
        )
        log.info("ingested %s into %s: %s %s", name, namespace, result.status, result.reason)
        return result_row(name, result)

    async def _ingest_url(
        self, namespace: str, url: str, writer: StreamingReply, scope: dict[str, str]
    ) -> tuple[str, str, str, str]:
        """Fetch a web page and ingest it (its source is its URL; ingest/fetch.py)."""
        service = self.bot.service
        writer.set_status(f"⏳ fetching {quoted(url[:200])}…")
        result = await asyncio.to_thread(
            service.ingestor.ingest_url,
            namespace,
            url,
            fetch=FetchOptions.from_settings(service.settings),
            extra=scope,
            isolated=True,  # a PDF or Office file by URL is parsed in the uploads' worker process
        )
        log.info("ingested %s into %s: %s %s", url, namespace, result.status, result.reason)
        ok = result.status in ("added", "updated", "unchanged")
        return result_row(result.title if ok else url, result)

    # -- /sources ---------------------------------------------------------------------------
    @app_commands.command(name="sources", description="List this server's documents.")
    @app_commands.describe(page=f"Page to show ({PAGE_SIZE} documents a page).")
    async def sources(
        self, interaction: discord.Interaction[RagBot], page: app_commands.Range[int, 1, 10_000] = 1
    ) -> None:
        await interaction.response.defer(thinking=True)
        namespace = self.bot.namespace_for(interaction.guild)
        readable = self.bot.readable
        scopes = await readable.for_reply(interaction.user, interaction.guild, interaction.channel, private=False)
        try:
            docs = await asyncio.to_thread(self.bot.service.documents, namespace, scopes)
        except StoreUnavailable:  # an outage is not an empty store
            log.warning("/sources: the store is unreachable", exc_info=True)
            await say(interaction, STORE_OUTAGE_NOTICE)
            return
        except StoreDamaged:  # a process without the encoder, or a Chroma server: an admin repairs it
            log.error("/sources: the store's vector index is damaged", exc_info=True)
            await say(interaction, STORE_DAMAGED_NOTICE)
            return
        if not docs:
            await say(interaction, "No documents yet. An admin can add files with /ingest.")
            return
        docs.sort(key=lambda d: d.title.lower())
        pages = (len(docs) + PAGE_SIZE - 1) // PAGE_SIZE
        page = min(page, pages)
        lines = []
        for n, doc in enumerate(docs[(page - 1) * PAGE_SIZE : page * PAGE_SIZE], start=(page - 1) * PAGE_SIZE + 1):
            title = quoted(doc.title or doc.source)
            size = f"{doc.pages} pages, " if doc.pages else ""
            lines.append(f"`{n}.` **{title}** · {doc.kind}, {size}{doc.chunks} chunks · {doc.ingested_at[:10]}")
        embed = discord.Embed(title=f"Documents ({len(docs)})", description="\n".join(lines))
        more = f" · /sources page:{page + 1} for more" if page < pages else ""
        embed.set_footer(text=f"Page {page}/{pages}{more}")
        await interaction.followup.send(embed=embed, allowed_mentions=NO_MENTIONS)

    # -- /forget ----------------------------------------------------------------------------
    @app_commands.command(name="forget", description="Remove a document, or an indexed message, thread or channel.")
    @app_commands.describe(
        document="The document to remove: start typing to search this server's documents.",
        message="An indexed message to remove from the index: its link (Copy Message Link) or id.",
        channel="An indexed channel or thread: stop indexing it and forget its messages (as /index remove).",
    )
    @app_commands.autocomplete(document=document_choices)
    @app_commands.guild_only()
    @admin_only()
    async def forget(
        self,
        interaction: discord.Interaction[RagBot],
        document: str | None = None,
        message: str | None = None,
        channel: discord.TextChannel | discord.Thread | discord.ForumChannel | None = None,
    ) -> None:
        """Names one exact document (the autocomplete's id), says what will go, and waits for a button;
        a message or a channel goes to the indexed history (bot/discord_app/cogs/history.py)."""
        history = self.bot.get_cog("History")
        if (message is not None or channel is not None) and history is not None:
            await history.forget_from(interaction, message=message, channel=channel)  # type: ignore[attr-defined]
            return
        if document is None:
            text = "Say what to forget: `document:`, or an indexed `message:` (its link or id) or `channel:`."
            await say(interaction, text, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        namespace = self.bot.namespace_for(interaction.guild)
        scopes = await self.bot.readable.scopes(interaction.user, interaction.guild)  # the reply is private
        docs = await asyncio.to_thread(self.bot.service.documents, namespace, scopes)
        doc = exact_document(docs, document)
        if doc is None:
            await say(
                interaction,
                f"Nothing removed: no document here is exactly “{quoted(document[:100])}”. "
                "Start typing in `document:` and pick one from the list.",
                ephemeral=True,
            )
            return
        view = ConfirmForget(self.bot, interaction, namespace, doc, timeout=self.confirm_seconds)
        await interaction.followup.send(
            f"Forget {describe(doc)}? Its chunks leave the index and answers stop citing it.",
            view=view,
            ephemeral=True,
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: RagBot) -> None:
    await bot.add_cog(Documents(bot))
