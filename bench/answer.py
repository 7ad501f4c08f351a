"""Answer latency: ragcord's answer path beside llama-cpp-python's raw `create_completion`.

    python bench/answer.py              # 5 questions over docs/, 2 rounds
    python bench/answer.py --tune       # also threads / n_batch / n_ctx of the raw model

ragcord's own docs/ folder is ingested into a temporary store; the service loads the
default model (SmolLM2-135M) and encoder and is warmed (`RagService.warm()`). Then,
for every question and round, interleaved so a busy machine slows all alike:

1. ragcord: `RagService.ask_stream` (retrieve, read, prompt, stream, check), with
   the KV cache as a bot has it: the fixed system prompt evaluated by `warm()`;
2. raw, same cache state: the model's own `create_completion(prompt, stream=True)` on
   the identical rendered prompt, after the same `warm()` (isolates ragcord's overhead);
3. raw, cold: the same call after `llama.reset()`, so the whole prompt is evaluated
   (what a process that does not keep the system prompt cached pays);
4. raw, cold, full prompt: the same messages with the retrieved passages whole (what a
   plain RAG prompt holds), after `llama.reset()`: the baseline of the issue's aim.
   ragcord gives the model only each passage's sentences that match the question
   (RAGCORD_PASSAGE_CHARS), measured against bench/answers.py for answer quality.

Time to first token counts from the call into the model to the first text it yields
(ragcord's end-to-end figure adds retrieval). Tokens per second count the generated
tokens after the first over the time after the first. Sampling settings are
ragcord's, seeded, so every variant writes the same answer.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import ROOT, add_project_to_path, machine, peak_rss_mb, ratio, say, table  # noqa: E402

add_project_to_path()

NS = "bench"
QUESTIONS = (
    "How does ragcord check the citations in its answers?",
    "How do I use a Chroma server instead of the embedded store?",
    "Which language model does ragcord use by default?",
    "What does RAGCORD_MIN_SCORE do?",
    "How do I remove a document from the store?",
)


class Stamp:
    """First-token time, last-token time and text of one streamed generation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first = 0.0
        self.last = 0.0
        self.pieces: list[str] = []

    def add(self, text: str) -> None:
        now = time.perf_counter()
        if not self.pieces:
            self.first = now
        self.last = now
        self.pieces.append(text)

    @classmethod
    def collect(cls, pieces: Iterator[str]) -> Stamp:
        """Time a lazy stream from now: the model is only called on the first `next()`."""
        stamp = cls()
        for piece in pieces:
            stamp.add(piece)
        return stamp

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.start) * 1000

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def raw_stream(llama, prompt: str, params) -> Iterator[str]:  # type: ignore[no-untyped-def]
    for piece in llama.create_completion(
        prompt,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=list(params.stop) or None,
        seed=params.seed,
        stream=True,
    ):
        yield piece["choices"][0]["text"]


def tokens_per_s(llama, stamp: Stamp) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    n = len(llama.tokenize(stamp.text.encode("utf-8"), add_bos=False, special=True))
    span = stamp.last - stamp.first
    return n, ((n - 1) / span if span > 0 and n > 1 else float("nan"))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tune(model_path: Path, prompt: str, params, rounds: int = 2) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Raw cold TTFT and tokens/s of the model under other threads / n_batch / n_ctx."""
    from bot.llm import extra_buffers_wanted, open_llama

    configs = [
        (2, 512, 2048, False),
        (1, 512, 2048, False),
        (2, 128, 2048, False),
        (2, 256, 2048, False),
        (2, 1024, 2048, False),
        (2, 512, 4096, False),
        (2, 512, 2048, True),
    ]
    got: dict[tuple[int, int, int, bool], list[tuple[float, float]]] = {c: [] for c in configs}
    for _ in range(rounds):
        for threads, batch, ctx, flash in configs:
            llama = open_llama(  # a plain Llama, loaded as ragcord loads it
                model_path,
                extra_buffers=extra_buffers_wanted("auto"),
                n_ctx=ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=batch,
                flash_attn=flash,
                verbose=False,
            )
            stamp = Stamp.collect(raw_stream(llama, prompt, params))
            got[(threads, batch, ctx, flash)].append((stamp.ttft_ms, tokens_per_s(llama, stamp)[1]))
            del llama
            gc.collect()
    rows = []
    for (threads, batch, ctx, flash), values in got.items():
        rows.append(
            [
                str(threads),
                str(batch),
                str(ctx),
                "on" if flash else "off",
                f"{min(v[0] for v in values):,.0f}",
                f"{max(v[1] for v in values):.1f}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder to ingest (default: docs/)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions, best kept (default 3)")
    parser.add_argument("--tune", action="store_true", help="also time raw threads / n_batch / n_ctx variants")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    say(f"machine: {machine()}")

    from bot.answer import Completed, Retrieved, Token
    from bot.llm import GenerationParams, Message
    from bot.prompts import SYSTEM, answer_messages
    from bot.service import RagService
    from bot.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="ragcord-answer-"))
    try:
        settings = Settings(data_dir=root, _env_file=None)  # type: ignore[call-arg]
        service = RagService.from_settings(settings)
        t = time.perf_counter()
        results = service.ingest_paths(NS, [args.docs])
        service.prepare_index(NS)
        seconds = time.perf_counter() - t
        say(f"ingested {sum(r.chunks for r in results)} chunks of {len(results)} files in {seconds:.1f} s")
        t = time.perf_counter()
        service.warm()
        say(f"model + encoder loaded and warmed in {time.perf_counter() - t:.1f} s")
        llm = service.llm
        llama = llm._llama  # type: ignore[attr-defined]
        params = service.params
        system_tokens = llama.tokenize(
            llm.render([Message("system", SYSTEM)]).encode("utf-8"),  # type: ignore[attr-defined]
            add_bos=True,
            special=True,
        )

        def warm() -> None:
            llm.warm([Message("system", SYSTEM)])  # type: ignore[attr-defined]

        rows: dict[str, dict[str, list[float]]] = {}
        last_prompt = ""
        for n in range(args.rounds):
            say(f"round {n + 1}/{args.rounds}")
            for question in QUESTIONS:
                # 1. ragcord, system prompt cached by warm()
                warm()
                stamp = Stamp()
                retrieved_at = 0.0
                answer = None
                for event in service.ask_stream(NS, question):
                    if isinstance(event, Retrieved):
                        retrieved_at = time.perf_counter()
                    elif isinstance(event, Token):
                        stamp.add(event.text)
                    elif isinstance(event, Completed):
                        answer = event.answer
                assert answer is not None
                if answer.status in ("declined", "failed") or not stamp.pieces:
                    say(f"  skipped ({answer.status}): {question}")
                    continue
                chunks = [h.chunk for h in answer.hits]
                # the prompt ragcord gave the model: the reader's evidence first, then one other passage
                evidence = (answer.lead.number, answer.lead.quote) if answer.lead is not None else None
                messages = answer_messages(
                    question, chunks, passage_chars=service.settings.passage_chars, evidence=evidence
                )
                prompt = llm.render(messages)  # type: ignore[attr-defined]
                full_prompt = llm.render(answer_messages(question, chunks, passage_chars=0))  # type: ignore[attr-defined]
                last_prompt = prompt
                prompt_tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
                full_tokens = llama.tokenize(full_prompt.encode("utf-8"), add_bos=True, special=True)
                r = rows.setdefault(question, {})
                r.setdefault("full_prompt", []).append(len(full_tokens))
                ours_n, ours_tps = tokens_per_s(llama, stamp)
                r.setdefault("retrieve_ms", []).append((retrieved_at - stamp.start) * 1000)
                r.setdefault("ttft_ms", []).append(answer.timings["first_token_ms"])
                r.setdefault("e2e_ms", []).append((stamp.first - stamp.start) * 1000)
                r.setdefault("tps", []).append(ours_tps)
                r.setdefault("tokens", []).append(ours_n)
                r.setdefault("prompt", []).append(len(prompt_tokens))
                r.setdefault("evaluated", []).append(len(prompt_tokens) - common_prefix(system_tokens, prompt_tokens))

                # 2. raw, same cache state
                warm()
                stamp2 = Stamp.collect(raw_stream(llama, prompt, params))
                r.setdefault("raw_warm_ttft_ms", []).append(stamp2.ttft_ms)
                r.setdefault("raw_warm_tps", []).append(tokens_per_s(llama, stamp2)[1])

                # 3. raw, cold: nothing reused
                llama.reset()
                stamp3 = Stamp.collect(raw_stream(llama, prompt, params))
                r.setdefault("raw_ttft_ms", []).append(stamp3.ttft_ms)
                r.setdefault("raw_tps", []).append(tokens_per_s(llama, stamp3)[1])
                r.setdefault("same_text", []).append(float(stamp3.text.strip() == stamp.text.strip()))

                # 4. raw, cold, the full prompt: whole passages, nothing reused (the baseline)
                llama.reset()
                stamp4 = Stamp.collect(raw_stream(llama, full_prompt, params))
                r.setdefault("raw_full_ttft_ms", []).append(stamp4.ttft_ms)
                r.setdefault("raw_full_tps", []).append(tokens_per_s(llama, stamp4)[1])

        # the prefix really survives from one question to the next (no warm() in between)
        warm()
        first = list(service.ask_stream(NS, QUESTIONS[0]))
        after_first = llama._input_ids.tolist()
        q2 = [e for e in service.ask_stream(NS, QUESTIONS[1]) if isinstance(e, Completed)]
        hits = q2[0].answer.hits if q2 else []
        lead2 = q2[0].answer.lead if q2 else None
        messages2 = answer_messages(
            QUESTIONS[1],
            [h.chunk for h in hits],
            passage_chars=service.settings.passage_chars,
            evidence=(lead2.number, lead2.quote) if lead2 is not None else None,
        )
        p2 = llama.tokenize(
            llm.render(messages2).encode("utf-8"),  # type: ignore[attr-defined]
            add_bos=True,
            special=True,
        )
        reused_between = common_prefix(after_first, p2)
        del first

        # streaming overhead over a longer generation: no stop strings, a fixed token budget
        decode: dict[str, list[float]] = {"ragcord": [], "raw": []}
        long = GenerationParams(max_tokens=96, temperature=params.temperature, top_p=params.top_p, seed=params.seed)
        for _ in range(args.rounds):
            for name in ("ragcord", "raw"):
                warm()
                ours = name == "ragcord"
                pieces = llm.stream_prompt(last_prompt, long) if ours else raw_stream(llama, last_prompt, long)  # type: ignore[attr-defined]
                stamp = Stamp.collect(pieces)
                decode[name].append(tokens_per_s(llama, stamp)[1])

        tune_rows = tune(llm.path, last_prompt, params) if args.tune and last_prompt else []  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = statistics.median
    best, most = min, max  # best of the rounds: the least disturbed by other work on the machine
    gm = statistics.geometric_mean
    cols: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> float:
        cols.setdefault(name, []).append(value)
        return value

    table_rows = []
    for question, r in rows.items():
        ttft = keep("ttft", best(r["ttft_ms"]))
        full = keep("full", best(r["raw_full_ttft_ms"]))
        cold = keep("cold", best(r["raw_ttft_ms"]))
        warm = keep("warm", best(r["raw_warm_ttft_ms"]))
        tps = keep("tps", most(r["tps"]))
        full_tps = keep("full_tps", most(r["raw_full_tps"]))
        cold_tps = keep("cold_tps", most(r["raw_tps"]))
        table_rows.append(
            [
                question[:42],
                f"{best(r['retrieve_ms']):.0f}",
                f"{med(r['full_prompt']):.0f} / {med(r['prompt']):.0f} / {med(r['evaluated']):.0f}",
                f"{ttft:,.0f}",
                f"{full:,.0f}",
                ratio(ttft, full),
                f"{cold:,.0f}",
                ratio(ttft, cold),
                f"{warm:,.0f}",
                ratio(ttft, warm),
                f"{med(r['tokens']):.0f}",
                f"{tps:.1f}",
                f"{full_tps:.1f}",
                ratio(tps, full_tps),
                ratio(tps, cold_tps),
                f"{best(r['e2e_ms']):,.0f}",
            ]
        )
    if rows:
        # a short answer the repetition guard releases in one piece has no measurable decode rate
        # (its first and last token arrive together): such a row shows nan and is left out of the mean
        unmeasured = {i for i, v in enumerate(cols["tps"]) if math.isnan(v)}
        for name in ("tps", "full_tps", "cold_tps"):  # the same questions on both sides of a ratio
            cols[name] = [v for i, v in enumerate(cols[name]) if i not in unmeasured] or [float("nan")]
        g = {name: gm(values) for name, values in cols.items()}
        table_rows.append(
            [
                "geometric mean",
                "",
                "",
                f"{g['ttft']:,.0f}",
                f"{g['full']:,.0f}",
                ratio(g["ttft"], g["full"]),
                f"{g['cold']:,.0f}",
                ratio(g["ttft"], g["cold"]),
                f"{g['warm']:,.0f}",
                ratio(g["ttft"], g["warm"]),
                "",
                f"{g['tps']:.1f}",
                f"{g['full_tps']:.1f}",
                ratio(g["tps"], g["full_tps"]),
                ratio(g["tps"], g["cold_tps"]),
                "",
            ]
        )
    header = [
        "question", "retrieve ms", "prompt tokens: full / ragcord / evaluated", "TTFT ms",
        "raw cold, full prompt", "TTFT / raw full", "raw cold, same prompt", "TTFT / raw same",
        "raw warm, same prompt", "TTFT / raw warm", "tokens", "tok/s", "raw full tok/s", "tok/s / raw full",
        "tok/s / raw same", "question to first token ms",
    ]  # fmt: skip
    say(
        table(
            f"answer latency, best of {args.rounds} rounds (aims: TTFT / raw full <= 0.6, tok/s >= 0.95; "
            "raw full = whole passages, cold; raw same = ragcord's prompt, cold or with its cache)",
            header,
            table_rows,
        )
    )
    same = [v for r in rows.values() for v in r["same_text"]]
    s = service.settings
    say(
        f"\nsystem prompt: {len(system_tokens)} tokens cached by warm(); kept between two questions without warm(): "
        f"{reused_between} tokens; same answer text as raw cold: {sum(same):.0f}/{len(same)}"
    )
    say(
        f"decode speed, {long.max_tokens} tokens without stop strings (best of {args.rounds}): "
        f"ragcord stream_prompt {most(decode['ragcord']):.1f} tok/s, raw create_completion "
        f"{most(decode['raw']):.1f} tok/s, ratio {ratio(most(decode['ragcord']), most(decode['raw']))}"
    )
    say(f"settings: llm_threads={s.llm_threads} llm_batch={s.llm_batch} llm_context={s.llm_context}")
    if tune_rows:
        say(
            table(
                "raw create_completion, cold, by model settings (best of 2; one prompt)",
                ["threads", "n_batch", "n_ctx", "flash attention", "TTFT ms", "tok/s"],
                tune_rows,
            )
        )
    say(f"peak RSS of this process: {peak_rss_mb():,.0f} MiB")
    say(f"machine: {machine()}")


if __name__ == "__main__":
    main()
