"""OCR figures (issue 14, item 2): character accuracy and seconds per page, raw rapidocr order
beside ragcord's ordering in the same run, at the resolutions and detector sides tried.

    python bench/ocr.py [--data ../shared/data] [--configs 150:1280,200:2000] [--threads 2]
                        [--no-text] [--images]

- accuracy: linn.pdf (a two-column scan) against linn.txt beside it, at each `dpi:det_side`
  config; `--images` adds the OCR images of ../shared/data/office with ground truth in
  groundtruth/ and the probe phrase of every OCR image of MANIFEST.tsv (searched with
  spaces ignored, since the engine drops some).
- `--no-text`: every PDF of ../shared/data/pdfs that has no text layer (MANIFEST.tsv: 0
  characters on its first pages) through `load_bytes` with the default OCR settings: how many
  get indexed text, pages OCR'd, pages/s.

Character accuracy is 1 - Levenshtein distance / length of the truth, on text with every run
of whitespace made one space ("raw" is the engine's own box order, one box a line); word
accuracy is the same on words (whitespace-separated), so words run together count as
errors. "unspaced" is ragcord's order without `restore_spaces` (the spaces the recognizer
dropped, put back where the image shows a word gap), from the same engine call's boxes.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from _common import setup_logging, table, write_result

from ingest.loaders import LoadError, load_bytes
from ingest.loaders import ocr as ocr_module
from ingest.loaders.ocr import OcrOptions
from ingest.loaders.pdf import render_page

DEFAULT_DATA = Path(os.environ.get("RAGCORD_BENCH_DATA", "/work/shared/data"))
_SPACES = re.compile(r"\s+")


def levenshtein(a: Any, b: Any) -> int:
    """Edit distance, O(len(a) * len(b)) time and O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def accuracy(text: str, truth: str) -> float:
    text, truth = _SPACES.sub(" ", text).strip(), _SPACES.sub(" ", truth).strip()
    return max(0.0, 1 - levenshtein(text, truth) / max(1, len(truth)))


def word_accuracy(text: str, truth: str) -> float:
    words = truth.split()
    return max(0.0, 1 - levenshtein(text.split(), words) / max(1, len(words)))


def ocr_image(image: Any, options: OcrOptions) -> tuple[str, str, str, float, float]:
    """(raw text, ordered text, ordered text without restored spaces, seconds, confidence) of one image."""
    started = time.perf_counter()
    page = ocr_module.recognise(image, options)
    seconds = time.perf_counter() - started
    rgb = ocr_module.to_rgb_array(image)
    if page.rotated:
        rgb = rgb[::-1, ::-1]
    boxes, _ = ocr_module.run_engine(rgb, options, use_cls=not page.rotated)  # untimed
    unspaced, _ = ocr_module.run_engine(rgb, options, use_cls=not page.rotated, respace=False)
    plain = ocr_module.boxes_to_text(ocr_module.order_boxes(unspaced))
    return ocr_module.raw_text(boxes), page.text, plain, seconds, page.confidence


def scores(raw: str, ordered: str, plain: str, truth: str) -> list[float]:
    """raw, ordered and unspaced character accuracy, then ordered and unspaced word accuracy."""
    chars = [accuracy(raw, truth), accuracy(ordered, truth), accuracy(plain, truth)]
    return [*chars, word_accuracy(ordered, truth), word_accuracy(plain, truth)]


def linn_rows(data: Path, configs: list[tuple[int, int]], threads: int) -> list[list[Any]]:
    import pypdfium2 as pdfium

    folder = data / "pdfs" / "ocrmypdf"
    truth = (folder / "linn.txt").read_text(encoding="utf-8")
    pdf = pdfium.PdfDocument((folder / "linn.pdf").read_bytes())
    rows = []
    for dpi, side in configs:
        options = OcrOptions(dpi=dpi, det_side=side, threads=threads)
        ocr_module.engine(side, threads)  # loaded outside the timing
        image = render_page(pdf[0], dpi)
        raw, ordered, plain, seconds, confidence = ocr_image(image, options)
        rows.append(
            [f"linn.pdf p.1 {dpi} dpi", side, f"{image.width}x{image.height}",
             *scores(raw, ordered, plain, truth), seconds, confidence]
        )  # fmt: skip
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


GROUND_TRUTH = {
    "tess_phototest.tif": "tess_phototest.txt",
    "tess_phototest-rotated-180.png": "tess_phototest.txt",
    "tess_eurotext.tif": "tess_eurotext.txt",
    "textract_raw_text.jpg": "textract_raw_text.jpg.txt",
}


def image_rows(data: Path, options: OcrOptions) -> tuple[list[list[Any]], list[list[Any]]]:
    from PIL import Image

    folder = data / "office"
    rows = []
    for name, truth_name in GROUND_TRUTH.items():
        truth = (folder / "groundtruth" / truth_name).read_text(encoding="utf-8")
        image = Image.open(folder / name)
        raw, ordered, plain, seconds, confidence = ocr_image(image, options)
        size = f"{image.width}x{image.height}"
        rows.append([name, options.det_side, size, *scores(raw, ordered, plain, truth), seconds, confidence])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    probes = []
    with (folder / "MANIFEST.tsv").open(encoding="utf-8") as handle:
        for entry in csv.DictReader(handle, delimiter="\t"):
            if entry["category"] != "ocr-image" or entry["format"] not in ("png", "jpg", "tiff", "webp"):
                continue
            started = time.perf_counter()
            try:
                doc = load_bytes(
                    (folder / entry["file"]).read_bytes(), entry["file"], max_bytes=50 << 20,
                    source=entry["file"], ocr=options,
                )  # fmt: skip
                text = "\n".join(s.text for s in doc.sections)
                squeezed = _SPACES.sub("", text).lower()
                found = _SPACES.sub("", entry["probe_phrase"]).lower() in squeezed
                outcome = "found" if found else "missing"
            except LoadError as exc:
                outcome = f"refused: {exc}"
            probes.append([entry["file"], entry["probe_phrase"], outcome, time.perf_counter() - started])
            print(f"  {probes[-1]}", file=sys.stderr, flush=True)
    return rows, probes


def no_text_rows(data: Path, options: OcrOptions) -> list[list[Any]]:
    folder = data / "pdfs"
    rows = []
    with (folder / "MANIFEST.tsv").open(encoding="utf-8") as handle:
        entries = [e for e in csv.DictReader(handle, delimiter="\t") if e["text_chars_first3_pages_pypdf"] == "0"]
    for entry in entries:
        started = time.perf_counter()
        try:
            doc = load_bytes(
                (folder / entry["file"]).read_bytes(), entry["file"], max_bytes=200 << 20,
                source=entry["file"], ocr=options,
            )  # fmt: skip
            ocrd = len([p for p in doc.extra.get("ocr_pages", "").split(",") if p])
            chars = sum(len(s.text) for s in doc.sections)
            outcome = "indexed" if chars >= 40 else "too little text"
            note = "; ".join(doc.warnings)[:90]
        except LoadError as exc:
            ocrd, chars, outcome, note = 0, 0, "refused", str(exc)[:90]
        seconds = time.perf_counter() - started
        rows.append([entry["file"], entry["pages_pypdf"], ocrd, chars, outcome, seconds, note])
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--configs", default="150:1280,200:2000", help="dpi:det_side pairs for linn.pdf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", action="store_true", help="also the office OCR images")
    parser.add_argument("--no-text", action="store_true", help="also every no-text PDF of the PDF corpus")
    args = parser.parse_args(argv)
    setup_logging()
    configs = [(int(d), int(s)) for d, s in (pair.split(":") for pair in args.configs.split(","))]
    headers = ["page", "det side", "pixels", "raw acc", "ragcord acc", "unspaced acc", "word acc", "unspaced word acc",
               "s/page", "confidence"]  # fmt: skip
    rows = linn_rows(args.data, configs, args.threads)
    payload: dict[str, Any] = {"linn": rows}
    default = OcrOptions(threads=args.threads)
    if args.images:
        image_acc, probes = image_rows(args.data, default)
        rows += image_acc
        payload["probes"] = probes
    print(table(headers, rows))
    if args.images:
        print()
        print(table(["image", "probe phrase", "probe", "s"], payload["probes"], left=(0, 1, 2)))
    if args.no_text:
        scans = no_text_rows(args.data, default)
        payload["no_text"] = scans
        print()
        print(table(["no-text PDF", "pages", "OCR'd", "chars", "outcome", "s", "warnings"], scans, left=(0, 4, 6)))
        pages = sum(r[2] for r in scans)
        seconds = sum(r[5] for r in scans)
        indexed = sum(1 for r in scans if r[4] == "indexed")
        rate = f"{pages / max(seconds, 1e-9):.2f} pages/s, {seconds / max(pages, 1):.1f} s/page incl. rasterising"
        print(f"\n{indexed} of {len(scans)} no-text PDFs indexed; {pages} pages OCR'd in {seconds:.0f} s ({rate})")
    write_result("ocr", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
