"""Reliability probes of the store and the ingest pipeline; prints the rows of bench/README.md's Reliability table.

- SIGKILL of an ingest process at random moments (tests/test_faults.py's trials, more of them);
- the Chroma server killed and restarted during an ingest;
- the Chroma server killed and restarted while a long-lived service answers: every
  search either returns the right passage or raises `StoreUnavailable` (never an
  empty or wrong result), and the same objects answer again after the restart.

    .venv/bin/python bench/reliability.py [--kills 50] [--server-trials 3] [--seed 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_faults import (  # noqa: E402
    DOCS,
    check_store,
    run_ingest,
    sigkill_trials,
    start_ingest,
    stored_but_not_live,
    write_docs,
)


def server_kill_during_ingest(trials: int) -> tuple[int, int, list[str]]:
    from store.chroma import ChromaLocation
    from tests.test_store_outage import ChromaServer

    failures, messages = 0, []
    for trial in range(trials):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            server = ChromaServer(tmp / "server")
            server.start()
            try:
                data, folder = tmp / "data", tmp / "docs"
                location = ChromaLocation(host=server.url)
                write_docs(folder, 0)
                run_s, _ = run_ingest(data, folder, server.url)
                write_docs(folder, 1)
                proc = start_ingest(data, folder, server.url)
                time.sleep(run_s * (0.2 + 0.6 * trial / max(1, trials - 1)))
                server.kill()
                out, err = proc.communicate(timeout=120)
                last = (err.strip().splitlines() or [out.strip()])[-1]
                messages.append(last[-200:])
                server.start()
                during = check_store(location, {i: {0, 1} for i in range(DOCS)})
                run_ingest(data, folder, server.url)
                after = check_store(location, {i: {1} for i in range(DOCS)})
                leftovers = stored_but_not_live(location)
                if during.failures or after.failures or leftovers:
                    failures += 1
                    print(
                        f"server trial {trial}: after the kill {during}; after a clean run {after}; "
                        f"leftovers {leftovers}; the killed run said {last}"
                    )
            finally:
                server.kill()
    return trials, failures, messages


def server_kill_during_answering(rounds: int) -> dict[str, float]:
    from bot.service import RagService
    from bot.settings import Settings
    from store.chroma import ChromaLocation, ChromaStore
    from store.protocol import StoreUnavailable
    from tests.fakes import FakeEmbedder, FakeLLM
    from tests.test_store_outage import ChromaServer

    counts = {"searches": 0, "right": 0, "outage": 0, "wrong_or_empty": 0, "recovery_s": 0.0}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = ChromaServer(tmp / "server")
        server.start()
        try:
            settings = Settings(chroma_host=server.url, data_dir=tmp, _env_file=None)  # type: ignore[call-arg]
            store = ChromaStore(ChromaLocation(host=server.url), lock_dir=tmp)
            svc = RagService(store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=tmp / "lex", settings=settings)
            write_docs(tmp / "docs", 0)
            svc.ingest_paths("default", [tmp / "docs"])

            def search() -> str:
                counts["searches"] += 1
                try:
                    hits = svc.retriever.search("default", "code7x0", 3)
                except StoreUnavailable:
                    counts["outage"] += 1
                    return "outage"
                right = bool(hits) and "code7x0" in hits[0].chunk.text
                counts["right" if right else "wrong_or_empty"] += 1
                return "right" if right else "wrong"

            for _ in range(rounds):
                for _ in range(3):
                    search()
                server.kill()
                for _ in range(3):
                    search()
                restarted = time.monotonic()
                server.start()
                while search() != "right" and time.monotonic() - restarted < 60:
                    time.sleep(0.1)
                counts["recovery_s"] = max(counts["recovery_s"], time.monotonic() - restarted)
        finally:
            server.kill()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILL trials of an ingest")
    parser.add_argument("--server-trials", type=int, default=3, help="Chroma server kills during an ingest")
    parser.add_argument("--answer-rounds", type=int, default=3, help="Chroma server kills while answering")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kills = sigkill_trials(Path(tmp), args.kills, seed=args.seed)
    rows.append(
        (
            f"SIGKILL of an ingest ({DOCS} documents re-ingested, random moment)",
            kills.trials,
            kills.failures,
            f"{kills.killed_mid_run} killed mid-run (run {kills.run_s:.2f} s); 0 lost/mixed/duplicated "
            f"required; leftovers after the next run: {kills.leftovers_after_recovery}; "
            f"vector indexes rebuilt after a kill: {kills.repairs}",
        )
    )
    for detail in kills.details:
        print(detail)
    trials, failures, messages = server_kill_during_ingest(args.server_trials)
    rows.append(
        (
            "Chroma server killed during an ingest, then restarted",
            trials,
            failures,
            f"the ingest ends with: {messages[0] if messages else '-'}",
        )
    )
    answering = server_kill_during_answering(args.answer_rounds)
    rows.append(
        (
            "Chroma server killed while answering, then restarted",
            args.answer_rounds,
            int(answering["wrong_or_empty"]),
            f"{int(answering['searches'])} searches: {int(answering['right'])} right, "
            f"{int(answering['outage'])} StoreUnavailable, {int(answering['wrong_or_empty'])} empty or wrong; "
            f"answering again {answering['recovery_s']:.1f} s after the restart began",
        )
    )
    print("| probe | trials | failures | figure |")
    print("|---|---|---|---|")
    for probe, n, bad, figure in rows:
        print(f"| {probe} | {n} | {bad} | {figure} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
