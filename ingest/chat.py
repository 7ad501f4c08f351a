"""Chat is not prose: a channel's messages as windows, groups and one chunk per message (issue 13).

A window is one channel's (or thread's) messages of one UTC day: its document. The
document id derives from the channel and the day (`window_source`), so re-ingesting a
window (a new message, an edit, a deletion) replaces it, and a backfill that runs twice
adds nothing twice. Within a window, consecutive messages form groups, cut by time gaps
and by a change of author unless the message replies into the group; each group is a
section. Each message is its own chunk, so a citation is one message: its jump link,
channel, author and date ride in the chunk's extra metadata, its section reads
"#design · Anna · 2026-03-04", and the quote is the message's own text. A message too
long for the encoder is cut by the ordinary chunker, and every piece keeps the message.

Blocking and linear in the number of messages; no discord imports (the bot converts).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from ingest.chunking import Chunker
from ingest.pipeline import Ingestor
from ingest.sources import IngestProgress, IngestResult, Prepared, Source
from store.types import Chunk, DocumentInfo, LoadedDocument, Section, document_id_for

CHAT_PREFIX = "discord-chat:"
CHAT_KIND = "chat"
GROUP_GAP_S = 15 * 60  # a silence this long starts a new group
GROUP_MAX = 20  # messages per group at most


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: int
    author_id: int
    author: str  # display name at the time it was stored
    ts: float  # POSIX seconds (UTC)
    text: str
    jump_url: str
    reply_to: int | None = None

    @property
    def day(self) -> str:
        return day_of(self.ts)


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def window_source(guild_id: int, channel_id: int, day: str) -> str:
    return f"{CHAT_PREFIX}{guild_id}:{channel_id}:{day}"


def group_messages(messages: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Consecutive messages in conversation groups: a reply to a message of the open group stays in
    it; otherwise a silence over `GROUP_GAP_S` or a new author (after the group has two authors'
    turns already) starts a new group; groups hold at most `GROUP_MAX` messages."""
    groups: list[list[ChatMessage]] = []
    ids: set[int] = set()
    authors: list[int] = []
    for m in messages:
        current = groups[-1] if groups else None
        keep = False
        if current is not None and len(current) < GROUP_MAX and m.ts - current[-1].ts <= GROUP_GAP_S:
            # a reply stays if it answers into the group; else the group's authors (up to two) go on
            keep = m.reply_to in ids if m.reply_to is not None else (m.author_id in authors or len(authors) < 2)
        if keep and current is not None:
            current.append(m)
        else:
            groups.append([m])
            ids, authors = set(), []
        ids.add(m.id)
        if m.author_id not in authors:
            authors.append(m.author_id)
    return groups


@dataclass(slots=True)
class Window:
    """One window's messages and where they are: what a chat document is built from."""

    guild_id: int
    channel_id: int
    channel_name: str  # "#design", or a thread's / forum post's name
    day: str
    messages: list[ChatMessage]
    extra: dict[str, str]  # scope (and scope_parent) of the channel, channel_id

    @property
    def source(self) -> str:
        return window_source(self.guild_id, self.channel_id, self.day)

    @property
    def doc_id(self) -> str:
        return document_id_for(self.source)

    @property
    def title(self) -> str:
        return f"{self.channel_name} {self.day}"

    def to_bytes(self) -> bytes:
        data = asdict(self)
        return json.dumps(data, ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Window:
        raw = json.loads(data)
        raw["messages"] = [ChatMessage(**m) for m in raw["messages"]]
        return cls(**raw)


def cite_label(channel_name: str, author: str, ts: float) -> str:
    return f"{channel_name} · {author} · {day_of(ts)}"


def chat_chunks(window: Window, chunker: Chunker) -> tuple[LoadedDocument, list[Chunk]]:
    """The window's document (one section per group) and its chunks (one or more per message)."""
    groups = group_messages(window.messages)
    sections = [
        Section(
            "\n".join(f"{m.author}: {m.text}" for m in g), heading=cite_label(window.channel_name, g[0].author, g[0].ts)
        )
        for g in groups
    ]
    doc = LoadedDocument(window.source, window.title, CHAT_KIND, sections, extra=dict(window.extra))
    doc_id = window.doc_id
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for group_index, group in enumerate(groups):
        for m in group:
            if not m.text.strip():
                continue
            label = cite_label(window.channel_name, m.author, m.ts)
            one = LoadedDocument(window.source, "", CHAT_KIND, [Section(m.text, heading=label)])
            extra = {
                **window.extra,
                "jump_url": m.jump_url,
                "message_id": str(m.id),
                "author": m.author,
                "date": day_of(m.ts),
                "channel": window.channel_name,
                "group": str(group_index),
            }
            items = tuple(sorted(extra.items()))
            for piece in chunker.chunk(one, doc_id=doc_id):
                if piece.text in seen:  # chunk ids are document + text: a repeated "ok" is kept once
                    continue
                seen.add(piece.text)
                chunks.append(Chunk(doc_id, len(chunks), piece.text, window.title, window.source, None, label, items))
    return doc, chunks


class ChatIngestor(Ingestor):
    """The store's ingestor, taking chat windows: shares the base ingestor's store, encoder and chunker
    (and its batching, atomic commits and reuse of unchanged chunks)."""

    def __init__(self, base: Ingestor) -> None:  # noqa: D107 - shares the base's state on purpose
        self.__dict__.update(base.__dict__)
        self._chat_sig = f"chat1|{self._settings_sig}"
        self.encode_s = 0.0  # time in the encoder, over every window ingested (bench/backfill.py)
        self.write_s = 0.0

    def ingest_windows(self, namespace: str, windows: Iterable[Window]) -> list[IngestResult]:
        sources = [Source(w.to_bytes, f"{w.title}.chat", w.source, w.title, dict(w.extra)) for w in windows]
        if not sources:
            return []
        # isolated: no PDF worker process is started for a run of many windows (chat needs no parser)
        state = IngestProgress(files_total=len(sources))
        try:
            return self._run(namespace, iter(sources), state, None, isolated=True)  # type: ignore[no-any-return]
        finally:
            self.encode_s += state.encode_s
            self.write_s += state.write_s

    def _prepare(  # type: ignore[override]
        self,
        namespace: str,
        read,  # type: ignore[no-untyped-def]
        filename: str,
        source: str,
        title: str | None,
        extra: dict[str, str],
        known: dict[str, DocumentInfo] | None = None,
        load=None,  # type: ignore[no-untyped-def]
    ) -> Prepared:
        if not source.startswith(CHAT_PREFIX):
            return super()._prepare(namespace, read, filename, source, title, extra, known, load or _no_load)
        result = IngestResult(source, title or filename, "skipped", doc_id=document_id_for(source))
        data = read()
        fingerprint = hashlib.sha256(data + self._chat_sig.encode()).hexdigest()[:24]
        previous = known.get(result.doc_id) if known is not None else self.store.document(namespace, result.doc_id)
        if previous is not None and previous.content_hash == fingerprint and previous.extra == extra:
            result.status, result.title, result.chunks = "unchanged", previous.title, previous.chunks
            return Prepared(result)
        doc, chunks = chat_chunks(Window.from_bytes(data), self.chunker)
        if not chunks:
            result.reason = "no message text to index"
            return Prepared(result)
        result.title, result.chunks = doc.title, len(chunks)
        reused = self.store.existing_ids(namespace, [c.id for c in chunks]) if previous is not None else set()
        return Prepared(result, doc, chunks, fingerprint, previous, reused)


def _no_load(*_a: object, **_k: object) -> LoadedDocument:
    raise RuntimeError("ChatIngestor takes chat windows only")
