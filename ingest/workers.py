"""The ingest pipeline's helpers for running work beside the encoder."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ingest.loaders import LoadError, load_bytes
from ingest.loaders.image import image_format
from ingest.loaders.ocr import progress_to, report_progress
from ingest.loaders.office import has_pictures
from store.types import LoadedDocument

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger(__name__)

DEFAULT_PDF_TIMEOUT = 120.0  # seconds one PDF may take in the worker (RAGCORD_PDF_TIMEOUT)
_RESTART_WAIT_S = 60.0


def is_pdf(data: bytes, filename: str) -> bool:
    return data[:1024].lstrip(b"\x00\t\n\r\x0c ").startswith(b"%PDF") or filename.lower().endswith(".pdf")


def parser_of(data: bytes, filename: str) -> str:
    """What the worker ran on a file, as a refusal names it: a Word file's crash is no PDF parser's."""
    if is_pdf(data, filename):
        return "the PDF parser"
    if image_format(data[:16]):
        return "the OCR engine"
    return "the parser"


class PdfWorker:
    """Parses PDFs in one spawned worker process, the rest in the calling thread.

    pypdf is pure Python: parsed in a thread beside the encoder it holds the GIL in 5 ms
    slices, and every torch op of the encoder waits for it to be released, which slowed
    the encoder more than the parsing itself costs. In a process it only takes a core's
    share. The process starts in the background (about a second: Python, then pypdf);
    PDFs met before it is up are parsed in the calling thread, when the encoder has
    nothing to encode yet anyway.

    The process also contains a PDF that crashes or stalls the parser: a PDF on which the
    worker dies is refused ("the PDF parser crashed on this file") and never parsed again
    here; one still unparsed after `timeout` seconds is refused and the worker killed.
    Either way a new worker starts, and the next PDF waits for it (up to a minute) rather
    than being parsed here. If the worker cannot start or dies before it is up, parsing
    goes back to the calling thread, as it is for small runs; one that died while idle is
    restarted without blaming the PDF at hand.

    OCR progress (`ocr.report_progress`) in the worker comes down the pipe ahead of the reply
    and is reported again here, to the hook of the thread that called `load`.

    `parse` is what the worker runs on each PDF (`load_bytes` by default); it must be an
    importable module-level function, since the worker is a spawned process.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_PDF_TIMEOUT,
        parse: Callable[..., LoadedDocument] = load_bytes,
        wait: float = 0.0,
    ) -> None:
        self.timeout = timeout
        self.restarts = 0  # workers started again after a crash, a stall or an idle death
        self._parse = parse
        self._process: Any = None
        self._conn: Any = None
        self._up = False  # the worker said it is ready
        # How long a PDF waits for the worker to come up: not at all for the first one (the
        # encoder has nothing to do yet), up to a minute once a worker has had to be restarted,
        # since PDFs that crash parsers tend to come in batches. A long-lived worker (the bot's,
        # for uploads) passes `wait` so that no PDF is ever parsed in its process.
        self._wait = wait
        self._disabled = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Spawn the worker process now, without waiting for it."""
        if self._process is not None or self._disabled or self._closed:
            return
        import multiprocessing

        # spawn, not fork: this process runs torch and Chroma threads
        context = multiprocessing.get_context("spawn")
        try:
            parent, child = context.Pipe()
        except OSError as exc:
            self._give_up(exc)
            return
        try:
            level = logging.getLogger().getEffectiveLevel()
            process = context.Process(
                target=_serve, args=(child, level, self._parse), name="ragcord-pdf-worker", daemon=True
            )
            process.start()
        except Exception as exc:  # OSError, a parse function that cannot be pickled, ...: no worker
            parent.close()
            self._give_up(exc)
            return
        finally:
            child.close()
        self._process, self._conn, self._up = process, parent, False

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Start the worker if needed and wait until it takes PDFs; False if it is not up by then."""
        self.start()
        return self._check_up(timeout)

    def load(self, data: bytes, filename: str, **kwargs: Any) -> LoadedDocument:
        # PDFs (pypdf, and OCR of their scanned pages), images (OCR) and Word and PowerPoint files
        # with pictures (OCR'd too) go to the worker
        if not (is_pdf(data, filename) or image_format(data[:16]) or has_pictures(data)):
            return load_bytes(data, filename, **kwargs)
        self.start()
        if not self._check_up(self._wait):
            return self._parse(data, filename, **kwargs)
        if not self._process.is_alive():  # died while idle: not this PDF's doing
            self._restart(f"the worker process exited while idle (exit code {self._process.exitcode})")
            if not self._check_up(self._wait):
                return self._parse(data, filename, **kwargs)
        process, conn = self._process, self._conn
        try:
            conn.send((data, filename, kwargs))
        except (OSError, ValueError) as exc:  # the pipe broke before the PDF was handed over
            self._restart(f"the worker process is unreachable ({exc})")
            return self._parse(data, filename, **kwargs)
        deadline = time.monotonic() + self.timeout
        try:
            while True:  # OCR progress comes first ("progress", (page, pages)), then the reply
                answered = conn.poll(max(0.0, deadline - time.monotonic()))
                reply = conn.recv() if answered else None
                if reply is None or reply[0] != "progress":
                    break
                report_progress(*reply[1])  # to this thread's hook (the pipeline's progress)
        except (EOFError, OSError):  # the worker died while parsing this PDF
            process.join(timeout=5)
            self._restart(f"the worker process died parsing {filename} (exit code {process.exitcode})")
            raise LoadError(f"{filename} was not indexed: {parser_of(data, filename)} crashed on this file") from None
        if reply is None:
            self._restart(f"{filename} was still being parsed after {self.timeout:g} s; the worker was stopped")
            raise LoadError(
                f"{filename} was not indexed: {parser_of(data, filename)} was still working on it "
                f"after {self.timeout:g} s "
                "(raise RAGCORD_PDF_TIMEOUT to allow more time)"
            )
        status, payload = reply
        if status == "refused":
            raise LoadError(payload)
        doc: LoadedDocument = payload
        return doc

    def _check_up(self, timeout: float | None) -> bool:
        """Whether the worker is ready for PDFs; waits up to `timeout` seconds for its hello."""
        if self._up:
            return True
        if self._disabled or self._conn is None:
            return False
        try:
            if not self._conn.poll(timeout):
                return False
            self._conn.recv()
        except (EOFError, OSError) as exc:  # died on its way up: this environment cannot run it
            self._give_up(exc if str(exc) else RuntimeError("the worker process exited while starting"))
            return False
        self._up = True
        return True

    def _restart(self, why: str) -> None:
        log.warning("PDF worker restarted: %s", why)
        self._stop(kill=True)
        if not self._closed:
            self.restarts += 1
            self._wait = _RESTART_WAIT_S
            self.start()

    def _give_up(self, exc: BaseException) -> None:
        log.warning("PDF worker process unusable (%s); parsing PDFs in this process", exc)
        self._stop(kill=True)
        self._disabled = True

    def _stop(self, *, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn, self._up = None, None, False
        if process is None:
            return
        if not kill and process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)  # asks the worker to exit
            process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        conn.close()

    def close(self) -> None:
        self._closed = True
        self._stop(kill=False)


def _serve(conn: Connection, level: int, parse: Callable[..., LoadedDocument]) -> None:
    """The worker process: say hello once the imports are done, then parse what arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes the worker
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import pypdf  # noqa: F401

    import ingest.loaders.pdf  # noqa: F401

    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent has gone
            return
        if request is None:
            return
        data, filename, kwargs = request

        def progress(done: int, total: int) -> None:
            conn.send(("progress", (done, total)))

        try:
            with progress_to(progress):
                reply: tuple[str, Any] = ("ok", parse(data, filename, **kwargs))
        except LoadError as exc:
            reply = ("refused", str(exc))
        except Exception as exc:  # a parser bug must not take the run down: the file is refused
            log.exception("PDF parser failed on %s", filename)
            reply = (
                "refused",
                f"{filename} was not indexed: {parser_of(data, filename)} failed on it ({type(exc).__name__})",
            )
        conn.send(reply)


class Prefetch:
    """Runs `work(item)` for each item in a background thread; iterating yields the results in order."""

    _DONE = object()

    def __init__(self, work: Callable, items: Iterator, depth: int = 4) -> None:  # type: ignore[type-arg]
        self._out: queue.Queue = queue.Queue(maxsize=depth)  # type: ignore[type-arg]
        self._work = work
        self._items = items
        self._thread = threading.Thread(target=self._produce, name="ingest-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for item in self._items:
                self._out.put(self._work(item))
        except BaseException as exc:  # re-raised in the consumer
            self._out.put(exc)
        self._out.put(self._DONE)

    def idle(self) -> bool:
        """Nothing is ready: the next item would be waited for."""
        return self._out.empty()

    def __iter__(self) -> Iterator:  # type: ignore[type-arg]
        while True:
            got = self._out.get()
            if got is self._DONE:
                break
            if isinstance(got, BaseException):
                raise got
            yield got
        self._thread.join()
