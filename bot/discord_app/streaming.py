"""Show an answer while it is written: throttled edits, long text split, sources last.

`StreamingReply` owns every edit of its messages, so queue positions, streamed
tokens and the final answer all share one throttle (at most one edit per message per
`interval`, Discord rate-limits faster editing). Text over Discord's 2,000 characters
continues in a follow-up message, cut at a paragraph, line or word boundary: nothing
is dropped. The last message ends "done" and carries the sources embed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import discord

from bot.answer import Answer, AnswerEvent, Completed, Evidence, Token
from bot.citations import QUOTE_CHARS, Citation
from bot.discord_app.display import defuse, quoted
from bot.discord_app.queue import position_text

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
MESSAGE_LIMIT = 2000
BODY_LIMIT = 1850  # leaves room for the header and status lines
EMBED_LIMIT = 4096
DONE = "-# ✅ done"
FINAL_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # between tries of an answer's final state (~1 min)


def sanitize(text: str) -> str:
    """Text from documents and the model as data: no masked link, mention, ping or previewed URL
    (even where allowed_mentions would not apply: copy-paste). See bot/discord_app/display.py."""
    return defuse(text)


def split_text(text: str, limit: int = BODY_LIMIT) -> list[str]:
    """Consecutive pieces of at most `limit` characters; `''.join(pieces) == text`.

    Cuts at the last paragraph break, else line break, else space in the window (in
    its second half when possible), so words are never cut unless one is longer than
    `limit`.
    """
    pieces: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = -1
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at > limit // 2:
                cut = at
                break
        if cut <= 0:
            at = window.rfind(" ")
            cut = at if at > 0 else limit
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def source_line(c: Citation) -> str:
    title = quoted(c.chunk.title or c.chunk.source or "untitled")
    where = c.chunk.where
    parts = [f"**[{c.number}] {title}**"]
    if where:
        parts.append(quoted(where))
    if c.jump_url:
        parts.append(f"[jump]({c.jump_url})")
    quote = quoted(_clip(" ".join(c.quote.split()), QUOTE_CHARS))
    return " · ".join(parts) + (f"\n> {quote}" if quote else "")


def lead_line(c: Citation) -> str:
    """The reader's verbatim evidence, shown as what it is: “…” — *Title*, Section [n]."""
    title = quoted(c.chunk.title or c.chunk.source or "untitled")
    where = f", {quoted(c.chunk.where)}" if c.chunk.where and c.chunk.where != c.chunk.title else ""
    return f"“{quoted(_clip(' '.join(c.quote.split()), QUOTE_CHARS))}” — *{title}*{where} [{c.number}]"


URGENT_GAP = 0.25  # seconds: the evidence's edit may follow the acknowledgement this soon
PHRASING = "-# ✍️ the model is phrasing an answer from this evidence; it is shown only if it passes the checks"


def sources_embed(answer: Answer) -> discord.Embed | None:
    """The citations (or, when none was valid, the passages consulted) as one embed."""
    cited = bool(answer.citations)
    evidence = answer.evidence
    if not evidence:
        return None
    lines: list[str] = []
    size = 0
    for c in evidence:
        line = source_line(c)
        if size + len(line) + 2 > EMBED_LIMIT - 40:
            lines.append(f"… and {len(evidence) - len(lines)} more")
            break
        lines.append(line)
        size += len(line) + 2
    colour = discord.Colour.green() if cited else discord.Colour.light_grey()
    title = "Sources" if cited else "Sources consulted"
    return discord.Embed(title=title, description="\n\n".join(lines), colour=colour)


Editable = discord.Message | discord.WebhookMessage | discord.InteractionMessage


class ReplyTarget(Protocol):
    async def send(self, content: str, embeds: list[discord.Embed]) -> Editable: ...


class ChannelTarget:
    """Messages in a channel or thread; each replies to the one before (a reply chain)."""

    def __init__(self, channel: discord.abc.Messageable, reference: discord.Message | None = None) -> None:
        self.channel = channel
        self.reference = reference
        self.sent: list[discord.Message] = []

    async def send(self, content: str, embeds: list[discord.Embed]) -> discord.Message:
        previous = self.sent[-1] if self.sent else self.reference
        if previous is None:
            message = await self.channel.send(
                content, embeds=embeds, allowed_mentions=NO_MENTIONS, suppress_embeds=not embeds
            )
        else:
            reference = previous.to_reference(fail_if_not_exists=False)  # the question may be deleted meanwhile
            message = await self.channel.send(
                content,
                embeds=embeds,
                reference=reference,
                allowed_mentions=NO_MENTIONS,
                suppress_embeds=not embeds,  # no link previews; the flag would also hide our sources embed
            )
        self.sent.append(message)
        return message


class InteractionTarget:
    """A deferred slash command: the first message is the original response, then follow-ups."""

    def __init__(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self._first = True

    async def send(self, content: str, embeds: list[discord.Embed]) -> Editable:
        if self._first:
            self._first = False
            return await self.interaction.edit_original_response(
                content=content, embeds=embeds, allowed_mentions=NO_MENTIONS
            )
        return await self.interaction.followup.send(
            content,
            embeds=embeds,
            ephemeral=self.ephemeral,
            wait=True,
            allowed_mentions=NO_MENTIONS,
            suppress_embeds=not embeds,
        )


Page = tuple[str, list[discord.Embed]]


class StreamingReply:
    def __init__(
        self,
        target: ReplyTarget,
        *,
        interval: float = 1.0,
        header: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.interval = interval
        self.header = header
        self._clock = clock
        self._status = "⏳ queued"
        self._text = ""
        self._final: list[Page] | None = None
        self._messages: list[Editable] = []
        self._shown: list[str] = []  # what each message shows (content and embeds)
        self._changed = asyncio.Event()
        self._finishing = False
        self._task: asyncio.Task[None] | None = None
        self._last_apply = -math.inf
        self.broken = False  # a message vanished or Discord refused it: stop editing
        self.behind = False  # Discord failed the last update (429, 5xx): what is shown is not current
        self.answer: Answer | None = None
        self._lead = ""  # the reader's evidence, shown from retrieval on
        self._urgent = False  # the next edit skips the throttle (the evidence must not wait)
        self._lead_arrived = asyncio.Event()
        self._applied = 0  # updates sent (the acknowledgement is the first)
        self.lead_shown_at: float | None = None  # when the evidence reached Discord (benchmarks)

    # -- feeding ----------------------------------------------------------------------------
    async def start(self, status: str = "⏳ queued") -> None:
        """Post the first message now (the acknowledgement), then edit in the background."""
        self._status = status
        await self._apply()
        self._task = asyncio.create_task(self._flush_loop(), name="ragcord-stream")

    def set_status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._changed.set()

    def on_position(self, ahead: int) -> None:
        self.set_status(position_text(ahead))

    def add(self, text: str) -> None:
        if text:
            self._text += text
            self._changed.set()

    def set_lead(self, lead: Citation) -> None:
        """Show the evidence now, ahead of the model's first token."""
        self._lead = lead_line(lead)
        self._urgent = True
        self._changed.set()
        self._lead_arrived.set()

    async def consume(self, events: AsyncIterator[AnswerEvent]) -> Answer:
        """Show the events of one answer or summary, then its final form."""
        answer: Answer | None = None
        async for event in events:
            if isinstance(event, Token):
                self.add(event.text)
            elif isinstance(event, Evidence):
                self.set_lead(event.lead)
            elif isinstance(event, Completed):
                answer = event.answer
        if answer is None:
            answer = Answer("", status="failed", note="the model failed: generation stopped early; try again")
        await self.finish(answer)
        return answer

    async def finish(self, answer: Answer) -> None:
        self.answer = answer
        await self.finish_pages(self.render_answer(answer))

    async def finish_text(self, content: str, embeds: list[discord.Embed] | None = None) -> None:
        """End with plain content (a report rather than an answer)."""
        pages: list[Page] = [(p.strip(), []) for p in split_text(sanitize(content), MESSAGE_LIMIT - 10)]
        pages[-1] = (pages[-1][0], embeds or [])
        await self.finish_pages(pages)

    async def finish_pages(self, pages: list[Page]) -> None:
        self._final = pages
        self._finishing = True
        self._changed.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        # an answer that needed no model (a decline, extract mode) follows the acknowledgement at once
        gap = min(self.interval, URGENT_GAP) if self._applied <= 1 else self.interval
        wait = self._last_apply + gap - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._apply()
        for delay in FINAL_RETRY_DELAYS:  # the final state must land, or "writing…" stays for ever
            if not self.behind or self.broken:
                break
            await asyncio.sleep(delay)
            await self._apply()
        if self.behind:
            log.error("gave up showing the final state of an answer: Discord kept failing for a minute")

    # -- rendering ---------------------------------------------------------------------------
    def render_answer(self, answer: Answer) -> list[Page]:
        if answer.status == "failed":
            return [(f"⚠️ {sanitize(answer.note or 'the model failed; try again')}", [])]
        if answer.status == "declined":
            body = sanitize(answer.note)
        elif answer.lead is not None and answer.led_by == "model":
            body = f"{sanitize(answer.text.strip())}\n> {lead_line(answer.lead)}"
        elif answer.lead is not None:
            body = lead_line(answer.lead)
        else:
            body = sanitize(answer.text.strip() or "(The model gave no answer; try rephrasing the question.)")
        pieces = split_text(body)
        tail = []
        if answer.note and answer.status != "declined":
            mark = "⚠️ " if answer.status == "cautious" else ""
            tail.append(f"-# {mark}{sanitize(answer.note)}")
        tail.append(DONE)
        embed = sources_embed(answer)
        return self._pages(pieces, "\n".join(tail), [embed] if embed else [])

    def _render_streaming(self) -> list[Page]:
        if self._lead:
            text = f"{PHRASING}\n{sanitize(self._text)}" if self._text.strip() else ""
            return self._pages(split_text(f"{self._lead}\n\n{text}".strip()), f"-# {self._status}", [])
        pieces = split_text(sanitize(self._text)) if self._text else [""]
        return self._pages(pieces, f"-# {self._status}", [])

    def _pages(self, pieces: list[str], tail: str, embeds: list[discord.Embed]) -> list[Page]:
        """Header on the first message; status (or done) and embeds on the last."""
        pages: list[Page] = []
        for i, piece in enumerate(pieces):
            lines = [self.header] if i == 0 and self.header else []
            if piece.strip():
                lines.append(piece.strip())
            content = "\n".join(lines)
            if i == len(pieces) - 1:
                pages.append((f"{content}\n\n{tail}" if content else tail, embeds))
            else:
                pages.append((content, []))
        return pages

    # -- applying ----------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while not self._finishing:
            await self._changed.wait()
            if self._finishing:
                break
            while True:  # wait out the throttle; the evidence arriving meanwhile shortens the wait
                gap = min(self.interval, URGENT_GAP) if self._urgent else self.interval
                wait = self._last_apply + gap - self._clock()
                if wait <= 0 or self._finishing:
                    break
                self._lead_arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lead_arrived.wait(), wait)
            if self._finishing:
                break
            self._changed.clear()
            urgent, self._urgent = self._urgent, False
            await self._apply()
            if urgent:
                # the early edit borrows from the next interval: at most one edit a second on average
                self._last_apply += self.interval - min(self.interval, URGENT_GAP)
                if self.lead_shown_at is None and not self.broken:
                    self.lead_shown_at = self._clock()

    async def _apply(self) -> None:
        if self.broken:
            return
        self._applied += 1
        pages = self._final if self._final is not None else self._render_streaming()
        self.behind = False
        try:
            for i, (content, embeds) in enumerate(pages):
                shown = content + json.dumps([e.to_dict() for e in embeds], sort_keys=True)
                if i < len(self._messages):
                    if self._shown[i] != shown:
                        message = self._messages[i]
                        if type(message) is discord.Message:  # the only edit with a suppress-embeds option
                            await message.edit(
                                content=content, embeds=embeds, allowed_mentions=NO_MENTIONS, suppress=not embeds
                            )
                        else:
                            await message.edit(content=content, embeds=embeds, allowed_mentions=NO_MENTIONS)
                        self._shown[i] = shown
                else:
                    self._messages.append(await self.target.send(content, embeds))
                    self._shown.append(shown)
            while len(self._messages) > len(pages):  # the final layout needs fewer messages
                extra = self._messages.pop()
                self._shown.pop()
                await extra.delete()
        except discord.NotFound:
            log.info("an answer message was deleted; no more edits to it")
            self.broken = True
        except discord.HTTPException as exc:
            if exc.status == 429 or exc.status >= 500:  # after discord.py's own retries: try again later
                log.warning("Discord could not take an answer update (HTTP %s); trying again", exc.status)
                self.behind = True
            else:
                log.exception("Discord refused an answer update")
                self.broken = True
        finally:
            self._last_apply = self._clock()
