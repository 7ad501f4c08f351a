"""Questions about spreadsheet cells: does the lead quote the right row, with its column names?

    python bench/tables.py --office ../shared/data/office

The office set's spreadsheets and CSV files (xlsx, ods, csv) are ingested through
ragcord's pipeline into a fresh store. From each loaded table, rows whose first cell is
unique in the file are picked, evenly spread, and asked about one other cell: "What is
the <column> for <first cell>?". The gold answer is that cell. The lead (what a member
reads first) is scored three ways: it holds the row's first cell and the gold value (the
right row), and it also holds the column's name (the value is cited with what it means).

The raw baseline runs in the same process on the same retrieved passages: the reader
with table reading switched off (each row read alone, as before table headers). Nothing
was tuned on these questions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import contains, setup_logging, table
from answers import extract_service

import bot.reader as reader
from bot.reader import SentenceSelector
from ingest.loaders import load_path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = (".xlsx", ".ods", ".csv", ".tsv")


def questions_of(path: Path, per_file: int) -> list[dict[str, Any]]:
    """Rows of the file's tables whose first cell is unique in the file, each asked about one other cell."""
    try:
        doc = load_path(path, max_bytes=50 * 1024 * 1024)
    except Exception as exc:  # noqa: BLE001 (a file the loader refuses, e.g. a password: reported, skipped)
        print(f"  {path.name}: not loaded ({exc})", file=sys.stderr)
        return []
    candidates: list[tuple[str, str, str]] = []  # (first cell, column name, value)
    firsts: dict[str, int] = {}
    for section in doc.sections:
        lines = section.text.split("\n")
        header = [c.strip() for c in lines[0].split(" | ")]
        if len(header) < 2:
            continue
        for line in lines[1:]:
            cells = [c.strip() for c in line.split(" | ")]
            if len(cells) != len(header) or len(cells[0]) < 2:
                continue
            firsts[cells[0]] = firsts.get(cells[0], 0) + 1
            for name, value in zip(header[1:], cells[1:], strict=True):
                if len(name) >= 2 and len(value) >= 2 and any(ch.isalnum() for ch in value) and value != cells[0]:
                    candidates.append((cells[0], name, value))
                    break
    unique = [c for c in dict.fromkeys(candidates) if firsts[c[0]] == 1]
    step = max(1, len(unique) // per_file)
    picked = unique[::step][:per_file]
    return [
        {
            "file": path.name,
            "question": f"What is the {name} for {first}?",
            "first": first,
            "column": name,
            "gold": value,
        }
        for first, name, value in picked
    ]


def no_tables(sentences: Sequence[str]) -> list[int | None]:
    """The baseline: no sentence is a table row, so each row is read alone."""
    return [None] * len(sentences)


def score(lead: reader.Lead | None, q: dict[str, Any]) -> tuple[bool, bool]:
    if lead is None:
        return False, False
    right_row = contains(lead.text, q["first"]) and contains(lead.text, q["gold"])
    return right_row, right_row and contains(lead.text, q["column"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--office", type=Path, default=ROOT.parent / "shared" / "data" / "office")
    p.add_argument("--per-file", type=int, default=20, help="questions per file (evenly spread rows)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    files = sorted(f for f in args.office.iterdir() if f.suffix.lower() in SUFFIXES)
    if not files:
        print(f"no spreadsheets under {args.office}", file=sys.stderr)
        return 1
    questions = [q for f in files for q in questions_of(f, args.per_file)]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        service = extract_service(data_dir)
        settings, embedder = service.settings, service.embedder
        started = time.perf_counter()
        results = service.ingest_paths("tables", files)
        print(f"{len(results)} files ingested in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        service.prepare_index("tables")
        selector = SentenceSelector(embedder.embed)
        cases = []
        for q in questions:
            vector = embedder.embed_query(q["question"])
            hits = service.retriever.search("tables", q["question"], settings.top_k, vector=vector)
            cases.append((q, hits, vector))
        readers = {"with table reading (default)": reader.table_headers, "each row alone (baseline)": no_tables}
        scores: dict[str, list[tuple[bool, bool]]] = {}  # per reader: (right row, and its column name) a question
        for name, headers in readers.items():
            original, reader.table_headers = reader.table_headers, headers  # type: ignore[assignment]
            try:
                scores[name] = [score(selector.select(q["question"], hits, vector), q) for q, hits, vector in cases]
            finally:
                reader.table_headers = original
    n = max(1, len(cases))
    files_asked = sorted({q["file"] for q in questions})
    print(f"\n{len(cases)} questions from {len(files_asked)} files (lead: what a member reads first)")
    totals = {name: [sum(r for r, _ in got), sum(c for _, c in got)] for name, got in scores.items()}
    rows: list[list[Any]] = [[name, row / n, named / n] for name, (row, named) in totals.items()]
    new, base = totals.values()
    rows.append(["ratio default / baseline", new[0] / max(1, base[0]), new[1] / max(1, base[1])])
    print(table(["reader", "right row", "right row and its column name"], rows))
    per_file = []
    for f in files_asked:
        mine = [i for i, q in enumerate(questions) if q["file"] == f]
        counts = [sum(scores[name][i][k] for i in mine) for name in readers for k in (0, 1)]
        per_file.append([f, len(mine), *counts])
    print()
    print(table(["file", "questions", "row", "row+column", "baseline row", "baseline row+column"], per_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
