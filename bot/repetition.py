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
from collections.abc import Generator, Iterable, Iterator

from bot.citations import MARKER_RE
from store.text import words

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


def stop_when_repeating(pieces: Iterable[str]) -> Generator[str, None, None]:
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


# -- degenerate output: loops inside a sentence, echoed passage lists, role labels -------------

LOOP_WORDS = 4  # a phrase of this many words said twice in one answer is a loop ("the answer is not available")
_ROLE_LABEL = re.compile(r"(?:^|\n)\s*(?:User|Assistant|System|Question|Passages?|Evidence)\s*:", re.IGNORECASE)
# a passage marker that opens the answer or one of its sentences or lines: "[1] Scanning ... [2] If ..."
_LEADING_MARKER = re.compile(rf"(?:^|[.!?]\s+|\n\s*){MARKER_RE.pattern}")
_WORD_SPAN = re.compile(r"\w+", re.UNICODE)


def degenerate_at(text: str) -> tuple[int, str] | None:
    """Where `text` turns degenerate and why, or None: the first role label, the second
    passage marker that opens a sentence (an echoed list of passages), or the second
    occurrence of a LOOP_WORDS-word phrase (a loop, also inside one sentence)."""
    found: list[tuple[int, str]] = []
    role = _ROLE_LABEL.search(text)
    if role:
        found.append((role.start(), "role label"))
    leading = list(_LEADING_MARKER.finditer(text))
    if len(leading) >= 2:
        found.append((leading[1].start(), "echoed passage list"))
    spans = [(m.start(), m.group().lower()) for m in _WORD_SPAN.finditer(MARKER_RE.sub(_blank, text))]
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(spans) - LOOP_WORDS + 1):
        gram = tuple(w for _, w in spans[i : i + LOOP_WORDS])
        first = seen.setdefault(gram, i)
        if first != i and i >= first + 1:
            found.append((spans[i][0], "repeated phrase"))
            break
    return min(found) if found else None


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group())  # markers are not words, and offsets stay those of `text`


def stop_when_degenerate(pieces: Iterable[str], *, holdback_words: int = LOOP_WORDS) -> Iterator[str]:
    """Pass the model's text through, cut before it turns degenerate (see `degenerate_at`)
    or repeats a finished sentence (`stop_when_repeating`).

    The last `holdback_words` words are held back until more text follows, so the text
    passed on never includes the start of a loop: the reader never watches one grow.
    """
    guarded: Generator[str, None, None] = stop_when_repeating(pieces)  # closing it closes the model's stream
    text, sent = "", 0
    try:
        for piece in guarded:
            text += piece
            bad = degenerate_at(text)
            if bad is not None:
                log.info("the model's text turned degenerate (%s); generation stopped there", bad[1])
                if bad[0] > sent:
                    yield text[sent : bad[0]]
                return
            starts = [m.start() for m in _WORD_SPAN.finditer(text, sent)]
            safe = starts[-holdback_words] if len(starts) >= holdback_words else sent
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        bad = degenerate_at(text)
        end = bad[0] if bad is not None else len(text)
        if end > sent:
            yield text[sent:end]
    finally:
        guarded.close()
