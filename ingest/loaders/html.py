"""HTML files, with the standard library's parser: visible text only, one `Section` per heading.

Scripts, styles, templates, SVG and the <head> (except <title>) are skipped, as are
elements marked `hidden`. Block elements become line breaks, entities are decoded,
and h1-h6 start new sections with heading paths like Markdown's.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section

_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas", "select"})
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "html", "legend", "li",
        "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPH = frozenset({"p", "blockquote", "pre", "table", "ul", "ol", "dl", "figure", "section", "article"})
_CELL = frozenset({"td", "th"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE = "\x00"  # block boundary: a line break (runs of them collapse into one)
_PARA = "\x02"  # paragraph boundary: a blank line
_BOUNDARIES = re.compile(r" *[\x00\x02][\x00\x02 ]*")
_PRE_SPACE = "\x01"  # a space inside <pre>, which does not collapse


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    m = _META_CHARSET.search(data[:4096])
    declared = m.group(1).decode("ascii", errors="ignore") if m else "utf-8"
    return parse_html(decode_text(data, filename, declared=declared), source=source)


def parse_html(markup: str, *, source: str = "") -> LoadedDocument:
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    title = _squash(parser.title) or parser.first_h1
    return LoadedDocument(source=source, title=title, kind="html", sections=parser.finish())


def _boundary(m: re.Match[str]) -> str:
    return "\n\n" if _PARA in m.group(0) else "\n"


def _squash(text: str) -> str:
    return " ".join(text.split())


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.first_h1 = ""
        self._sections: list[tuple[str, list[str]]] = [("", [])]
        self._path: list[tuple[int, str]] = []
        self._skip_tag = ""  # the element whose content is being skipped
        self._skip_depth = 0
        self._in_head = False
        self._in_title = False
        self._pre = 0
        self._heading: tuple[int, list[str]] | None = None

    # -- events -------------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag:
            if tag == self._skip_tag and tag not in _VOID:
                self._skip_depth += 1
            return
        attr = dict(attrs)
        hidden = "hidden" in attr or (attr.get("aria-hidden") or "").lower() == "true"
        style = (attr.get("style") or "").replace(" ", "").lower()
        if tag in _SKIP or ((hidden or "display:none" in style) and tag not in _VOID):
            self._skip_tag, self._skip_depth = tag, 1
        elif tag == "head":
            self._in_head = True
        elif tag == "body":
            self._in_head = False
        elif tag == "title":
            self._in_title = True
        elif tag in _HEADINGS:
            self._in_head = False
            self._heading = (_HEADINGS[tag], [])
        elif tag == "br":
            self._emit("\n")
        elif tag in _BLOCK or tag in _CELL:
            self._in_head = False
            self._block(tag, opening=True)
            if tag == "li":
                self._emit("- ")
            if tag == "pre":
                self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth <= 0:
                    self._skip_tag = ""
            return
        if tag == "head":
            self._in_head = False
        elif tag == "title":
            self._in_title = False
        elif tag in _HEADINGS and self._heading is not None:
            level, parts = self._heading
            self._heading = None
            self._start_section(level, _squash("".join(parts)))
        elif tag in _BLOCK or tag in _CELL:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._block(tag)

    def handle_data(self, data: str) -> None:
        if self._skip_tag:
            return
        if self._in_title:
            self.title += data
        elif self._heading is not None:
            self._heading[1].append(data)
        elif not self._in_head:
            self._emit(data.replace(" ", _PRE_SPACE) if self._pre else _WHITESPACE.sub(" ", data))

    # -- output -------------------------------------------------------------------------------
    def _emit(self, text: str) -> None:
        self._sections[-1][1].append(text)

    def _block(self, tag: str, *, opening: bool = False) -> None:
        if tag in _CELL:
            if opening:
                self._emit(" | ")  # cells of a row: "a | b"
        else:
            self._emit(_PARA if tag in _PARAGRAPH else _LINE)

    def _start_section(self, level: int, heading: str) -> None:
        if level == 1 and not self.first_h1:
            self.first_h1 = heading
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, heading))
        self._sections.append((" > ".join(h for _, h in self._path if h), []))

    def finish(self) -> list[Section]:
        if self._heading is not None:  # an unclosed heading at the end of the file
            level, parts = self._heading
            self._heading = None
            self._start_section(level, _squash("".join(parts)))
        out = []
        for heading, parts in self._sections:
            text = _BOUNDARIES.sub(_boundary, "".join(parts))
            text = _SPACES.sub(" ", text)  # HTML whitespace collapses (but not in <pre>)
            lines = [line.strip(" ").removeprefix("| ").replace(_PRE_SPACE, " ").rstrip() for line in text.split("\n")]
            body = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
            if body:
                out.append(Section(body, heading=heading))
        return out
