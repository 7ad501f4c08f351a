"""Peak memory of the real `ragcord bot` with the default model and a 100k-chunk store.

    python bench/footprint.py [--chunks 100000] [--questions 3]

Builds a store of N synthetic chunks (bench/scale.py's corpus) plus the project's docs/
in the namespace of a fake guild, then starts `ragcord bot` as its own process, as a
team would run it, against the fake Discord server on 127.0.0.1 (REST + gateway; the
bot is the real, unmodified discord.py client). Members ask questions about docs/ by
mention; once every answer is finished, the bot process's peak RSS (VmHWM) is read.

Beside it, in a fresh process, the raw floor: the same GGUF loaded by llama-cpp-python
and the same encoder loaded by sentence-transformers, one query encoded and one short
completion, nothing else. The ratio is what ragcord adds on top of its two models
(Discord, Chroma with the 100k chunks, the BM25 index, queues).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fake_guild  # noqa: E402
from _speed import ROOT, add_project_to_path, machine, process_peak_rss_mb, ratio, say, table  # noqa: E402

add_project_to_path()

QUESTIONS = [
    "How do I run ragcord against a Chroma server?",
    "Which setting points ragcord at a bigger GGUF model?",
    "What does make test do?",
    "How are citations checked?",
]
RAW_FLOOR = """
import json, resource, sys
sys.path.insert(0, {root!r})
from bot.llm import default_gguf_path, extra_buffers_wanted, open_llama
from bot.settings import Settings
from store.embedder import default_model_path
s = Settings(_env_file=None)
llm = open_llama(default_gguf_path(), extra_buffers=extra_buffers_wanted(s.llm_extra_buffers),  # as ragcord
                 n_ctx=s.llm_context, n_threads=s.llm_threads, n_batch=s.llm_batch, verbose=False)
llm.create_completion("Question: how do I start the bot?\\nAnswer:", max_tokens=16)
from sentence_transformers import SentenceTransformer
SentenceTransformer(str(default_model_path()), device="cpu").encode(["how do I start the bot?"])
print(json.dumps({{"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def build_store(data_dir: Path, namespace: str, chunks: int) -> float:
    """`chunks` synthetic chunks through ChromaStore (as bench/scale.py writes them), then docs/ by the CLI."""
    import scale

    t = time.perf_counter()
    scale.build(data_dir / "chroma", chunks, scale.Corpus(), namespace=namespace)
    env = {**os.environ, "RAGCORD_DATA_DIR": str(data_dir)}
    subprocess.run(
        [sys.executable, "-m", "bot.cli", "-n", namespace, "ingest", str(ROOT / "docs")],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    return time.perf_counter() - t


async def run_bot(data_dir: Path, chunks: int, questions: list[str]) -> dict[str, Any]:
    fake, guild, channel, users = await fake_guild(len(questions))
    namespace = f"g{guild['id']}"
    say(f"building {chunks:,} synthetic chunks + docs/ in namespace {namespace} ...")
    build_s = await asyncio.to_thread(build_store, data_dir, namespace, chunks)  # the fake stays responsive
    say(f"  store built in {build_s:.0f} s")
    env = {
        **os.environ,
        "DISCORD_TOKEN": fake.token,
        "RAGCORD_DATA_DIR": str(data_dir),
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
    }
    log = open(data_dir / "bot.log", "wb")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    # SIGINT back to its default in the bot: a benchmark started in the background (`... &`) ignores it, and
    # the bot would inherit that
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "bot"],
        cwd=ROOT, env=env, stdout=log, stderr=log, preexec_fn=_default_sigint,
    )  # fmt: skip
    try:
        await fake.wait_for(lambda: fake.identified or proc.poll() is not None, timeout=600, interval=0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"ragcord bot exited: {(data_dir / 'bot.log').read_text()[-2000:]}")
        connected_s = time.monotonic() - t0
        await asyncio.sleep(1.0)  # READY and GUILD_CREATE reach the bot's cache
        asked = []
        for user, question in zip(users, questions, strict=True):
            asked.append(await fake.user_message(channel, user, question, mention=True))

        def finished() -> bool:
            return all(
                any("✅ done" in m["content"] or m["content"].startswith("⚠️") for m in fake.replies_to(q))
                for q in asked
            )

        await fake.wait_for(lambda: finished() or proc.poll() is not None, timeout=1800, interval=0.2)
        answered_s = time.monotonic() - t0
        if proc.poll() is not None:
            raise RuntimeError(f"ragcord bot exited: {(data_dir / 'bot.log').read_text()[-2000:]}")
        peak = process_peak_rss_mb(proc.pid)
        cited = sum(any("[1]" in m["content"] for m in fake.replies_to(q)) for q in asked)
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        # wait without blocking this event loop: the fake Discord must answer the bot's last calls
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_s = time.monotonic() - stopping
        log.close()
        await fake.close()
        if proc.returncode != 0:
            say(f"ragcord bot exit code {proc.returncode}; its log ends:")
            say((data_dir / "bot.log").read_text(errors="replace")[-3000:])
    return {"peak_mb": peak, "connected_s": connected_s, "answered_s": answered_s, "cited": cited,
            "exit": proc.returncode, "stop_s": stop_s}  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def raw_floor() -> float:
    out = subprocess.run(
        [sys.executable, "-c", RAW_FLOOR.format(root=str(ROOT))], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"raw floor failed: {out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="synthetic chunks in the store (default 100000)")
    parser.add_argument("--questions", type=int, default=3, help=f"questions asked, 1-{len(QUESTIONS)} (default 3)")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    data_dir = Path(tempfile.mkdtemp(prefix="ragcord-footprint-"))
    try:
        got = asyncio.run(run_bot(data_dir, args.chunks, QUESTIONS[: max(1, min(len(QUESTIONS), args.questions))]))
        floor = raw_floor()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    rows = [
        ["store", f"{args.chunks:,} synthetic chunks + docs/"],
        ["bot connected (process start to gateway identify)", f"{got['connected_s']:.1f} s"],
        ["questions answered (by mention) / with a citation", f"{args.questions} / {got['cited']}"],
        ["all answered, from process start", f"{got['answered_s']:.1f} s"],
        ["peak RSS of `ragcord bot` (aim <= 2,048 MiB)", f"{got['peak_mb']:,.0f} MiB"],
        ["raw floor: llama-cpp-python + sentence-transformers alone", f"{floor:,.0f} MiB"],
        ["ratio bot / raw floor", ratio(got["peak_mb"], floor)],
        ["SIGINT to exit (exit code)", f"{got['stop_s']:.1f} s ({got['exit']})"],
    ]
    title = "peak memory of `ragcord bot` (a separate process, fake Discord on 127.0.0.1)"
    say(table(title, ["measure", "value"], rows))
    say(f"machine: {machine()}")


if __name__ == "__main__":
    main()
