"""`run_bot` start-up errors, and one answer from the real model through the fake Discord."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.service import RagService
from bot.settings import Settings
from store.chroma import ChromaLocation, ChromaStore
from tests.discord_fake import FakeDiscord
from tests.discord_harness import running_bot
from tests.fakes import FakeEmbedder, FakeLLM

DEPLOY = (
    "# Deploying\n\nThe bot runs on a single server. Start it with the command ragcord bot.\n\n"
    "## Tokens\n\nThe Discord token is read from the DISCORD_TOKEN environment variable only.\n"
)


def _settings(fake: FakeDiscord, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        discord_api_base=fake.api_base,  # type: ignore[call-arg]
        discord_gateway_url=fake.gateway_url,
        **overrides,
    )


def _fake_service(tmp_path: Path, settings: Settings) -> RagService:
    store = ChromaStore(ChromaLocation(path=tmp_path / "chroma"), refresh_interval=0.0)
    return RagService(store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=None, settings=settings)


def test_missing_token_is_explained(tmp_path, caplog):
    from bot.discord_app.run import run_bot

    with caplog.at_level(logging.ERROR):
        assert run_bot(Settings(_env_file=None, data_dir=tmp_path, discord_token=None)) == 2  # type: ignore[call-arg]
    assert "DISCORD_TOKEN is not set" in caplog.text and "Reset Token" in caplog.text


async def test_rejected_token_and_missing_intent_are_explained(tmp_path, caplog):
    from bot.discord_app.run import run_bot

    fake = await FakeDiscord(message_content_allowed=False).start()
    fake.configure()
    fake.add_guild("one")
    try:
        settings = _settings(fake, tmp_path, discord_token="not-the-token")
        with caplog.at_level(logging.ERROR):
            code = await asyncio.to_thread(run_bot, settings, service_factory=lambda: _fake_service(tmp_path, settings))
        assert code == 1
        assert "Discord rejected the token" in caplog.text
        assert not fake.identified  # never reached the gateway
        caplog.clear()

        settings = _settings(fake, tmp_path, discord_token=fake.token)
        with caplog.at_level(logging.ERROR):
            code = await asyncio.to_thread(run_bot, settings, service_factory=lambda: _fake_service(tmp_path, settings))
        assert code == 1
        assert "Message Content Intent" in caplog.text and "Privileged Gateway Intents" in caplog.text
        assert fake.identified and int(fake.identified[0]["intents"]) & (1 << 15)
    finally:
        await fake.close()


@pytest.mark.slow
async def test_real_model_answers_a_mention(tmp_path):
    """The whole stack: real encoder, real GGUF model, embedded Chroma, real discord.py, fake Discord."""
    fake = await FakeDiscord().start()
    guild = fake.add_guild("one")
    channel = fake.channel(guild)
    alice = fake.add_user("alice")
    fake.add_member(guild["id"], alice)
    settings = _settings(fake, tmp_path, discord_token=fake.token, edit_interval=0.5)
    service = await asyncio.to_thread(RagService.from_settings, settings)
    namespace = f"g{guild['id']}"
    try:
        result = await asyncio.to_thread(
            service.ingest_bytes, namespace, DEPLOY.encode(), "deploy.md", source="discord:test:deploy.md"
        )
        assert result.status == "added"
        async with running_bot(fake, settings, service, timeout=120):
            question = await fake.user_message(channel, alice, "How do I start the bot?", mention=True)
            await fake.wait_for(
                lambda: any(
                    "✅ done" in m["content"] or m["content"].startswith("⚠️") for m in fake.replies_to(question)
                ),
                120,
            )
            [answer] = fake.replies_to(question)
            assert "✅ done" in answer["content"], answer["content"]
            assert answer["embeds"] and "Deploying" in answer["embeds"][0]["description"]
            assert len(fake.edits[int(answer["id"])]) >= 1
            assert not fake.rate_limited and not fake.rejected
    finally:
        service.store.close()
        await fake.close()


async def test_the_fake_enforces_discords_limits():
    """The limits the other tests stay under are real: over them, the fake answers like Discord."""
    import aiohttp

    fake = await FakeDiscord(edit_limit=5, edit_window=5.0, interaction_timeout=0.2).start()
    guild = fake.add_guild("one")
    channel = fake.channel(guild)
    headers = {"Authorization": f"Bot {fake.token}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            url = f"{fake.api_base}/channels/{channel['id']}/messages"
            async with http.post(url, json={"content": "x" * 2001}) as r:
                assert r.status == 400 and (await r.json())["code"] == 50035
            async with http.post(url, json={"content": "hello"}) as r:
                mid = (await r.json())["id"]
            statuses = []
            for i in range(6):
                async with http.patch(f"{url}/{mid}", json={"content": f"edit {i}"}) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert r.headers["Via"] and (await r.json())["retry_after"] > 0
            assert statuses == [200] * 5 + [429]
            inter = await fake.slash(channel, fake.owner, "status")
            await asyncio.sleep(0.3)
            async with http.post(
                f"{fake.api_base}/interactions/{inter.id}/{inter.token}/callback", json={"type": 5}
            ) as r:
                assert r.status == 404 and (await r.json())["code"] == 10062
    finally:
        await fake.close()


async def test_an_expired_interaction_does_not_stop_the_bot(tmp_path, caplog):
    from tests.discord_harness import world

    llm = FakeLLM(default="Start it with the command ragcord bot. [1]")
    async with world(tmp_path, llm, fake_options={"interaction_timeout": 0.0}) as w:
        w.add_document("deploy.md", DEPLOY)
        with caplog.at_level(logging.ERROR):
            inter = await w.command(w.alice, "ask", {"question": "How do I start the bot?"})
            await w.fake.wait_for(lambda: any("/callback" in c.path for c in w.fake.rest_calls("POST")))
            await asyncio.sleep(0.2)
        assert inter.callback is None
        assert {c.status for c in w.fake.rest_calls("POST", "/callback")} == {404}  # defer, then the error report
        assert "Unknown interaction" in caplog.text
        answer = await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        assert "✅ done" in answer[-1]["content"]


async def test_sigterm_closes_the_connection_and_exits_cleanly(tmp_path):
    """`systemctl stop` / `docker stop` send SIGTERM: the bot logs off and exits 0, like Ctrl-C."""
    import signal
    import sys
    import textwrap

    fake = await FakeDiscord().start()
    fake.add_guild("one")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from bot.discord_app.run import run_bot
        from bot.service import RagService
        from bot.settings import Settings
        from store.chroma import ChromaLocation, ChromaStore
        from tests.fakes import FakeEmbedder, FakeLLM

        data = Path({str(tmp_path)!r})
        settings = Settings(_env_file=None, data_dir=data, discord_token={fake.token!r},
                            discord_api_base={fake.api_base!r}, discord_gateway_url={fake.gateway_url!r})
        def service():
            store = ChromaStore(ChromaLocation(path=data / "chroma"))
            return RagService(store, FakeEmbedder(), llm_factory=FakeLLM, lexical_dir=None, settings=settings)
        raise SystemExit(run_bot(settings, service_factory=service))
        """
    )
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=root, stderr=asyncio.subprocess.PIPE)
    try:
        await fake.wait_for(lambda: fake.identified or proc.returncode is not None, timeout=60, interval=0.05)
        assert fake.identified, "the bot never reached the gateway"
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=30)
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert code == 0, log[-2000:]  # not -15: it closed, it was not killed
        assert "SIGTERM received" in log and log.rstrip().endswith("stopped")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.close()
