"""Retrieval quality and speed on a BEIR data set, through ragcord's own pipeline.

    python bench/retrieval.py --data /work/shared/data/scifact [--split train] [--mode all]

Each corpus document is ingested with `source="beir:<id>"` and its title (loader,
chunker, encoder, Chroma, BM25 as in production) into a persistent cache folder,
so a rerun embeds nothing. A document's score is its best chunk's score. Prints
nDCG@10, Recall@10 and MRR@10 per mode beside the published SciFact figures, the
milliseconds per retrieval stage, and, last, one JSON line with the default mode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    bench_settings,
    ingest_documents,
    load_beir,
    mrr_at,
    ndcg_at,
    recall_at,
    setup_logging,
    table,
    write_result,
)

from bot.service import RagService
from store.retrieval import CrossEncoderReranker, Retriever

PUBLISHED = {  # SciFact test split, nDCG@10 (data/scifact/reference/PUBLISHED_FIGURES.txt)
    "bm25": ("BM25 (BEIR, Elasticsearch)", 0.665),
    "rerank": ("BM25 + CE ms-marco-MiniLM-L-6-v2 (BEIR)", 0.688),
    "dense": ("all-MiniLM-L6-v2 dense (MTEB)", 0.645),
}
MODES = ("dense", "bm25", "hybrid", "rerank")
SOURCE_PREFIX = "beir:"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/*.tsv")
    p.add_argument("--split", default="train", help="qrels split to score (qrels/<split>.tsv); default train")
    p.add_argument("--mode", default="all", choices=(*MODES, "all"), help="retrieval mode to measure; default all")
    p.add_argument("--limit", type=int, default=0, help="score only the first N judged queries (0: all)")
    p.add_argument("--cache", type=Path, default=RESULTS / "cache", help="folder of the persistent benchmark stores")
    p.add_argument("--depth", type=int, default=40, help="chunks retrieved per query before grouping by document")
    p.add_argument("--reranker", default="", help="CrossEncoder folder for --mode rerank (default: settings)")
    p.add_argument("--verbose", action="store_true", help="log progress")
    return p.parse_args(argv)


def dataset_key(data: Path) -> str:
    return data.resolve().name.lower()


def open_service(args: argparse.Namespace) -> tuple[RagService, str]:
    """A RagService on the cache folder with default settings; namespace names the chunking."""
    probe = bench_settings(Path("."))
    model = Path(probe.embed_model).name if probe.embed_model else "all-minilm-l6-v2"
    data_dir = args.cache / f"{dataset_key(args.data)}-{model.lower()}"
    settings = bench_settings(data_dir)
    service = RagService.from_settings(settings)
    namespace = f"{dataset_key(args.data)}-c{settings.chunk_tokens}-o{settings.chunk_overlap}"
    return service, namespace


def ingest_corpus(service: RagService, namespace: str, corpus: list[dict[str, Any]]) -> dict[str, int]:
    docs = (
        (f"{SOURCE_PREFIX}{row['_id']}", f"{row['_id']}.txt", str(row.get("title") or row["_id"]), str(row["text"]))
        for row in corpus
    )
    started = time.perf_counter()
    statuses = ingest_documents(service.ingestor, namespace, docs, total=len(corpus), label="corpus")
    t = time.perf_counter()
    service.retriever.lexical_index(namespace)
    print(
        f"  corpus ready in {time.perf_counter() - started:.0f} s (lexical index {time.perf_counter() - t:.1f} s)",
        file=sys.stderr,
    )
    return dict(statuses)


def retriever_for(mode: str, service: RagService, reranker_model: str) -> Retriever | None:
    base = service.retriever
    if mode == "hybrid":
        return base
    common = dict(
        fusion=base.fusion,
        candidates=base.candidates,
        rrf_k=base.rrf_k,
        dense_weight=base.dense_weight,
        lexical_weight=base.lexical_weight,
    )
    if mode == "dense":
        return Retriever(base.store, base.embedder, base.lexical, mode="dense", **common)  # type: ignore[arg-type]
    if mode == "bm25":
        return Retriever(base.store, base.embedder, base.lexical, mode="lexical", **common)  # type: ignore[arg-type]
    if not reranker_model:
        return None
    reranker = CrossEncoderReranker(reranker_model, service.settings.embed_device)
    return Retriever(base.store, base.embedder, base.lexical, mode="hybrid", reranker=reranker, **common)  # type: ignore[arg-type]


def rank_documents(retriever: Retriever, namespace: str, query: str, depth: int) -> list[str]:
    """Corpus ids by their best chunk's score (hits come best first)."""
    ranked: list[str] = []
    seen: set[str] = set()
    for hit in retriever.search(namespace, query, depth):
        doc = hit.chunk.source.removeprefix(SOURCE_PREFIX)
        if doc not in seen:
            seen.add(doc)
            ranked.append(doc)
    return ranked


def evaluate(
    retriever: Retriever, namespace: str, queries: list[tuple[str, str]], qrels: dict[str, dict[str, int]], depth: int
) -> dict[str, Any]:
    ndcg, recall, mrr = [], [], []
    stages: dict[str, list[float]] = {}
    totals: list[float] = []
    retriever.search(namespace, "warm up", 5)  # load models and the lexical index outside the timing
    for qid, text in queries:
        t = time.perf_counter()
        ranked = rank_documents(retriever, namespace, text, depth)
        totals.append((time.perf_counter() - t) * 1000)
        for stage, ms in retriever.last.stages.items():
            stages.setdefault(stage, []).append(ms)
        grades = qrels[qid]
        ndcg.append(ndcg_at(ranked, grades))
        recall.append(recall_at(ranked, grades))
        mrr.append(mrr_at(ranked, grades))
    n = len(queries)
    return {
        "ndcg@10": statistics.fmean(ndcg),
        "recall@10": statistics.fmean(recall),
        "mrr@10": statistics.fmean(mrr),
        "queries": n,
        "queries_per_s": n / (sum(totals) / 1000) if totals else 0.0,
        "ms_per_query": statistics.fmean(totals),
        "ms_per_stage": {s: statistics.fmean(v) for s, v in stages.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    corpus, queries, qrels = load_beir(args.data, args.split)
    judged = [(qid, queries[qid]) for qid in qrels if qid in queries]
    judged.sort(key=lambda q: int(q[0]) if q[0].isdigit() else q[0])  # type: ignore[return-value]
    if args.limit:
        judged = judged[: args.limit]
    service, namespace = open_service(args)
    name = dataset_key(args.data)
    print(f"{name} {args.split}: {len(corpus)} documents, {len(judged)} judged queries", file=sys.stderr)
    statuses = ingest_corpus(service, namespace, corpus)

    reranker_model = args.reranker or service.settings.reranker_model
    modes = MODES if args.mode == "all" else (args.mode,)
    default_mode = "bm25" if service.settings.retrieval_mode == "lexical" else service.settings.retrieval_mode
    if service.settings.reranker_model:
        default_mode = "rerank"
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        retriever = retriever_for(mode, service, reranker_model)
        if retriever is None:
            print(f"  {mode}: skipped (no cross-encoder; set RAGCORD_RERANKER_MODEL or --reranker)", file=sys.stderr)
            continue
        results[mode] = evaluate(retriever, namespace, judged, qrels, args.depth)
        r = results[mode]
        print(f"  {mode}: nDCG@10 {r['ndcg@10']:.4f}, {r['ms_per_query']:.1f} ms/query", file=sys.stderr)

    stage_names = ["embed", "dense", "lexical", "fuse", "rerank"]
    rows = []
    for mode, r in results.items():
        label, published = PUBLISHED.get(mode, ("", None))
        stage = r["ms_per_stage"]
        rows.append(
            [mode, r["ndcg@10"], r["recall@10"], r["mrr@10"], published, r["queries_per_s"], r["ms_per_query"]]
            + [stage.get(s) for s in stage_names]
        )
    print(f"\n{dataset_key(args.data)}, {args.split} split, {len(judged)} queries, namespace {namespace}")
    headers = ["mode", "nDCG@10", "R@10", "MRR@10", "published*", "q/s", "ms/q"] + [f"{s} ms" for s in stage_names]
    print(table(headers, rows))
    published = "; ".join(f"{m}: {n} {v}" for m, (n, v) in PUBLISHED.items())
    print(f"* published nDCG@10 on the SciFact *test* split: {published}")
    r = service.retriever
    config = {
        "fusion": r.fusion,
        "candidates": r.candidates,
        "rrf_k": r.rrf_k,
        "dense_weight": r.dense_weight,
        "lexical_weight": r.lexical_weight,
        "bm25": r.lexical.params.signature,
        "chunk_tokens": service.settings.chunk_tokens,
        "chunk_overlap": service.settings.chunk_overlap,
        "depth": args.depth,
    }
    print(f"hybrid config: {config}")
    write_result(
        f"retrieval-{dataset_key(args.data)}-{args.split}",
        {"results": results, "config": config, "ingest": statuses, "default_mode": default_mode},
    )
    summary = {"mode": default_mode, "split": args.split, "dataset": dataset_key(args.data)}
    chosen = results.get(default_mode) or next(iter(results.values()), {})
    summary.update({k: round(v, 4) if isinstance(v, float) else v for k, v in chosen.items()})
    print(json.dumps(summary, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
