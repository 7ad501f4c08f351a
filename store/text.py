"""The text toolkit that ingest, retrieval and answering share: one sentence splitter,
one stop-word list, one way to turn text into terms.

Sentences: a regex splitter of the project's own, not pysbd or blingfire. It returns
verbatim pieces with the whitespace between them (quotes must be real text, and the
chunker rebuilds chunks from them), it is linear in the input, and it runs on every
sentence of every ingested document, where pysbd costs milliseconds a sentence and
neither library keeps the separators. Boundaries: sentence-ending punctuation
followed by a non-lowercase character (not after abbreviations such as "e.g." or
"Dr." or initials), paragraph breaks, and the start of list items. Decimal numbers
and URLs never split (no space follows their dots).

Stop words: one list, used by BM25 (store/lexical.py passes it to bm25s), by the
citation checks and by the sentence reader. It holds the question words ("what",
"how", "which") that Lucene's 33-word list lacks: a question's "what" is not evidence.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import accumulate

STOPWORDS = frozenset(
    (
        "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with",
        "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that",
        "these", "those", "there", "here", "what", "which", "who", "whom", "whose", "when", "where", "why",
        "how", "do", "does", "did", "done", "not", "no", "yes", "can", "could", "would", "should", "will",
        "shall", "may", "might", "must", "have", "has", "had", "having", "i", "you", "he", "she", "we",
        "they", "me", "him", "her", "us", "them", "my", "your", "his", "our", "their", "than", "then", "so",
        "such", "into", "about", "over", "under", "also", "only", "just", "more", "most", "some", "any",
        "each", "other", "something", "anything", "someone", "anyone", "somebody", "anybody", "somewhere",
        "anywhere", "somehow", "anyhow", "anyway"
    )
)  # fmt: skip

# Words whose trailing period does not end a sentence (checked lower-case, without the final dot).
_ABBREVIATIONS = frozenset(
    {
        "e.g", "i.e", "cf", "vs", "etc", "al", "approx", "ca", "dr", "mr", "mrs", "ms", "prof", "sr", "jr",
        "mt", "rev", "gov", "sen", "rep", "gen", "lt", "col", "capt", "sgt", "hon", "fig", "figs", "eq",
        "eqs", "eds", "inc", "ltd", "corp", "dept", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
        "sept", "oct", "nov", "dec", "resp", "viz",
    }
)  # fmt: skip
# ... and these only before a number ("No. 5", "p. 3"), since they are also ordinary words.
_BEFORE_NUMBER = frozenset({"no", "nos", "p", "pp", "vol", "ch", "sec", "ref", "refs", "art", "st", "ed"})
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_SENTENCE_END = re.compile(r"(?:[.!?…]+[\"'”’»)\]]*\s+|[。！？]+[\"'”’」』)]*\s*)(?=\S)")
_LIST_ITEM = re.compile(r"\n[^\S\n]*(?:[-*+•‣◦▪–]|\d{1,3}[.)]|[a-zA-Z][.)]|\(\w{1,3}\))[^\S\n]+(?=\S)")
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")
_WORD_RE = re.compile(r"\w+", re.UNICODE)
# a camelCase or snake_case piece: "HTTP" before "Server", "embed", "Model", "10"
_IDENTIFIER_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

Piece = tuple[str, str]  # (the whitespace before it, the stripped text)

# Clipped words teams write in chat for the words their documents spell out ("How do I add a
# folder of docs?" against "adds or updates documents"): each is read as the full word on both
# sides, before its dictionary form. Only clippings with one meaning in technical writing ("dev",
# "min", "temp" and "auth" have two). No library keeps such a list; WordNet and simplemma do not map them.
_CLIPPED = {
    "doc": "document", "docs": "documents", "config": "configuration", "configs": "configurations",
    "repo": "repository", "repos": "repositories", "info": "information", "admin": "administrator",
    "admins": "administrators", "dir": "directory", "dirs": "directories", "env": "environment",
    "msg": "message", "msgs": "messages", "db": "database", "dbs": "databases", "app": "application",
    "apps": "applications", "pic": "picture", "pics": "pictures", "img": "image", "imgs": "images",
    "param": "parameter", "params": "parameters", "arg": "argument", "args": "arguments",
    "var": "variable", "vars": "variables", "perm": "permission", "perms": "permissions",
    "max": "maximum", "num": "number", "lib": "library", "libs": "libraries", "pkg": "package",
    "spec": "specification", "specs": "specifications", "stats": "statistics", "pwd": "password",
    "passwd": "password", "prefs": "preferences",
}  # fmt: skip


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def identifier_parts(text: str) -> list[str]:
    """The words inside the identifiers of `text`, lower-cased: `RAGCORD_ANSWER_MODE` gives
    ragcord, answer, mode; embedModel and HTTPServer give embed, model and http, server. Teams'
    documents name settings and code, and a question names them in plain words; the whole
    identifier stays a term of its own too (callers add these beside it). Linear in the text."""
    return _parts_of(_WORD_RE.findall(text))


def _parts_of(raw_words: Sequence[str]) -> list[str]:
    """identifier_parts of words already found (as written, not lower-cased)."""
    parts: list[str] = []
    for word in raw_words:
        if "_" in word or not (word.islower() or word.isupper() or word.istitle()):
            found = [p for piece in word.split("_") for p in _IDENTIFIER_PART.findall(piece)]
            if len(found) > 1:
                parts += (p.lower() for p in found)
    return parts


def content_words(text: str, *, parts: bool = True) -> list[str]:
    """Lower-cased words that carry content (no stop words), and (`parts`) the words inside
    identifiers. The evidence side gets the parts, the asking side does not: "answer mode" finds
    `RAGCORD_ANSWER_MODE`, while a question naming `mkd_test.docx` wants that file, not every
    text that says "test"."""
    raw = _WORD_RE.findall(text)  # found once: the words and, from them, the identifiers' parts
    found = [w.lower() for w in raw] + (_parts_of(raw) if parts else [])
    return [w for w in found if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


@lru_cache(maxsize=1)
def stemmer() -> Callable[[str], str]:
    """English Snowball stemming (PyStemmer)."""
    import Stemmer

    return Stemmer.Stemmer("english").stemWord  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def lemmatizer() -> Callable[[str], str]:
    """A word's dictionary form (simplemma, its English word list): "longest" -> "long", "began" ->
    "begin", "children" -> "child", "mice" -> "mouse", the forms that Snowball's suffix rules miss.
    A word it does not know comes back as it is. A lookup, so linear in the word."""
    import simplemma

    def lemma(word: str) -> str:
        return str(simplemma.lemmatize(word, lang="en")).lower()

    return lemma


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The term a lower-cased word becomes: its dictionary form, stemmed. BM25 uses it too
    (store.lexical), so a question's terms and the index's are the same. Lemma first: "How long
    may a question be?" matches "Longest question accepted"; stem next: "refunding" and "refunds"
    still meet at "refund" where the word list has no entry. A clipped word ("docs") is read as the
    word it shortens ("documents") first."""
    return stemmer()(lemmatizer()(_CLIPPED.get(word, word)))


def terms(text: str, *, parts: bool = True) -> set[str]:
    """Stemmed content words: 'finished' and 'finish', 'tackles' and 'tackle' match (`parts`:
    as in content_words; a question's or a claim's terms are taken without them)."""
    return {stem(w) for w in content_words(text, parts=parts)}


def idf_weights(passages: Sequence[str]) -> dict[str, float]:
    return idf_of_terms([terms(p) for p in passages])


def idf_of_terms(term_sets: Sequence[set[str]]) -> dict[str, float]:
    """idf_weights over texts whose `terms` are already known."""
    df: Counter[str] = Counter()
    for t in term_sets:
        df.update(t)
    n = max(len(term_sets), 1)
    return {w: math.log(1 + n / (1 + c)) + 0.5 for w, c in df.items()}


def sentence_pieces(text: str) -> list[Piece]:
    """The sentences of `text` (stripped), each with the whitespace that preceded it:
    `"".join(sep + s for sep, s in pieces)` is `text.strip()`."""
    cuts = {m.end() for m in _PARAGRAPH_BREAK.finditer(text)}
    cuts.update(m.start() + 1 for m in _LIST_ITEM.finditer(text))
    cuts.update(m.end() for m in _SENTENCE_END.finditer(text) if _is_sentence_end(text, m.start(), m.end()))
    rows = _table_row_cuts(text)
    if rows:  # a table row is one sentence, whatever its cells hold: no cut inside one
        starts, ends = rows[0::2], rows[1::2]
        cuts = {c for c in cuts if not _inside(c, starts, ends)}
        cuts.update(rows)
    return pieces_between(text, sorted(cuts))


def _inside(cut: int, starts: list[int], ends: list[int]) -> bool:
    """`cut` falls strictly inside one of the sorted, disjoint spans (starts[i], ends[i])."""
    i = bisect_right(starts, cut) - 1
    return i >= 0 and starts[i] < cut < ends[i]


def table_headers(sentences: Sequence[str]) -> list[int | None]:
    """For each sentence, the position of its table's header row if it is a row of a table
    (a run of two or more " | "-joined lines: the splitter makes each row a sentence), else None.
    The header is the run's first row: loaders start every table, and every spreadsheet piece, with it."""
    out: list[int | None] = [None] * len(sentences)
    start: int | None = None
    for i, text in enumerate(sentences):
        if " | " not in text:
            start = None
            continue
        if start is None:
            start = i
        else:
            out[i] = start
    return out


def _table_row_cuts(text: str) -> list[int]:
    """Where each row of a table starts and ends: loaders write one " | "-joined line per row,
    and two or more such lines in a row are a table, so each row is a sentence of its own."""
    if " | " not in text:
        return []
    lines = text.split("\n")
    starts = list(accumulate((len(line) + 1 for line in lines[:-1]), initial=0))
    row = [" | " in line for line in lines]
    cuts = []
    for i, start in enumerate(starts):
        if row[i] and ((i > 0 and row[i - 1]) or (i + 1 < len(row) and row[i + 1])):
            cuts += [start, start + len(lines[i])]
    return cuts


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` as verbatim substrings (so a quote is always real text)."""
    return [s for _, s in sentence_pieces(text)]


def pieces_between(text: str, cuts: list[int]) -> list[Piece]:
    """The stripped pieces of `text` between cut positions, each with the whitespace before it."""
    pieces: list[Piece] = []
    prev, body_end = 0, 0
    for cut in [*cuts, len(text)]:
        piece = text[prev:cut]
        body = piece.strip()
        if body:
            body_start = prev + len(piece) - len(piece.lstrip())
            pieces.append((text[body_end:body_start] if pieces else "", body))
            body_end = body_start + len(body)
        prev = cut
    return pieces


def _is_sentence_end(text: str, punct_start: int, next_start: int) -> bool:
    following = text[next_start]
    if following.islower():
        return False
    if text[punct_start] != ".":
        return True
    before = text[max(0, punct_start - 40) : punct_start].rsplit(None, 1)
    word = before[-1].lstrip("([{\"'“‘`*_") if before else ""  # also Markdown's code and emphasis marks
    lowered = word.lower().rstrip(".")
    if lowered in _ABBREVIATIONS or (lowered in _BEFORE_NUMBER and following.isdigit()):
        return False
    if word.isdigit() and len(word) <= 3 and word == before[-1] and _starts_sentence(text, punct_start - len(word)):
        return False  # a list number ("5. Choosing what leads", "1. Install it. 2. Run it."): its item follows
    return not (_INITIALS.fullmatch(word + ".") and len(word) <= 6)


def _starts_sentence(text: str, at: int) -> bool:
    """Nothing but a line break or a sentence's end comes before `at` (looking back a little)."""
    prefix = text[max(0, at - 40) : at]
    stripped = prefix.rstrip()
    return not stripped or "\n" in prefix[len(stripped) :] or stripped.endswith((".", "!", "?", ":", "…"))
