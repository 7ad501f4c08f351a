"""Helpers shared by the benchmarks: data loading, ingest from memory, metrics, tables.

The benchmarks go through ragcord's own pipeline (RagService: loaders, chunker,
encoder, Chroma, BM25, answerer); only the data comes from the evaluation folders.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# `python bench/x.py` puts bench/ first on the path, and bench/ has bot.py and ingest.py of its own:
# the project folder goes first so that `bot`, `ingest` and `store` are the project's packages.
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))


# A small team's documents for the Discord benchmarks (bench/bot.py, bench/load.py).
SAMPLE_CORPUS = {
    "deploy.md": "# Deploying\n\nThe bot runs on a single server. Start it with the command ragcord bot. "
    "Logs go to standard error.\n\n## Tokens\n\nThe Discord token is read from the DISCORD_TOKEN "
    "environment variable only. Rotate it in the Developer Portal if it leaks.\n",
    "billing.md": "# Billing\n\nInvoices are sent on the first Monday of every month. Refunds take ten "
    "business days. Card payments are charged in euros.\n",
    "onboarding.md": "# Onboarding\n\nNew people get a laptop on their first day. The office opens at "
    "eight and closes at six. Lunch is served at noon in the kitchen.\n",
    "backups.md": "# Backups\n\nBackups run every night at two in the morning. They are kept for thirty "
    "days. Restores are requested in the ops channel.\n",
}


async def fake_guild(members: int) -> tuple[Any, dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The fake Discord (tests/discord_fake.py) started on 127.0.0.1, with one guild "bench",
    its #general and `members` users in it: (fake, guild, channel, users)."""
    from tests.discord_fake import FakeDiscord

    fake = await FakeDiscord(heartbeat_interval=5.0).start()
    guild = fake.add_guild("bench")
    users = [fake.add_user(f"user{i}") for i in range(members)]
    for user in users:
        fake.add_member(guild["id"], user)
    return fake, guild, fake.channel(guild), users


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # some libraries set their own loggers to DEBUG
        handler.setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# -- BEIR ------------------------------------------------------------------------------
def load_beir(folder: Path, split: str) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus rows, {query id: text}, {query id: {doc id: grade}}) of a BEIR folder."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        have = ", ".join(p.stem for p in sorted((folder / "qrels").glob("*.tsv"))) or "none"
        raise SystemExit(f"error: {qrels_path} not found (splits here: {have}); pass --split")
    corpus = read_jsonl(folder / "corpus.jsonl")
    queries = {str(q["_id"]): str(q["text"]) for q in read_jsonl(folder / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if n == 0 and not parts[-1].lstrip("-").isdigit():
                continue  # header
            qid, did, grade = parts[0], parts[1], int(parts[2])
            qrels.setdefault(qid, {})[did] = grade
    return corpus, queries, qrels


# -- ranking metrics (trec_eval definitions, as BEIR reports them) -----------------------
def ndcg_at(ranked: Sequence[str], grades: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain (trec_eval `ndcg_cut`, which BEIR uses): sum grade / log2(rank + 1)."""
    dcg = sum(grades.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], grades: dict[str, int], k: int = 10) -> float:
    relevant = {d for d, g in grades.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], grades: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if grades.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


# -- answer metrics (SQuAD normalisation) ----------------------------------------------------
def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if not pred or not ref or same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


_PUNCT_RE = re.compile(r"[^\w\s]|_")


def _words(text: str) -> str:
    return " ".join(_PUNCT_RE.sub(" ", text.casefold()).split())


def contains(haystack: str, needle: str) -> bool:
    """The gold answer string appears in the text: ignoring case and spacing, or as whole words
    once punctuation is ignored ("Six" in "Six-time winner", "Luke Kuechly." in "... Luke Kuechly")."""
    if not needle.strip():
        return False
    if " ".join(needle.casefold().split()) in " ".join(haystack.casefold().split()):
        return True
    n = _words(needle)
    return bool(n) and f" {n} " in f" {_words(haystack)} "


# -- building and filling a store ------------------------------------------------------------
def bench_settings(data_dir: Path, **overrides: Any) -> Any:
    """The project's settings (environment honoured, .env ignored) with the bench's data folder."""
    from bot.settings import Settings

    return Settings(data_dir=data_dir, _env_file=None, **overrides)  # type: ignore[call-arg]


def ingest_documents(
    ingestor: Any, namespace: str, docs: Iterable[tuple[str, str, str, str]], *, total: int, label: str = "ingest"
) -> Counter[str]:
    """Ingest (source, filename, title, text) items through the project's Ingestor.

    Fed from memory through the same internal run that `ingest_paths` uses, so chunks of
    many documents are encoded together in large batches; falls back to one
    `ingest_bytes` call per document if that entry point is not there.
    """
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    last = [started]

    def report(state: Any) -> None:
        now = time.perf_counter()
        if now - last[0] > 15:
            last[0] = now
            print(
                f"  {label}: {state.files_done}/{total} documents, {state.embedded} chunks embedded, "
                f"{now - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    items = ((lambda t=text: t.encode("utf-8"), name, src, title, {}) for src, name, title, text in docs)
    run: Callable[..., Any] | None = getattr(ingestor, "_run", None)
    if run is not None:
        from ingest.pipeline import IngestProgress

        results = run(namespace, items, IngestProgress(files_total=total), report)
    else:  # pragma: no cover - older or newer pipeline
        results = [
            ingestor.ingest_bytes(namespace, read(), name, source=src, title=title)
            for read, name, src, title, _ in items
        ]
    for r in results:
        statuses[r.status] += 1
        if r.status in ("failed", "skipped"):
            log.warning("%s %s: %s", r.status, r.source, r.reason)
    elapsed = time.perf_counter() - started
    embedded = sum(r.embedded for r in results)
    print(f"  {label}: {dict(statuses)}; {embedded} chunks embedded in {elapsed:.0f} s", file=sys.stderr)
    return statuses


# -- output ------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: Sequence[int] = (0,)) -> str:
    """A plain fixed-width text table; columns in `left` are left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines = [line.rstrip() for line in lines]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
