"""How-to questions about ragcord's own docs: does the reply's lead hold the answer?

    python bench/procedural.py [--questions bench/questions/procedural.jsonl] [--split tune|held|all] [--verbose]

XQuAD asks who, what and when about Wikipedia; members of a team ask "How do I ...?",
"Who can ...?" and "What is the default ...?" about their own tools. The 40 questions of
bench/questions/procedural.jsonl were written by a helper that read only README.md and docs/
(never the code, never the reader's output), each with the verbatim text (a command, a
setting, a phrase) a right answer must contain. README.md and docs/ are ingested into a
fresh store; each question is asked in `extract` mode (no model call) as a member would,
and scored on the reply's first 300 characters, as bench/answers.py scores XQuAD.

Split by question id (sha256, even first byte: tune) like XQuAD's by passage; changes to
the reader are chosen on tune. The raw baseline, in the same process on the same chunks:
the first 300 characters of the top passage (what a reader without sentence selection
shows first).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import contains, read_jsonl, setup_logging, table
from answers import extract_service

ROOT = Path(__file__).resolve().parent.parent
NS = "docs"


def split_of(question_id: str) -> str:
    return "tune" if hashlib.sha256(question_id.encode()).digest()[0] % 2 == 0 else "held"


def found(text: str, answers: list[str]) -> bool:
    return any(contains(text, a) for a in answers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=Path, default=ROOT / "bench" / "questions" / "procedural.jsonl")
    p.add_argument("--split", choices=("tune", "held", "all"), default="all", help="which half to report")
    p.add_argument("--verbose", action="store_true", help="print each question's lead")
    args = p.parse_args(argv)
    setup_logging(False)
    questions = [q for q in read_jsonl(args.questions) if args.split == "all" or split_of(q["id"]) == args.split]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        service = extract_service(data_dir)
        started = time.perf_counter()
        service.ingest_paths(NS, [ROOT / "README.md", ROOT / "docs"])
        service.prepare_index(NS)
        print(f"README.md and docs/ ingested in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        rows: list[dict[str, Any]] = []
        for q in questions:
            answer = service.ask(NS, q["question"])
            answered = answer.status in ("answered", "cautious")
            lead = answer.reply[:300] if answered else ""
            top = answer.hits[0].chunk.text[:300] if answer.hits else ""
            rows.append(
                {
                    "split": split_of(q["id"]),
                    "lead": found(lead, q["answers"]),
                    "sure": answer.status == "answered",
                    "evidence": any(found(h.chunk.text, q["answers"]) for h in answer.hits),
                    "baseline": found(top, q["answers"]),
                }
            )
            if args.verbose:
                mark = "+" if rows[-1]["lead"] else ("." if rows[-1]["evidence"] else "-")
                print(f"{mark} {q['id']} {rows[-1]['split']} {q['question']}\n    {' '.join(lead.split())[:300]}")
    out = []
    for half in ("tune", "held", "all"):
        part = [r for r in rows if half == "all" or r["split"] == half]
        if not part:
            continue
        n = len(part)
        lead, base = sum(r["lead"] for r in part) / n, sum(r["baseline"] for r in part) / n
        wrong = sum(r["sure"] and not r["lead"] and r["evidence"] for r in part) / n
        ev = sum(r["evidence"] for r in part) / n
        out.append([half, n, lead, base, lead / max(base, 1e-9), wrong, ev])
    headers = ["half", "questions", "lead holds the answer", "baseline: top passage", "ratio", "confidently wrong"]
    print(table([*headers, "a retrieved passage holds it"], out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
