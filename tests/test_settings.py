from pathlib import Path

import pytest

from bot.settings import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_env_example_and_docs():
    example = (ROOT / ".env.example").read_text()
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for env, _default, description in settings_table():
        assert description, env
        assert f"{env}=" in example, env
        assert f"`{env}`" in docs, env


def test_prefix_and_exceptions(monkeypatch):
    monkeypatch.setenv("RAGCORD_TOP_K", "7")
    monkeypatch.setenv("CHROMA_HOST", "http://chroma:9000")
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    monkeypatch.setenv("RAGCORD_ALLOWED_CHANNELS", "1, 2;3")
    s = Settings(_env_file=None)
    assert s.top_k == 7 and s.chroma_host == "http://chroma:9000"
    assert s.discord_token is not None and s.discord_token.get_secret_value() == "secret-token"
    assert "secret-token" not in repr(s)  # secrets never end up in logs
    assert s.allowed_channels == [1, 2, 3]


def test_invalid_value_is_rejected(monkeypatch):
    monkeypatch.setenv("RAGCORD_RETRIEVAL_MODE", "magic")
    with pytest.raises(ValueError):
        Settings(_env_file=None)
