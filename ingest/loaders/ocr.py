"""OCR of page images with rapidocr-onnxruntime 1.4.4 (its det/cls/rec ONNX models ship in the wheel).

The engine is loaded lazily, once per process (the PDF worker's, in the bot and the CLI).
What rapidocr returns is a set of text boxes in no useful order: a two-column page is
read across both columns at once and an upside-down page bottom-up. `order_boxes` puts
them into reading order: columns when the page has a clear gutter, lines by y-overlap
within a column, boxes left to right within a line. An upside-down page is recognised
by the classifier (most crops turned 180°) and read again turned upright, since the
classifier misses some of its lines (a second pass only for upside-down pages).

Spaces: the recognizer often drops the space between words ("THISISATEST"); with its
per-character positions (`return_word_box`), `restore_spaces` puts one back where the
box's image has a blank run of columns as wide as a word gap. On the office ground-truth
images word accuracy went from 0.91 to 0.96 (textract_raw_text.jpg 0.41 -> 1.00), and
linn.pdf's from 0.880 to 0.889 (bench/ocr.py).

Progress: a loader calls `report_progress(done, total)` before each page it OCRs; the
hook installed with `progress_to` in the calling thread receives it (the PDF worker
process installs one that sends it down its pipe, and the parent hands it to its own).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

TEXT_VERSION = 2  # in the fingerprint of files OCR reads: a change here re-reads them (2: spaces restored)
DEFAULT_OCR_DPI = 200  # RAGCORD_OCR_DPI: resolution PDF pages are rasterised at
DEFAULT_OCR_DET_SIDE = 2400  # RAGCORD_OCR_DET_SIDE: longest side of the image the engine sees (pixels)
DEFAULT_OCR_THREADS = 2  # RAGCORD_OCR_THREADS: onnxruntime threads per model
DEFAULT_OCR_MIN_CONFIDENCE = 0.8  # RAGCORD_OCR_MIN_CONFIDENCE: pages read with less are reported, not indexed
DEFAULT_OCR_MAX_PAGES = 20  # RAGCORD_OCR_MAX_PAGES: pages of one PDF that are OCR'd
DEFAULT_OCR_BUDGET_S = 60.0  # RAGCORD_OCR_BUDGET_S: seconds of OCR one file may use
_MAX_BLOCK_ROWS = 150  # rows a block of columns may have (a longer one is read as several blocks)
MAX_IMAGE_PIXELS = 40_000_000  # larger images are scaled down before OCR (and PIL's bomb check)


@dataclass(frozen=True, slots=True)
class OcrOptions:
    """How OCR runs; the defaults are the measured ones (bench/ocr.py)."""

    enabled: bool = True
    dpi: int = DEFAULT_OCR_DPI
    det_side: int = DEFAULT_OCR_DET_SIDE
    threads: int = DEFAULT_OCR_THREADS
    min_confidence: float = DEFAULT_OCR_MIN_CONFIDENCE
    max_pages: int = DEFAULT_OCR_MAX_PAGES
    budget_s: float = DEFAULT_OCR_BUDGET_S


@dataclass(frozen=True, slots=True)
class Box:
    """One recognised text box: its axis-aligned extent in pixels, text and confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    score: float = 1.0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@dataclass(frozen=True, slots=True)
class OcrPage:
    """The text of one image in reading order, with its mean confidence."""

    text: str
    confidence: float  # mean recognition score weighted by characters (0 when no text)
    boxes: int
    rotated: bool  # the page was upside down
    seconds: float


class OcrUnavailable(RuntimeError):
    """The OCR engine cannot be loaded (rapidocr-onnxruntime missing or broken)."""


ProgressHook = Callable[[int, int], None]  # (pages OCR'd or being OCR'd, pages to OCR in this file)
_progress = threading.local()


@contextlib.contextmanager
def progress_to(hook: ProgressHook | None) -> Iterator[None]:
    """Send this thread's `report_progress` calls to `hook` while the block runs."""
    previous = getattr(_progress, "hook", None)
    _progress.hook = hook
    try:
        yield
    finally:
        _progress.hook = previous


def report_progress(done: int, total: int) -> None:
    """Page `done` of `total` is being OCR'd now (a hook that fails is logged, never the OCR's concern)."""
    hook: ProgressHook | None = getattr(_progress, "hook", None)
    if hook is None:
        return
    try:
        hook(done, total)
    except Exception:
        log.warning("OCR progress hook failed", exc_info=True)


_engines: dict[tuple[int, int], Any] = {}
_lock = threading.Lock()
_run_lock = threading.Lock()


def engine(det_side: int = DEFAULT_OCR_DET_SIDE, threads: int = DEFAULT_OCR_THREADS) -> Any:
    """The rapidocr engine for these settings, loaded on first use and kept for the process."""
    key = (det_side, threads)
    with _lock:
        if key not in _engines:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise OcrUnavailable(
                    "OCR needs rapidocr-onnxruntime 1.4.4 (pip install 'rapidocr-onnxruntime==1.4.4')"
                ) from exc
            started = time.perf_counter()
            # rapidocr 1.4.4 ignores det_limit_side_len in "max" mode (it picks 960/1500/2000 from the
            # image's size), so the side is enforced through max_side_len: larger images are scaled down.
            _engines[key] = RapidOCR(
                det_limit_type="max",
                max_side_len=det_side,
                intra_op_num_threads=threads,
                inter_op_num_threads=1,
                print_verbose=False,
            )
            log.info("OCR engine loaded in %.1f s (det side %d, %d threads)", time.perf_counter() - started, *key)
        return _engines[key]


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """An RGB uint8 array of any PIL image (palette, grey, CMYK, alpha over white), oversized ones scaled down."""
    import numpy as np
    from PIL import Image as PILImage

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PILImage.alpha_composite(background, rgba)
    image = image.convert("RGB")
    pixels = image.width * image.height
    if pixels > MAX_IMAGE_PIXELS:
        scale = (MAX_IMAGE_PIXELS / pixels) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    return np.asarray(image, dtype=np.uint8)


def recognise(image: Image.Image, options: OcrOptions | None = None) -> OcrPage:
    """OCR one image into reading-order text."""
    options = options or OcrOptions()
    started = time.perf_counter()
    rgb = to_rgb_array(image)
    boxes, flipped = run_engine(rgb, options)
    rotated = flipped > len(boxes) / 2 if boxes else False
    if rotated:  # upside down: read the page turned upright (the classifier misses some lines)
        boxes, _ = run_engine(rgb[::-1, ::-1], options, use_cls=False)
    text = boxes_to_text(order_boxes(boxes))
    chars = sum(len(b.text) for b in boxes)
    confidence = sum(b.score * len(b.text) for b in boxes) / chars if chars else 0.0
    return OcrPage(text, confidence, len(boxes), rotated, time.perf_counter() - started)


def run_engine(
    rgb: np.ndarray, options: OcrOptions, *, use_cls: bool = True, respace: bool = True
) -> tuple[list[Box], int]:
    """The engine's raw boxes for an RGB array, in its own order, and how many crops the
    classifier turned by 180°. With `respace`, spaces the recognizer dropped are put back
    where the box's image shows a word gap (`restore_spaces`)."""
    ocr = engine(options.det_side, options.threads)
    flips: list[int] = []
    bgr = rgb[:, :, ::-1].copy()  # rapidocr takes arrays in OpenCV's BGR order
    with _run_lock:  # the classifier is wrapped for this call only: one call at a time per process
        classify = ocr.text_cls

        def recording(images: Any) -> Any:
            result = classify(images)
            flips.append(sum(1 for label, score in result[1] if label == "180" and score >= 0.9))
            return result

        ocr.text_cls = recording
        try:
            # return_word_box: each character's position too (the other arguments are rapidocr's defaults)
            result, _ = ocr(
                bgr, use_cls=use_cls, return_word_box=respace, box_thresh=0.5, unclip_ratio=1.6, text_score=0.5
            )
        finally:
            ocr.text_cls = classify
    grey = rgb.min(axis=2) if respace else None  # the darkest channel: ink of any colour is dark in it
    boxes = []
    for points, text, score, *chars in result or []:
        text = str(text)
        if grey is not None and chars:
            text = restore_spaces(grey, points, text, [(b[0][0] + b[1][0]) / 2 for b in chars[0] or []])
        text = " ".join(text.split())
        if not text:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        boxes.append(Box(float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)), text, float(score)))
    return boxes, sum(flips)


_NO_SPACE_BEFORE = frozenset(" .,;:!?)]}%'’”»›")
_NO_SPACE_AFTER = frozenset(" ([{'‘“«‹")
_WORD_GAP = 0.3  # a blank run of columns this wide (times the box height), and 1.6x the median gap, is a space


def restore_spaces(grey: np.ndarray, points: Sequence[Sequence[float]], text: str, centres: Sequence[float]) -> str:
    """`text` with a space between two characters that a word-wide blank run of columns of the
    box's image separates (the recognizer often drops spaces: "THISISATEST").

    `centres` are the characters' x positions from the recognizer (rapidocr's word boxes);
    letter gaps are narrower than 0.3 line heights and than 1.6x the box's median gap, word
    gaps wider (measured on the office ground-truth images). Only horizontal boxes of
    characters in left-to-right order, with enough contrast, are touched."""
    import numpy as np

    if len(text) < 2 or len(centres) != len(text) or any(b <= a for a, b in zip(centres, centres[1:], strict=False)):
        return text
    if any("\u2e80" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" for c in text):  # CJK: no spaces to restore
        return text
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0 = max(0, int(min(xs))), max(0, int(min(ys)))
    x1, y1 = min(grey.shape[1], int(max(xs)) + 1), min(grey.shape[0], int(max(ys)) + 1)
    height = y1 - y0
    if height <= 0 or x1 - x0 <= height:
        return text
    crop = grey[y0:y1, x0:x1]
    lo, hi = int(crop.min()), int(crop.max())
    if hi - lo < 48:
        return text
    ink = (crop < (lo + hi) / 2).any(axis=0)
    edges = np.diff(np.concatenate(([1], ink.astype(np.int8), [1])))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)  # blank runs [start, end)
    inner = (starts > 0) & (ends < crop.shape[1])
    starts, ends = starts[inner], ends[inner]
    if len(starts) == 0:
        return text
    widths = ends - starts
    wide = widths >= max(_WORD_GAP * height, 1.6 * float(np.median(widths)))
    gaps = x0 + (starts[wide] + ends[wide]) / 2
    out, g = [text[0]], 0
    for k in range(1, len(text)):
        while g < len(gaps) and gaps[g] <= centres[k - 1]:
            g += 1
        if (
            g < len(gaps)
            and gaps[g] < centres[k]
            and text[k] not in _NO_SPACE_BEFORE
            and text[k - 1] not in _NO_SPACE_AFTER
        ):
            out.append(" ")
        out.append(text[k])
    return "".join(out)


def raw_text(boxes: Sequence[Box]) -> str:
    """The boxes' text in the engine's own order, one box a line (the baseline the benchmark compares)."""
    return "\n".join(b.text for b in boxes)


def order_boxes(boxes: Sequence[Box]) -> list[list[Box]]:
    """The boxes as lines in reading order.

    The page is cut into rows (boxes whose vertical extents overlap). A run of at least three
    rows that share a clear vertical gap (at least 0.7 line heights wide, inside the text)
    and in which two or more rows have text on both sides of it is a block of columns: each
    column is read top to bottom, left to right. Every other row is one line. Within a
    line, boxes are read left to right. A scan looks at most `_MAX_BLOCK_ROWS` rows ahead
    (a page at 200 dpi has about 100), so ordering is linear in the rows after sorting.
    """
    if not boxes:
        return []
    left, right = min(b.x0 for b in boxes), max(b.x1 for b in boxes)
    min_gap = 0.7 * max(1.0, statistics.median(b.height for b in boxes))
    rows = _lines(boxes)
    frees = [_free(row, left, right) for row in rows]
    ordered: list[list[Box]] = []
    i = 0
    while i < len(rows):
        gaps, j = frees[i], i + 1
        while j < len(rows) and j - i < _MAX_BLOCK_ROWS:
            narrower = _intersect(gaps, frees[j], min_gap)
            if not narrower:
                break
            gaps, j = narrower, j + 1
        gutters = [(g0, g1) for g0, g1 in gaps if g0 > left and g1 < right]
        sided = [_columns_of(row, gutters) > 1 for row in rows[i:j]] if gutters else []
        if sum(sided) >= 2 and j - i >= 3:
            first = sided.index(True)
            last = len(sided) - 1 - sided[::-1].index(True)
            ordered.extend(rows[i : i + first])  # one-sided rows before the columns: single lines
            block = [b for row in rows[i + first : i + last + 1] for b in row]
            columns: dict[int, list[Box]] = {}
            for box in block:
                centre = (box.x0 + box.x1) / 2
                columns.setdefault(sum(1 for g0, _ in gutters if centre > g0), []).append(box)
            for column in sorted(columns):
                ordered.extend(_lines(columns[column]))
            i += last + 1  # one-sided rows after the columns start the next scan
        else:
            ordered.append(rows[i])
            i += 1
    return ordered


def boxes_to_text(lines: Sequence[Sequence[Box]]) -> str:
    return "\n".join(" ".join(b.text for b in line) for line in lines).strip()


def _lines(boxes: Sequence[Box]) -> list[list[Box]]:
    lines: list[list[Box]] = []
    bottom = top = 0.0
    for box in sorted(boxes, key=lambda b: ((b.y0 + b.y1) / 2, b.x0)):
        if lines:
            overlap = min(bottom, box.y1) - max(top, box.y0)
            if overlap >= 0.5 * min(bottom - top, box.height):
                lines[-1].append(box)
                bottom, top = max(bottom, box.y1), min(top, box.y0)
                continue
        lines.append([box])
        top, bottom = box.y0, box.y1
    return [sorted(line, key=lambda b: b.x0) for line in lines]


def _free(row: Sequence[Box], left: float, right: float) -> list[tuple[float, float]]:
    """The x-ranges of [left, right] that no box of the row covers."""
    free, reach = [], left
    for box in sorted(row, key=lambda b: b.x0):
        if box.x0 > reach:
            free.append((reach, box.x0))
        reach = max(reach, box.x1)
    if right > reach:
        free.append((reach, right))
    return free


def _intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]], min_width: float
) -> list[tuple[float, float]]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi - lo >= min_width:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _columns_of(row: Sequence[Box], gutters: Sequence[tuple[float, float]]) -> int:
    return len({sum(1 for g0, _ in gutters if (b.x0 + b.x1) / 2 > g0) for b in row})
