"""Retrieval latency and memory as the store grows: embedded Chroma beside a Chroma server.

    python bench/scale.py                         # 10k and 100k chunks, both modes
    python bench/scale.py --sizes 10000,100000,1000000
    python bench/scale.py --modes embedded --no-footprint

Synthetic data, so any size can be built offline: 384-d L2-normalised vectors
around topic centres (the shape of all-MiniLM-L6-v2 output) and word-salad texts
whose words lean on the same topics (so BM25 has something to find). Documents of
200 chunks are written through ragcord's own `ChromaStore` (batched adds, then
one manifest write per batch), exactly as ingest writes them.

Each size is built once, in this process, into a temporary folder; then a fresh
reader process opens it (embedded), and again through `chroma run` started on the
same folder on 127.0.0.1 (server), and times per query:

- raw dense: `collection.query` straight on the chromadb client, same n_results;
- raw BM25: bm25s `get_scores` + top-k on the same index;
- ragcord dense / lexical / hybrid: `ChromaStore.query`, `Bm25Index.search` plus
  the live-chunk filter, and `Retriever.search` (both + fusion + similarity of the
  lexical-only candidates) with a precomputed query vector (the query encoder's
  own cost is measured once in the footprint run and printed beside).

The footprint run loads what the bot holds (SmolLM2 GGUF, the MiniLM encoder and the
100k-chunk store with its BM25 index) in a fresh process and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import (  # noqa: E402
    add_project_to_path,
    machine,
    peak_rss_mb,
    percentile,
    process_peak_rss_mb,
    ratio,
    say,
    table,
)

add_project_to_path()

NS = "scale"
DIM = 384
DOC_CHUNKS = 200
TOPICS = 2000
WORDS_PER_TEXT = 90
SEED = 7


# -- synthetic corpus ---------------------------------------------------------------
class Corpus:
    """Deterministic vectors and texts: chunk i belongs to topic i % TOPICS."""

    def __init__(self, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        self.centres = _normalise(rng.standard_normal((TOPICS, DIM)).astype(np.float32))
        syll = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "zu", "da", "fe", "gi", "ho", "ju", "by"]
        words = {"".join(rng.choice(syll, size=rng.integers(2, 5))) for _ in range(60000)}
        self.vocab = np.array(sorted(words))
        ranks = np.arange(1, len(self.vocab) + 1, dtype=np.float64)
        self.zipf = (1 / ranks) / (1 / ranks).sum()
        # each topic owns 30 words drawn from the rarer half of the vocabulary
        self.topic_words = rng.integers(len(self.vocab) // 2, len(self.vocab), size=(TOPICS, 30))

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
        rng = np.random.default_rng([SEED, start])
        n = stop - start
        topics = np.arange(start, stop) % TOPICS
        vectors = _normalise(self.centres[topics] + 0.08 * rng.standard_normal((n, DIM)).astype(np.float32))
        common = rng.choice(len(self.vocab), size=(n, WORDS_PER_TEXT * 2 // 3), p=self.zipf)
        own = self.topic_words[topics[:, None], rng.integers(0, 30, size=(n, WORDS_PER_TEXT // 3))]
        ids = np.concatenate([common, own], axis=1)
        texts = [" ".join(self.vocab[row]) for row in ids]
        return vectors, texts

    def queries(self, count: int, size: int) -> list[tuple[np.ndarray, str]]:
        rng = np.random.default_rng([SEED, 999, size])
        out = []
        for _ in range(count):
            topic = int(rng.integers(0, min(TOPICS, size)))
            vec = _normalise(self.centres[topic] + 0.12 * rng.standard_normal(DIM).astype(np.float32))
            words = list(self.vocab[self.topic_words[topic, rng.integers(0, 30, 3)]])
            words.append(str(self.vocab[rng.choice(len(self.vocab), p=self.zipf)]))
            out.append((vec, " ".join(words)))
        return out


def _normalise(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)


def committed(path: Path) -> int:
    """Chunks a kept (possibly interrupted) store already has live."""
    from store.chroma import ChromaLocation, ChromaStore

    store = ChromaStore(ChromaLocation(path=path))
    try:
        return len(store.live_ids(NS))
    finally:
        store.close()


def build(path: Path, size: int, corpus: Corpus, first: int = 0, namespace: str = NS) -> dict[str, float]:
    """Write `size` chunks through ChromaStore as ingest does: batched adds, then the batch's manifests."""
    from store.chroma import ChromaLocation, ChromaStore
    from store.types import Chunk, DocumentInfo

    store = ChromaStore(ChromaLocation(path=path))
    step = min(store.max_batch_size, 5000) // DOC_CHUNKS * DOC_CHUNKS
    begin = first // step * step  # an interrupted build resumes at its last committed batch
    t0 = time.perf_counter()
    for start in range(begin, size, step):
        stop = min(size, start + step)
        vectors, texts = corpus.batch(start, stop)
        chunks = []
        for i, text in zip(range(start, stop), texts, strict=True):
            doc = i // DOC_CHUNKS
            chunks.append(Chunk(f"d{doc:07d}", i % DOC_CHUNKS, text, f"Doc {doc}", f"synthetic/{doc}.txt"))
        store.add_chunks(namespace, chunks, vectors, "2025-01-01T00:00:00")
        infos = []
        for doc in sorted({c.doc_id for c in chunks}):
            ids = [c.id for c in chunks if c.doc_id == doc]
            infos.append(DocumentInfo(doc, f"Doc {doc}", f"synthetic/{doc}.txt", "text", len(ids), 0, "", doc, ids))
        store.commit_documents(namespace, infos)
        if stop % 100_000 == 0 or stop == size:
            rate = (stop - begin) / (time.perf_counter() - t0)
            say(f"  built {stop:,}/{size:,} chunks ({rate:,.0f} chunks/s)")
    seconds = time.perf_counter() - t0
    store.close()
    return {"build_s": seconds, "build_rate": (size - begin) / seconds}


# -- the reader (a fresh process) --------------------------------------------------
class _QueueEmbedder:
    """Hands out precomputed query vectors: retrieval timing without the encoder."""

    name = "precomputed"
    max_tokens = 256

    def __init__(self) -> None:
        self.next: np.ndarray | None = None

    def embed_query(self, text: str) -> np.ndarray:
        assert self.next is not None
        return self.next

    def embed(self, texts):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def count_tokens(self, texts):  # type: ignore[no-untyped-def]
        return [len(t.split()) for t in texts]


def read(path: Path, host: str | None, port: int, size: int, queries: int) -> dict[str, float]:
    from store.chroma import ChromaLocation, ChromaStore
    from store.lexical import LexicalIndexes, tokenize
    from store.retrieval import Retriever

    location = ChromaLocation(host=host, port=port) if host else ChromaLocation(path=path)
    t = time.perf_counter()
    store = ChromaStore(location)
    embedder = _QueueEmbedder()
    retriever = Retriever(store, embedder, LexicalIndexes(path.parent / f"lexical-{size}"), candidates=40)
    live = store.live_ids(NS)
    open_s = time.perf_counter() - t
    t = time.perf_counter()
    index = retriever.lexical_index(NS)
    index_s = time.perf_counter() - t
    col = store._chunks(NS)
    k, pool = 4, 40
    fetch = min(len(live) + 8, max(pool * 2, pool + 8))
    bm25 = index._retriever

    samples: dict[str, list[float]] = {name: [] for name in ("raw_dense", "raw_bm25", "dense", "lexical", "hybrid")}
    qs = Corpus().queries(queries + 10, size)
    for n, (vec, text) in enumerate(qs):
        embedder.next = vec
        t0 = time.perf_counter()
        col.query(query_embeddings=[vec.tolist()], n_results=fetch, include=["documents", "metadatas", "distances"])
        t1 = time.perf_counter()
        terms = [w for w in tokenize([text], index.params)[0] if w in bm25.vocab_dict]
        scores = bm25.get_scores(terms) if terms else np.zeros(len(index.ids))
        top = np.argpartition(-scores, pool - 1)[:pool]
        top[np.argsort(-scores[top])]
        t2 = time.perf_counter()
        store.query(NS, vec, pool)
        t3 = time.perf_counter()
        hits = index.search(text, pool)
        [h for h in hits if h[0] in store.live_ids(NS)]
        t4 = time.perf_counter()
        got = retriever.search(NS, text, k)
        t5 = time.perf_counter()
        if n < 10:  # warm-up
            continue
        assert got, "hybrid search found nothing"
        for name, value in zip(samples, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            samples[name].append(value * 1000)
    out: dict[str, float] = {"chunks": float(len(live)), "open_s": open_s, "index_s": index_s}
    for name, values in samples.items():
        out[f"{name}_p50"] = percentile(values, 50)
        out[f"{name}_p95"] = percentile(values, 95)
    out["rss_mb"] = peak_rss_mb()
    return out


def footprint(path: Path, size: int) -> dict[str, float]:
    """Peak RSS of a process holding the default LLM, the encoder and the store, answering queries."""
    from bot.llm import LlamaCppLLM, Message
    from bot.prompts import SYSTEM
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from store.embedder import SentenceTransformerEmbedder
    from store.lexical import LexicalIndexes
    from store.retrieval import Retriever

    s = Settings(_env_file=None)  # type: ignore[call-arg]
    llm = LlamaCppLLM(n_ctx=s.llm_context, n_threads=s.llm_threads, n_batch=s.llm_batch)
    llm.warm([Message("system", SYSTEM)])
    embedder = SentenceTransformerEmbedder(batch_size=s.embed_batch_size)
    embedder.warm()
    store = ChromaStore(ChromaLocation(path=path))
    retriever = Retriever(store, embedder, LexicalIndexes(path.parent / f"lexical-{size}"))
    texts = [t for _, t in Corpus().queries(30, size)]
    encode_ms = []
    for text in texts:
        t = time.perf_counter()
        embedder.embed_query(text)
        encode_ms.append((time.perf_counter() - t) * 1000)
        retriever.search(NS, text, 4)
    return {"rss_mb": peak_rss_mb(), "encode_p50": percentile(encode_ms, 50), "chunks": float(store.count(NS))}


def _child(args: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        raise RuntimeError(f"reader failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the chroma server --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """`chroma run` on 127.0.0.1, started and stopped by the benchmark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ChromaServer:
        exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        self.log = open(self.path.parent / f"chroma-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("chroma run did not answer within 120 s")

    @property
    def peak_rss_mb(self) -> float:
        return process_peak_rss_mb(self.proc.pid) if self.proc else 0.0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- main --------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts (default 10000,100000)")
    parser.add_argument("--modes", default="embedded,server", help="embedded, server or both (default both)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per size and mode (default 200)")
    parser.add_argument("--no-footprint", action="store_true", help="skip the LLM + encoder + 100k store RSS run")
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it (reused when present)")
    parser.add_argument("--_read", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--_footprint", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._read:
        path, host, port, size, queries = args._read
        print(json.dumps(read(Path(path), host if host != "-" else None, int(port), int(size), int(queries))))
        return
    if args._footprint:
        print(json.dumps(footprint(Path(args._footprint[0]), int(args._footprint[1]))))
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    say(f"machine: {machine()}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="ragcord-scale-"))
    corpus = Corpus()
    rows = []
    fp: dict[str, float] | None = None
    try:
        for size in sizes:
            path = root / f"chroma-{size}"
            built = {"build_s": float("nan"), "build_rate": float("nan")}
            have = committed(path) if (path / "chroma.sqlite3").exists() else 0
            if have < size:
                say(f"building {size:,} chunks in {path}" + (f" (resuming after {have:,})" if have else ""))
                built = build(path, size, corpus, first=have)
            for mode in modes:
                say(f"querying {size:,} chunks, {mode}")
                server_rss = 0.0
                if mode == "server":
                    with ChromaServer(path) as server:
                        reader = ["--_read", str(path), "127.0.0.1", str(server.port), str(size), str(args.queries)]
                        got = _child(reader)
                        server_rss = server.peak_rss_mb
                else:
                    got = _child(["--_read", str(path), "-", "0", str(size), str(args.queries)])
                rows.append((size, mode, built, got, server_rss))
            if size == 100_000 and not args.no_footprint:
                say("footprint: LLM + encoder + 100k store in one process")
                fp = _child(["--_footprint", str(path), str(size)])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    header = [
        "chunks", "mode", "build chunks/s", "open s", "BM25 build/load s",
        "raw dense p50/p95", "dense p50/p95", "BM25 raw p50/p95", "lexical p50/p95",
        "hybrid p50/p95 ms", "hybrid p95 / raw (dense+BM25) p95", "reader RSS MiB", "server RSS MiB",
    ]  # fmt: skip
    table_rows = []
    for size, mode, built, got, server_rss in rows:
        raw_p95 = got["raw_dense_p95"] + got["raw_bm25_p95"]
        table_rows.append(
            [
                f"{size:,}",
                mode,
                f"{built['build_rate']:,.0f}" if built["build_rate"] == built["build_rate"] else "(kept)",
                f"{got['open_s']:.2f}",
                f"{got['index_s']:.2f}",
                f"{got['raw_dense_p50']:.1f} / {got['raw_dense_p95']:.1f}",
                f"{got['dense_p50']:.1f} / {got['dense_p95']:.1f}",
                f"{got['raw_bm25_p50']:.1f} / {got['raw_bm25_p95']:.1f}",
                f"{got['lexical_p50']:.1f} / {got['lexical_p95']:.1f}",
                f"{got['hybrid_p50']:.1f} / {got['hybrid_p95']:.1f}",
                ratio(got["hybrid_p95"], raw_p95),
                f"{got['rss_mb']:,.0f}",
                f"{server_rss:,.0f}" if mode == "server" else "-",
            ]
        )
    title = f"retrieval latency vs store size ({args.queries} queries, k=4, 40 candidates each side)"
    say(table(title, header, table_rows))
    if fp:
        say(
            table(
                "footprint: one process holding SmolLM2-135M (warmed) + MiniLM encoder + 100k-chunk store + BM25",
                ["chunks", "query encode p50 ms", "peak RSS MiB", "target"],
                [[f"{fp['chunks']:,.0f}", f"{fp['encode_p50']:.1f}", f"{fp['rss_mb']:,.0f}", "<= 2048"]],
            )
        )
    say(f"machine: {machine()}")


if __name__ == "__main__":
    main()
