"""Asking the bot through the fake Discord: the real discord.py client, a scripted model."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

from bot.answer import Turn
from bot.discord_app.queue import STOPPED_NOTE
from bot.llm import Message
from tests.discord_harness import EPHEMERAL, INTERVAL, message_payloads, world
from tests.fakes import FakeLLM

DEPLOY = (
    "# Deploying\n\nThe bot runs on a single server. Start it with the command ragcord bot.\n\n"
    "## Tokens\n\nThe Discord token is read from the DISCORD_TOKEN environment variable only.\n"
)


def cited_sentences(times: int) -> object:
    """A reply citing passage 1, `times` sentences long (long enough to stream in several edits);
    numbered, since a sentence said twice ends the answer."""

    def reply(messages: Sequence[Message]) -> str:
        first = "Start it with the command ragcord bot. [1]"  # answers "How do I start the bot?"
        # distinct words in every step: a phrase said twice is a loop, and loops are cut
        return " ".join(
            [f"Step 1: {first}"] + [f"Step {i + 1} then checks item {i + 1} carefully." for i in range(1, times)]
        )

    return reply


def assert_never_pings(fake: object) -> None:
    payloads = message_payloads(fake)  # type: ignore[arg-type]
    assert payloads
    for body in payloads:
        assert body.get("allowed_mentions") == {"parse": []}, body


async def test_mention_streams_answer_with_sources(tmp_path):
    llm = FakeLLM([cited_sentences(4)], delay=0.04)
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        question = await w.ask(w.alice, "How do I start the bot?")
        answer = await w.answer(question)

        assert len(answer) == 1
        final = answer[0]
        mid = int(final["id"])
        assert len(w.fake.edits[mid]) >= 3  # streamed: several throttled edits
        assert "✅ done" in final["content"]
        assert final["content"].startswith("Step 1: Start it with the command ragcord bot. [1]")
        assert "writing…" not in final["content"]
        [embed] = final["embeds"]
        assert embed["title"] == "Sources"
        assert "**[1] Deploying**" in embed["description"]
        assert "\n> " in embed["description"]  # the quote
        # the "writing…" state was visible while streaming
        creates = w.fake.rest_calls("POST", r"/channels/\d+/messages$")
        assert "writing" in creates[0].json["content"]
        assert not w.fake.rate_limited and not w.fake.rejected
        assert_never_pings(w.fake)


async def test_edits_stay_under_discords_rate_limit(tmp_path):
    llm = FakeLLM([cited_sentences(12)], delay=0.03)  # ~3 s of tokens
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        answer = await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        times = w.fake.edits[int(answer[0]["id"])]
        assert len(times) >= 6
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= INTERVAL * 0.9
        assert not w.fake.rate_limited


async def test_slash_ask_defers_at_once_even_when_the_queue_is_busy(tmp_path):
    llm = FakeLLM([cited_sentences(10), "Use the command ragcord bot. [1]"], delay=0.05)
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        busy = await w.ask(w.bob, "How do I start the bot?")
        await w.fake.wait_for(lambda: len(llm.calls) == 1)  # bob's answer is being generated
        inter = await w.command(w.alice, "ask", {"question": "How do I start the bot?", "private": True})
        await w.fake.wait_for(lambda: inter.callback is not None, 3)

        assert inter.callback_at - inter.created < 1.0
        assert inter.callback["type"] == 5  # deferred ("thinking")
        assert inter.ephemeral
        original = await w.reply(inter)
        assert any(
            "1 question ahead of you" in c.json.get("content", "") for c in w.fake.rest_calls("PATCH", inter.token)
        )  # its queue position was shown
        assert "✅ done" in original[-1]["content"]
        assert int(original[-1]["flags"]) & EPHEMERAL
        assert original[-1]["embeds"][0]["title"] == "Sources"
        await w.answer(busy)
        assert not [c for c in w.fake.rejected if "/callback" in c.path]


async def test_long_answer_is_split_without_losing_text(tmp_path):
    words = " ".join(f"word{i}" for i in range(900))  # ~7,000 characters
    llm = FakeLLM([words + " ragcord bot [1]"], delay=0.0005)
    async with world(tmp_path, llm, answer_mode="generate") as w:  # the model's text leads, however long
        w.add_document("deploy.md", DEPLOY)
        answer = await w.answer(await w.ask(w.alice, "Tell me everything about the bot"), timeout=20)

        assert len(answer) >= 4
        assert all(len(m["content"]) <= 2000 for m in answer)
        shown = " ".join(
            line for m in answer for line in m["content"].splitlines() if not line.startswith(("-# ", "> "))
        )
        # every word arrives; the "[1]" may go (verification drops markers a passage does not back)
        assert [w for w in shown.split() if w != "[1]"] == (words + " ragcord bot").split()
        assert "✅ done" in answer[-1]["content"]
        assert answer[-1]["embeds"] and not any(m["embeds"] for m in answer[:-1])
        assert not w.fake.rejected


async def test_failure_mid_answer_is_explained_and_the_bot_keeps_serving(tmp_path, caplog):
    llm = FakeLLM(
        ["Start it with the command ragcord bot, then wait for the ready line. [1]"] * 2, delay=0.01, fail_after=4
    )
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        with caplog.at_level(logging.ERROR):
            failed = await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        # the reader's quote still answers; the half-written text is gone, and the note says why
        assert failed[-1]["content"].startswith("“The bot runs on a single server.")
        assert "” — *Deploying* [1]" in failed[-1]["content"]
        assert (
            "the model failed while phrasing" in failed[-1]["content"]
            and "Start it with" not in failed[-1]["content"].split("”")[1]
        )
        assert failed[-1]["embeds"]
        assert any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)  # traceback logged

        llm.fail_after = None
        ok = await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        assert "✅ done" in ok[-1]["content"]

        # an unexpected error outside the model (here: retrieval) ends the same way
        real = w.service.prepare_answer

        def corrupt(*args: object) -> None:
            raise RuntimeError("index is corrupt")

        w.service.prepare_answer = corrupt
        broken = await w.answer(await w.ask(w.bob, "How do I start the bot?"))
        assert re.fullmatch(
            r"⚠️ the model failed \(reference `[0-9a-f]{8}`\); it has been logged, try again", broken[-1]["content"]
        )
        w.service.prepare_answer = real
        assert "✅ done" in (await w.answer(await w.ask(w.bob, "How do I start the bot?")))[-1]["content"]


async def test_three_users_share_the_model_fairly_and_the_loop_stays_responsive(tmp_path):
    llm = FakeLLM(default=cited_sentences(3), delay=0.03)  # each answer ~0.8 s of blocking generation
    async with world(tmp_path, llm, rate_limit_per_minute=10) as w:
        w.add_document("deploy.md", DEPLOY)
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        beats = len(w.fake.heartbeats)
        t0 = time.monotonic()
        # alice asks twice before bob and carol ask once: round-robin serves bob and carol before her second
        qa1 = await w.ask(w.alice, "How do I start the bot?")
        qa2 = await w.ask(w.alice, "Which command starts the bot?")
        qb = await w.ask(w.bob, "How is the bot started?")
        qc = await w.ask(w.carol, "What starts the bot?")
        answers = [await w.answer(q, timeout=20) for q in (qa1, qa2, qb, qc)]
        elapsed = time.monotonic() - t0
        ticking.cancel()

        assert all("✅ done" in a[-1]["content"] for a in answers)
        first_posts = {
            c.json["message_reference"]["message_id"]: c.json["content"]
            for c in w.fake.rest_calls("POST", r"/channels/\d+/messages$")
        }
        edits = " ".join(c.json.get("content", "") for c in w.fake.rest_calls("PATCH"))
        assert "ahead of you" in first_posts[int(qc["id"])] or "2 questions ahead of you" in edits
        finished = {
            q["id"]: max(w.fake.edits[int(a[-1]["id"])]) for q, a in zip((qa1, qa2, qb, qc), answers, strict=True)
        }
        assert finished[qb["id"]] < finished[qa2["id"]] and finished[qc["id"]] < finished[qa2["id"]]
        # the event loop kept running while the model generated in its worker thread
        assert max(gaps) < 0.25, max(gaps)
        assert len(w.fake.heartbeats) - beats >= int(elapsed / w.fake.heartbeat_interval) - 1
        assert not w.fake.rate_limited


async def test_stopping_the_bot_tells_the_questions_it_holds_to_ask_again(tmp_path):
    llm = FakeLLM(default=cited_sentences(40), delay=0.05)  # an answer takes ~20 s: it is cut short
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        writing = await w.ask(w.alice, "How do I start the bot?")
        queued = await w.ask(w.bob, "Which command starts the bot?")

        def shown(question: dict[str, object]) -> str:
            replies = w.fake.replies_to(question)
            return replies[-1]["content"] if replies else ""

        try:
            await w.fake.wait_for(lambda: "ragcord bot. [1]" in shown(writing) and "ahead of you" in shown(queued))
        except TimeoutError:
            raise AssertionError((shown(writing), shown(queued))) from None
        await asyncio.wait_for(w.bot.close(), 10)  # what Ctrl-C and SIGTERM do

        for question in (writing, queued):
            assert shown(question) == f"⚠️ {STOPPED_NOTE}", shown(question)
        assert len(llm.calls) == 1  # the waiting question never reached the model


async def test_rate_limit_is_explained(tmp_path):
    llm = FakeLLM(default="Use ragcord bot. [1]")
    async with world(tmp_path, llm, rate_limit_per_minute=2) as w:
        w.add_document("deploy.md", DEPLOY)
        for _ in range(2):
            await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        third = await w.ask(w.alice, "And again?")
        await w.fake.wait_for(lambda: w.fake.replies_to(third))
        [reply] = w.fake.replies_to(third)
        assert "2 questions a minute" in reply["content"] and "Try again in" in reply["content"]
        inter = await w.command(w.alice, "ask", {"question": "How do I start the bot?"})
        [refusal] = await w.reply(inter, streamed=False)
        assert "Slow down" in refusal["content"] and inter.ephemeral
        assert len(llm.calls) == 2
        # others are not affected
        assert "✅ done" in (await w.answer(await w.ask(w.bob, "How do I start the bot?")))[-1]["content"]


async def test_mentions_never_ping(tmp_path):
    llm = FakeLLM(["@everyone and @here: run ragcord bot <@123> [1]"])
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        [answer] = await w.answer(await w.ask(w.alice, "How do I start the bot? @everyone"))
        assert "@\u200beveryone and @\u200bhere" in answer["content"]
        assert "@everyone" not in answer["content"] and "@here" not in answer["content"]
        inter = await w.command(w.alice, "status")
        await w.reply(inter, streamed=False)
        assert_never_pings(w.fake)


async def test_reply_chain_is_the_conversation(tmp_path):
    llm = FakeLLM(default="Use the command ragcord bot. [1]")
    async with world(tmp_path, llm, history_turns=2) as w:
        w.add_document("deploy.md", DEPLOY)
        seen: list[list[Turn]] = []
        real = w.service.prepare_answer

        def spy(namespace: str, question: str, history: Sequence[Turn] = (), scopes=None):  # type: ignore[no-untyped-def]
            seen.append(list(history))
            return real(namespace, question, history, scopes)

        w.service.prepare_answer = spy
        question = await w.ask(w.alice, "How do I start the bot?")
        for n in range(3):
            answer = await w.answer(question)
            question = await w.ask(w.alice, f"follow-up {n}?", reply_to=answer[-1], mention=False)
        last = await w.answer(question)

        assert [len(h) for h in seen] == [0, 1, 2, 2]
        assert seen[1] == [Turn("How do I start the bot?", "Use the command ragcord bot. [1]")]
        assert [t.question for t in seen[3]] == ["follow-up 0?", "follow-up 1?"]
        assert last[0]["content"].startswith("-# using the last 2 turns")
        assert "using the last" not in (w.fake.replies_to(w.fake.channel_messages(w.channel)[0])[0]["content"])


async def test_thread_per_question(tmp_path):
    llm = FakeLLM(default="Use the command ragcord bot. [1]")
    async with world(tmp_path, llm, thread_per_question=True) as w:
        w.add_document("deploy.md", DEPLOY)
        question = await w.ask(w.alice, "How do I start the bot?")
        await w.fake.wait_for(lambda: int(question["id"]) in w.fake.channels)
        thread = w.fake.channels[int(question["id"])]
        assert thread["type"] == 11 and thread["name"] == "How do I start the bot?"
        await w.fake.wait_for(lambda: "✅ done" in " ".join(m["content"] for m in w.fake.bot_messages(thread)))
        # in the bot's thread no mention is needed, and the thread is the history
        seen: list[list[Turn]] = []
        real = w.service.prepare_answer
        w.service.prepare_answer = lambda ns, q, h=(), s=None: seen.append(list(h)) or real(ns, q, h, s)
        await w.fake.user_message(thread, w.alice, "and where is the token read from?")
        await w.fake.wait_for(lambda: sum("✅ done" in m["content"] for m in w.fake.bot_messages(thread)) == 2)
        assert seen == [[Turn("How do I start the bot?", "Use the command ragcord bot. [1]")]]
        assert not w.fake.bot_messages(w.channel)  # nothing answered in the channel itself


async def test_allowed_channels_and_direct_messages(tmp_path):
    llm = FakeLLM(default="Use the command ragcord bot. [1]")

    def only_general(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
        return {"allowed_channels": [int(fake.channel(guild)["id"])]}

    async with world(tmp_path / "channels", llm, prepare=only_general) as w:  # settings are not changed later
        w.add_document("deploy.md", DEPLOY)
        other = w.fake.add_channel(w.guild["id"], "random")
        ignored = await w.ask(w.alice, "How do I start the bot?", channel=other)
        inter = await w.command(w.alice, "ask", {"question": "How do I start the bot?"}, channel=other)
        [refusal] = await w.reply(inter, streamed=False)
        assert inter.ephemeral and f"I only answer in <#{w.channel['id']}>" in refusal["content"]
        assert "✅ done" in (await w.answer(await w.ask(w.alice, "How do I start the bot?")))[-1]["content"]
        assert not w.fake.replies_to(ignored)

        dm = w.fake.add_dm(w.bob)
        unanswered = await w.fake.user_message(dm, w.bob, "How do I start the bot?")
        await asyncio.sleep(0.3)  # the bot has seen it, and DMs are not allowed
        assert not w.fake.replies_to(unanswered)
        assert len(llm.calls) == 1

    def with_dms(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
        return {"allow_dms": True, "dm_namespace": f"g{guild['id']}"}  # DMs read this server's documents

    async with world(tmp_path / "dms", llm, prepare=with_dms) as w:
        w.add_document("deploy.md", DEPLOY)
        dm = w.fake.add_dm(w.bob)
        answer = await w.answer(await w.fake.user_message(dm, w.bob, "How do I start the bot?"))
        assert "✅ done" in answer[-1]["content"] and answer[-1]["embeds"]
        assert len(llm.calls) == 2


async def test_the_evidence_shows_before_the_models_first_token(tmp_path):
    llm = FakeLLM(["Use the command ragcord bot to start it. [1]"], delay=0.6)  # a slow first token
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        final = await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        calls = w.fake.rest_calls("POST", r"/channels/\d+/messages$") + w.fake.rest_calls(
            "PATCH", r"/channels/\d+/messages/\d+$"
        )
        contents = [c.json.get("content", "") for c in sorted(calls, key=lambda c: c.at)]
        with_lead = [i for i, text in enumerate(contents) if "“The bot runs on a single server." in text]
        with_model = [i for i, text in enumerate(contents) if "Use the command" in text]
        assert with_lead and with_model and with_lead[0] < with_model[0]
        assert (
            "writing" in contents[with_lead[0]]
            or "phrasing" in contents[with_lead[0]]
            or "⏳" in contents[with_lead[0]]
        )
        # the final message: the checked answer, its quote, the sources
        assert final[-1]["content"].startswith("Use the command ragcord bot to start it. [1]\n> “The bot")
        assert final[-1]["embeds"]


async def test_a_queued_question_shows_its_evidence_while_it_waits_for_the_model(tmp_path):
    # the first answer holds the model for seconds; the second is short
    llm = FakeLLM([cited_sentences(12), "Refunds take ten business days. [1]"], delay=0.05)
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        w.add_document("billing.md", "# Billing\n\nRefunds take ten business days.\n")
        first = await w.ask(w.alice, "How do I start the bot?")
        await w.fake.wait_for(lambda: "Step 2" in "".join(m["content"] for m in w.fake.replies_to(first)))
        queued = await w.ask(w.bob, "How long do refunds take?")

        def shown(question: dict[str, object]) -> str:
            replies = w.fake.replies_to(question)
            return replies[-1]["content"] if replies else ""

        await w.fake.wait_for(lambda: "Refunds take ten business days." in shown(queued), timeout=3)
        assert "ahead of you" in shown(queued) and "✅ done" not in shown(first)  # still waiting for the model
        assert len(llm.calls) == 1
        await w.answer(queued, timeout=30)


async def test_a_store_outage_is_said_as_one_in_discord(tmp_path):
    from store.protocol import STORE_OUTAGE_NOTICE, StoreUnavailable

    llm = FakeLLM(default="Use the command ragcord bot. [1]")
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        real = w.service.retriever.search

        def down(*args: object, **kwargs: object) -> None:
            raise StoreUnavailable("cannot reach chroma at 127.0.0.1:8000")

        w.service.retriever.search = down  # type: ignore[method-assign]
        [reply] = await w.answer(await w.ask(w.alice, "How do I start the bot?"))
        assert reply["content"] == f"⚠️ {STORE_OUTAGE_NOTICE}"
        assert "couldn't find" not in reply["content"] and "127.0.0.1" not in reply["content"]
        w.service.retriever.search = real  # type: ignore[method-assign]
        assert "✅ done" in (await w.answer(await w.ask(w.alice, "How do I start the bot?")))[-1]["content"]
        assert llm.calls and len(llm.calls) == 1


async def test_questions_reach_the_model_in_the_order_they_arrived_however_long_retrieval_takes(tmp_path):
    llm = FakeLLM(default="Use the command ragcord bot. [1]", delay=0.01)
    async with world(tmp_path, llm) as w:
        w.add_document("deploy.md", DEPLOY)
        real = w.service.prepare_answer

        def slow_for_alice(namespace, question, history=(), scopes=None):  # type: ignore[no-untyped-def]
            if "first" in question:
                time.sleep(0.8)  # the first question's retrieval is slow (a cold index, a busy store)
            return real(namespace, question, history, scopes)

        w.service.prepare_answer = slow_for_alice
        first = await w.ask(w.alice, "How do I start the bot, first?")
        second = await w.ask(w.bob, "How do I start the bot, second?")
        await w.answer(first)
        await w.answer(second)
        asked = [m[-1].content for m in llm.calls]
        assert "first" in asked[0] and "second" in asked[1], asked
