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
print("\\n" + json.dumps({"code": code, "heavy": heavy}))
"""


def run(*args: str, tmp_path: Path) -> tuple[dict, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGCORD_", "CHROMA_", "DISCORD_"))}
    env.update(RAGCORD_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), COLUMNS="200")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, out.stdout, out.stderr


def test_help_lists_every_command_without_heavy_imports(tmp_path):
    result, stdout, _ = run("--help", tmp_path=tmp_path)
    assert result == {"code": 0, "heavy": []}
    for command in ("ingest", "ask", "summarize", "sources", "forget", "stats", "bot"):
        assert command in stdout


def test_store_commands_do_not_load_encoder_or_model(tmp_path):
    for args in (("sources",), ("stats",)):
        result, stdout, stderr = run(*args, tmp_path=tmp_path)
        assert result == {"code": 0, "heavy": []}, stderr
    result, _, stderr = run("forget", "nope", tmp_path=tmp_path)
    assert result == {"code": 1, "heavy": []}
    assert "no document called 'nope'" in stderr


def test_bot_without_token_says_what_to_do(tmp_path):
    result, stdout, stderr = run("bot", tmp_path=tmp_path)
    assert result["code"] != 0
    assert "DISCORD_TOKEN" in stdout + stderr


def test_ask_prints_the_checked_answer_when_checking_changed_the_stream(service, docs_dir, fake_llm, monkeypatch):
    import argparse
    import io

    from rich.console import Console

    import bot.cli as cli
    from tests.fakes import cite_first_passage

    service.ingest_paths("default", [docs_dir])
    monkeypatch.setattr(cli, "_service", lambda settings: service)
    console = Console(file=io.StringIO(), width=200)
    args = argparse.Namespace(question=["How", "long", "do", "refunds", "take?"], top_k=0, evidence_only=False)

    fake_llm.replies = ["Refunds take ten business days [9]."]
    assert cli.cmd_ask(args, service.settings, console) == 0
    out = console.file.getvalue()
    streamed, checked = out.split("Checked answer", 1)
    assert "[9]" in streamed  # what the model wrote, as it streamed
    assert "Refunds take ten business days" in checked and "[9]" not in checked.split("Sources")[0]

    fake_llm.replies = [cite_first_passage]  # a correctly cited sentence: nothing to change, no second copy
    console = Console(file=io.StringIO(), width=200)
    cli.cmd_ask(args, service.settings, console)
    assert "Checked answer" not in console.file.getvalue()
