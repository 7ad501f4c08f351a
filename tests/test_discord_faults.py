"""Discord misbehaving in the middle of an answer (issue 12): 429 storms, 5xx answers, a gateway
that drops or asks to reconnect. The answer ends "done" (or says it stopped), never "writing…" for ever.

The answers are scripted at the service (a stream of tokens at a steady pace), so these tests
exercise the Discord layer alone.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import discord

from bot.answer import Answer, AnswerEvent, Completed, Token
from tests.discord_harness import World, answer_finished, script_answers, world
from tests.fakes import FakeLLM

WORDS = " ".join(f"word{i}" for i in range(60))
FINAL = "-# ✅ done"
TRIALS = int(os.environ.get("RAGCORD_FAULT_TRIALS", "2"))  # more for the reliability figures in bench/README.md


def slow_answers(w: World, *, pace: float = 0.03) -> None:
    """Every question is answered with WORDS, a token every `pace` seconds (about 2 s in all)."""

    def ask_stream(namespace: str, question: str, history: Any = ()) -> Iterator[AnswerEvent]:
        for piece in re.findall(r"\S+\s*", WORDS):
            time.sleep(pace)
            yield Token(piece)
        yield Completed(Answer(question, text=WORDS))

    script_answers(w.service, lambda question: ask_stream("", question))


async def finished(w: World, question: dict[str, Any], timeout: float = 40.0) -> dict[str, Any]:
    await w.fake.wait_for(lambda: answer_finished(w.fake.replies_to(question)), timeout)
    [answer] = w.fake.replies_to(question)
    return answer


def complete(answer: dict[str, Any]) -> bool:
    return answer["content"].startswith(WORDS) and answer["content"].endswith(FINAL)


async def started(w: World, question: dict[str, Any], word: str = "word5") -> None:
    """The acknowledgement is posted and the answer is streaming (past `word`)."""
    await w.fake.wait_for(lambda: w.fake.replies_to(question), 15)
    await w.fake.wait_for(lambda: word in w.fake.replies_to(question)[0]["content"], 15)


async def test_429_storms_mid_answer_still_end_done(tmp_path):
    rng = random.Random(12)
    failures = 0
    async with world(tmp_path, FakeLLM(), rate_limit_per_minute=0) as w:
        slow_answers(w)
        for _ in range(TRIALS):
            question = await w.ask(w.alice, "Tell me the words")
            await started(w, question, f"word{rng.randint(2, 40)}")
            storm = w.fake.inject("PATCH", r"/channels/\d+/messages/\d+", [429] * rng.randint(6, 14), retry_after=0.05)
            answer = await finished(w, question)
            failures += not complete(answer)
            assert storm.served >= 6
        assert failures == 0, f"{failures} of {TRIALS} answers did not end done"
        # slash commands edit through the interaction webhook: the same there
        inter = await w.command(w.bob, "ask", {"question": "Tell me the words"})
        await w.fake.wait_for(lambda: "word5" in str(w.fake.interaction_messages(inter)))
        w.fake.inject("PATCH", r"/webhooks/\d+/", [429] * 8, retry_after=0.05)
        [reply] = await w.reply(inter, timeout=40)
        assert complete(reply)
        # a storm on the acknowledgement itself: it is posted late, and the answer still ends done
        storm = w.fake.inject("POST", r"/channels/\d+/messages$", [429] * 7, retry_after=0.05)
        question = await w.ask(w.carol, "Tell me the words")
        assert complete(await finished(w, question))
        assert storm.served == 7


async def test_server_errors_on_create_and_edit_still_end_done(tmp_path):
    rng = random.Random(5)
    failures = 0
    async with world(tmp_path, FakeLLM(), rate_limit_per_minute=0) as w:
        slow_answers(w)
        for _ in range(TRIALS):
            # 500/502/504 discord.py retries itself (1 s, then 3 s); 503 it raises at once
            w.fake.inject("POST", r"/channels/\d+/messages$", [rng.choice([500, 502, 504])])
            question = await w.ask(w.alice, "Tell me the words")
            await started(w, question, f"word{rng.randint(2, 30)}")
            statuses = [503] * rng.randint(3, 8) + [rng.choice([500, 502, 504])]
            outage = w.fake.inject("PATCH", r"/channels/\d+/messages/\d+", statuses)
            answer = await finished(w, question, timeout=60)
            failures += not complete(answer)
            assert outage.served == len(statuses)
        assert failures == 0, f"{failures} of {TRIALS} answers did not end done"
        inter = await w.command(w.bob, "ask", {"question": "Tell me the words"})  # the interaction webhook
        await w.fake.wait_for(lambda: "word5" in str(w.fake.interaction_messages(inter)))
        w.fake.inject("PATCH", r"/webhooks/\d+/", [503] * 4)
        [reply] = await w.reply(inter, timeout=60)
        assert complete(reply)


async def test_gateway_reconnect_and_drop_mid_answer_resume_and_the_answer_ends_done(tmp_path):
    rng = random.Random(7)
    async with world(tmp_path, FakeLLM(), rate_limit_per_minute=0, fake_options={"heartbeat_interval": 0.5}) as w:
        slow_answers(w)
        for trial in range(max(TRIALS, 3)):
            close_code = (None, 4000, 1001)[trial % 3]  # op 7 RECONNECT, a dropped connection, a server restart
            resumes = len(w.fake.resumed)
            question = await w.ask(w.alice, "Tell me the words")
            await started(w, question, f"word{rng.randint(2, 40)}")
            await w.fake.reconnect(close_code=close_code)
            await w.fake.wait_for(lambda n=resumes: len(w.fake.resumed) > n, 15)
            assert w.fake.resumed[-1]["session_id"] == "fake-session"
            assert complete(await finished(w, question))
            # the resumed connection delivers the next question
            after = await w.ask(w.bob, "Tell me the words again")
            assert complete(await finished(w, after))
        # a session that cannot be resumed: INVALID_SESSION, then a fresh IDENTIFY, mid-answer
        identified = len(w.fake.identified)
        question = await w.ask(w.alice, "Tell me the words")
        await started(w, question)
        w.fake.refuse_resume = True
        await w.fake.reconnect()
        await w.fake.wait_for(lambda: len(w.fake.identified) > identified, 20)
        assert w.fake.invalidated == 1
        assert complete(await finished(w, question))
        after = await w.ask(w.bob, "Tell me the words again")
        assert complete(await finished(w, after))


async def test_discord_endpoints_are_restored_when_the_bot_closes(tmp_path):
    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    async with world(tmp_path, FakeLLM()) as w:
        assert w.fake.api_base == discord.http.Route.BASE  # the bot pointed discord.py here from its settings
        bot = w.bot
    assert bot.is_closed()
    assert before == (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
