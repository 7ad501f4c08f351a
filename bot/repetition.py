"""Small models loop: "Scanning the citations. Scanning the citations. ..." until the
length cap. A sentence the answer has already said ends generation there
(`stop_when_repeating`, which also saves the rest of the cap's time), and the final
text keeps each sentence once (`drop_repeated_sentences`).

Two sentences are the same when their words are, ignoring case, punctuation and
citation markers ("[1] The bot runs." repeats "The bot runs. [2]"). Sentences of fewer
than two words (list numbers, "Yes.") never count as repeats.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator

from bot.citations import MARKER_RE, words

log = logging.getLogger(__name__)

# A sentence ends at . ! or ? (with the citation markers that follow it) before whitespace,
# or at a blank line; a single line break does not end one, so the lines of a code block
# or config snippet ("restart: always" twice) are not sentences of their own. While
# streaming, the end of the text so far is not an end.
_FOLLOWING_MARKERS = rf"(?:[ \t]*{MARKER_RE.pattern})*"
_END = re.compile(rf"[.!?]+{_FOLLOWING_MARKERS}(?=\s|$)|\n{{2,}}")
_END_STREAMING = re.compile(rf"[.!?]+{_FOLLOWING_MARKERS}(?=\s)|\n{{2,}}")


def sentence_key(sentence: str) -> str | None:
    """What makes two sentences the same (None: too short to say)."""
    said = words(MARKER_RE.sub(" ", sentence))
    return " ".join(said) if len(said) >= 2 else None


def sentence_spans(text: str) -> Iterator[str]:
    """Consecutive pieces of `text`, each ending with its sentence end; they join back to `text`."""
    start = 0
    for match in _END.finditer(text):
        yield text[start : match.end()]
        start = match.end()
    if start < len(text):
        yield text[start:]


def drop_repeated_sentences(text: str) -> str:
    """`text` with every sentence after its first occurrence removed."""
    seen: set[str] = set()
    kept: list[str] = []
    for span in sentence_spans(text):
        key = sentence_key(span)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(span)
    return "".join(kept)


def stop_when_repeating(pieces: Iterable[str]) -> Iterator[str]:
    """Pass `pieces` through until a finished sentence repeats an earlier one, then stop
    (closing the model's stream, so it stops generating)."""
    stream = iter(pieces)
    text = ""
    checked = 0  # text[:checked] is whole sentences, already compared
    seen: set[str] = set()
    try:
        for piece in stream:
            yield piece
            text += piece
            for match in _END_STREAMING.finditer(text, checked):
                key = sentence_key(text[checked : match.end()])
                checked = match.end()
                if key is None:
                    continue
                if key in seen:
                    log.info("the model repeated a sentence; generation stopped there")
                    return
                seen.add(key)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
