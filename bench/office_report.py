"""A table per file of what ragcord makes of a folder of documents (issue 14): format, chunks,
locations, probe phrase found, seconds.

    python bench/office_report.py [--dir /work/shared/data/office] [--timeout 60] [--no-ocr] [--ask]

The folder's MANIFEST.tsv (file, format, category, probe_phrase, probe_location), when there
is one, names the files and what to look for; without one every file in the folder (and
below it) is loaded, its format is the one ragcord detects from its content, and there is
no probe to check. For each file: loaded or refused (with its one-line reason), seconds,
sections and chunks (chunked with a word count standing in for the tokenizer), the
locations its chunks are cited with (how many distinct ones, and the first two), whether
the probe phrase is in the extracted text (case-insensitive, whitespace collapsed;
"loose" also ignores the " | " between cells, and in OCR'd text the spaces OCR drops), and
whether the section holding it matches probe_location loosely: the slide number, the
sheet name, the row inside the cited range, the heading or the attachment named there
("-" when the location names none of these). Images are read by OCR (--no-ocr skips
them). Hostile files must be refused or capped, never crash. With --ask, the loaded files
are also ingested into a fresh store (the configured encoder) and each probe phrase is
asked as `ragcord ask --evidence-only` does (answer mode "extract", no model): "lead"
when the quoted evidence is from the file and holds the phrase, "top3" when one of the
first three passages does, with the location check on that passage. Prints the table
and totals; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import setup_logging, table, write_result

DEFAULT_DIR = Path("/work/shared/data/office")
_SPACES = re.compile(r"\s+")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the folder (its MANIFEST.tsv is optional)")
    p.add_argument("--no-ocr", action="store_true", help="skip the images (OCR takes seconds a file)")
    p.add_argument("--timeout", type=int, default=60, help="seconds one file may take")
    p.add_argument("--max-mb", type=int, default=50, help="file size limit (RAGCORD_MAX_FILE_MB)")
    p.add_argument("--ask", action="store_true", help="also ingest and ask each probe phrase (evidence only)")
    return p.parse_args(argv)


def norm(text: str, *, loose: bool = False) -> str:
    if loose:
        text = text.replace("|", " ")
    return _SPACES.sub(" ", text).strip().lower()


def _rows_of(heading: str) -> tuple[int, int] | None:
    m = re.search(r"rows? (\d+)(?:-(\d+))?$", heading) or re.search(r"![A-Z]+(\d+):[A-Z]+(\d+)$", heading)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or m.group(1))


def location_matches(location: str, section: Any) -> str:
    """ "yes"/"no" when the manifest's location names something checkable, else "-"."""
    checks: list[bool] = []
    heading = section.heading or ""
    if m := re.search(r"slide (\d+)", location):
        checks.append(section.page == int(m.group(1)))
    if m := re.search(r"sheet '([^']+)'", location):
        checks.append(heading.startswith(m.group(1) + "!"))
    if (m := re.search(r"\brow (\d+)", location)) and (span := _rows_of(heading)):
        checks.append(span[0] <= int(m.group(1)) <= span[1])
    if m := re.search(r"attachment (\S+)", location):
        checks.append(f"Attachment: {m.group(1)}" in heading)
    for m in re.finditer(r"(?:section|heading|in|under) '([^']+)'", location):
        if "sheet '" + m.group(1) not in location:
            checks.append(norm(m.group(1))[:30] in norm(heading))
    if not checks:
        return "-"
    return "yes" if all(checks) else "no"


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def manifest_rows(folder: Path) -> list[dict[str, str]]:
    """MANIFEST.tsv's rows, or one row per file of the folder (its format detected) when it has none."""
    from ingest.loaders import LoadError, detect_kind
    from ingest.loaders.image import image_format

    manifest = folder / "MANIFEST.tsv"
    if manifest.is_file():
        with manifest.open(encoding="utf-8") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        data = path.read_bytes()
        try:  # from the content (magic bytes, a zip's members), as the loaders decide it
            kind = (image_format(data[:16]) or "").lower() or detect_kind(data, path.name)
        except LoadError:
            kind = path.suffix.lstrip(".").lower() or "?"
        name = str(path.relative_to(folder))
        rows.append({"file": name, "format": kind, "category": "", "probe_phrase": "", "probe_location": ""})
    return rows


def is_image(row: dict[str, str]) -> bool:
    return row.get("format", "").lower() in ("png", "jpg", "jpeg", "tiff", "tif", "webp")


def run_one(path: Path, row: dict[str, str], max_bytes: int, timeout: int) -> dict[str, Any]:
    from ingest.chunking import Chunker
    from ingest.loaders import LoadError, load_path
    from store.types import OCR_PAGES_KEY

    out: dict[str, Any] = {"file": row["file"], "format": row["format"], "category": row.get("category", "")}
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        doc = load_path(path, max_bytes=max_bytes)
    except LoadError as exc:
        out.update(status="refused", reason=str(exc))
        return out
    except _Timeout:
        out.update(status="TIMEOUT")
        return out
    except Exception as exc:  # noqa: BLE001 - the bench reports a crash instead of stopping
        out.update(status="CRASH", reason=f"{type(exc).__name__}: {exc}")
        return out
    finally:
        signal.alarm(0)
        out["seconds"] = time.perf_counter() - started
    chunks = Chunker(lambda texts: [len(t.split()) + 2 for t in texts]).chunk(doc)
    probe = norm(row.get("probe_phrase", ""))
    ocr = bool(doc.extra.get(OCR_PAGES_KEY))

    def squeeze(text: str) -> str:  # OCR drops spaces between words: compare without them
        return norm(text, loose=True).replace(" ", "") if ocr else norm(text, loose=True)

    strict = [s for s in doc.sections if probe and probe in norm(s.text)]
    loose = strict or [s for s in doc.sections if probe and squeeze(probe) in squeeze(s.text)]
    where = [location_matches(row.get("probe_location", ""), s) for s in loose]
    places = list(dict.fromkeys(c.where or "(none)" for c in chunks))
    out.update(
        status="loaded",
        kind=doc.kind,
        sections=len(doc.sections),
        chunks=len(chunks),
        locations=len(places),
        places=", ".join(places[:2])[:40] + (", ..." if len(places) > 2 else ""),
        found=("yes" if strict else ("loose" if loose else "no")) if probe else "-",
        location=("yes" if "yes" in where else where[0]) if where else "",
        cited=(f"slide {loose[0].page}" if loose[0].page else loose[0].heading)[:50] if loose else "",
        warnings=len(doc.warnings),
    )
    return out


@dataclass
class _Place:
    heading: str
    page: int | None


def ask_probes(results: list[dict[str, Any]], rows: list[dict[str, str]], folder: Path) -> None:
    """Ingest the loaded files into a fresh store and ask each probe phrase, evidence only."""
    from _common import bench_settings

    from bot.service import RagService

    by_file = {r["file"]: r for r in rows}
    with tempfile.TemporaryDirectory(prefix="ragcord-office-") as tmp:
        service = RagService.from_settings(bench_settings(Path(tmp), answer_mode="extract"))
        loaded = [r for r in results if r["status"] == "loaded"]
        started = time.perf_counter()
        service.ingest_paths("office", [folder / r["file"] for r in loaded])
        print(f"  ingested {len(loaded)} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        for r in loaded:
            row = by_file[r["file"]]
            if not row.get("probe_phrase"):
                continue
            source = str((folder / r["file"]).resolve())
            probe = norm(row["probe_phrase"], loose=True)

            def has(chunk: Any, probe: str = probe) -> bool:  # OCR'd text: spaces ignored (OCR drops some)
                text = norm(chunk.text, loose=True)
                return probe.replace(" ", "") in text.replace(" ", "") if chunk.is_ocr else probe in text

            answer = service.ask("office", row["probe_phrase"])
            lead = answer.lead.chunk if answer.lead is not None else None
            top = [h.chunk for h in answer.hits[:3]]
            holds = [c for c in top if c.source == source and has(c)]
            if lead is not None and lead.source == source and has(lead):
                r["ask"], chunk = "lead", lead
            elif holds:
                r["ask"], chunk = "top3", holds[0]
            else:
                r["ask"], chunk = "no", None
            if chunk is not None:
                r["ask_where"] = chunk.where
                r["ask_location"] = location_matches(row["probe_location"], _Place(chunk.section, chunk.page))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if not args.dir.is_dir():
        print(f"no folder {args.dir}", file=sys.stderr)
        return 1
    rows = [r for r in manifest_rows(args.dir) if not (args.no_ocr and is_image(r)) and r["file"] != "MANIFEST.tsv"]
    results = []
    for row in rows:
        results.append(run_one(args.dir / row["file"], row, args.max_mb * 1024 * 1024, args.timeout))
        print(f"  {row['file']}: {results[-1]['status']} {results[-1].get('seconds', 0):.1f} s", file=sys.stderr)
    if args.ask:
        ask_probes(results, rows, args.dir)
    print(
        table(
            ["file", "format", "status", "s", "chunks", "locations", "probe", "location", "ask", "cited as"],
            [
                [
                    r["file"][:42],
                    r["format"],
                    r["status"],
                    r.get("seconds"),
                    r.get("chunks"),
                    f"{r['locations']}: {r['places']}" if "locations" in r else "",
                    r.get("found", ""),
                    r.get("location", ""),
                    (r.get("ask", "") + " " + r.get("ask_location", "")).strip(),
                    (r.get("ask_where") or r.get("cited") or r.get("reason", ""))[:60],
                ]
                for r in results
            ],
            left=(0, 1, 2, 5, 6, 7, 8, 9),
        )
    )
    loaded = [r for r in results if r["status"] == "loaded"]
    hostile = [r for r in results if r["category"] == "hostile"]
    summary = {
        "files": len(results),
        "loaded": len(loaded),
        "refused": sum(r["status"] == "refused" for r in results),
        "crashed_or_timed_out": sum(r["status"] in ("CRASH", "TIMEOUT") for r in results),
        "probes": sum(r.get("found", "-") != "-" for r in loaded),
        "probe_found": sum(r.get("found") == "yes" for r in loaded),
        "probe_found_loose": sum(r.get("found") in ("yes", "loose") for r in loaded),
        "location_checked": sum(r.get("location") in ("yes", "no") for r in loaded),
        "location_matched": sum(r.get("location") == "yes" for r in loaded),
        "hostile": len(hostile),
        "hostile_refused_or_capped": sum(r["status"] in ("refused", "loaded") for r in hostile),
        "asked": sum("ask" in r for r in loaded),
        "ask_lead": sum(r.get("ask") == "lead" for r in loaded),
        "ask_top3": sum(r.get("ask") in ("lead", "top3") for r in loaded),
        "ask_location_matched": sum(r.get("ask_location") == "yes" for r in loaded),
        "ask_location_checked": sum(r.get("ask_location") in ("yes", "no") for r in loaded),
        "seconds_total": round(sum(r.get("seconds", 0.0) for r in results), 2),
        "seconds_max": round(max((r.get("seconds", 0.0) for r in results), default=0.0), 2),
    }
    print()
    print(
        f"{summary['loaded']} loaded, {summary['refused']} refused, {summary['crashed_or_timed_out']} crashed or "
        f"timed out of {summary['files']}; probe found in {summary['probe_found']} (loosely "
        f"{summary['probe_found_loose']}) of {summary['probes']} loaded with one; location matched "
        f"{summary['location_matched']} of {summary['location_checked']} checkable; "
        f"{summary['seconds_total']} s in all, slowest {summary['seconds_max']} s"
    )
    if summary["asked"]:
        print(
            f"asked evidence-only: the phrase leads in {summary['ask_lead']} and is in the top 3 in "
            f"{summary['ask_top3']} of {summary['asked']}; location matched {summary['ask_location_matched']} of "
            f"{summary['ask_location_checked']} checkable"
        )
    write_result("office_report", {"summary": summary, "files": results})
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["crashed_or_timed_out"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
