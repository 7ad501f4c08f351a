"""Questions that name a setting in plain words: is `RAGCORD_ANSWER_MODE` found for "answer mode"?

    python bench/identifiers.py [--docs docs]

Teams' documents name settings, functions and fields by identifiers (`RAGCORD_TOP_K`,
`chunk_tokens`, embedModel), and members ask about them in plain words. ragcord's
docs/ are ingested through its pipeline into a fresh store, and each setting of
docs/configuration.md's tables is asked about by the words of its name: "What does the
answer mode setting do?" for `RAGCORD_ANSWER_MODE` (the RAGCORD_ prefix left out). A
question is answered when the lead (what a member reads first) names the setting; the
evidence holds it when one of the retrieved passages does.

The raw baseline runs in the same process, on the same stored chunks and vectors: BM25
and the reader with an identifier kept as one word (`identifier_parts` switched off),
as before. Nothing was tuned on these questions, and they are templated from the very
names they ask about: they measure that defect, not how members phrase questions.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import bench_settings, setup_logging, table
from answers import SilentLLM

import store.text
from bot.reader import SentenceSelector
from bot.service import RagService
from store.chroma import ChromaLocation, ChromaStore
from store.embedder import SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parent.parent
SETTING_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|", re.MULTILINE)


def questions_of(path: Path) -> list[dict[str, str]]:
    """One question per setting named in the first cell of a table row of `path`."""
    names = dict.fromkeys(SETTING_ROW.findall(path.read_text(encoding="utf-8")))
    out = []
    for name in names:
        words = [w.lower() for w in name.split("_") if w]
        if words[0] == "ragcord" and len(words) > 1:
            words = words[1:]
        out.append({"name": name, "question": f"What does the {' '.join(words)} setting do?"})
    return out


@contextmanager
def identifiers_as_one_word() -> Iterator[None]:
    """The baseline: no identifier is split into its words (BM25, the reader, the checks)."""
    # store.text._parts_of is what both BM25 (through identifier_parts) and content_words (the reader,
    # the checks) split identifiers with: switching it off switches off every caller. (Switching off
    # identifier_parts alone stopped covering the reader once content_words called _parts_of itself.)
    saved = store.text._parts_of
    store.text._parts_of = lambda raw_words: []
    try:
        yield
    finally:
        store.text._parts_of = saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder to ingest (default: ragcord's docs/)")
    p.add_argument("--settings", type=Path, default=None, help="file whose tables name the settings asked about")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    questions = questions_of(args.settings or args.docs / "configuration.md")
    if not questions:
        print("no settings found to ask about", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        settings = bench_settings(data_dir, answer_mode="extract")
        embedder = SentenceTransformerEmbedder(settings.embed_model, device=settings.embed_device)
        chroma = ChromaStore(ChromaLocation(path=data_dir / "chroma"))

        def service(lexical: str) -> RagService:
            return RagService(
                chroma, embedder, llm_factory=SilentLLM, lexical_dir=data_dir / lexical, settings=settings
            )

        new, base = service("lexical"), service("lexical-baseline")
        started = time.perf_counter()
        new.ingest_paths("docs", [args.docs])
        print(f"{args.docs} ingested in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        selector = SentenceSelector(embedder.embed)
        vectors = {q["question"]: embedder.embed_query(q["question"]) for q in questions}

        def run(svc: RagService) -> list[tuple[bool, bool]]:
            svc.prepare_index("docs")
            got = []
            for q in questions:
                vector = vectors[q["question"]]
                hits = svc.retriever.search("docs", q["question"], settings.top_k, vector=vector)
                lead = selector.select(q["question"], hits, vector)
                evidence = any(f"`{q['name']}`" in h.chunk.text for h in hits)
                got.append((bool(lead and q["name"] in lead.text), evidence))
            return got

        scores: dict[str, Any] = {"identifiers also as their words (default)": run(new)}
        with identifiers_as_one_word():
            scores["identifiers as one word (baseline)"] = run(base)
    n = len(questions)
    rows: list[list[Any]] = [
        [name, sum(lead for lead, _ in got) / n, sum(evidence for _, evidence in got) / n]
        for name, got in scores.items()
    ]
    (_, lead_new, ev_new), (_, lead_base, ev_base) = rows
    rows.append(["ratio default / baseline", lead_new / max(lead_base, 1e-9), ev_new / max(ev_base, 1e-9)])
    print(f"\n{n} questions, one per setting of {args.settings or args.docs / 'configuration.md'}")
    print(table(["reader and BM25", "lead names the setting", "a retrieved passage names it"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
