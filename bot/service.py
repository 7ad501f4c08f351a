"""The service both front ends use: owns the store, encoder, model and pipelines.

Built from `Settings` by `RagService.from_settings`, or from parts (tests pass a fake
LLM and a fake embedder). Heavy parts load lazily, once per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.answer import Answer, Answerer, AnswerEvent, Completed, Prepared, Turn
from bot.llm import LLM, GenerationParams, LlamaCppLLM, OpenAICompatLLM, extra_buffers_wanted
from bot.prompts import STOP, SYSTEM
from bot.reader import SentenceSelector, Weights
from bot.settings import Settings
from bot.summarize import Summarizer
from ingest.chunking import Chunker
from ingest.loaders.ocr import OcrOptions
from ingest.pipeline import Ingestor, IngestResult, ProgressCallback
from store.chroma import ChromaLocation, ChromaStore
from store.embedder import Embedder, encoder_identity, make_embedder, recorded_encoders
from store.lexical import LexicalIndexes
from store.retrieval import CrossEncoderReranker, Retriever
from store.types import Chunk, DocumentInfo

log = logging.getLogger(__name__)


class DocumentNotFound(LookupError):
    pass


@dataclass(slots=True)
class ServiceStatus:
    model: str
    embedder: str
    documents: int
    chunks: int
    store: str
    uptime_s: float


def match_document(docs: Sequence[DocumentInfo], name: str) -> DocumentInfo:
    """A document by id, exact title, file name or source, else a unique partial title match."""
    key = name.strip().lower()
    for doc in docs:
        if key in (doc.doc_id.lower(), doc.title.lower(), doc.source.lower(), Path(doc.source).name.lower()):
            return doc
    partial = [d for d in docs if key and key in d.title.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = ", ".join(d.title for d in partial[:5])
        raise DocumentNotFound(f"'{name}' matches several documents ({names}); use its id from `sources`")
    raise DocumentNotFound(f"no document called '{name}' (list them with `sources`)")


def build_llm(settings: Settings) -> LLM:
    if settings.llm_backend == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAICompatLLM(
            settings.openai_base_url,
            settings.openai_model,
            api_key=key,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_retries,
        )
    return LlamaCppLLM(
        settings.llm_model_path or None,
        n_ctx=settings.llm_context,
        n_threads=settings.llm_threads,
        n_batch=settings.llm_batch,
        flash_attn=settings.llm_flash_attn,
        extra_buffers=extra_buffers_wanted(settings.llm_extra_buffers),
    )


def build_embedder(settings: Settings, store: ChromaStore | None = None) -> Embedder:
    """The configured encoder; RAGCORD_EMBED_BACKEND=auto keeps the backend `store`'s namespaces record."""
    recorded = recorded_encoders(store) if store is not None and settings.embed_backend == "auto" else []
    return make_embedder(
        settings.embed_model,
        settings.embed_backend,
        cache_dir=settings.data_dir / "models",
        device=settings.embed_device,
        batch_size=settings.embed_batch_size,
        recorded=recorded,
    )


def ocr_options(s: Settings) -> OcrOptions:
    """The OCR settings (RAGCORD_OCR*) the loaders get."""
    return OcrOptions(
        enabled=s.ocr,
        dpi=s.ocr_dpi,
        det_side=s.ocr_det_side,
        threads=s.ocr_threads,
        min_confidence=s.ocr_min_confidence,
        max_pages=s.ocr_max_pages,
        budget_s=s.ocr_budget_s,
    )


class RagService:
    def __init__(
        self,
        store: ChromaStore,
        embedder: Embedder,
        *,
        llm_factory: Callable[[], LLM],
        lexical_dir: Path | None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        s = self.settings
        self.store = store
        self.embedder = embedder
        if store.encoder is None:  # the vectors this service queries with come from this encoder
            store.encoder = encoder_identity(embedder)
            store.embed_check = embedder.embed
        self._llm_factory = llm_factory
        self._llm: LLM | None = None
        self.started = time.monotonic()
        self.reader_weights = Weights()  # the reader's signal weights (bench/answers.py --weights tries others)
        reranker = CrossEncoderReranker(s.reranker_model, s.embed_device) if s.reranker_model else None
        self.retriever = Retriever(
            store, embedder, LexicalIndexes(lexical_dir), mode=s.retrieval_mode, reranker=reranker
        )
        max_tokens = getattr(embedder, "max_tokens", 256)
        self.chunker = Chunker(
            embedder.count_tokens,
            max_tokens=max_tokens,
            target_tokens=min(s.chunk_tokens, max_tokens),
            overlap_tokens=s.chunk_overlap,
        )
        password = s.pdf_password.get_secret_value() if s.pdf_password else None
        self.ingestor = Ingestor(
            store,
            embedder,
            self.chunker,
            max_bytes=s.max_file_bytes,
            pdf_password=password,
            refusals_path=Path(s.data_dir) / "refused-files.json",
            pdf_timeout=s.pdf_timeout,
            max_pages=s.pdf_max_pages,
            max_text_chars=s.max_text_chars,
            ocr=ocr_options(s),  # to the loaders (in the PDF worker too) and in the fingerprint of PDFs and images
        )
        self.params = GenerationParams(
            max_tokens=s.llm_max_tokens, temperature=s.llm_temperature, top_p=s.llm_top_p, stop=STOP, seed=s.llm_seed
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RagService:
        location = ChromaLocation(
            path=None if settings.chroma_host else settings.data_dir / "chroma",
            host=settings.chroma_host,
            port=settings.chroma_port,
        )
        # the writer lock lives in the embedded store's folder (every user of it finds it there), else in the data dir
        lock_dir = settings.data_dir if settings.chroma_host else None
        store = ChromaStore(location, lock_dir=lock_dir, writer_wait_s=settings.writer_wait_s)
        return cls(
            store,
            build_embedder(settings, store),
            llm_factory=lambda: build_llm(settings),
            lexical_dir=settings.data_dir / "lexical",
            settings=settings,
        )

    # -- the model ------------------------------------------------------------------
    @property
    def llm(self) -> LLM:
        if self._llm is None:
            self._llm = self._llm_factory()
        return self._llm

    @property
    def model_name(self) -> str:
        """The chat model's name for logs and /status, without loading it in extract mode."""
        if self.settings.answer_mode == "extract":
            return "none (answer mode extract)"
        return str(getattr(self.llm, "name", "?"))

    def warm(self) -> None:
        """Load encoder and model now and evaluate the fixed system prompt (bot start-up).

        In extract mode the model is never loaded: nothing would call it."""
        warm_encoder = getattr(self.embedder, "warm", None)
        if warm_encoder:
            warm_encoder()
        if self.settings.answer_mode == "extract":
            return
        warm_llm = getattr(self.llm, "warm", None)
        if warm_llm:
            from bot.llm import Message

            warm_llm([Message("system", SYSTEM)])

    # -- answering ------------------------------------------------------------------
    @property
    def answerer(self) -> Answerer:
        s = self.settings
        return Answerer(
            self.retriever,
            None if s.answer_mode == "extract" else self.llm,  # extract: the model is never loaded
            top_k=s.top_k,
            min_score=s.min_score,
            caution_score=s.caution_score,
            min_sentence_score=s.min_sentence_score,
            params=self.params,
            passage_chars=s.passage_chars,
            history_turns=s.history_turns,
            mode=s.answer_mode,
            max_question_chars=s.max_question_chars,
            selector=SentenceSelector(self.embedder.embed, weights=self.reader_weights),
        )

    @property
    def summarizer(self) -> Summarizer:
        mode = self.settings.answer_mode
        return Summarizer(None if mode == "extract" else self.llm, mode=mode)  # extract: the model is never loaded

    # `scopes`: what the asker may read ("guild" and channel ids, see `Retriever.search`); None: everything.
    def ask_stream(
        self, namespace: str, question: str, history: Sequence[Turn] = (), scopes: frozenset[str] | None = None
    ) -> Iterator[AnswerEvent]:
        return self.answerer.stream(namespace, question, history, scopes)

    def ask(
        self, namespace: str, question: str, history: Sequence[Turn] = (), scopes: frozenset[str] | None = None
    ) -> Answer:
        return self.answerer.ask(namespace, question, history, scopes)

    def prepare_answer(
        self, namespace: str, question: str, history: Sequence[Turn] = (), scopes: frozenset[str] | None = None
    ) -> Prepared:
        """Retrieval and the reader's evidence, without the model (see `Answerer.prepare`)."""
        return self.answerer.prepare(namespace, question, history, scopes)

    def finish_answer(self, prepared: Prepared) -> Iterator[AnswerEvent]:
        return self.answerer.finish(prepared)

    def summarize_document_stream(
        self, namespace: str, name: str, scopes: frozenset[str] | None = None
    ) -> Iterator[AnswerEvent]:
        info = self.find_document(namespace, name, scopes)
        chunks = sorted(self.store.get_chunks(namespace, info.chunk_ids), key=lambda c: c.index)
        return self.summarizer.stream(chunks, title=info.title)

    def summarize_texts_stream(self, items: Sequence[tuple[str, str, str]], title: str) -> Iterator[AnswerEvent]:
        """Summarise conversation messages: (author, text, jump url) in time order."""
        chunks = [
            Chunk(
                doc_id="conversation",
                index=i,
                text=text,
                title=author,
                source=url,
                extra=(("jump_url", url),) if url else (),
            )
            for i, (author, text, url) in enumerate(items)
            if text.strip()
        ]
        return self.summarizer.stream(chunks, title=title)

    @staticmethod
    def collect(events: Iterator[AnswerEvent]) -> Answer:
        answer = Answer("")
        for event in events:
            if isinstance(event, Completed):
                answer = event.answer
        return answer

    # -- documents -------------------------------------------------------------------
    def ingest_paths(
        self, namespace: str, paths: Sequence[Path], progress: ProgressCallback | None = None
    ) -> list[IngestResult]:
        return self.ingestor.ingest_paths(namespace, paths, progress=progress)

    def ingest_bytes(
        self,
        namespace: str,
        data: bytes,
        filename: str,
        *,
        source: str,
        title: str | None = None,
        extra: dict[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestResult:
        return self.ingestor.ingest_bytes(
            namespace, data, filename, source=source, title=title, extra=extra, progress=progress
        )

    def prepare_index(self, namespace: str) -> None:
        """Build (and persist) the lexical index now rather than on the next question."""
        if self.settings.retrieval_mode != "dense":
            self.retriever.lexical_index(namespace)

    def documents(self, namespace: str, scopes: frozenset[str] | None = None) -> list[DocumentInfo]:
        """The namespace's documents; with `scopes`, only those the asker may read."""
        return self.store.documents(namespace, scopes)

    def find_document(self, namespace: str, name: str, scopes: frozenset[str] | None = None) -> DocumentInfo:
        return match_document(self.documents(namespace, scopes), name)

    def forget(self, namespace: str, name: str) -> DocumentInfo:
        info = self.find_document(namespace, name)
        removed = self.ingestor.forget(namespace, info.doc_id)
        if removed is None:
            raise DocumentNotFound(f"'{name}' was already removed")
        return removed

    def reindex(self, namespace: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Re-embed a namespace with the configured encoder (after RAGCORD_EMBED_MODEL/BACKEND changed)."""
        return self.ingestor.reindex(namespace, progress=progress)

    def status(self, namespace: str) -> ServiceStatus:
        """Raises `StoreUnavailable` during a store outage (the front ends say the store is unreachable)."""
        docs = self.documents(namespace)
        model = self._llm.name if self._llm is not None else "(not loaded)"
        return ServiceStatus(
            model=model,
            embedder=getattr(self.embedder, "name", "?"),
            documents=len(docs),
            chunks=sum(d.chunks for d in docs),
            store=self.store.location.describe,
            uptime_s=time.monotonic() - self.started,
        )
