"""Start-up cost of the `ragcord` command line, each command in a fresh process.

    python bench/startup.py            # 3 runs of each command, median kept
    python bench/startup.py --runs 5

docs/ is ingested once into a temporary data folder; then `--help`, `sources`,
`stats`, `forget` (of a document that does not exist), `ask --evidence-only` and
`ask` run in fresh processes. Baselines measured in the same run: a bare
interpreter (`python -c pass`), the store's own import (`import chromadb`) and the
encoder's (`import sentence_transformers`). Every command also runs once under
`python -X importtime`, which lists the heavy libraries it imported: the commands
that do not embed must not import sentence_transformers, transformers or torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed import ROOT, machine, ratio, say, table  # noqa: E402

HEAVY = ("torch", "sentence_transformers", "transformers", "llama_cpp", "discord", "chromadb", "bm25s")
QUESTION = "How does ragcord check the citations in its answers?"


def cli() -> list[str]:
    exe = Path(sys.executable).parent / "ragcord"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bot.cli"]


def run(argv: list[str], env: dict[str, str], cwd: Path, importtime: bool = False) -> tuple[float, int, str]:
    if importtime:
        if argv[0].endswith("ragcord"):  # the console script: run its module under -X importtime instead
            argv = [sys.executable, "-m", "bot.cli", *argv[1:]]
        argv = [argv[0], "-X", "importtime", *argv[1:]]
    t = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    return time.perf_counter() - t, out.returncode, out.stderr


def heavy_imports(stderr: str) -> list[str]:
    found = set()
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        name = line.rsplit("|", 1)[-1].strip()
        top = name.split(".")[0]
        if top in HEAVY:
            found.add(top)
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each command, median kept (default 3)")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    root = Path(tempfile.mkdtemp(prefix="ragcord-startup-"))
    env = {
        **os.environ,
        "RAGCORD_DATA_DIR": str(root / "data"),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "NO_COLOR": "1",
        "COLUMNS": "120",
    }
    env.pop("CHROMA_HOST", None)
    base = cli()
    py = [sys.executable]
    try:
        seconds, code, err = run([*base, "ingest", str(ROOT / "docs")], env, root)
        if code != 0:
            raise SystemExit(f"ingest failed ({code}): {err[-800:]}")
        say(f"ingested docs/ in {seconds:.1f} s (fresh process, encoder import included)")
        commands = {
            "python -c pass": ([*py, "-c", "pass"], None),
            "python -c 'import chromadb'": ([*py, "-c", "import chromadb"], None),
            "python -c 'import sentence_transformers'": ([*py, "-c", "import sentence_transformers"], None),
            "ragcord --help": ([*base, "--help"], "python -c pass"),
            "ragcord sources": ([*base, "sources"], "python -c 'import chromadb'"),
            "ragcord stats": ([*base, "stats"], "python -c 'import chromadb'"),
            "ragcord forget no-such-doc": ([*base, "forget", "no-such-doc"], "python -c 'import chromadb'"),
            "ragcord ask --evidence-only": (
                [*base, "ask", "--evidence-only", QUESTION],
                "python -c 'import sentence_transformers'",
            ),
            "ragcord ask": ([*base, "ask", QUESTION], "python -c 'import sentence_transformers'"),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        codes: dict[str, int] = {}
        for _ in range(args.runs):  # interleaved rounds: a busy machine slows every command alike
            for name, (argv, _) in commands.items():
                seconds, code, err = run(argv, env, root)
                times[name].append(seconds)
                codes[name] = code
        imported = {name: heavy_imports(run(cmd, env, root, importtime=True)[2]) for name, (cmd, _) in commands.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = []
    for name, (_, baseline) in commands.items():
        med = statistics.median(times[name])
        base_med = statistics.median(times[baseline]) if baseline else float("nan")
        rows.append(
            [
                name,
                f"{med:.2f}",
                f"{min(times[name]):.2f}",
                baseline or "",
                ratio(med, base_med) if baseline else "",
                str(codes[name]),
                ", ".join(imported[name]) or "-",
            ]
        )
    say(
        table(
            f"start-up, fresh process each (median and best of {args.runs})",
            ["command", "median s", "best s", "baseline", "vs baseline", "exit", "heavy imports"],
            rows,
        )
    )
    bad = [n for n in ("ragcord --help", "ragcord sources", "ragcord stats", "ragcord forget no-such-doc")
           if {"torch", "sentence_transformers", "transformers", "llama_cpp"} & set(imported[n])]  # fmt: skip
    say("\ncommands that do not embed import no encoder or model: " + ("yes" if not bad else f"NO: {', '.join(bad)}"))
    say(f"machine: {machine()}")


if __name__ == "__main__":
    main()
