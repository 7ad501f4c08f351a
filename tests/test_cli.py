"""The CLI's fast paths, run in a fresh interpreter so imports are observable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
from bot.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("sentence_transformers", "torch", "llama_cpp", "discord") if m in sys.modules]
import os
print("\\n" + json.dumps({"code": code, "heavy": heavy, "omp": os.environ.get("OMP_WAIT_POLICY")}))
"""


def run(*args: str, tmp_path: Path) -> tuple[dict, str, str]:
    ours = ("RAGCORD_", "CHROMA_", "DISCORD_", "OMP_", "GOMP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(RAGCORD_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), COLUMNS="200")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, out.stdout, out.stderr


def test_help_lists_every_command_without_heavy_imports(tmp_path):
    result, stdout, _ = run("--help", tmp_path=tmp_path)
    assert result == {"code": 0, "heavy": [], "omp": None}
    for command in ("ingest", "ask", "summarize", "sources", "forget", "stats", "bot"):
        assert command in stdout


def test_store_commands_do_not_load_encoder_or_model(tmp_path):
    for args in (("sources",), ("stats",)):
        result, stdout, stderr = run(*args, tmp_path=tmp_path)
        assert result == {"code": 0, "heavy": [], "omp": None}, stderr
    result, _, stderr = run("forget", "nope", tmp_path=tmp_path)
    assert result == {"code": 1, "heavy": [], "omp": None}
    assert "no document called 'nope'" in stderr


def test_ingest_asks_for_passive_openmp_waits_before_torch_loads(tmp_path):
    """`ragcord ingest` runs no model, so torch's idle threads may sleep (see passive_openmp_waits)."""
    (tmp_path / "empty").mkdir()
    result, _, stderr = run("ingest", str(tmp_path / "empty"), tmp_path=tmp_path)
    assert result["omp"] == "PASSIVE", stderr


def test_passive_openmp_waits_keeps_the_users_choice_and_comes_only_before_torch(monkeypatch):
    from store.embedder import passive_openmp_waits

    for name in ("torch", "llama_cpp"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.setenv(name, "x")  # restored (to absent) after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("GOMP_SPINCOUNT", "10000")
    assert not passive_openmp_waits() and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setitem(sys.modules, "llama_cpp", object())  # libgomp already loaded: too late
    assert not passive_openmp_waits() and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delitem(sys.modules, "llama_cpp")
    assert passive_openmp_waits() and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert not passive_openmp_waits() and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_bot_without_token_says_what_to_do(tmp_path):
    result, stdout, stderr = run("bot", tmp_path=tmp_path)
    assert result["code"] != 0
    assert "DISCORD_TOKEN" in stdout + stderr


def test_ask_prints_the_evidence_first_then_the_checked_answer(service, docs_dir, fake_llm, monkeypatch):
    import argparse
    import io

    from rich.console import Console

    import bot.cli as cli

    service.ingest_paths("default", [docs_dir])
    monkeypatch.setattr(cli, "_service", lambda settings: service)
    console = Console(file=io.StringIO(), width=200)
    args = argparse.Namespace(question=["How", "long", "do", "refunds", "take?"], top_k=0, evidence_only=False)

    fake_llm.replies = ["Refunds take ten business days [9]."]
    assert cli.cmd_ask(args, service.settings, console) == 0
    out = console.file.getvalue()
    lead, rest = out.split("the model's phrasing (checking…):", 1)
    assert '"Invoices are sent on the first Monday of every month. Refunds take ten business days." — ' in lead
    streamed, checked = rest.split("\nAnswer", 1)
    assert "[9]" in streamed  # what the model wrote, as it streamed
    assert "Refunds take ten business days. [1]" in checked and "[9]" not in checked.split("Sources")[0]

    fake_llm.replies = ["Invoices are sent every month. [1]"]  # backed, but not what was asked
    console = Console(file=io.StringIO(), width=200)
    cli.cmd_ask(args, service.settings, console)
    out = console.file.getvalue()
    assert "\nAnswer" not in out
    after = out.split("Invoices are sent every month. [1]", 1)[1].split("Sources")[0]
    assert after.lower().count("the model's phrasing") == 1, after  # said once, with why: not twice in other words
    assert "did not pass the checks" in after


def test_a_crash_in_native_code_leaves_a_traceback_for_the_admin(tmp_path):
    """llama.cpp, Chroma's Rust core and onnxruntime run native code: a segfault there must
    leave the Python stack in the log (faulthandler), not only an exit status of -11."""
    crash = (
        "import ctypes, sys\n"
        "import bot.settings\n"
        "def crash():\n"
        "    ctypes.string_at(0)  # stands for a native library reading a damaged file\n"
        "bot.settings.Settings = crash\n"
        "from bot.cli import main\n"
        "main(['stats'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGCORD_", "CHROMA_", "DISCORD_"))}
    env.update(RAGCORD_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", crash], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "Segmentation fault" in out.stderr and "in crash" in out.stderr and "cli.py" in out.stderr, out.stderr
