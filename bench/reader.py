"""What each signal of the sentence reader contributes, on XQuAD dev (no model).

    python bench/reader.py --docs /work/shared/data/xquad/documents.jsonl \
        --qa /work/shared/data/xquad/qa_dev.jsonl

Each question is retrieved once through ragcord's pipeline (the store bench/answers.py
caches); the sentences of the top passages are scored once (lexical, dense, rank), then
every weighting is replayed on those features: the lead (best sentence, with its
neighbour when it is a fragment) must contain the gold answer. Reported for the tuning
half and the held-out half of dev (split by passage, bench/answers.py `split_of`), beside
the raw baseline of the issue: the first sentence of the top passage.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import contains, ingest_documents, read_jsonl, setup_logging, table
from answers import SOURCE_PREFIX, chunking, open_service, split_of

from bot.reader import SentenceSelector, Weights

GRID = [
    ("rank only (first sentence of the top passage)", Weights(0.0, 0.0, 1.0)),
    ("lexical only", Weights(1.0, 0.0, 0.0)),
    ("dense only", Weights(0.0, 1.0, 0.0)),
    ("lexical + dense", Weights(1.0, 1.0, 0.0)),
    ("lexical + rank", Weights(1.0, 0.0, 0.25)),
    ("dense + rank", Weights(0.0, 1.0, 0.25)),
    ("lexical + dense + rank (default)", Weights()),
    ("lexical x2 + dense + rank", Weights(2.0, 1.0, 0.25)),
    ("lexical + dense x2 + rank", Weights(1.0, 2.0, 0.25)),
    ("lexical + dense + rank x0.5", Weights(1.0, 1.0, 0.5)),
    ("lexical + dense + rank x0.1", Weights(1.0, 1.0, 0.1)),
]
# the same signals, and the lead one sentence only (no neighbour unless a fragment)
SINGLE = ["lexical only", "dense only", "lexical + dense", "lexical + dense + rank (default)"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=Path, required=True)
    p.add_argument("--qa", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0, help="questions per split (0: all)")
    p.add_argument("--cache", type=Path, default=Path(__file__).parent / "results" / "cache")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    args.evidence_only, args.mode, args.model = True, "extract", ""
    setup_logging(args.verbose)
    service = open_service(args)
    namespace = f"xquad-{chunking(service)}"
    passages = read_jsonl(args.docs)
    docs = ((f"{SOURCE_PREFIX}{r['_id']}", f"{r['_id']}.txt", str(r["title"]), str(r["text"])) for r in passages)
    ingest_documents(service.ingestor, namespace, docs, total=len(passages), label="passages")
    service.prepare_index(namespace)

    probe = SentenceSelector(service.embedder.embed)
    cases: dict[str, list[tuple[str, list, list]]] = {"tune": [], "held": []}  # type: ignore[type-arg]
    started, read = time.perf_counter(), 0.0
    for qa in read_jsonl(args.qa):
        split = split_of(qa["doc_id"])
        if args.limit and len(cases[split]) >= args.limit:
            continue
        hits = service.retriever.search(namespace, qa["question"], service.settings.top_k)
        t = time.perf_counter()
        scored = probe.score(qa["question"], hits, service.embedder.embed_query(qa["question"]))
        read += time.perf_counter() - t
        cases[split].append((str(qa["answers"][0]), hits, scored, qa["question"]))
    n = sum(len(v) for v in cases.values())
    print(f"{n} questions scored in {time.perf_counter() - started:.0f} s; reading {read / n * 1000:.0f} ms/question")

    rows = []
    runs = [(f"{name}, one sentence", w, False) for name, w in GRID if name in SINGLE]
    runs += [(f"{name}, + better neighbour within 300 chars", w, True) for name, w in GRID]
    for name, weights, extend in runs:
        selector = SentenceSelector(None, weights=weights, extend=extend)
        figures = []
        for split in ("tune", "held"):
            found = 0
            for gold, hits, scored, question in cases[split]:
                rescored = [selector.rescore(s) for s in scored]
                lead = selector.lead_from(rescored, hits, question)
                found += bool(lead and contains(lead.text, gold))
            figures.append(found / max(1, len(cases[split])))
        rows.append([name, f"{weights.lexical:g}/{weights.dense:g}/{weights.rank:g}", *figures])
    evidence = []
    for split in ("tune", "held"):
        evidence.append(
            sum(any(contains(h.chunk.text, g) for h in hits[:3]) for g, hits, _, _ in cases[split])
            / max(1, len(cases[split]))
        )
    rows.append(["(ceiling: a top-3 passage contains gold)", "", *evidence])

    # how sure the reader is: a lead whose best sentence covers little of the question is
    # shown with a caution; "confidently wrong" counts only the leads shown without one
    default = SentenceSelector(None)
    conf_rows = []
    for threshold, margin in [(t, 0.0) for t in (0.0, 0.4, 0.5, 0.6, 0.65)] + [(0.6, m) for m in (0.05, 0.1, 0.15)]:
        figures = []
        for split in ("tune", "held"):
            sure = wrong = 0
            for gold, hits, scored, question in cases[split]:
                lead = default.lead_from(scored, hits, question)
                if lead is None or lead.lexical < threshold or lead.margin < margin:
                    continue
                sure += 1
                wrong += not contains(lead.text, gold) and any(contains(h.chunk.text, gold) for h in hits)
            n = max(1, len(cases[split]))
            figures += [sure / n, wrong / n]
        conf_rows.append([f"{threshold:.2f}", f"{margin:.2f}", *figures])
    print(f"\nlead contains the gold answer (tune {len(cases['tune'])}, held out {len(cases['held'])} questions)")
    print(table(["reader", "weights lex/dense/rank", "tune", "held out"], rows))
    print(
        "\nleads shown without a caution when the best sentence covers this much of the question (lexical)"
        " and outscores the best sentence the lead does not show by this margin:"
    )
    heads = ["lexical >=", "margin >=", "tune: no caution", "tune: confidently wrong"]
    heads += ["held: no caution", "held: confidently wrong"]
    print(table(heads, conf_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
