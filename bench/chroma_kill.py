"""What a SIGKILL of a process writing ragcord's embedded store leaves, and whether ragcord reads it after.

    .venv/bin/python bench/chroma_kill.py [--trials 150] [--sync-threshold 20] [--seed 3]

A writer process adds documents through `ChromaStore` (10 chunks each, the fake
encoder) with Chroma's HNSW index saved every `--sync-threshold` writes (chromadb's
default is 1,000; a small one keeps a save in flight most of the time, so that kills
land inside one), and is killed at a random moment. Then two fresh processes read
what it left:

- the raw baseline: chromadb itself (`get` on each collection), as ragcord read the
  store before store/chroma_repair.py;
- ragcord: a `ChromaStore` with the encoder, as the bot or the next ingest opens it,
  lists the documents and looks up 5 of them by their own text (top 1 must be the
  document).

Each outcome is counted: readable, readable after ragcord rebuilt a damaged index,
an error (which), wrong results, or the reader killed by a signal (a crash in native
code, which nothing inside that process could catch).
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import table

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import itertools, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from store.chroma import ChromaLocation, ChromaStore
from store.chroma_base import ChromaBase
from store.embedder import encoder_identity
from store.types import Chunk, DocumentInfo
from tests.fakes import FakeEmbedder

threshold = int(sys.argv[2])
real = ChromaBase._collection

def saved_often(self, name, create=False, metadata=None):
    if create:
        metadata = {**(metadata or {}), "hnsw:sync_threshold": threshold, "hnsw:batch_size": min(10, threshold)}
    return real(self, name, create, metadata)

ChromaBase._collection = saved_often
emb = FakeEmbedder()
store = ChromaStore(ChromaLocation(path=Path(sys.argv[1])), encoder=encoder_identity(emb))
store.embed_check = emb.embed
print("ready", flush=True)
for i in itertools.count():
    chunks = [
        Chunk(doc_id=f"d{i}", index=j, text=f"Note {i}.{j}: code{i}x{j} " + " ".join(f"w{i}y{k}" for k in range(6)),
              title=f"Doc {i}", source=f"{i}.md")
        for j in range(10)
    ]
    with store.writer("team"):
        store.add_chunks("team", chunks, emb.embed([c.embed_text for c in chunks]), "2026-12-03")
        store.commit_documents(
            "team", [DocumentInfo(f"d{i}", f"Doc {i}", f"{i}.md", "text", 1, 0, "2026-12-03", "h",
                                  chunk_ids=[c.id for c in chunks])]
        )
"""

RAW_READER = """
import sys
import chromadb
client = chromadb.PersistentClient(path=sys.argv[1])
try:
    for col in client.list_collections():
        client.get_collection(col.name).get(limit=1, include=[])
    print("readable")
except Exception as exc:
    print("error: " + " ".join(str(exc).split()))
"""

RAGCORD_READER = """
import logging, random, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
logging.disable(logging.CRITICAL)
from store.chroma import ChromaLocation, ChromaStore
from store.embedder import encoder_identity
from tests.fakes import FakeEmbedder

emb = FakeEmbedder()
store = ChromaStore(ChromaLocation(path=Path(sys.argv[1])), encoder=encoder_identity(emb))
store.embed_check = emb.embed
rebuilt = []
repair = store._repair_damaged
def counted():
    done = repair()
    rebuilt.append(done)
    return done
store._repair_damaged = counted
try:
    docs = store.documents("team")
    wrong = 0
    for doc in random.Random(0).sample(docs, min(5, len(docs))):
        [chunk] = store.get_chunks("team", doc.chunk_ids[:1])
        hits = store.query("team", emb.embed_query(chunk.embed_text), 1)
        wrong += not hits or hits[0].chunk.doc_id != doc.doc_id
    if wrong:
        print(f"wrong results: {wrong} of 5 documents not found by their own text")
    else:
        print("readable after a rebuild" if any(rebuilt) else "readable")
except Exception as exc:
    print(f"error: {type(exc).__name__}: " + " ".join(str(exc).split()))
"""


def read(script: str, folder: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(ROOT)], capture_output=True, text=True, timeout=600
    )
    if done.returncode < 0:
        return f"reader killed by signal {-done.returncode}"
    return (done.stdout.strip() or f"reader failed: {done.stderr.strip().splitlines()[-1:]}")[:110]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--sync-threshold", type=int, default=20, help="hnsw:sync_threshold of the collections")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    rng = random.Random(args.seed)
    outcomes: dict[str, collections.Counter[str]] = {"raw": collections.Counter(), "ragcord": collections.Counter()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            folder, copy = Path(tmp) / f"t{trial}", Path(tmp) / f"t{trial}-raw"
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(folder), str(args.sync_threshold), str(ROOT)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready", "the writer failed"
            time.sleep(rng.uniform(0.5, 4.0))
            writer.kill()
            writer.wait()
            shutil.copytree(folder, copy)  # the baseline reads a copy: a Chroma read may write
            raw, ours = read(RAW_READER, copy), read(RAGCORD_READER, folder)
            outcomes["raw"][raw] += 1
            outcomes["ragcord"][ours] += 1
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(copy, ignore_errors=True)
            print(f"  {trial + 1}/{args.trials}: raw {raw[:60]!r}; ragcord {ours[:60]!r}", file=sys.stderr, flush=True)
    print(f"SIGKILL of a ragcord writer, index saved every {args.sync_threshold} writes, {args.trials} trials")
    rows = [(r, kind, n, f"{n / args.trials:.3f}") for r, seen in outcomes.items() for kind, n in seen.most_common()]
    print(table(["reader", "outcome", "trials", "share"], rows, left=(0, 1)))
    bad = {r: sum(n for k, n in seen.items() if not k.startswith("readable")) for r, seen in outcomes.items()}
    print(f"unreadable or wrong: raw {bad['raw']}, ragcord {bad['ragcord']} of {args.trials}")
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
