"""Text from documents and from the model is data: it never acts on the reader in Discord.

A document (or a model repeating one) can say anything: "[click here](https://evil.example)",
"<@123>", "@everyone", "-# ✅ done". Before such text is shown:

- a masked link becomes its text followed by the real URL in angle brackets
  (`click here (<https://evil.example>)`: the reader sees where it goes, and the
  brackets keep Discord from previewing it); a `](` left over from a link that did
  not parse is broken apart, so nothing can still render as a masked link;
- mention syntax (`<@id>`, `<@!id>`, `<@&id>`, `<#id>`, `</command:id>`, `<id:…>`)
  and `@everyone` / `@here` get a zero-width space, so they show as typed and
  resolve to nobody (allowed_mentions none already stops the ping itself);
- a bare URL gets angle brackets too, so no answer previews a page a document
  chose (interaction edits cannot set the suppress-embeds flag; these brackets work
  everywhere);
- a line starting like a heading or Discord's small status text (`#`, `-#`) is
  escaped, so a document cannot fake the bot's "done" line or shout;
- `quoted` also escapes all Markdown (bold, spoilers, code, quotes), for quotes and
  titles (in embeds and in the evidence line of a message), which should read exactly
  as the document says.

Every pattern is linear in the text's length (character classes that exclude their
own delimiters; no nested repetition).
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

_MASKED_LINK = re.compile(
    r"\[([^\[\]\n]*)\]"  # [text]
    r"\(\s*<?([^\s()<>]+)>?"  # (url) or (<url>)
    r"(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)"  # an optional "title"
)
_LEFTOVER_LINK = re.compile(r"\]\s*\(")
_MENTION = re.compile(r"<(?=@|#\d|/[^\s<>]+:\d|id:)")
_PING = re.compile(r"@(everyone|here)")
_LINE_MARKUP = re.compile(r"^([ \t]*)(-#|#{1,3}(?=\s))", re.MULTILINE)
_MARKDOWN_CHAR = re.compile(r"(<https?://[^\s<>]+>)|([\\*_~|`])")
_LINE_START_MARKUP = re.compile(r"^([ \t]*)(>|-#|#{1,3}(?=\s))", re.MULTILINE)
_BARE_URL = re.compile(r"(?<![<\w/])https?://[^\s<>]+")  # one forward scan per URL: no backtracking
_URL_TAIL = re.compile(r"[.,;:!?)\]'\"*_~|`]+$")  # punctuation after a URL belongs to the sentence


def _unmask(match: re.Match[str]) -> str:
    text, url = match.group(1).strip(), match.group(2)
    if not text or text == url:
        return f"<{url}>"
    return f"{text} (<{url}>)"


def unmask_links(text: str) -> str:
    """`[text](url)` -> `text (<url>)`; any other `](` is broken so it cannot form a link."""
    text = _MASKED_LINK.sub(_unmask, text)
    return _LEFTOVER_LINK.sub(lambda m: "]" + ZWSP + m.group(0)[1:], text)


def bracket_urls(text: str) -> str:
    """Bare `https://…` -> `<https://…>`: Discord shows the link but no preview (works in every message kind)."""

    def bracket(match: re.Match[str]) -> str:
        url = match.group(0)
        tail = _URL_TAIL.search(url)
        cut = tail.start() if tail else len(url)
        return f"<{url[:cut]}>{url[cut:]}" if cut > len("https://") else url

    return _BARE_URL.sub(bracket, text)


def neutralise_mentions(text: str) -> str:
    """`<@id>`, `<@&id>`, `<#id>`, `</cmd:id>`, `@everyone`, `@here` shown as typed, resolving to nobody."""
    return _PING.sub("@" + ZWSP + r"\1", _MENTION.sub("<" + ZWSP, text))


def defuse(text: str) -> str:
    """Model or document text for a message: no masked link, mention, ping or fake status line.

    Ordinary Markdown (bold, lists, code) in an answer is kept.
    """
    text = neutralise_mentions(bracket_urls(unmask_links(text)))
    return _LINE_MARKUP.sub(r"\1\\\2", text)


def escape_markdown(text: str) -> str:
    """Every Markdown character shown as typed (`*`, `_`, `~`, `|`, `` ` ``, `\\`; `>`, `#`, `-#` starting a line),
    URLs in angle brackets left whole. discord.utils.escape_markdown is quadratic on `[`, `<` runs."""
    text = _MARKDOWN_CHAR.sub(lambda m: m.group(1) or "\\" + m.group(2), text)
    return _LINE_START_MARKUP.sub(r"\1\\\2", text)


def quoted(text: str) -> str:
    """Document text for an embed or the evidence line (quotes, titles, sections): `defuse`, and every
    Markdown character escaped."""
    return escape_markdown(neutralise_mentions(bracket_urls(unmask_links(text))))
