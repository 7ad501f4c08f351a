"""Markdown files: one `Section` per heading, with the heading path ("Install > On Linux").

ATX (`## Title`) and setext (`Title` over `===`/`---`) headings start sections; `#`
lines inside fenced code blocks do not. YAML front matter is dropped (its `title:`
is used as the document title). Text is kept readable: code blocks stay, link URLs
and image syntax go, emphasis markers are stripped lightly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_KEY = re.compile(r"^[A-Za-z_][\w -]*:", re.MULTILINE)
_FRONT_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_HEADING_ID = re.compile(r"[ \t]*\{#[^}]*\}$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+.*$")
_LIST_ITEM = re.compile(r"^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_IMAGE = re.compile(r"!\[[^\]]*\](?:\([^)]*\)|\[[^\]]*\])")
_LINK = re.compile(r"\[([^\]]*)\](?:\((?:[^()]|\([^)]*\))*\)|\[[^\]]*\])")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_HTML_COMMENT = re.compile(r"<!--.*?-->")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EMPHASIS_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_EMPHASIS_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(slots=True)
class _Section:
    heading: str
    lines: list[str] = field(default_factory=list)


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
    sections = [_Section("")]
    path: list[tuple[int, str]] = []
    first_h1 = ""
    fence = ""  # the opening fence while inside a fenced code block
    prev = "blank"  # what the previous line was: "blank", "para" (paragraph text) or "other"

    def start(level: int, title: str) -> None:
        nonlocal first_h1
        title = _HEADING_ID.sub("", title).strip()
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        if level == 1 and not first_h1:
            first_h1 = title
        sections.append(_Section(" > ".join(t for _, t in path if t)))

    for line in text.split("\n"):
        body = sections[-1].lines
        if fence:
            closing = _FENCE.match(line)
            if closing and _closes(fence, closing.group(1)) and not closing.group(2).strip():
                fence = ""
            else:
                body.append(line)
            prev = "other"
            continue
        opening = _FENCE.match(line)
        if opening and not (opening.group(1)[0] == "`" and "`" in opening.group(2)):
            fence, prev = opening.group(1), "other"
            continue
        atx = _ATX.match(line)
        if atx:
            start(len(atx.group(1)), clean_inline(atx.group(2) or ""))
            prev = "other"
            continue
        setext = _SETEXT.match(line)
        if setext and prev == "para":
            para = _take_paragraph(body)
            if para:
                start(1 if setext.group(1)[0] == "=" else 2, " ".join(p.strip() for p in para))
                prev = "other"
                continue
        if _THEMATIC_BREAK.match(line) or _TABLE_RULE.match(line) or _LINK_DEF.match(line):
            prev = "other"
            continue
        body.append(clean_inline(_QUOTE.sub("", line)).rstrip())
        prev = "para" if line.strip() else "blank"

    out = []
    for s in sections:
        body_text = _BLANK_LINES.sub("\n\n", "\n".join(s.lines)).strip("\n")
        if body_text.strip():
            out.append(Section(body_text, heading=s.heading))
    return out, first_h1


def _closes(fence: str, candidate: str) -> bool:
    return candidate[0] == fence[0] and len(candidate) >= len(fence)


def _take_paragraph(body: list[str]) -> list[str]:
    """Pop the trailing paragraph lines (a setext heading's text) off `body`; [] if they are not one."""
    start = len(body)
    while start > 0 and body[start - 1].strip():
        start -= 1
    para = body[start:]
    if any(_LIST_ITEM.match(p) for p in para) or not para:
        return []
    del body[start:]
    return para


def clean_inline(line: str) -> str:
    """Drop image syntax and link URLs, keep link text; strip emphasis markers outside code spans."""
    parts = []
    pos = 0
    for m in _INLINE_CODE.finditer(line):
        parts.append(_clean_prose(line[pos : m.start()]))
        parts.append(m.group(0))
        pos = m.end()
    parts.append(_clean_prose(line[pos:]))
    return "".join(parts)


def _clean_prose(text: str) -> str:
    if not text:
        return text
    text = _HTML_COMMENT.sub("", text)
    text = _IMAGE.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _HTML_TAG.sub("", text)
    text = _STRONG.sub(r"\2", text)
    text = _EMPHASIS_STAR.sub(r"\1", text)
    text = _EMPHASIS_UNDERSCORE.sub(r"\1", text)
    text = _STRIKE.sub(r"\1", text)
    return _INNER_SPACES.sub(" ", text)
