"""The embedding model run by onnxruntime instead of torch (RAGCORD_EMBED_BACKEND=onnx|onnx-int8).

The model folder's transformer is exported once to ONNX with its mean pooling and
L2 normalisation inside the graph (torch + the `onnx` package, a few seconds), and,
for `onnx-int8`, its weights quantized to 8 bits by onnxruntime. The files are kept
under RAGCORD_DATA_DIR/models and reused. Nothing is downloaded: the export reads the
local model folder. Tokenization uses the folder's tokenizer.json (same word pieces,
same 256-piece limit as sentence-transformers). bench/README.md has the speed and the
SciFact quality of each backend.

int8 runs each text on its own: onnxruntime's dynamic quantization scales a MatMul's
activations by the whole input tensor, so in a batch a text's vector moved with its
batch-mates and their padding (0.993 worst, 0.996 mean cosine between a text encoded
alone and in a batch of 32). Alone, a text always gets the same vector (a re-embedded
chunk matches its stored vector, as `ChromaBase._verify_unrecorded` needs), and it is
faster too: 240 SciFact abstracts encoded at 32 texts/s in batches of 32 on 2 threads,
46/s one at a time on 2 threads, 54/s one at a time on one 1-thread session per core
(what `embed` does). The fp32 graph keeps batches (sorted by length: little padding).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from store.embedder import EmbedderError, mean_pooled, model_identity, resolve_model
from store.tokens import load_token_counter, read_max_seq_length

log = logging.getLogger(__name__)


class OnnxEmbedder:
    def __init__(
        self,
        model: str = "",
        *,
        cache_dir: Path,
        quantized: bool = True,
        batch_size: int = 32,
        threads: int = 0,
    ) -> None:
        self.model_ref = resolve_model(model)
        if not os.path.isdir(self.model_ref):
            raise EmbedderError(
                f"RAGCORD_EMBED_BACKEND=onnx needs a local model folder, not {self.model_ref!r}; "
                "download it first or use RAGCORD_EMBED_BACKEND=torch"
            )
        folder = Path(self.model_ref)
        self.quantized = quantized
        variant = "onnx-int8" if quantized else "onnx"
        self.name = f"{folder.name}+{variant}"
        self.batch_size = batch_size
        self.threads = threads or (os.cpu_count() or 1)
        self.max_tokens = read_max_seq_length(folder) or 256
        digest = hashlib.sha256(f"{folder.resolve()}|{_weights_stamp(folder)}".encode()).hexdigest()[:12]
        self.path = cache_dir / f"{folder.name}-{digest}" / ("model-int8.onnx" if quantized else "model.onnx")
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()
        self._sessions: tuple[Any | None, Any] | None = None
        self._tokenizer: Any = None
        self._counter: Callable[[Sequence[str]], list[int]] | None = None
        self._variant = variant
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """The model folder's identity with this backend: int8 vectors are not torch vectors."""
        if self._identity is None:
            self._identity = model_identity(self.model_ref, self._variant)
        return self._identity

    # -- loading ----------------------------------------------------------------------
    def _load(self) -> tuple[Any | None, Any]:
        with self._lock:
            if self._sessions is None:
                if not self.path.exists():
                    export(Path(self.model_ref), self.path, quantized=self.quantized)
                import onnxruntime as ort

                def session(threads: int) -> Any:
                    opts = ort.SessionOptions()
                    opts.intra_op_num_threads = threads
                    opts.inter_op_num_threads = 1
                    # no spinning between calls: llama.cpp and Chroma share the cores
                    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    return ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])

                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(Path(self.model_ref) / "tokenizer.json"))
                tokenizer.enable_truncation(max_length=self.max_tokens)
                tokenizer.no_padding()
                self._tokenizer = tokenizer
                # fp32 documents in batches on every core; int8 documents one at a time on the one-thread
                # session, from a thread per core; a query on one thread (fast, undisturbed by a busy machine)
                self._sessions = (None if self.quantized else session(self.threads), session(1))
                log.info("embedding model %s loaded from %s", self.name, self.path)
            return self._sessions

    def warm(self) -> None:
        self.embed_query("warm up")

    # -- the Embedder protocol -----------------------------------------------------------
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self._counter is None:  # the chunker's counts: no onnxruntime session needed
            self._counter = load_token_counter(self.model_ref)
        return self._counter(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        docs, single = self._load()
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        if docs is None:  # int8: each text alone, so its vector never depends on the others
            workers = min(self.threads, len(encodings))
            if workers == 1:
                return np.stack([self._run(single, [e.ids])[0] for e in encodings])
            with ThreadPoolExecutor(workers, thread_name_prefix="onnx-embed") as pool:
                return np.stack(list(pool.map(lambda e: self._run(single, [e.ids])[0], encodings)))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # less padding
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        for start in range(0, len(order), self.batch_size):
            part = order[start : start + self.batch_size]
            vectors = self._run(docs, [encodings[i].ids for i in part])
            for i, vec in zip(part, vectors, strict=True):
                out[i] = vec
        return np.stack(out).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        _, query = self._load()
        with self._query_lock:
            ids = self._tokenizer.encode(text, add_special_tokens=True).ids
            return self._run(query, [ids])[0]

    @staticmethod
    def _run(session: Any, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        return np.asarray(session.run(["embedding"], feeds)[0], dtype=np.float32)


def _weights_stamp(folder: Path) -> str:
    """Changes when the model's weights do (size and modification time of the weight files)."""
    stamps = []
    for name in ("model.safetensors", "pytorch_model.bin"):
        f = folder / name
        if f.exists():
            st = f.stat()
            stamps.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
    return ",".join(stamps)


def export(folder: Path, target: Path, *, quantized: bool) -> None:
    """Export `folder`'s transformer + mean pooling + normalisation to ONNX (and quantize it)."""
    if not mean_pooled(folder):
        raise EmbedderError(f"{folder.name} does not use mean pooling; use RAGCORD_EMBED_BACKEND=torch for it")
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise EmbedderError(
            f"exporting to ONNX needs {exc.name}: `pip install onnx` (or RAGCORD_EMBED_BACKEND=torch)"
        ) from exc
    log.info("exporting %s to ONNX (once; kept in %s)", folder.name, target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(folder)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    sample = torch.ones((2, 8), dtype=torch.int64)
    dynamic = {name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "token_type_ids")}
    fp32 = target.with_name(f"model.{os.getpid()}.onnx")
    try:
        with torch.no_grad():
            torch.onnx.export(
                Pooled(),
                (sample, sample, torch.zeros_like(sample)),
                str(fp32),
                input_names=list(dynamic),
                output_names=["embedding"],
                dynamic_axes={**dynamic, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = target.with_name(f"model-int8.{os.getpid()}.onnx")
            quantize_dynamic(
                str(fp32), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True
            )
            os.replace(tmp, target)
        else:
            os.replace(fp32, target)
    finally:
        fp32.unlink(missing_ok=True)
