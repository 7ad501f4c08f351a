"""Ingest throughput: ragcord's pipeline beside raw `SentenceTransformer.encode` on the same chunks.

    python bench/ingest.py                       # the 81 PDFs + XQuAD passages, the default backend
    python bench/ingest.py --backend torch       # the pipeline on another backend
    python bench/ingest.py --docs docs           # any files, folders or .jsonl corpora
    python bench/ingest.py --repeat 1 --tune     # also compare encoder batch sizes

OCR is off here (the scanned PDFs are refused as before OCR existed): OCR costs ~10 s
a page and bench/ocr.py measures it. Each round ingests everything into a fresh store in a temporary folder through
`Ingestor` (load, chunk, encode, write, commit) with the encoder a fresh store gets
(RAGCORD_EMBED_BACKEND, default auto: onnx-int8), then encodes the very same chunk
texts raw: with the loaded `SentenceTransformer` straight through `encode()` (fp32
torch, its defaults: batch 32, normalised) and with the pipeline's own encoder's
`embed` alone (its raw ceiling; for onnx-int8 the int8 backend's raw throughput).
Rounds alternate ragcord and raw so a busy machine slows both alike; the best round
of each is compared. Then the last store is re-ingested unchanged (nothing is parsed
or embedded) and timed. The one-time ONNX export is timed apart.

Like `ragcord ingest`, this process asks OpenMP for passive waits before torch loads
(`store.embedder.passive_openmp_waits`), so the in-process raw rounds run with it too.
Each round therefore also times raw encode in a fresh process with libgomp's defaults,
and the ratio is taken against the faster of the two raw figures.

A `.jsonl` of {"_id","title","text"} lines (BEIR, XQuAD) is one document per line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import DATA, add_project_to_path, machine, peak_rss_mb, ratio, say, table  # noqa: E402

add_project_to_path()

NS = "bench"


def default_docs() -> list[Path]:
    return [p for p in (DATA / "pdfs", DATA / "xquad" / "documents.jsonl") if p.exists()]


def sources_of(paths: list[Path]):  # type: ignore[no-untyped-def]
    """ingest Sources: files (folders walked) and one Source per line of each .jsonl."""
    from ingest.pipeline import Source, discover

    files, refused = discover([p for p in paths if p.suffix != ".jsonl"])
    out = [Source(f.read_bytes, f.name, str(f.resolve())) for f in files]
    for path in paths:
        if path.suffix != ".jsonl":
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            data = str(row["text"]).encode("utf-8")
            title = str(row.get("title") or row["_id"])
            out.append(Source(lambda d=data: d, f"{row['_id']}.txt", f"{path.stem}:{row['_id']}", title))
    return out, len(refused)


def service_for(folder: Path):  # type: ignore[no-untyped-def]
    from bot.service import RagService
    from bot.settings import Settings

    # OCR off: this measures the text pipeline and its encoder (the scans' OCR is bench/ocr.py's, ~10 s a page)
    return RagService.from_settings(Settings(data_dir=folder, ocr=False, _env_file=None))  # type: ignore[call-arg]


def ingest_round(embedder, folder: Path, paths: list[Path]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from ingest.pipeline import IngestProgress

    service = service_for(folder)
    service.embedder = embedder  # the already-loaded encoder: model load time is not ingest time
    service.ingestor.embedder = embedder
    service.retriever.embedder = embedder
    from store.embedder import encoder_identity

    service.ingestor.encoder = service.store.encoder = encoder_identity(embedder)  # what the namespace records
    sources, refused = sources_of(paths)
    state = IngestProgress()
    t = time.perf_counter()
    results = service.ingestor.ingest_sources(NS, sources, progress=lambda s: _keep(state, s))
    seconds = time.perf_counter() - t
    statuses = {s: sum(r.status == s for r in results) for s in ("added", "skipped", "failed")}
    chunks = sum(r.embedded for r in results)
    return {
        "seconds": seconds,
        "pages": float(sum(r.pages for r in results)),
        "chunks": float(chunks),
        "docs": float(statuses["added"]),
        "skipped": float(statuses["skipped"] + refused),
        "failed": float(statuses["failed"]),
        "wait_s": state.wait_s,
        "encode_s": state.encode_s,
        "write_s": state.write_s,
        "service": service,  # type: ignore[dict-item]
    }


def _keep(box, state) -> None:  # type: ignore[no-untyped-def]
    box.wait_s, box.encode_s, box.write_s = state.wait_s, state.encode_s, state.write_s


def raw_parse_round(paths: list[Path]) -> float:
    """CPU seconds of pypdf alone (`PdfReader` + `extract_text` per page) on the same PDF files."""
    from pypdf import PdfReader

    from ingest.pipeline import discover

    files = [f for f in discover([p for p in paths if p.suffix != ".jsonl"])[0] if f.suffix.lower() == ".pdf"]
    t = time.process_time()
    for f in files:
        try:
            reader = PdfReader(f, strict=False)
            if reader.is_encrypted:
                reader.decrypt("")
            for page in reader.pages:
                page.extract_text()
        except Exception:  # damaged files: what was spent on them counts, as it does for ragcord
            continue
    return time.process_time() - t


_RAW_CHILD = """
import json, sys, time
from sentence_transformers import SentenceTransformer
texts = json.load(open(sys.argv[2], encoding="utf-8"))
model = SentenceTransformer(sys.argv[1], device="cpu")
model.encode(texts[:32], batch_size=32)
t = time.perf_counter()
model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
print(time.perf_counter() - t)
"""


def raw_round_default_openmp(model_path: str, texts_file: Path) -> float:
    """Raw encode of the same texts in a fresh process with libgomp's default wait policy."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", _RAW_CHILD, model_path, str(texts_file)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def raw_round(model, texts: list[str], batch_size: int = 32) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", nargs="+", type=Path, help="files, folders or .jsonl corpora (default: PDFs + XQuAD)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (ragcord, raw), best kept (default 2)")
    parser.add_argument("--tune", action="store_true", help="also time raw encode at batch sizes 16/32/64/128")
    parser.add_argument(
        "--backend", choices=("auto", "torch", "onnx", "onnx-int8"), help="the pipeline's encoder (default: settings)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    paths = args.docs or default_docs()
    if not paths:
        raise SystemExit("no documents: pass --docs PATH (the shared data folder is not here)")
    say(f"machine: {machine()}")
    say(f"documents: {', '.join(map(str, paths))}")

    from store.embedder import (
        SentenceTransformerEmbedder,
        encoder_identity,
        make_embedder,
        passive_openmp_waits,
        resolve_model,
    )

    passive_openmp_waits()  # as `ragcord ingest` does, before torch loads
    say(f"OpenMP wait policy of this process: {os.environ.get('OMP_WAIT_POLICY', 'libgomp default')}")
    from store.types import Chunk

    root = Path(tempfile.mkdtemp(prefix="ragcord-ingest-"))
    try:
        probe = service_for(root / "probe")
        ps = probe.settings
        reference = SentenceTransformerEmbedder(ps.embed_model, device=ps.embed_device, batch_size=ps.embed_batch_size)
        t = time.perf_counter()
        reference.warm()
        load_s = time.perf_counter() - t
        model = reference.model
        backend = args.backend or ps.embed_backend
        embedder = make_embedder(
            ps.embed_model,
            backend,
            cache_dir=root / "models",
            device=ps.embed_device,
            batch_size=ps.embed_batch_size,
        )  # what a fresh store gets (no namespace recorded)
        t = time.perf_counter()
        getattr(embedder, "warm", lambda: None)()  # an ONNX backend exports here, once
        export_s = time.perf_counter() - t
        pipeline_name = encoder_identity(embedder)
        say(f"torch encoder loaded in {load_s:.1f} s; raw encode batch 32")
        say(f"pipeline encoder ({backend}): {pipeline_name}, ready in {export_s:.1f} s (ONNX: the one-time export)")

        ours: list[dict[str, float]] = []
        raws: list[float] = []
        own_raws: list[float] = []  # the pipeline's encoder alone on the same texts
        fresh_raws: list[float] = []
        texts_file = root / "texts.json"
        model_path = resolve_model(probe.settings.embed_model)
        parses: list[float] = []
        texts: list[str] = []
        for n in range(args.repeat):
            got = ingest_round(embedder, root / f"round{n}", paths)
            ours.append(got)
            if not texts:
                service = got["service"]
                infos = service.store.documents(NS)  # type: ignore[attr-defined]
                ids = [cid for d in infos for cid in d.chunk_ids]
                chunks: list[Chunk] = service.store.get_chunks(NS, ids)  # type: ignore[attr-defined]
                texts = [c.embed_text for c in chunks]
                texts_file.write_text(json.dumps(texts), encoding="utf-8")
            raws.append(raw_round(model, texts))
            fresh_raws.append(raw_round_default_openmp(model_path, texts_file))
            t = time.perf_counter()
            embedder.embed(texts)
            own_raws.append(time.perf_counter() - t)
            parses.append(raw_parse_round(paths))
            say(
                f"round {n + 1}: ragcord {got['chunks'] / got['seconds']:.1f} chunks/s "
                f"({got['seconds']:.1f} s), raw encode {len(texts) / raws[-1]:.1f} chunks/s ({raws[-1]:.1f} s), "
                f"in a fresh process with libgomp defaults {len(texts) / fresh_raws[-1]:.1f} chunks/s "
                f"({fresh_raws[-1]:.1f} s), the pipeline's encoder alone {len(texts) / own_raws[-1]:.1f} chunks/s"
            )

        last = ours[-1]
        service = last["service"]
        t = time.perf_counter()
        again = service.ingestor.ingest_sources(NS, sources_of(paths)[0])  # type: ignore[attr-defined]
        reingest_s = time.perf_counter() - t
        unchanged = sum(r.status == "unchanged" for r in again)
        reembedded = sum(r.embedded for r in again)

        tune_rows = []
        if args.tune:  # on 320 chunks spread over the corpus, rounds interleaved
            sample = texts[:: max(1, len(texts) // 320)]
            timings: dict[int, list[float]] = {bs: [] for bs in (16, 32, 64, 128)}
            for _ in range(2):
                for bs in timings:
                    timings[bs].append(raw_round(model, sample, bs))
            tune_rows = [[str(bs), f"{len(sample) / min(v):.1f}"] for bs, v in timings.items()]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    best = min(ours, key=lambda r: r["seconds"])
    torch_best = min(min(raws), min(fresh_raws))  # the faster raw torch figure, whichever process it came from
    own_best = min(own_raws)
    ours_rate = best["chunks"] / best["seconds"]
    torch_rate = len(texts) / torch_best
    own_rate = len(texts) / own_best
    # What two cores allow at best: the pipeline's encoder alone plus pypdf's CPU time spread over the cores.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ceiling_s = own_best + min(parses) / cores
    rows = [
        ["pipeline encoder", f"{backend}: {pipeline_name}"],
        ["  one-time ONNX export (torch loaded already)", f"{export_s:.1f} s" if backend != "torch" else "-"],
        ["documents ingested / skipped / failed", f"{best['docs']:.0f} / {best['skipped']:.0f} / {best['failed']:.0f}"],
        ["pages / chunks", f"{best['pages']:.0f} / {best['chunks']:.0f}"],
        ["first ingest (best of rounds)", f"{best['seconds']:.1f} s"],
        ["  pages/s", f"{best['pages'] / best['seconds']:.1f}"],
        ["  chunks/s (ragcord, pipeline encoder)", f"{ours_rate:.1f}"],
        ["  raw SentenceTransformer.encode (fp32) chunks/s, same texts (this process / fresh, libgomp defaults)",
         f"{len(texts) / min(raws):.1f} / {len(texts) / min(fresh_raws):.1f}"],
        ["  raw torch chunks/s used for the ratios (the faster)", f"{torch_rate:.1f}"],
        ["  raw pipeline encoder alone (its `embed`, same texts) chunks/s", f"{own_rate:.1f}"],
        ["  ratio raw pipeline encoder / raw torch", ratio(own_rate, torch_rate)],
        ["  ratio ragcord / raw torch", ratio(ours_rate, torch_rate)],
        ["  ratio ragcord / raw pipeline encoder (aim >= 0.9)", ratio(ours_rate, own_rate)],
        ["  raw pypdf on the same PDFs (CPU s, best round)", f"{min(parses):.1f}"],
        [f"  ceiling: raw pipeline encoder + pypdf CPU / {cores} cores",
         f"{ceiling_s:.1f} s: {len(texts) / ceiling_s:.1f} chunks/s"],
        ["  ratio ragcord / ceiling", ratio(ours_rate, len(texts) / ceiling_s)],
        ["  encoder busy / waiting for parse / writing", f"{best['encode_s']:.1f} / {best['wait_s']:.1f} / "
         f"{best['write_s']:.1f} s"],
        ["re-ingest unchanged", f"{reingest_s:.2f} s ({unchanged} unchanged, {reembedded} re-embedded)"],
        ["  speed-up first / re-ingest (aim >= 50x)", ratio(best["seconds"], reingest_s)],
        ["ratio per round (ragcord / raw pipeline encoder of that round)", ", ".join(
            ratio(o["chunks"] / o["seconds"], len(texts) / r) for o, r in zip(ours, own_raws, strict=True))],
        ["peak RSS of this process", f"{peak_rss_mb():,.0f} MiB"],
    ]  # fmt: skip
    say(table("ingest throughput (fresh store, encoder already loaded)", ["measure", "value"], rows))
    if tune_rows:
        title = "raw encode throughput by batch size (best of 2, a sample of the chunks)"
        say(table(title, ["batch size", "chunks/s"], tune_rows))
    say(f"machine: {machine()}")


if __name__ == "__main__":
    main()
