"""Markdown files: one `Section` per heading, with the heading path ("Install > On Linux").

Parsed by markdown-it-py (CommonMark, plus GFM tables and strikethrough), whose
tokenizer is linear in the input: 64 KB of `**a ` loads in 0.13 s (the regular
expressions this loader used before took 6.7-23 s), 64 KB of `![` in 0.3 s. ATX
and setext headings start sections; `#` lines inside code blocks do not. YAML front
matter is dropped (its `title:` is used as the document title).

Text is kept readable: code blocks and inline code (with its backticks) stay, list
items become "- item" or "1. item" lines, table rows "a | b", link text stays and its
URL goes, images go, emphasis markers go, and raw HTML keeps only its visible text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token

log = logging.getLogger(__name__)

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_KEY = re.compile(r"^[A-Za-z_][\w -]*:", re.MULTILINE)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_LINES = re.compile(r"\n{3,}")
# Containers nested deeper than this are read as plain text: markdown-it drops the rest of a
# document at its nesting limit, and ragcord must not lose text to a file of 500 '>'.
_MAX_NESTING = 32
# Link labels nested deeper than this are not links. Each unclosed "[" costs markdown-it about
# one step per level it may nest: with the nesting limit alone, 64 KB of "![" took 1.3 s.
_MAX_LABEL_NESTING = 6


@dataclass(slots=True)
class _Section:
    heading: str
    blocks: list[str] = field(default_factory=list)
    tight: list[bool] = field(default_factory=list)  # per block: an item of a tight list (no blank line before)


@dataclass(slots=True)
class _List:
    ordered: bool
    number: int
    marker: str = "-"


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    text = decode_text(data, filename)
    text, front_title = strip_front_matter(text)
    sections, first_h1 = split_sections(text)
    return LoadedDocument(source=source, title=front_title or first_h1, kind="markdown", sections=sections)


def strip_front_matter(text: str) -> tuple[str, str]:
    """Remove a leading YAML front-matter block; returns the rest and its `title:` (or "")."""
    m = _FRONT_MATTER.match(text)
    if not m or not _FRONT_KEY.search(m.group(1) or ""):
        return text, ""
    title = ""
    t = _FRONT_TITLE.search(m.group(1) or "")
    if t:
        title = t.group(1).strip().strip("'\"").strip()
    return text[m.end() :], title


def split_sections(text: str) -> tuple[list[Section], str]:
    """Split Markdown into sections by heading; returns them and the first level-1 heading."""
    tokens = _parser().parse(text)
    if any(t.level >= _MAX_NESTING - 2 for t in tokens):
        log.info("markdown nested more than %d levels deep: read as plain text", _MAX_NESTING)
        body = _BLANK_LINES.sub("\n\n", text).strip("\n")
        return ([Section(body)] if body.strip() else []), ""
    return _Renderer(text.count("\n") + (not text.endswith("\n"))).render(tokens)


_PARSER: MarkdownIt | None = None


def _parser() -> MarkdownIt:
    global _PARSER
    if _PARSER is None:
        from markdown_it import MarkdownIt

        # html: raw HTML becomes html_block/html_inline tokens (their visible text is kept)
        from markdown_it.rules_inline import image, link

        parser = MarkdownIt("commonmark", {"maxNesting": _MAX_NESTING, "html": True})
        parser.enable(["table", "strikethrough"])
        parser.inline.ruler.at("link", _shallow(link))
        parser.inline.ruler.at("image", _shallow(image))
        _PARSER = parser
    return _PARSER


def _shallow(rule: Callable[[StateInline, bool], bool]) -> Callable[[StateInline, bool], bool]:
    """`rule` (link or image), except that while looking for the end of a link label more than
    `_MAX_LABEL_NESTING` labels deep it gives up on the label, as markdown-it itself does at its
    nesting limit (it skips to the end of the paragraph: linear, and cached per position)."""

    def shallow(state: StateInline, silent: bool) -> bool:
        if silent and state.level >= _MAX_LABEL_NESTING:
            state.pos = state.posMax
            return True
        return rule(state, silent)

    return shallow


class _Renderer:
    """Walks markdown-it's block tokens, collecting each section's text blocks."""

    def __init__(self, lines: int) -> None:
        self.lines = lines  # of the source: an HTML block that ends with it may be unclosed
        self.sections = [_Section("")]
        self.path: list[tuple[int, str]] = []
        self.first_h1 = ""
        self.lists: list[_List] = []
        self.item_prefix = ""  # the "- " or "1. " still to be written before an item's first block
        self.row: list[str] = []

    def render(self, tokens: Sequence[Token]) -> tuple[list[Section], str]:
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            kind = tok.type
            if kind == "heading_open":
                inline = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1].type == "inline" else None
                self._start(int(tok.tag[1:]), _heading_text(inline))
                i += 3 if inline is not None else 2
                continue
            if kind == "paragraph_open":
                inline = tokens[i + 1]
                self._block(inline_text(inline.children or []), tight=tok.hidden)
                i += 3
                continue
            if kind in ("fence", "code_block"):
                self._block(tok.content.rstrip("\n"))
            elif kind == "html_block":
                if tok.map and tok.map[1] >= self.lines and _unclosed_html(tok.content):
                    # "<!--" or "<script>" never closed: CommonMark hides the rest of the file in it
                    opener, _, rest = tok.content.partition("\n")
                    self._block(_html_text(opener))
                    self._block(rest.strip("\n"))
                else:
                    self._block(_html_text(tok.content))
            elif kind in ("bullet_list_open", "ordered_list_open"):
                start = int(tok.attrGet("start") or 1) if kind == "ordered_list_open" else 1
                self.lists.append(_List(kind == "ordered_list_open", start, tok.markup or "-"))
            elif kind in ("bullet_list_close", "ordered_list_close"):
                if self.lists:
                    self.lists.pop()
            elif kind == "list_item_open":
                self._open_item()
            elif kind == "list_item_close":
                if self.item_prefix:  # an empty item: still a line
                    self._block("", tight=True)
            elif kind == "tr_open":
                self.row = []
            elif kind == "inline":  # a table cell's text
                self.row.append(" ".join(inline_text(tok.children or []).split()))
            elif kind == "tr_close":
                self._block(" | ".join(self.row), tight=True)
            elif kind == "table_open":
                self._block("")  # a paragraph break before the table's rows
            i += 1
        return self._finish()

    def _open_item(self) -> None:
        current = self.lists[-1] if self.lists else _List(False, 1)
        if current.ordered:
            self.item_prefix = f"{current.number}{current.marker} "
            current.number += 1
        else:
            self.item_prefix = "- "

    def _block(self, text: str, *, tight: bool = False) -> None:
        indent = "  " * max(0, len(self.lists) - 1) if self.lists else ""
        if self.item_prefix:
            text = indent + self.item_prefix + text.replace("\n", "\n" + indent + " " * len(self.item_prefix))
            self.item_prefix = ""
        elif self.lists and text:
            text = indent + "  " + text.replace("\n", "\n" + indent + "  ")
        section = self.sections[-1]
        section.blocks.append(text)
        section.tight.append(tight)

    def _start(self, level: int, title: str) -> None:
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, title))
        if level == 1 and not self.first_h1:
            self.first_h1 = title
        self.sections.append(_Section(" > ".join(t for _, t in self.path if t)))

    def _finish(self) -> tuple[list[Section], str]:
        out = []
        for s in self.sections:
            parts: list[str] = []
            for n, (block, tight) in enumerate(zip(s.blocks, s.tight, strict=True)):
                if n:
                    parts.append("\n" if tight and s.tight[n - 1] else "\n\n")
                parts.append(block)
            body = _BLANK_LINES.sub("\n\n", "".join(parts)).strip("\n")
            if body.strip():
                out.append(Section(body, heading=s.heading))
        return out, self.first_h1


def inline_text(children: Sequence[Token]) -> str:
    """The visible text of an inline token's children: link text without its URL, no images,
    no emphasis markers, code spans with their backticks, line breaks kept."""
    pieces: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            pieces.append(_INNER_SPACES.sub(" ", "".join(prose)))
            prose.clear()

    for child in children:
        kind = child.type
        if kind == "text":
            prose.append(child.content)
        elif kind in ("softbreak", "hardbreak"):
            prose.append("\n")
        elif kind == "code_inline":
            flush()
            ticks = child.markup or "`"
            pieces.append(f"{ticks}{child.content}{ticks}")
        elif kind == "html_inline":
            continue  # a tag: its text is in the neighbouring text tokens
        # link_open/close, em/strong/s open/close and images add nothing
    flush()
    return "".join(pieces)


def _heading_text(inline: Token | None) -> str:
    text = " ".join(inline_text(inline.children or []).split()) if inline is not None else ""
    return _strip_heading_id(text)


def _strip_heading_id(title: str) -> str:
    """Drop a trailing `{#anchor}` (Pandoc/kramdown heading ids)."""
    if title.endswith("}"):
        at = title.rfind("{#")
        if at >= 0 and "}" not in title[at:-1]:
            return title[:at].rstrip()
    return title


_HTML_RAW_OPENER = re.compile(r"[ \t]*<(script|pre|style|textarea)(?:[\s>]|$)", re.IGNORECASE)
_HTML_CLOSERS = (("<!--", "-->"), ("<?", "?>"), ("<![CDATA[", "]]>"), ("<!", ">"))


def _unclosed_html(block: str) -> bool:
    """An HTML block whose comment, processing instruction or raw-text element never ends."""
    head = block.lstrip(" \t")
    for opener, closer in _HTML_CLOSERS:
        if head.startswith(opener):
            return closer not in head[len(opener) :]
    raw = _HTML_RAW_OPENER.match(block)
    return raw is not None and f"</{raw.group(1).lower()}" not in block.lower()


def _html_text(markup: str) -> str:
    """Visible text of a raw HTML block (scripts, styles and hidden elements dropped)."""
    from ingest.loaders.html import visible_text

    return visible_text(markup)
