"""OpenAICompatLLM against real servers on 127.0.0.1.

- llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`) serving
  the bundled GGUF: a real streamed answer (slow: it loads the model in a subprocess).
- A small stub (http.server in a thread) for each failure: nothing on the port, HTTP 500,
  a stream cut mid-answer, a server slower than the timeout. Each must end in an
  `LLMError` with a short message that names no URL or key, within bounded time, and the
  bot must keep serving (the answering core falls back to the quoted evidence).
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.llm import CUT, GenerationParams, LLMError, LLMUnavailable, Message, OpenAICompatLLM, default_gguf_path
from bot.service import RagService, build_llm
from bot.settings import Settings
from tests.fakes import FakeEmbedder
from tests.servers import free_port

MESSAGES = [Message("system", "Answer briefly."), Message("user", "What is the capital of France?")]
PARAMS = GenerationParams(max_tokens=12, temperature=0.0, stop=("\n\n", "[6]", "Question:", "User:", "###", "<|"))
KEY = "sk-test-secret-key"


def assert_user_safe(message: str, port: int) -> None:
    assert len(message) < 100, message
    assert "127.0.0.1" not in message and str(port) not in message and "http" not in message, message
    assert KEY not in message


# -- llama-cpp-python's own server, serving the bundled model ---------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # `python -m llama_cpp.server`, loading the model as ragcord does (no AMX repack on an AMX CPU)
    serve = (
        "import runpy; from bot.llm import extra_buffers_wanted, model_params\n"
        "with model_params(extra_buffers=extra_buffers_wanted('auto')):\n"
        "    runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)"
    )
    cmd = [sys.executable, "-c", serve, "--model", str(default_gguf_path())]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias", "smollm2"]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start in 60 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_a_real_server_streams_an_answer(llama_server):
    llm = OpenAICompatLLM(llama_server, "smollm2", api_key=KEY, timeout=30.0)
    t0 = time.monotonic()
    pieces = list(llm.stream(MESSAGES, PARAMS))  # six stop strings: the API's limit is four, we send four
    assert len(pieces) >= 2, pieces  # streamed token by token, not in one block
    assert "".join(pieces).strip()
    assert time.monotonic() - t0 < 20


@pytest.mark.slow
def test_a_reader_that_stops_early_frees_the_real_server(llama_server):
    llm = OpenAICompatLLM(llama_server, "smollm2", timeout=30.0)
    stream = llm.stream(MESSAGES, GenerationParams(max_tokens=200, temperature=0.0))
    assert isinstance(stream, Generator)
    assert next(stream)
    stream.close()  # as the degeneration guard does: the connection closes and the server is free again
    again = "".join(llm.stream(MESSAGES, PARAMS))
    assert again.strip()


# -- a stub OpenAI-compatible server for each way a server fails ------------------------------------


def sse(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


class Stub(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mode = "ok"  # ok | 500 | 500-once | 401 | cut | eof | slow | stall
    reply = "Paris is the capital [1]."
    delay = 3.0

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StubHandler)
        self.requests: list[dict] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return  # the client gave up on a slow or stalled reply: what the timeout tests do
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class StubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Stub

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        stub = self.server
        stub.requests.append(body)
        mode = stub.mode
        if mode == "500-once":
            mode = "500" if len(stub.requests) == 1 else "ok"
        if mode == "500":
            return self._json(500, {"error": {"message": "CUDA out of memory at /srv/model.gguf", "type": "server"}})
        if mode == "401":
            return self._json(401, {"error": {"message": "invalid api key", "type": "auth"}})
        if mode == "slow":
            time.sleep(stub.delay)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if mode == "eof":  # no length, no chunking: the body ends when the connection closes
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(sse("The ") + sse("capital"))
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if mode in ("cut", "stall"):
                self._chunk(sse("The "))
                self._chunk(sse("capital"))
                if mode == "stall":
                    time.sleep(stub.delay)
                self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: an incomplete body
                self.close_connection = True
                return
            for word in stub.reply.split(" "):
                self._chunk(sse(word + " "))
            self._chunk(sse(None, finish="stop"))
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")
        except OSError:  # the client went away
            self.close_connection = True


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def failure(llm: OpenAICompatLLM, budget_s: float) -> tuple[LLMError, list[str]]:
    """Stream until the error; return it and what arrived before it (within `budget_s`)."""
    pieces: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        for piece in llm.stream(MESSAGES, PARAMS):
            pieces.append(piece)
    assert time.monotonic() - t0 < budget_s
    return info.value, pieces


def test_the_stub_streams_an_answer_and_gets_at_most_four_stop_strings(stub):
    llm = OpenAICompatLLM(stub.url, "stub", timeout=5.0)
    assert "".join(llm.stream(MESSAGES, PARAMS)) == "Paris is the capital [1]. "
    body = stub.requests[-1]
    assert body["stream"] is True and body["model"] == "stub" and body["max_tokens"] == 12
    assert body["stop"] == ["\n\n", "[6]", "Question:", "User:"]


def test_no_stop_strings_sends_none(stub):
    llm = OpenAICompatLLM(stub.url, "stub", timeout=5.0)
    "".join(llm.stream(MESSAGES, GenerationParams(max_tokens=5)))
    assert "stop" not in stub.requests[-1]


def test_server_down_is_unreachable():
    port = free_port()  # nothing listens there
    llm = OpenAICompatLLM(f"http://127.0.0.1:{port}/v1", "stub", api_key=KEY, timeout=5.0, max_retries=1)
    error, pieces = failure(llm, budget_s=5.0)
    assert isinstance(error, LLMUnavailable) and pieces == []
    assert str(error) == "the model server is unreachable"
    assert_user_safe(str(error), port)


def test_http_500_is_retried_then_reported(stub):
    stub.mode = "500"
    llm = OpenAICompatLLM(stub.url, "stub", api_key=KEY, timeout=5.0, max_retries=1)
    error, _ = failure(llm, budget_s=5.0)
    assert isinstance(error, LLMUnavailable)
    assert str(error) == "the model server failed (HTTP 500)"
    assert "CUDA" not in str(error)  # the server's own text goes to the log, not to the user
    assert_user_safe(str(error), stub.port)
    assert len(stub.requests) == 2  # one retry


def test_one_http_500_is_absorbed_by_the_retry(stub):
    stub.mode = "500-once"
    llm = OpenAICompatLLM(stub.url, "stub", timeout=5.0, max_retries=1)
    assert "".join(llm.stream(MESSAGES, PARAMS)).startswith("Paris")
    assert len(stub.requests) == 2


def test_a_refused_key_says_so_without_retrying(stub):
    stub.mode = "401"
    llm = OpenAICompatLLM(stub.url, "stub", api_key=KEY, timeout=5.0, max_retries=3)
    error, _ = failure(llm, budget_s=3.0)
    assert not isinstance(error, LLMUnavailable)
    assert "API key" in str(error) and "401" in str(error)
    assert_user_safe(str(error), stub.port)
    assert len(stub.requests) == 1


def test_a_stream_cut_mid_answer_is_an_error_after_the_pieces_that_arrived(stub):
    stub.mode = "cut"
    llm = OpenAICompatLLM(stub.url, "stub", api_key=KEY, timeout=5.0)
    error, pieces = failure(llm, budget_s=3.0)
    assert pieces == ["The ", "capital"]
    assert isinstance(error, LLMUnavailable) and str(error) == CUT
    assert_user_safe(str(error), stub.port)


def test_a_stream_that_closes_without_finishing_is_cut_too(stub):
    stub.mode = "eof"  # a clean close, but no finish reason and no [DONE]: the answer is incomplete
    llm = OpenAICompatLLM(stub.url, "stub", timeout=5.0)
    error, pieces = failure(llm, budget_s=3.0)
    assert pieces == ["The ", "capital"]
    assert str(error) == CUT


def test_a_server_slower_than_the_timeout(stub):
    stub.mode, stub.delay = "slow", 3.0
    llm = OpenAICompatLLM(stub.url, "stub", api_key=KEY, timeout=0.5, max_retries=0)
    error, pieces = failure(llm, budget_s=2.0)
    assert isinstance(error, LLMUnavailable) and pieces == []
    assert str(error) == "the model server did not answer within 0.5 s"
    assert_user_safe(str(error), stub.port)


def test_a_server_that_stalls_mid_answer(stub):
    stub.mode, stub.delay = "stall", 3.0
    llm = OpenAICompatLLM(stub.url, "stub", timeout=0.5, max_retries=0)
    error, pieces = failure(llm, budget_s=2.0)
    assert pieces == ["The ", "capital"]
    assert str(error) == "the model server stopped answering for 0.5 s"


def test_build_llm_passes_timeout_and_retries(stub, tmp_path):
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        llm_backend="openai",
        openai_base_url=stub.url,
        openai_model="stub",
        llm_timeout=0.5,
        llm_retries=0,
        _env_file=None,
    )
    llm = build_llm(settings)
    assert isinstance(llm, OpenAICompatLLM)
    stub.mode = "500"
    failure(llm, budget_s=2.0)
    assert len(stub.requests) == 1  # llm_retries=0: no retry


# -- the bot keeps serving ----------------------------------------------------------------------------

QUESTION = "Where is the Discord token read from?"
GOOD = "The token comes from the DISCORD_TOKEN environment variable. [1]"


def test_a_failing_server_gives_the_quote_and_the_bot_recovers(stub, tmp_path: Path, store, docs_dir):
    settings = Settings(data_dir=tmp_path, min_score=0.2, caution_score=0.3, _env_file=None)  # type: ignore[call-arg]
    service = RagService(
        store,
        FakeEmbedder(),
        llm_factory=lambda: OpenAICompatLLM(stub.url, "stub", timeout=2.0, max_retries=0),
        lexical_dir=tmp_path / "lexical",
        settings=settings,
    )
    service.ingest_paths("guild", [docs_dir])
    stub.mode = "500"
    broken = service.ask("guild", QUESTION)
    assert broken.status != "failed" and broken.led_by == "quote"
    assert broken.rejected == "the model failed"
    assert "model failed" in broken.note  # the member is told why the quote leads
    assert "DISCORD_TOKEN environment variable" in broken.reply  # the verbatim evidence still answers
    assert len(stub.requests) == 1

    stub.mode, stub.reply = "ok", GOOD  # the server is back: the next question gets the model's answer
    fixed = service.ask("guild", QUESTION)
    assert fixed.led_by == "model" and not fixed.rejected
    assert fixed.reply.startswith(GOOD)
