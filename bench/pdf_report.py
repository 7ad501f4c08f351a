"""What ragcord's PDF loader makes of a folder of real PDFs.

    python bench/pdf_report.py [--dir /work/shared/data/pdfs] [--timeout 60]

Per file: pages, characters extracted, pages without text, error (one line) and
seconds, each file loaded in its own subprocess with a time limit so that no file
can crash or hang the report. Passwords of encrypted files are read from the
folder's MANIFEST.tsv. Multi-column files are also extracted in "layout" mode and
compared with "plain" mode. Prints a table; the last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import setup_logging, table, write_result

DEFAULT_DIR = Path("/work/shared/data/pdfs")
_PASSWORD_RE = re.compile(r'(?:user pw|user password|user|pw|password)\s+"([^"]+)"', re.IGNORECASE)
_MULTICOLUMN_RE = re.compile(r"multi-?column|two-column|side-by-side|columns", re.IGNORECASE)
_GAP_RE = re.compile(r"\S {4,}\S")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder searched (recursively) for *.pdf")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds one file may take per mode")
    p.add_argument("--workers", type=int, default=2, help="files loaded at the same time")
    p.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # worker: load one file, print JSON
    p.add_argument("--password", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- the worker (runs in a subprocess) --------------------------------------------------------
def load_one(path: Path, password: str, mode: str) -> dict[str, Any]:
    from ingest.loaders import LoadError
    from ingest.loaders.pdf import extract_page_text, load, open_pdf

    started = time.perf_counter()
    out: dict[str, Any] = {"pages": None, "chars": 0, "empty_pages": None, "error": "", "warnings": []}
    data = path.read_bytes()
    try:
        doc = load(data, filename=path.name, source=str(path), password=password or None, mode=mode)  # type: ignore[arg-type]
        out |= {
            "pages": doc.pages,
            "chars": sum(len(s.text) for s in doc.sections),
            "empty_pages": len(doc.pages_without_text),
            "warnings": doc.warnings,
        }
        # how the raw page text is laid out: lines with a wide gap are two columns side by side
        reader = open_pdf(data, path.name, password or None)
        lines = [ln for page in reader.pages for ln in extract_page_text(page, mode).splitlines() if ln.strip()]  # type: ignore[arg-type]
        out["lines"] = len(lines)
        out["gap_lines"] = sum(bool(_GAP_RE.search(ln.strip())) for ln in lines)
        out["text_head"] = " ".join(" ".join(s.text for s in doc.sections).split())[:160]
    except LoadError as exc:
        out["error"] = str(exc)
        with contextlib.suppress(Exception):  # page count of a file that opens but has no text
            out["pages"] = len(open_pdf(data, path.name, password or None).pages)
    except Exception as exc:  # the loader should have turned this into a LoadError: report it as a bug
        out["error"] = f"UNEXPECTED {type(exc).__name__}: {' '.join(str(exc).split())[:150]}"
    out["seconds"] = time.perf_counter() - started
    return out


# -- the driver ---------------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


def password_for(row: dict[str, str] | None) -> str:
    if not row or "yes" not in (row.get("encrypted_pypdf") or ""):
        return ""
    match = _PASSWORD_RE.search(row.get("category_notes") or "")
    return match.group(1) if match else ""


def short_error(error: str, file: str, limit: int = 100) -> str:
    """The error without the file name it starts with, cut to `limit` characters."""
    text = error.removeprefix(Path(file).name).lstrip(" :")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failed(error: str, started: float) -> dict[str, Any]:
    return {"pages": None, "chars": 0, "empty_pages": None, "error": error, "seconds": time.perf_counter() - started}


def run_one(path: Path, password: str, mode: str, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(path), "--mode", mode]
    if password:
        cmd += ["--password", password]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return failed(f"timed out after {timeout:.0f} s", started)
    if proc.returncode != 0 or not proc.stdout.strip():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return failed(f"CRASH (exit {proc.returncode}): {last[:150]}", started)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(False)
    if args.one:
        print(json.dumps(load_one(args.one, args.password, args.mode)))
        return 0
    files = sorted(p for p in args.dir.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file())
    if not files:
        print(f"error: no PDF files under {args.dir}", file=sys.stderr)
        return 1
    manifest = read_manifest(args.dir)

    def work(path: Path) -> dict[str, Any]:
        rel = str(path.relative_to(args.dir))
        row = manifest.get(rel)
        password = password_for(row)
        result = {"file": rel, "password": bool(password), **run_one(path, password, "plain", args.timeout)}
        if row and _MULTICOLUMN_RE.search(row.get("category_notes") or ""):
            result["layout"] = run_one(path, password, "layout", args.timeout)
        return result

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = list(pool.map(work, files))
    wall = time.perf_counter() - started

    rows = [
        [r["file"], r["pages"], r["chars"], r["empty_pages"], r["seconds"], short_error(r["error"], r["file"])]
        for r in results
    ]
    print(table(["file", "pages", "chars", "no text", "s", "error"], rows, left=(0, 5)))

    multi = [r for r in results if "layout" in r]
    if multi:
        print("\nmulti-column files: plain vs layout extraction")
        cmp_rows = []
        for r in multi:
            lay = r["layout"]
            cmp_rows.append(
                [
                    r["file"],
                    r["chars"],
                    r.get("gap_lines", ""),
                    r.get("lines", ""),
                    r["seconds"],
                    lay["chars"],
                    lay.get("gap_lines", ""),
                    lay.get("lines", ""),
                    lay["seconds"],
                    short_error(r["error"] or lay["error"], r["file"], 50),
                ]
            )
        headers = ["file", "plain chars", "gap lines", "lines", "s", "layout chars", "gap lines", "lines", "s", "error"]
        print(table(headers, cmp_rows, left=(0, 9)))
        print("gap lines: lines with a run of 4+ spaces between words, i.e. columns side by side on one line")

    errors = [r for r in results if r["error"]]
    summary = {
        "files": len(results),
        "loaded": len(results) - len(errors),
        "errors": len(errors),
        "crashes": sum(r["error"].startswith("CRASH") for r in results),
        "timeouts": sum(r["error"].startswith("timed out") for r in results),
        "unexpected": sum(r["error"].startswith("UNEXPECTED") for r in results),
        "no_text_layer": sum("no text layer" in r["error"] for r in results),
        "encrypted_opened": sum(r["password"] and not r["error"] for r in results),
        "encrypted_total": sum(r["password"] for r in results),
        "pages": sum(r["pages"] or 0 for r in results),
        "pages_without_text": sum(r["empty_pages"] or 0 for r in results),
        "chars": sum(r["chars"] for r in results),
        "slowest_s": max(r["seconds"] for r in results),
        "wall_s": wall,
        "multicolumn_plain_vs_layout_chars": {r["file"]: [r["chars"], r["layout"]["chars"]] for r in multi},
    }
    write_result("pdf-report", {"summary": summary, "files": results})
    print(
        f"\n{summary['loaded']}/{summary['files']} loaded, {summary['errors']} refused with a reason, "
        f"{summary['crashes']} crashes, {summary['timeouts']} time-outs, {wall:.0f} s"
    )
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
