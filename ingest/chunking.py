"""Splitting loaded documents into chunks sized for the embedding model.

Chunks never cross a section (so a chunk has exactly one PDF page, or one Markdown
heading path). Within a section, text is cut on sentence boundaries (paragraph breaks
and list items count too) and packed up to `target_tokens`; the trailing whole
sentences of one chunk, up to `overlap_tokens`, start the next. Each row of a table is a
sentence (store.text), and a table that goes on into the next chunk starts it again with
its header row: a row answers only under its header. A sentence longer than the budget
is cut on line breaks, then words, then characters.

The hard invariant: no chunk's `embed_text` (title > section header plus text) counts
more than `max_tokens` by `count_tokens`, since the encoder silently truncates beyond
its input limit. Each distinct word is counted once (in one batch) and counts are
summed, which is exact for tokenizers that split on whitespace first (WordPiece, as
all-MiniLM uses). Real counts of a sample of chunks, and of every chunk near the limit,
check that; if the tokenizer is not additive every chunk is counted, and a chunk still
over the limit is re-split.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

from store.text import pieces_between, sentence_pieces, table_headers
from store.types import Chunk, LoadedDocument, Section

log = logging.getLogger(__name__)

TokenCounter = Callable[[Sequence[str]], list[int]]
# bump when the chunking output changes, so stored documents re-ingest (3: list numbers; 4: table rows whole)
CHUNKER_VERSION = 4

_LINE_BREAK = re.compile(r"\n\s*")
_NON_SPACE = re.compile(r"\S+")
_ELLIPSIS = "…"
_SAMPLE_CHUNKS = 16  # chunks per document whose estimated count is checked against a real count
_NEAR_LIMIT = 8  # chunks estimated within this many tokens of the limit are always checked


@dataclass(slots=True)
class _Unit:
    """A sentence (or a piece of one) with the whitespace that preceded it in the section."""

    sep: str
    text: str
    tokens: int = 0
    glued: bool = False  # joined from pieces without whitespace between them (counts may not add up)


@dataclass(slots=True)
class _Planned:
    """A chunk before the final check: its estimated embed_text token count, and whether to trust it."""

    section: Section
    heading: str
    text: str
    estimate: int
    glued: bool


class Chunker:
    """Splits a `LoadedDocument` into `Chunk`s; see the module docstring for the rules."""

    def __init__(
        self,
        count_tokens: TokenCounter,
        *,
        max_tokens: int = 256,
        target_tokens: int = 200,
        overlap_tokens: int = 40,
    ) -> None:
        if max_tokens < 16:
            raise ValueError(f"max_tokens must be at least 16, got {max_tokens}")
        if target_tokens < 1 or overlap_tokens < 0:
            raise ValueError("target_tokens must be positive and overlap_tokens not negative")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.target_tokens = min(target_tokens, max_tokens)
        self.overlap_tokens = min(overlap_tokens, self.target_tokens // 2)
        self._overhead: int | None = None  # special tokens of an empty text, e.g. [CLS] [SEP]

    @property
    def signature(self) -> str:
        """Identifies the chunking settings: a change means stored chunks are stale."""
        return f"chunker{CHUNKER_VERSION}:{self.max_tokens}:{self.target_tokens}:{self.overlap_tokens}"

    def chunk(self, doc: LoadedDocument, *, doc_id: str | None = None) -> list[Chunk]:
        doc_id = doc_id or doc.doc_id
        extra = tuple(sorted(doc.extra.items()))
        sections = [s for s in doc.sections if s.text.strip()]
        title, headings, header_tokens = self._fit_headers(doc.title, [s.heading for s in sections])
        units = [_sentence_units(s.text) for s in sections]
        flat = [u for us in units for u in us]
        vocab: dict[str, int] = {}  # each distinct word's token count: counted once, summed per sentence
        self._count_words(chain.from_iterable(map(str.split, (u.text for u in flat))), vocab)
        for u in flat:
            u.tokens = sum(map(vocab.__getitem__, u.text.split()))
        planned: list[_Planned] = []
        for section, heading, section_units in zip(sections, headings, units, strict=True):
            head_tokens = header_tokens[heading]
            for text, size, glued in self._pack(section_units, self.max_tokens - head_tokens, vocab):
                planned.append(_Planned(section, heading, text, head_tokens + size, glued))
        chunks: list[Chunk] = []
        seen: set[str] = set()
        for section, heading, text in self._enforce_limit(title, planned):
            if not text or text in seen:
                continue
            seen.add(text)
            chunks.append(Chunk(doc_id, len(chunks), text, title, doc.source, section.page, heading, extra))
        return chunks

    # -- counting -----------------------------------------------------------------------------
    def _overhead_tokens(self) -> int:
        if self._overhead is None:
            self._overhead = self.count_tokens([""])[0]
        return self._overhead

    def _pieces(self, texts: Sequence[str]) -> list[int]:
        """Token counts without the special tokens (which a joined text carries only once)."""
        if not texts:
            return []
        overhead = self._overhead_tokens()
        return [max(0, n - overhead) for n in self.count_tokens(list(texts))]

    # -- headers ------------------------------------------------------------------------------
    def _fit_headers(self, title: str, headings: list[str]) -> tuple[str, list[str], dict[str, int]]:
        """Shorten an absurdly long title or heading path so the text keeps most of the budget.

        Returns the title, the headings to use, and each used heading's header token count.
        """
        cap = self.max_tokens // 3
        if self.count_tokens([title])[0] > cap // 2:
            words = title.split()
            kept = self._longest_fit(len(words), cap // 2, lambda k: " ".join(words[:k]) + _ELLIPSIS)
            title = " ".join(words[:kept]) + _ELLIPSIS if kept else ""
        unique = sorted(set(headings))
        counts = dict(zip(unique, self.count_tokens([_head(title, h) for h in unique]), strict=True))
        fitted = {h: h for h in unique}
        for heading in unique:
            if counts[heading] <= cap:
                continue
            words = heading.split()

            def render(k: int, words: list[str] = words) -> str:
                return _head(title, _ELLIPSIS + " ".join(words[-k:]))

            kept = self._longest_fit(len(words), cap, render)
            short = _ELLIPSIS + " ".join(words[-kept:]) if kept else ""
            fitted[heading] = short
            counts[short] = self.count_tokens([_head(title, short)])[0]
        return title, [fitted[h] for h in headings], counts

    def _longest_fit(self, n: int, limit: int, render: Callable[[int], str]) -> int:
        """The largest k in 0..n with count(render(k)) <= limit, by binary search (k = 0 always fits)."""
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.count_tokens([render(mid)])[0] <= limit:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # -- packing ------------------------------------------------------------------------------
    def _count_words(self, words: Iterable[str], vocab: dict[str, int]) -> None:
        missing = [w for w in dict.fromkeys(words) if w not in vocab]
        vocab.update(zip(missing, self._pieces(missing), strict=True))

    def _pack(self, units: list[_Unit], budget: int, vocab: dict[str, int]) -> list[tuple[str, int, bool]]:
        """Greedy packing of sentences up to the target, with trailing sentences as overlap.

        Returns (text, summed token count, glued) per chunk.
        """
        target = max(1, min(self.target_tokens, budget))
        units = self._split_long(units, budget, target, vocab)
        out: list[tuple[str, int, bool]] = []
        current: list[_Unit] = []
        size = 0
        headers = table_headers([u.text for u in units])  # a table row's header row (the splitter cuts rows)
        for unit, header in zip(units, headers, strict=True):
            if current and size + unit.tokens > target:
                out.append(_packed(current, size))
                # a table's rows continue: the next chunk starts with its header row, then the overlap
                head = units[header] if header is not None and units[header].tokens <= target // 2 else None
                overlap: list[_Unit] = []
                kept = head.tokens if head is not None else 0
                allowed = self.overlap_tokens + kept
                for prev in reversed(current):
                    if prev is head or kept + prev.tokens > allowed or kept + prev.tokens + unit.tokens > target:
                        break
                    overlap.insert(0, prev)
                    kept += prev.tokens
                if head is not None and kept + unit.tokens <= target:
                    overlap.insert(0, head)
                else:
                    kept -= head.tokens if head is not None else 0
                current, size = overlap, kept
            current.append(unit)
            size += unit.tokens
        if current:
            out.append(_packed(current, size))
        return out

    def _split_long(self, units: list[_Unit], budget: int, target: int, vocab: dict[str, int]) -> list[_Unit]:
        """Cut units over the budget into pieces of at most `target` tokens: lines, words, characters."""
        if all(u.tokens <= budget for u in units):
            return units
        out: list[_Unit] = []
        for unit in units:
            if unit.tokens <= budget:
                out.append(unit)
                continue
            if "\n" in unit.text:
                lines = _split_on(unit.text, _LINE_BREAK)
                for line in lines:
                    line.tokens = sum(map(vocab.__getitem__, line.text.split()))
                pieces = _greedy_merge(self._split_long(lines, target, target, vocab), target)
            else:
                pieces = self._split_words(unit.text, target, vocab)
            if pieces:
                pieces[0].sep = unit.sep
            out.extend(pieces)
        return out

    def _split_words(self, text: str, limit: int, vocab: dict[str, int]) -> list[_Unit]:
        """Greedy runs of whole words of at most `limit` tokens; a longer word is cut on characters."""
        out: list[_Unit] = []
        run: list[int] = []  # [start, end, tokens] of the current run of words, if any
        emitted = 0  # where the last piece ended (the next piece's separator starts here)
        for m in _NON_SPACE.finditer(text):
            n = vocab[m.group()]
            if run and (run[2] + n > limit or n > limit):
                out.append(_Unit(text[emitted : run[0]], text[run[0] : run[1]], run[2]))
                emitted, run = run[1], []
            if n > limit:
                parts = self._split_chars(m.group(), limit)
                parts[0].sep = text[emitted : m.start()]
                out.extend(parts)
                emitted = m.end()
            elif run:
                run[1], run[2] = m.end(), run[2] + n
            else:
                run = [m.start(), m.end(), n]
        if run:
            out.append(_Unit(text[emitted : run[0]], text[run[0] : run[1]], run[2]))
        return out

    def _split_chars(self, word: str, limit: int) -> list[_Unit]:
        size = max(1, min(len(word), limit * 4))
        while True:
            parts = [word[i : i + size] for i in range(0, len(word), size)]
            counts = self._pieces(parts)
            if max(counts) <= limit or size == 1:
                return [_Unit("", p, n, glued=True) for p, n in zip(parts, counts, strict=True)]
            size = max(1, size // 2)

    # -- the hard limit -----------------------------------------------------------------------
    def _enforce_limit(self, title: str, planned: list[_Planned]) -> list[tuple[Section, str, str]]:
        """Check chunks against the limit with real counts; re-split the (rare) chunk that is over.

        Summed per-sentence counts are exact for tokenizers that split on whitespace (WordPiece,
        as all-MiniLM uses), so only chunks near the limit, chunks glued without whitespace, and
        an even sample are counted again. If any of those differs from its estimate, the
        tokenizer is not additive and every chunk is counted.
        """
        step = max(1, len(planned) // _SAMPLE_CHUNKS)
        near = self.max_tokens - _NEAR_LIMIT
        check = [i for i, p in enumerate(planned) if p.glued or p.estimate > near or i % step == 0]
        real: dict[int, int] = dict(zip(check, self._count_embed(title, [planned[i] for i in check]), strict=True))
        if any(real[i] != planned[i].estimate for i in check if not planned[i].glued):
            log.debug("token counts are not additive for this tokenizer: checking every chunk")
            rest = [i for i in range(len(planned)) if i not in real]
            real.update(zip(rest, self._count_embed(title, [planned[i] for i in rest]), strict=True))
        out: list[tuple[Section, str, str]] = []
        for i, p in enumerate(planned):
            if real.get(i, p.estimate) <= self.max_tokens:
                out.append((p.section, p.heading, p.text))
            else:
                log.debug("chunk of %d tokens over the %d limit; re-splitting", real[i], self.max_tokens)
                out.extend((p.section, p.heading, t) for t in self._halve_until_fits(title, p.heading, p.text))
        return out

    def _count_embed(self, title: str, planned: list[_Planned]) -> list[int]:
        if not planned:
            return []
        return self.count_tokens([_embed_text(title, p.heading, p.text) for p in planned])

    def _halve_until_fits(self, title: str, heading: str, text: str) -> list[str]:
        if self.count_tokens([_embed_text(title, heading, text)])[0] <= self.max_tokens:
            return [text]
        if len(text) <= 1:
            log.warning("dropped a piece of text that cannot fit the encoder's %d-token limit", self.max_tokens)
            return []
        mid = len(text) // 2
        cut = text.rfind(" ", 0, mid)
        cut = cut if cut > 0 else text.find(" ", mid)
        cut = cut if cut > 0 else mid
        left, right = text[:cut].strip(), text[cut:].strip()
        return [t for part in (left, right) if part for t in self._halve_until_fits(title, heading, part)]


def _sentence_units(text: str) -> list[_Unit]:
    """A section's sentences (store.text's splitter), each with the whitespace before it."""
    return [_Unit(sep, body) for sep, body in sentence_pieces(text)]


def _units_between(text: str, cuts: list[int]) -> list[_Unit]:
    return [_Unit(sep, body) for sep, body in pieces_between(text, cuts)]


def _split_on(text: str, separator: re.Pattern[str]) -> list[_Unit]:
    """Pieces of `text` (already stripped) split at `separator`, keeping each separator as the next piece's sep."""
    return _units_between(text, [m.end() for m in separator.finditer(text)])


def _greedy_merge(pieces: list[_Unit], limit: int) -> list[_Unit]:
    merged: list[_Unit] = []
    for piece in pieces:
        if merged and merged[-1].tokens + piece.tokens <= limit:
            last = merged[-1]
            last.text += piece.sep + piece.text
            last.tokens += piece.tokens
            last.glued = last.glued or piece.glued or not piece.sep
        else:
            merged.append(_Unit(piece.sep, piece.text, piece.tokens, piece.glued))
    return merged


def _packed(units: list[_Unit], size: int) -> tuple[str, int, bool]:
    text = "".join((u.sep if i else "") + u.text for i, u in enumerate(units)).strip()
    glued = any(u.glued for u in units) or any(not u.sep for u in units[1:])
    return text, size, glued


def _head(title: str, heading: str) -> str:
    return " > ".join(p for p in (title, heading) if p)


def _embed_text(title: str, heading: str, text: str) -> str:
    """Exactly what `Chunk.embed_text` will give for this chunk."""
    return Chunk("", 0, text, title, "", None, heading).embed_text
