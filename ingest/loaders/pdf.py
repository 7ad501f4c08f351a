"""PDF files, via pypdf: one `Section` per page that has text, 1-based page numbers.

Encrypted files are opened with the empty password, then with the configured one.
Damaged files and pypdf's own failures become a one-line `LoadError`; pages without a
text layer (scans) are rasterised with pypdfium2 and read by OCR (ingest/loaders/ocr.py),
up to `OcrOptions.max_pages` pages and `budget_s` seconds a file; pages beyond those, or
read with too little confidence, are listed in `pages_without_text` with a warning.
OCR'd pages are listed in the document's `ocr_pages` extra, so citations say "(OCR)".
"""

from __future__ import annotations

import io
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Literal

from ingest.loaders import LoadError, cut_at_word
from ingest.loaders.ocr import OcrOptions
from store.types import OCR_PAGES_KEY, LoadedDocument, Section

if TYPE_CHECKING:
    from PIL import Image
    from pypdf import PageObject, PdfReader

log = logging.getLogger(__name__)

ExtractionMode = Literal["plain", "layout"]
_PASSWORD_HINT = "pass its password with --pdf-password or RAGCORD_PDF_PASSWORD"
_LIGATURES = str.maketrans({"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_SOFT_HYPHEN_BREAK = re.compile(r"\u00ad[^\S\n]*\n[^\S\n]*")
_HYPHEN_BREAK = re.compile(r"([^\W_])-[^\S\n]*\n[^\S\n]*(?=([^\W_]))")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_SLOW_PAGE_SECONDS = 5.0
_BLANK_CONTRAST = 24  # grey levels: a rendered page with less contrast is blank and not OCR'd


def extract_page_text(page: PageObject, mode: ExtractionMode = "plain") -> str:
    """The raw text of one page: "plain" follows the content stream, "layout" mimics the page."""
    if mode == "layout":
        return page.extract_text(extraction_mode="layout", layout_mode_space_vertically=False)
    return page.extract_text(extraction_mode="plain")


_GLYPH_CODES = re.compile(r"/g\d+|\(cid:\d+\)|/uni[0-9A-Fa-f]{4}|[\ufffd\ue000-\uf8ff]")


def is_readable(text: str) -> bool:
    """False when most of a page's 'text' is glyph codes ("/g437", "(cid:12)") or private-use
    characters: fonts without a Unicode map, which would index as garbage."""
    visible = len(text) - text.count(" ") - text.count("\n")
    if visible == 0:
        return False
    garbage = sum(len(m) for m in _GLYPH_CODES.findall(text))
    return garbage / visible < 0.3


def normalize_text(text: str) -> str:
    """Join hyphenated line breaks, collapse spaces within lines, keep paragraph breaks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = _CONTROL.sub(" ", text)
    text = _SOFT_HYPHEN_BREAK.sub("", text).replace("\u00ad", "")
    text = _HYPHEN_BREAK.sub(_join_hyphenated, text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _join_hyphenated(m: re.Match[str]) -> str:
    """Join a word broken at a line end: "infor-/mation" -> "information", "COVID-/19" -> "COVID-19"."""
    before, after = m.group(1), m.group(2)
    if before.isalpha() and after.isalpha() and after.islower():
        return before
    return before + "-"


def load(
    data: bytes,
    *,
    filename: str,
    source: str,
    password: str | None = None,
    mode: ExtractionMode = "plain",
    max_pages: int | None = None,
    max_chars: int | None = None,
    ocr: OcrOptions | None = None,
) -> LoadedDocument:
    """The PDF's text, page by page; only the first `max_pages` pages are read, and reading
    stops once `max_chars` characters are extracted (both with a warning)."""
    reader = open_pdf(data, filename, password)
    try:
        pages = list(reader.pages)
    except Exception as exc:  # pypdf raises many types on damaged page trees
        raise LoadError(f"{filename} is damaged and cannot be read ({_reason(exc)})") from exc
    if not pages:
        raise LoadError(f"{filename} has no pages")
    doc = LoadedDocument(source=source, title=_metadata_title(reader), kind="pdf", sections=[], pages=len(pages))
    if max_pages is not None and len(pages) > max_pages:
        doc.warnings.append(
            f"only the first {max_pages:,} of {len(pages):,} pages were read (raise RAGCORD_PDF_MAX_PAGES to read all)"
        )
        pages = pages[:max_pages]
    chars = 0
    for number, page in enumerate(pages, start=1):
        started = time.perf_counter()
        try:
            text = normalize_text(extract_page_text(page, mode))
        except Exception as exc:  # one bad page must not lose the others
            log.info("%s: page %d: text extraction failed", filename, number, exc_info=True)
            doc.warnings.append(f"page {number}: text extraction failed ({_reason(exc)})")
            text = ""
        elapsed = time.perf_counter() - started
        if elapsed > _SLOW_PAGE_SECONDS:
            log.warning("%s: page %d took %.1f s to extract", filename, number, elapsed)
        if text and not is_readable(text):
            log.info("%s: page %d: text is glyph codes, not words (fonts without a Unicode map)", filename, number)
            text = ""
        if text and max_chars is not None and chars + len(text) > max_chars:
            text = cut_at_word(text, max_chars - chars)
            if text:
                doc.sections.append(Section(text, page=number))
            doc.warnings.append(
                f"only the text up to page {number:,} of {len(pages):,} was indexed: {max_chars:,} characters is "
                "the most one document may index (raise RAGCORD_MAX_TEXT_CHARS to index all)"
            )
            break
        if text:
            doc.sections.append(Section(text, page=number))
            chars += len(text)
        else:
            doc.pages_without_text.append(number)
    ocr = ocr if ocr is not None else OcrOptions()
    if doc.pages_without_text and ocr.enabled and (max_chars is None or chars < max_chars):
        _ocr_pages(doc, data, filename, password, ocr, max_chars=None if max_chars is None else max_chars - chars)
    if not doc.sections:
        if doc.warnings and ocr.enabled:
            raise LoadError(f"{filename} has no text layer and OCR found no readable text ({doc.warnings[-1]})")
        hint = "OCR is off (set RAGCORD_OCR=true)" if not ocr.enabled else "OCR found no text"
        raise LoadError(f"{filename} has no text layer (a scanned document?); {hint}")
    if doc.pages_without_text:
        missing = doc.pages_without_text
        listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        why = "OCR is off (RAGCORD_OCR)" if not ocr.enabled else "blank, or not readable by OCR"
        doc.warnings.append(f"{len(missing)} of {len(pages)} pages have no text (page {listed}); {why}")
    return doc


def _ocr_pages(
    doc: LoadedDocument, data: bytes, filename: str, password: str | None, ocr: OcrOptions, *, max_chars: int | None
) -> None:
    """OCR the pages without a text layer, within the page cap, the time budget and `max_chars`."""
    from ingest.loaders import ocr as engine

    try:
        import pypdfium2 as pdfium

        pdf = pdfium.PdfDocument(data, password=password or None)
    except Exception as exc:  # pypdfium2 missing, or it cannot open what pypdf could
        log.warning("%s: cannot rasterise pages for OCR", filename, exc_info=True)
        doc.warnings.append(f"the scanned pages could not be read by OCR ({_reason(exc)})")
        return
    todo, started = list(doc.pages_without_text), time.perf_counter()
    done: list[int] = []
    low: list[int] = []
    left: list[int] = []
    blank: list[int] = []
    try:
        for position, number in enumerate(todo):
            elapsed = time.perf_counter() - started
            if len(done) + len(low) >= ocr.max_pages or elapsed >= ocr.budget_s:
                left = todo[position:]
                cap = (
                    f"the OCR cap of {ocr.max_pages} pages a file (RAGCORD_OCR_MAX_PAGES)"
                    if len(done) + len(low) >= ocr.max_pages
                    else f"the OCR time budget of {ocr.budget_s:g} s a file (RAGCORD_OCR_BUDGET_S)"
                )
                doc.warnings.append(f"{len(left)} scanned pages were not OCR'd: {cap} was reached")
                break
            total = min(len(todo), ocr.max_pages)
            engine.report_progress(min(position + 1, total), total)  # the progress bar and Discord's edits
            try:
                image = render_page(pdf[number - 1], ocr.dpi)
                if _is_blank(image):  # a blank page: nothing to read
                    blank.append(number)
                    continue
                page = engine.recognise(image, ocr)
            except engine.OcrUnavailable as exc:
                doc.warnings.append(f"scanned pages were not read: {exc}")
                left = todo[position:]
                break
            except Exception as exc:  # one bad page must not lose the others
                log.info("%s: page %d: OCR failed", filename, number, exc_info=True)
                doc.warnings.append(f"page {number}: OCR failed ({_reason(exc)})")
                left.append(number)
                continue
            log.info(
                "%s: page %d OCR'd in %.1f s (%d boxes, confidence %.2f%s)",
                filename, number, page.seconds, page.boxes, page.confidence, ", upside down" if page.rotated else "",
            )  # fmt: skip
            text = normalize_text(page.text)
            if not text:
                left.append(number)
                continue
            if page.confidence < ocr.min_confidence:
                low.append(number)
                continue
            if max_chars is not None:
                if max_chars <= 0:
                    left.extend(todo[position:])
                    break
                text = cut_at_word(text, max_chars)
                max_chars -= len(text)
            doc.sections.append(Section(text, page=number))
            done.append(number)
    finally:
        pdf.close()
    if low:
        listed = ", ".join(map(str, low[:10])) + (", ..." if len(low) > 10 else "")
        doc.warnings.append(
            f"{len(low)} scanned pages were read with too little OCR confidence to index (page {listed}; "
            f"RAGCORD_OCR_MIN_CONFIDENCE is {ocr.min_confidence:g})"
        )
    if done:
        doc.sections.sort(key=lambda s: s.page or 0)
        doc.extra[OCR_PAGES_KEY] = ",".join(map(str, done))
    doc.pages_without_text = sorted(set(low) | set(left) | set(blank))


def _is_blank(image: Image.Image) -> bool:
    """A rendered page with almost no contrast (grey levels) has nothing to OCR."""
    extrema: Any = image.convert("L").getextrema()
    return bool(extrema[1] - extrema[0] < _BLANK_CONTRAST)


def render_page(page: Any, dpi: int) -> Image.Image:
    """A PIL image of one pypdfium2 page at `dpi`, scaled down if it would exceed the OCR pixel cap."""
    from ingest.loaders.ocr import MAX_IMAGE_PIXELS

    width, height = page.get_size()
    scale = dpi / 72
    pixels = width * height * scale * scale
    if pixels > MAX_IMAGE_PIXELS:
        scale *= (MAX_IMAGE_PIXELS / pixels) ** 0.5
    image: Image.Image = page.render(scale=scale, grayscale=True).to_pil()
    return image


def open_pdf(data: bytes, filename: str, password: str | None = None) -> PdfReader:
    """A reader for the PDF, decrypted if needed; LoadError for damaged or locked files."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            _decrypt(reader, filename, password)
    except LoadError:
        raise
    except DependencyError as exc:
        raise LoadError(
            f"{filename} uses encryption that needs the 'cryptography' package (pip install 'pypdf[crypto]')"
        ) from exc
    except Exception as exc:  # PdfReadError, PdfStreamError, ValueError, KeyError, ... from a damaged file
        raise LoadError(f"{filename} is damaged and cannot be read ({_reason(exc)})") from exc
    return reader


def _decrypt(reader: PdfReader, filename: str, password: str | None) -> None:
    from pypdf import PasswordType

    if reader.decrypt("") != PasswordType.NOT_DECRYPTED:
        return
    if not password:
        raise LoadError(f"{filename} is encrypted; {_PASSWORD_HINT}")
    if reader.decrypt(password) == PasswordType.NOT_DECRYPTED:
        raise LoadError(f"{filename} is encrypted and the PDF password given does not open it; {_PASSWORD_HINT}")


def _metadata_title(reader: PdfReader) -> str:
    try:
        meta = reader.metadata
        raw = meta.title if meta is not None else None
    except Exception:  # broken or undecodable Info dictionary: just no title
        log.debug("unreadable PDF metadata", exc_info=True)
        return ""
    return sensible_title(raw if isinstance(raw, str) else "")


_PRODUCER_PREFIX = re.compile(r"^(microsoft (word|powerpoint|excel)|untitled)\s*-\s*", re.IGNORECASE)
_FILENAME_LIKE = re.compile(r"\.(pdf|docx?|odt|rtf|tex|dvi|ps|pptx?|xlsx?|txt|html?|indd|qxd)$", re.IGNORECASE)
_JUNK_TITLE = re.compile(
    r"^(untitled( document)?|title|no title|none|pdf|(word |powerpoint )?(document|presentation|book|sheet|slide)"
    r"\s*\d*)$",
    re.IGNORECASE,
)


def sensible_title(raw: str) -> str:
    """A PDF's metadata title if it reads like a title, else "" (many are 'untitled' or a file name)."""
    title = " ".join(_CONTROL.sub(" ", raw or "").split())
    title = _PRODUCER_PREFIX.sub("", title)
    if not title or len(title) < 3 or len(title) > 200 or _JUNK_TITLE.match(title):
        return ""
    if _FILENAME_LIKE.search(title) or not any(ch.isalpha() for ch in title):
        return ""
    if "\\" in title or title.count("/") > 1:  # a path
        return ""
    return title


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    text = text[:160] + "..." if len(text) > 160 else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
