"""What the model's text must pass before it may lead a reply (docs/how-it-works.md, step 5),
and the trimming every model text gets. The same checks for every backend and for summaries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.citations import MARKER_RE, Citation, backs, claims
from bot.reader import LEAD_CHARS, Lead
from bot.repetition import degenerate_at, drop_repeated_sentences
from store.text import terms

# The model's sentence must be grounded in the lead evidence (share of its content terms
# found there) and carry some of the lead's new information (terms the question lacks).
# Measured on the tuning half of XQuAD dev with SmolLM2-135M (bench/answers.py; docs/how-it-works.md).
GROUNDED = 0.6
NOVEL_TERMS = 1


def cited_claims(text: str) -> str:
    """The sentences of `text` that carry a citation marker (all of it when none does)."""
    return " ".join(s for s in claims(text) if MARKER_RE.search(s)) or text


def grounding(question: str, text: str, lead: Lead) -> tuple[float, int]:
    """(share of the cited sentences' content terms found in the lead evidence, how many of
    the best sentence's terms that the question lacks they hold)."""
    cited = cited_claims(text)
    claim = terms(MARKER_RE.sub(" ", cited), parts=False)
    if not claim:
        return 0.0, 0
    have = terms(f"{lead.chunk.title} {lead.chunk.section} {lead.text}")
    novel = terms(lead.core or lead.text) - terms(question)  # the best sentence's, not its neighbour's
    return len(claim & have) / len(claim), len(claim & novel) if novel else NOVEL_TERMS


def check_answer(
    question: str,
    text: str,
    citations: Sequence[Citation],
    lead: Lead | None,
    *,
    grounded: float = GROUNDED,
    novel_terms: int = NOVEL_TERMS,
) -> str:
    """Why the model's checked text must not lead the reply ("" when it may).

    - degenerate: a loop, an echoed passage list, a role label, or an "I don't know";
    - unbacked: no sentence carries a citation that its passage backs (`verify` dropped them);
    - not grounded: the cited sentences' content terms are not mostly in the lead evidence;
    - says nothing new: they hold none of the lead's terms that the question lacks, so they
      do not carry its answer (a backed sentence that merely restates the question);
    - too long: the text and the whole quote under it must fit in the reply's first 300
      characters, what a member reads first (XQuAD dev, auto: a long model sentence pushed
      the answering quote out of them in 5 / 8 of 307 / 316 questions).
    """
    if not text.strip():
        return "the model gave no answer"
    if degenerate_at(text) is not None:
        return "degenerate output"
    if re.search(r"\b(?:i don'?t know|not (?:available|mentioned|provided))\b", text, re.IGNORECASE):
        return "the model did not answer"
    if not citations:
        return "no sentence is backed by the passage it cites"
    if lead is None:
        return ""
    share, new = grounding(question, text, lead)
    if share == 0.0:
        return "no sentence is backed by the passage it cites"
    if share < grounded:
        return "not grounded in the evidence that answers the question"
    if new < novel_terms:
        return "it does not answer the question"
    if not backs(cited_claims(text), lead.chunk):
        return "no sentence is backed by the passage it cites"
    if len(text) + 4 + len(lead.text) > LEAD_CHARS:
        return "too long to lead: the quote would no longer fit in what a member reads first"
    return ""


def tidy(text: str) -> str:
    """Trim what small models append: role labels, echoed passage headers, sentences said twice."""
    text = re.split(r"\n(?:User|Assistant|Question|Passages?)\s*:", text)[0]
    # echoed passage headers: "[2] (Title, p. 3)" or "Passage [2]:"
    text = re.sub(r"(?m)^\s*(?:Passage\s*)?\[?\d+\]?[.:]?\s*\([^()\n]{0,120}\)\s*", "", text)
    text = re.sub(r"(?m)^\s*Passage\s*\[\d+\]\s*:\s*", "", text)
    text = drop_repeated_sentences(text)
    text = re.sub(r"\s*\[[^\]\n]{0,12}$", "", text)  # a citation cut off by a stop: "… citations. ["
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text
