"""Retrieval with the permission filter: a member who may read 10 of a guild's 50 channels.

    python bench/permissions.py                    # 100k chunks, 200 queries
    python bench/permissions.py --chunks 20000 --queries 100

Synthetic chunks as in bench/scale.py (384-d vectors around topic centres, word-salad
texts), written through `ChromaStore`; each 200-chunk document belongs to one of 50
channels (document i to channel i % 50), and the member may read 10 of them plus the
guild-wide scope. In one process, per query (precomputed query vectors, so the
encoder's own cost is left out), it times:

- ragcord hybrid unfiltered (`Retriever.search(..., scopes=None)`, what the CLI runs);
- ragcord hybrid filtered (`scopes` = guild + 10 channels): BM25 masked before its top k,
  dense from the in-process matrix (store/dense.py);
- raw Chroma dense, unfiltered and with `where={"scope": {"$in": [...]}}` (the filter the
  design would otherwise use), same n_results;

and checks that every filtered hit is readable. It reports p50/p95, the filtered/unfiltered
ratio, the matrix's build time and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import add_project_to_path, machine, peak_rss_mb, percentile, ratio, say, table  # noqa: E402

add_project_to_path()

import scale  # noqa: E402

NS = "perm"
CHANNELS = 50
READABLE = 10


def channel_of(doc: int) -> str:
    return str(1_000_000 + doc % CHANNELS)


def build(path: Path, size: int, corpus: scale.Corpus) -> float:
    """`size` chunks through ChromaStore (batched adds, then the batch's manifests), each with its scope."""
    from store.chroma import ChromaLocation, ChromaStore
    from store.types import Chunk, DocumentInfo

    store = ChromaStore(ChromaLocation(path=path))
    step = min(store.max_batch_size, 5000) // scale.DOC_CHUNKS * scale.DOC_CHUNKS
    t0 = time.perf_counter()
    for start in range(0, size, step):
        stop = min(size, start + step)
        vectors, texts = corpus.batch(start, stop)
        chunks = []
        for i, text in zip(range(start, stop), texts, strict=True):
            doc = i // scale.DOC_CHUNKS
            extra = (("scope", channel_of(doc)),)
            chunks.append(Chunk(f"d{doc:07d}", i % scale.DOC_CHUNKS, text, f"Doc {doc}", f"s/{doc}.txt", extra=extra))
        store.add_chunks(NS, chunks, vectors, "2025-01-01T00:00:00")
        infos = []
        for doc_id in sorted({c.doc_id for c in chunks}):
            ids = [c.id for c in chunks if c.doc_id == doc_id]
            doc = int(doc_id[1:])
            infos.append(
                DocumentInfo(doc_id, f"Doc {doc}", f"s/{doc}.txt", "text", len(ids), 0, "", doc_id, ids,
                             {"scope": channel_of(doc)})
            )  # fmt: skip
        store.commit_documents(NS, infos)
        if stop % 20_000 == 0 or stop == size:
            say(f"  built {stop:,}/{size:,} chunks ({stop / (time.perf_counter() - t0):,.0f} chunks/s)")
    store.close()
    return time.perf_counter() - t0


def measure(path: Path, size: int, queries: int) -> dict[str, float]:
    from store.chroma import ChromaLocation, ChromaStore
    from store.lexical import LexicalIndexes
    from store.retrieval import Retriever
    from store.types import GUILD_SCOPE

    store = ChromaStore(ChromaLocation(path=path))
    embedder = scale._QueueEmbedder()
    retriever = Retriever(store, embedder, LexicalIndexes(path.parent / "lexical"), candidates=40)
    readable = [channel_of(d) for d in range(READABLE)]
    scopes = frozenset({GUILD_SCOPE, *readable})
    t = time.perf_counter()
    retriever.lexical_index(NS)
    index_s = time.perf_counter() - t
    qs = scale.Corpus().queries(queries + 10, size)
    embedder.next = qs[0][0]
    t = time.perf_counter()
    retriever.search(NS, qs[0][1], 4, scopes)  # builds the dense matrix
    matrix_s = time.perf_counter() - t
    col = store._chunks(NS)
    k, pool = 4, 40
    where = {"scope": {"$in": sorted(scopes)}}
    names = ("hybrid", "hybrid_filtered", "raw_dense", "raw_dense_where", "dense_filtered")
    samples: dict[str, list[float]] = {n: [] for n in names}
    unreadable = 0
    for n, (vec, text) in enumerate(qs):
        embedder.next = vec
        t0 = time.perf_counter()
        retriever.search(NS, text, k)
        t1 = time.perf_counter()
        got = retriever.search(NS, text, k, scopes)
        t2 = time.perf_counter()
        col.query(query_embeddings=[vec.tolist()], n_results=pool * 2, include=["documents", "metadatas", "distances"])
        t3 = time.perf_counter()
        col.query(
            query_embeddings=[vec.tolist()],
            n_results=pool * 2,
            where=where,
            include=["documents", "metadatas", "distances"],
        )
        t4 = time.perf_counter()
        retriever.dense_matrices.get(store, NS, store.refresh(NS)).top(vec, pool, scopes)
        t5 = time.perf_counter()
        if n < 10:
            continue
        assert got, "filtered hybrid search found nothing"
        unreadable += sum(h.chunk.scope not in scopes for h in got)
        for name, value in zip(names, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            samples[name].append(value * 1000)
    out: dict[str, float] = {"chunks": float(len(store.live_ids(NS))), "index_s": index_s, "matrix_s": matrix_s}
    for name, values in samples.items():
        out[f"{name}_p50"] = percentile(values, 50)
        out[f"{name}_p95"] = percentile(values, 95)
    out["unreadable_hits"] = float(unreadable)
    out["rss_mb"] = peak_rss_mb()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build the store in this folder once and reuse it on later runs")
    args = parser.parse_args()
    say(machine())
    folder = args.keep or Path(tempfile.mkdtemp(prefix="ragcord-perm-"))
    try:
        build_s = 0.0
        if not (folder / "built").exists():
            say(f"building {args.chunks:,} chunks in {CHANNELS} channels…")
            shutil.rmtree(folder / "chroma", ignore_errors=True)
            build_s = build(folder / "chroma", args.chunks, scale.Corpus())
            (folder / "built").write_text(str(args.chunks))
        r = measure(folder / "chroma", args.chunks, args.queries)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    say(
        f"{r['chunks']:,.0f} chunks, {CHANNELS} channels, member reads {READABLE} (+ guild-wide); "
        f"build {build_s:.0f} s, BM25 index {r['index_s']:.1f} s, dense matrix {r['matrix_s']:.1f} s; "
        f"peak RSS {r['rss_mb']:.0f} MiB; unreadable hits {r['unreadable_hits']:.0f}"
    )
    rows = [
        ["ragcord hybrid, unfiltered", f"{r['hybrid_p50']:.1f}", f"{r['hybrid_p95']:.1f}", ""],
        [
            "ragcord hybrid, filtered",
            f"{r['hybrid_filtered_p50']:.1f}",
            f"{r['hybrid_filtered_p95']:.1f}",
            ratio(r["hybrid_filtered_p95"], r["hybrid_p95"]),
        ],
        ["  its dense part (numpy, masked)", f"{r['dense_filtered_p50']:.1f}", f"{r['dense_filtered_p95']:.1f}", ""],
        ["raw Chroma dense, unfiltered", f"{r['raw_dense_p50']:.1f}", f"{r['raw_dense_p95']:.1f}", ""],
        [
            "raw Chroma dense, where $in",
            f"{r['raw_dense_where_p50']:.1f}",
            f"{r['raw_dense_where_p95']:.1f}",
            ratio(r["raw_dense_where_p95"], r["raw_dense_p95"]),
        ],
    ]
    say(table("Permission filter (ms per query)", ["query", "p50 ms", "p95 ms", "p95 vs unfiltered"], rows))


if __name__ == "__main__":
    main()
