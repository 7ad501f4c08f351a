"""HTML files, parsed by an HTML5 parser (selectolax's Lexbor): visible text only, one
`Section` per heading.

The parser builds the tree a browser would, implied end tags included (`<p hidden>a<p>b`
closes the hidden paragraph before "b"). Scripts, styles, templates, SVG and the <head>
(except <title>) are skipped, as are elements marked `hidden`, `aria-hidden="true"` or
an inline `display:none`. Block elements become line breaks, entities are decoded, and
h1-h6 start new sections with heading paths like Markdown's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section

if TYPE_CHECKING:
    from selectolax.lexbor import LexborNode

_SKIP = frozenset(  # <title> is the document's title wherever it is, never body text
    {"head", "title", "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas", "select"}
)
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "html", "legend", "li",
        "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
    }
)  # fmt: skip
_PARAGRAPH = frozenset(
    {"p", "blockquote", "pre", "table", "ul", "ol", "dl", "figure", "section", "article", "h1", "h2", "h3", "h4",
     "h5", "h6"}
)  # fmt: skip
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
_CONTROL_MARKS = str.maketrans({_LINE: " ", _PARA: " ", _PRE_SPACE: " "})
_TEXT = "-text"


def load(data: bytes, *, filename: str, source: str) -> LoadedDocument:
    m = _META_CHARSET.search(data[:4096])
    declared = m.group(1).decode("ascii", errors="ignore") if m else "utf-8"
    return parse_html(decode_text(data, filename, declared=declared), source=source)


def parse_html(markup: str, *, source: str = "") -> LoadedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_parseable(markup))
    text = _VisibleText()
    if tree.root is not None:
        text.walk(tree.root)
    title_node = tree.css_first("head > title") or tree.css_first("title")
    title = _squash(title_node.text(deep=True)) if title_node is not None else ""
    return LoadedDocument(source=source, title=title or text.first_h1, kind="html", sections=text.finish())


def visible_text(markup: str) -> str:
    """The visible text of an HTML fragment (a raw HTML block in Markdown); headings are paragraphs."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_parseable(markup))
    text = _VisibleText(headings_start_sections=False)
    if tree.root is not None:
        text.walk(tree.root)
    return "\n\n".join(s.text for s in text.finish())


def _parseable(markup: str) -> str:
    # our boundary marks are control characters the text loader already removed; make sure
    # none reaches the output as a fake boundary
    return markup.translate(_CONTROL_MARKS)


def _boundary(m: re.Match[str]) -> str:
    return "\n\n" if _PARA in m.group(0) else "\n"


def _squash(text: str) -> str:
    return " ".join(text.split())


def _hidden(node: LexborNode) -> bool:
    attrs = node.attributes
    if "hidden" in attrs or (attrs.get("aria-hidden") or "").strip().lower() == "true":
        return True
    style = (attrs.get("style") or "").replace(" ", "").lower()
    return "display:none" in style


class _VisibleText:
    """Walks the parsed tree (iteratively: nesting depth is the document's choice), collecting text."""

    def __init__(self, *, headings_start_sections: bool = True) -> None:
        self.first_h1 = ""
        self._headings = _HEADINGS if headings_start_sections else {}
        self._sections: list[tuple[str, list[str]]] = [("", [])]
        self._path: list[tuple[int, str]] = []
        self._pre = 0
        self._heading: tuple[int, list[str]] | None = None

    def walk(self, root: LexborNode) -> None:
        stack: list[tuple[LexborNode, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            tag = node.tag or ""
            if leaving:
                self._end(tag)
                continue
            if tag == _TEXT:
                self._data(node.text_content or "")
                continue
            if tag.startswith(("-", "_", "!")) or tag in _SKIP or _hidden(node):
                continue  # comments, doctype; skipped and hidden elements with everything inside
            self._start(tag)
            stack.append((node, True))
            children = []
            child = node.child
            while child is not None:
                children.append(child)
                child = child.next
            stack.extend((c, False) for c in reversed(children))

    # -- events -------------------------------------------------------------------------------
    def _start(self, tag: str) -> None:
        if tag in self._headings:
            self._heading = (self._headings[tag], [])
        elif tag == "br":
            self._data_raw("\n")
        elif tag in _BLOCK or tag in _CELL or tag in _HEADINGS:
            self._block(tag, opening=True)
            if tag == "li":
                self._data_raw("- ")
            if tag == "pre":
                self._pre += 1

    def _end(self, tag: str) -> None:
        if tag in self._headings and self._heading is not None:
            level, parts = self._heading
            self._heading = None
            self._start_section(level, _squash("".join(parts)))
        elif tag in _BLOCK or tag in _CELL or tag in _HEADINGS:
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
            self._block(tag)

    def _data(self, data: str) -> None:
        if self._heading is not None:
            self._heading[1].append(data)
        else:
            self._emit(data.replace(" ", _PRE_SPACE) if self._pre else _WHITESPACE.sub(" ", data))

    def _data_raw(self, text: str) -> None:
        if self._heading is not None:
            self._heading[1].append(" " if text == "\n" else "")
        else:
            self._emit(text)

    # -- output -------------------------------------------------------------------------------
    def _emit(self, text: str) -> None:
        self._sections[-1][1].append(text)

    def _block(self, tag: str, *, opening: bool = False) -> None:
        if self._heading is not None:  # a block inside a heading: a space in its title
            self._heading[1].append(" ")
        elif tag in _CELL:
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
        out = []
        for heading, parts in self._sections:
            text = _BOUNDARIES.sub(_boundary, "".join(parts))
            text = _SPACES.sub(" ", text)  # HTML whitespace collapses (but not in <pre>)
            lines = [line.strip(" ").removeprefix("| ").replace(_PRE_SPACE, " ").rstrip() for line in text.split("\n")]
            body = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()
            if body:
                out.append(Section(body, heading=heading))
        return out
