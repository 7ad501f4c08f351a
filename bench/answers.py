"""Answer quality on extractive QA (XQuAD-en), through ragcord's answering pipeline.

    python bench/answers.py --docs /work/shared/data/xquad/documents.jsonl \
        --qa /work/shared/data/xquad/qa_dev.jsonl [--limit 150] [--evidence-only]

Passages are ingested (source "xquad:<id>", their titles) into a cached store; each
question goes through RagService.ask (retrieve, decline/caution, model, verify,
quotes chosen by code). Reported:
- hit rate: the supporting passage is among the sources shown (cited or consulted);
- answer contained / token-F1 of the model's answer against the gold answer;
- evidence contains gold: some shown quote contains the gold answer;
- citation precision: shown citations whose passage contains the gold answer;
- correct refusals: the same questions asked of a namespace of unrelated documents
  (ragcord's docs/ by default; add more with --unrelated) must be declined.
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    ROOT,
    bench_settings,
    contains,
    ingest_documents,
    read_jsonl,
    setup_logging,
    table,
    token_f1,
    write_result,
)

from bot.answer import Answer, Answerer, judge
from bot.llm import GenerationParams, Message
from bot.service import RagService, build_llm
from store.chroma import ChromaLocation, ChromaStore
from store.embedder import SentenceTransformerEmbedder
from store.types import Hit

SOURCE_PREFIX = "xquad:"


class SilentLLM:
    """A model that says nothing: the answer's evidence is then the passages the code picks."""

    name = "none (evidence only)"

    def stream(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[str]:
        return iter(())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=Path, required=True, help="passages, JSON lines {_id, title, text}")
    p.add_argument("--qa", type=Path, required=True, help="questions, JSON lines {id, question, answers, doc_id}")
    p.add_argument("--limit", type=int, default=150, help="questions to ask (0: all); default 150")
    p.add_argument("--seed", type=int, default=0, help="seed of the question sample; -1 takes the first N in order")
    p.add_argument("--evidence-only", action="store_true", help="skip generation: score retrieval and quotes only")
    p.add_argument("--model", default="", help="GGUF file for generation (default: settings, i.e. SmolLM2-135M)")
    p.add_argument(
        "--mode", choices=("auto", "extract", "generate"), default="auto", help="RAGCORD_ANSWER_MODE (default auto)"
    )
    p.add_argument(
        "--split",
        choices=("all", "tune", "held"),
        default="all",
        help="questions of passages whose id hashes even (tune: what the reader and checks were tuned on) "
        "or odd (held: never tuned on); default all",
    )
    p.add_argument("--weights", default="", help="reader weights lexical,dense,rank (default: bot/reader.py's)")
    p.add_argument(
        "--unrelated",
        type=Path,
        action="append",
        default=None,
        help="folder of files or corpus .jsonl of unrelated documents for the refusal test (repeatable; "
        "default: ragcord's docs/)",
    )
    p.add_argument("--unrelated-limit", type=int, default=1000, help="documents taken from an unrelated .jsonl")
    p.add_argument("--cache", type=Path, default=RESULTS / "cache", help="folder of the persistent benchmark stores")
    p.add_argument("--verbose", action="store_true", help="log progress")
    return p.parse_args(argv)


def split_of(doc_id: str) -> str:
    """A fixed split by passage (questions of one passage never straddle it)."""
    import hashlib

    return "tune" if hashlib.sha256(doc_id.encode()).digest()[0] % 2 == 0 else "held"


def sample_questions(rows: list[dict[str, Any]], limit: int, seed: int) -> list[dict[str, Any]]:
    if not limit or limit >= len(rows):
        return rows
    if seed < 0:
        return rows[:limit]
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]


def extract_service(data_dir: Path) -> RagService:
    """A fresh extract-mode service (no model) over `data_dir`, for benchmarks that ingest their own files."""
    settings = bench_settings(data_dir, answer_mode="extract")
    embedder = SentenceTransformerEmbedder(settings.embed_model, device=settings.embed_device)
    store = ChromaStore(ChromaLocation(path=data_dir / "chroma"))
    return RagService(store, embedder, llm_factory=SilentLLM, lexical_dir=data_dir / "lexical", settings=settings)


def open_service(args: argparse.Namespace) -> RagService:
    probe = bench_settings(Path("."))
    model = Path(probe.embed_model).name.lower() if probe.embed_model else "all-minilm-l6-v2"
    data_dir = args.cache / f"answers-{model}"
    overrides: dict[str, Any] = {"answer_mode": "extract" if args.evidence_only else args.mode}
    if args.model:
        overrides["llm_model_path"] = args.model
    settings = bench_settings(data_dir, **overrides)
    store = ChromaStore(ChromaLocation(path=data_dir / "chroma"))
    embedder = SentenceTransformerEmbedder(
        settings.embed_model, device=settings.embed_device, batch_size=settings.embed_batch_size
    )
    factory = SilentLLM if args.evidence_only else (lambda: build_llm(settings))
    return RagService(store, embedder, llm_factory=factory, lexical_dir=data_dir / "lexical", settings=settings)


def chunking(service: RagService) -> str:
    return f"c{service.settings.chunk_tokens}-o{service.settings.chunk_overlap}"


def ingest_unrelated(service: RagService, path: Path, limit: int) -> str:
    name = f"unrelated-{path.stem if path.is_file() else path.name}-{chunking(service)}"
    if path.is_file():
        rows = read_jsonl(path)[:limit]
        docs = (
            (f"unrelated:{r['_id']}", f"{r['_id']}.txt", str(r.get("title") or r["_id"]), str(r["text"])) for r in rows
        )
        ingest_documents(service.ingestor, name, docs, total=len(rows), label=name)
    else:
        results = service.ingest_paths(name, [path])
        print(f"  {name}: {len(results)} files", file=sys.stderr)
    service.prepare_index(name)
    return name


def shown_sources(answer: Answer) -> list[str]:
    return [c.chunk.source.removeprefix(SOURCE_PREFIX) for c in answer.evidence]


def score_question(qa: dict[str, Any], answer: Answer, generated: bool) -> dict[str, Any]:
    gold = str(qa["answers"][0])
    shown = answer.evidence
    answered = answer.status in ("answered", "cautious")
    lead = answer.reply[:300] if answered else ""
    lead_gold = contains(lead, gold)
    retrieved_gold = any(contains(h.chunk.text, gold) for h in answer.hits)
    row: dict[str, Any] = {
        "id": qa["id"],
        "status": answer.status,
        "hit": qa["doc_id"] in shown_sources(answer),
        "retrieved": qa["doc_id"] in [h.chunk.source.removeprefix(SOURCE_PREFIX) for h in answer.hits],
        "evidence_gold": any(contains(c.quote, gold) for c in shown),
        "citations": len(shown),
        "precise": sum(contains(c.chunk.text, gold) for c in shown),
        "best_dense": max((h.dense or 0.0 for h in answer.hits), default=0.0),
        "quote_chars": statistics.fmean(len(c.quote) for c in shown) if shown else 0.0,
        "retrieve_ms": answer.timings.get("retrieve_ms", 0.0),
        "read_ms": answer.timings.get("read_ms", 0.0),
        "lead_gold": lead_gold,
        "lead_f1": token_f1(lead, gold) if lead else 0.0,
        "led_by": answer.led_by,
        # shown without a caution, its lead misses the gold answer, and a retrieved passage has it
        "confidently_wrong": answer.status == "answered" and bool(lead) and not lead_gold and retrieved_gold,
        "wrong_lead": answered and bool(lead) and not lead_gold and retrieved_gold,
        "retrieved_gold": retrieved_gold,
        "model_text": answer.model_text,
        "model_gold": contains(answer.model_text, gold) if answer.model_text else False,
        "rejected": answer.rejected,
        "checked_text": answer.checked_text,
    }
    if answer.lead is not None and answer.checked_text:
        from bot.answer import quote_line
        from bot.checks import check_answer, grounding
        from bot.citations import verify
        from bot.reader import Lead

        lead_ = Lead(answer.lead.number, answer.lead.chunk, answer.lead.quote, 0.0, 0.0, 0.0, answer.lead_core)
        share, new = grounding(qa["question"], answer.checked_text, lead_)
        _, cited = verify(answer.model_text, [h.chunk for h in answer.hits], [1.0] * len(answer.hits), qa["question"])
        hard = check_answer(qa["question"], answer.checked_text, cited, lead_, grounded=0.0, novel_terms=0)
        row |= {
            "grounded": share,
            "novel": new,
            "hard_fail": hard,  # fails a check no threshold moves (degenerate, unbacked, no answer)
            "gold_if_model": contains(f"{answer.checked_text}\n{quote_line(answer.lead)}"[:300], gold),
            "gold_if_quote": contains(quote_line(answer.lead)[:300], gold),
        }
    if generated:
        row["contained"] = contains(answer.model_text, gold)
        row["f1"] = token_f1(answer.model_text, gold)
        row["generate_ms"] = answer.timings.get("generate_ms", 0.0)
        row["model_cited"] = bool(answer.citations)
    return row


def check_table(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Replays the answer checks with other thresholds on the recorded model answers."""
    out = []
    answered = [r for r in rows if r["status"] in ("answered", "cautious")]
    for grounded in (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
        for novel in (0, 1, 2):
            gold = led = wrong = 0
            for r in answered:
                model = "grounded" in r and not r["hard_fail"] and r["grounded"] >= grounded and r["novel"] >= novel
                hit = r["gold_if_model"] if model else r.get("gold_if_quote", r["lead_gold"])
                gold += hit
                led += model
                wrong += (not hit) and r["retrieved_gold"] and r["status"] == "answered"
            n = max(1, len(answered))
            out.append([f"{grounded:.1f}", novel, gold / len(rows), led / len(rows), wrong / n])
    return out


@dataclass(frozen=True, slots=True)
class Decided:
    """What the decision reads of one question: its passages and its best sentence's cosine."""

    question: str
    hits: list[Hit]
    best_sentence: float
    rarity: dict[str, float]


def declined(cases: list[Decided], min_score: float, min_sentence_score: float) -> int:
    """How many of the questions `judge` declines at these thresholds."""
    verdicts = (judge(c.question, c.hits, min_score, 0.0, c.best_sentence, min_sentence_score, c.rarity) for c in cases)
    return sum(v == "declined" for v in verdicts)


def threshold_table(
    related: list[Decided], unrelated: list[Decided], current: float, sentence: float
) -> list[list[Any]]:
    """What each decline threshold would do, with both rescues in place."""
    rows = []
    for t in sorted({0.26, 0.28, 0.30, 0.31, 0.32, 0.34, 0.36, round(current, 2)}):
        rows.append([f"{t:.2f}", declined(related, t, sentence), len(unrelated) - declined(unrelated, t, sentence)])
    return rows


def threshold_gap(related: list[Decided], unrelated: list[Decided], sentence: float) -> tuple[float, float]:
    """The best-passage cosines that only min_score decides: the highest of an unrelated question
    and the lowest of an answerable one (the questions no rescue answers at any min_score)."""

    def passage_only(cases: list[Decided]) -> list[float]:
        return [
            max((h.dense or 0.0 for h in c.hits), default=0.0)
            for c in cases
            if c.hits and judge(c.question, c.hits, 1.0, 0.0, c.best_sentence, sentence, c.rarity) == "declined"
        ]

    return max(passage_only(unrelated), default=0.0), min(passage_only(related), default=1.0)


def rescue_table(related: list[Decided], unrelated: list[Decided], min_score: float, current: float) -> list[list[Any]]:
    """What each sentence threshold would do to the questions the passages would decline."""
    rows = []
    for t in sorted({0.0, 0.40, 0.42, 0.45, 0.48, 0.50, round(current, 2)}):
        rows.append([f"{t:.2f}", declined(related, min_score, t), len(unrelated) - declined(unrelated, min_score, t)])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    passages = read_jsonl(args.docs)
    rows_all = [q for q in read_jsonl(args.qa) if args.split == "all" or split_of(q["doc_id"]) == args.split]
    questions = sample_questions(rows_all, args.limit, args.seed)
    service = open_service(args)
    if args.weights:
        from bot.reader import Weights

        lexical, dense, rank = (float(x) for x in args.weights.split(","))
        service.reader_weights = Weights(lexical, dense, rank)
    namespace = f"xquad-{chunking(service)}"
    docs = ((f"{SOURCE_PREFIX}{p['_id']}", f"{p['_id']}.txt", str(p["title"]), str(p["text"])) for p in passages)
    ingest_documents(service.ingestor, namespace, docs, total=len(passages), label="passages")
    service.prepare_index(namespace)
    unrelated = [ingest_unrelated(service, p, args.unrelated_limit) for p in (args.unrelated or [ROOT / "docs"])]

    generated = not args.evidence_only and args.mode != "extract"
    rows = []
    related: list[Decided] = []
    started = time.perf_counter()
    for n, qa in enumerate(questions, start=1):
        answer = service.ask(namespace, qa["question"])
        rows.append(score_question(qa, answer, generated))
        rarity = service.retriever.term_rarity(namespace, qa["question"])
        related.append(Decided(qa["question"], answer.hits, answer.best_sentence, rarity))
        if n % 25 == 0:
            print(f"  asked {n}/{len(questions)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started

    s = service.settings
    silent = Answerer(
        service.retriever,
        SilentLLM(),
        top_k=s.top_k,
        min_score=s.min_score,
        caution_score=s.caution_score,
        min_sentence_score=s.min_sentence_score,
    )
    refusals: dict[str, float] = {}
    unrelated_cases: list[Decided] = []
    for ns in unrelated:
        answers = [silent.ask(ns, qa["question"]) for qa in questions]
        refusals[ns] = statistics.fmean(a.status == "declined" for a in answers)
        unrelated_cases += [
            Decided(a.question, a.hits, a.best_sentence, service.retriever.term_rarity(ns, a.question)) for a in answers
        ]

    mean = lambda key: statistics.fmean(float(r[key]) for r in rows)  # noqa: E731
    shown = sum(r["citations"] for r in rows)
    summary: dict[str, Any] = {
        "questions": len(rows),
        "generation": generated,
        "model": service.llm.name if generated else "none",
        "hit_rate": mean("hit"),
        "retrieved_rate": mean("retrieved"),
        "evidence_contains_gold": mean("evidence_gold"),
        "citation_precision": sum(r["precise"] for r in rows) / shown if shown else 0.0,
        "citations_per_answer": shown / len(rows),
        "quote_chars": mean("quote_chars"),
        "answered": statistics.fmean(r["status"] in ("answered", "cautious") for r in rows),
        "cautious": statistics.fmean(r["status"] == "cautious" for r in rows),
        "declined_related": statistics.fmean(r["status"] == "declined" for r in rows),
        "correct_refusal": min(refusals.values()) if refusals else None,
        "refusal_by_namespace": refusals,
        "retrieve_ms": mean("retrieve_ms"),
        "seconds_per_question": elapsed / len(rows),
        "min_score": s.min_score,
        "caution_score": s.caution_score,
        "top_k": s.top_k,
        "answer_mode": "extract" if args.evidence_only else args.mode,
        "split": args.split,
        "reader_weights": args.weights or "default",
        "lead_contains_gold": mean("lead_gold"),
        "lead_f1": mean("lead_f1"),
        "confidently_wrong": (
            sum(r["confidently_wrong"] for r in rows)
            / max(1, sum(r["status"] in ("answered", "cautious") for r in rows))
        ),
        "wrong_lead": (
            sum(r["wrong_lead"] for r in rows) / max(1, sum(r["status"] in ("answered", "cautious") for r in rows))
        ),
        "model_led": statistics.fmean(r["led_by"] == "model" for r in rows),
        "read_ms": mean("read_ms"),
    }
    if generated:
        summary |= {
            "answer_contained": mean("contained"),
            "answer_f1": mean("f1"),
            "model_cited": mean("model_cited"),
            "generate_ms": mean("generate_ms"),
        }

    print(f"\nXQuAD-en: {len(rows)} questions, {len(passages)} passages, namespace {namespace}")
    figures = [
        ("retrieval hit rate (supporting passage shown)", summary["hit_rate"], ">= 0.95"),
        ("supporting passage retrieved (top_k)", summary["retrieved_rate"], ""),
        ("evidence contains gold answer", summary["evidence_contains_gold"], ">= 0.93"),
        ("lead of the reply (300 chars) contains gold", summary["lead_contains_gold"], ">= 0.85"),
        ("lead token-F1", summary["lead_f1"], ""),
        ("confidently wrong (no caution, lead misses gold a passage has)", summary["confidently_wrong"], "<= 0.05"),
        ("lead misses gold a passage has (with or without a caution)", summary["wrong_lead"], ""),
        ("model's words lead", summary["model_led"], ""),
        ("citation precision", summary["citation_precision"], ""),
        ("citations shown per answer", summary["citations_per_answer"], ""),
        ("model's answer contains gold (shown or not)", summary.get("answer_contained"), ""),
        ("model's answer token-F1", summary.get("answer_f1"), ""),
        ("declined although answerable", summary["declined_related"], "<= 0.03"),
        ("correct refusals (worst unrelated namespace)", summary["correct_refusal"], ">= 0.98"),
    ] + [(f"  refusals on {ns}", v, "") for ns, v in refusals.items()]
    print(table(["figure", "value", "target"], figures))
    high, low = threshold_gap(related, unrelated_cases, s.min_sentence_score)
    print(
        "\nthe decline threshold (min_score), with both rescues in place; of the questions only it decides,"
        f" unrelated ones reach {high:.3f} and answerable ones go down to {low:.3f} (halfway: {(high + low) / 2:.3f}):"
    )
    thresholds = threshold_table(related, unrelated_cases, s.min_score, s.min_sentence_score)
    print(table(["min_score", "answerable declined (questions)", "unrelated answered (questions)"], thresholds))
    print(
        f"\nthe sentence rescue at min_score {s.min_score}: a question the passages would decline is answered"
        " when a sentence of the top passages reaches min_sentence_score (0: off):"
    )
    rescues = rescue_table(related, unrelated_cases, s.min_score, s.min_sentence_score)
    print(table(["min_sentence_score", "answerable declined (questions)", "unrelated answered (questions)"], rescues))
    if generated:
        print("\nwhat the relevance checks would give (lead contains gold / model leads / confidently wrong):")
        print(
            table(
                ["grounded >=", "new terms >=", "lead contains gold", "model leads", "confidently wrong"],
                check_table(rows),
            )
        )
    print(
        f"\n{summary['seconds_per_question']:.2f} s/question, retrieval {summary['retrieve_ms']:.0f} ms"
        + (f", generation {summary['generate_ms']:.0f} ms" if generated else "")
    )
    write_result(f"answers-xquad-{summary['answer_mode']}-{args.split}", {"summary": summary, "rows": rows})
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
