"""Indexed channel history through the fake Discord and the real discord.py client (issue 13, parts 2-4).

#general is indexed from the start (RAGCORD_INDEX_CHANNELS) and holds seeded history;
#design (with a public thread and an archived one) is added with /index add; #team is
role-gated (bob has no team role). The model echoes every passage it is given, so what
retrieval let through shows in the reply.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.discord_app.cogs.history import History
from ingest.chat import ChatMessage, Window, chat_chunks, group_messages
from tests.discord_fake import MANAGE_THREADS
from tests.discord_harness import World, world
from tests.fakes import FakeEmbedder, FakeLLM
from tests.test_permissions import HISTORY, VIEW, echo_passages

GENERAL = int(os.environ.get("RAGCORD_TEST_HISTORY_MESSAGES", "150"))  # seeded #general messages


def prepare(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    users = {u["username"]: u for u in fake._users.values() if not u.get("bot")}
    alice, carol = users["alice"], users["carol"]
    general = fake.channel(guild)
    for i in range(GENERAL):
        fake.seed_message(general, alice if i % 2 else carol, f"general chatter number {i} about item{i}")
    design = fake.add_channel(guild["id"], "design")
    for i in range(60):
        fake.seed_message(design, alice, f"design note {i} on widget{i}")
    thread = fake.add_public_thread(design, "launch plan")
    for i in range(40):
        fake.seed_message(thread, carol, f"launch thread step {i} for rocket{i}")
    old = fake.add_public_thread(design, "old ideas", archived=True)
    fake.seed_message(old, alice, "the archived otter idea is OTTER-55")
    team = fake.add_role(guild, "team")
    fake.add_member(guild["id"], alice, [team])
    everyone = guild["roles"][0]
    team_channel = fake.add_channel(guild["id"], "team")
    fake.set_overwrites(
        team_channel, (everyone, 0, VIEW), (team, VIEW | HISTORY, 0), (fake.bot_user, VIEW | HISTORY, 0)
    )
    fake.seed_message(team_channel, alice, "the secret badger code is TEAM-9090")
    return {"index_channels": [int(general["id"])], "rate_limit_per_minute": 0}


def cog(w: World) -> History:
    found = w.bot.get_cog("History")  # load_extension imports the module anew: not isinstance-checkable
    assert type(found).__name__ == "History"
    return found  # type: ignore[no-any-return]


async def settled(w: World, timeout: float = max(30.0, GENERAL / 100)) -> None:
    """Every backfill finished and every dirty window ingested."""
    history = cog(w)

    await w.fake.wait_for(lambda: history.idle, timeout)
    await asyncio.sleep(0.3)
    await w.fake.wait_for(lambda: history.idle, timeout)


def stored_chunks(w: World) -> list[Any]:
    ns = w.namespace()
    docs = [d for d in w.service.documents(ns) if d.kind == "chat"]
    return w.service.store.get_chunks(ns, [i for d in docs for i in d.chunk_ids])


async def ask_private(w: World, user: dict[str, Any], question: str) -> str:
    start = len(w.fake.calls)
    inter = await w.command(user, "ask", {"question": question, "private": True})
    await w.reply(inter)
    return "\n".join(json.dumps(c.json, ensure_ascii=False) for c in w.fake.calls[start:] if c.json is not None)


# -- chunking (no Discord) ----------------------------------------------------------------------
def m(mid: int, author: int, ts: float, text: str, reply: int | None = None) -> ChatMessage:
    return ChatMessage(mid, author, f"user{author}", ts, text, f"https://discord.com/channels/1/2/{mid}", reply)


def test_groups_follow_replies_authors_and_time_gaps():
    msgs = [
        m(1, 1, 0, "shall we ship on friday?"),
        m(2, 2, 60, "yes"),
        m(3, 1, 120, "ok"),
        m(4, 3, 180, "unrelated: lunch?"),  # a third author, not a reply: a new group
        m(5, 1, 200, "friday it is", reply=2),  # a reply into an earlier group, but that group is closed
        m(6, 1, 200 + 16 * 60, "later thought"),  # a gap over 15 min
    ]
    groups = group_messages(msgs)
    assert [[x.id for x in g] for g in groups] == [[1, 2, 3], [4], [5], [6]]


def test_every_message_is_its_own_chunk_citing_it():
    from ingest.chunking import Chunker

    emb = FakeEmbedder()
    chunker = Chunker(emb.count_tokens, max_tokens=64, target_tokens=48, overlap_tokens=0)
    long = " ".join(f"word{i}" for i in range(200))
    window = Window(
        1,
        2,
        "#design",
        "2026-03-04",
        [m(10, 1, 1772600000, "we launch in march"), m(11, 2, 1772600060, long)],
        {"scope": "2"},
    )
    doc, chunks = chat_chunks(window, chunker)
    first = dict(chunks[0].extra)
    assert chunks[0].text == "we launch in march"
    assert first["jump_url"].endswith("/10") and first["author"] == "user1" and first["channel"] == "#design"
    assert chunks[0].section == "#design · user1 · 2026-03-04" and chunks[0].scope == "2"
    rest = chunks[1:]
    assert len(rest) > 1 and all(dict(c.extra)["message_id"] == "11" for c in rest)  # a long message is cut
    assert " ".join(c.text for c in rest).split() == long.split()
    assert doc.title == "#design 2026-03-04"


# -- through the fake Discord ---------------------------------------------------------------------
async def test_backfill_of_channels_and_threads_then_live_edits_and_deletions(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        design = w.fake.channel(w.guild, "design")
        inter = await w.command(w.admin, "index add", channel=design)
        await w.reply(inter, streamed=False)
        assert "Indexing" in w.fake.interaction_messages(inter)[0]["content"]
        await settled(w)
        chunks = stored_chunks(w)
        ids = [dict(c.extra)["message_id"] for c in chunks]
        assert len(ids) == len(set(ids)) == GENERAL + 60 + 40 + 1  # none missing, none twice
        by_text = {c.text: c for c in chunks}
        assert by_text["launch thread step 3 for rocket3"].scope == design["id"]  # a public thread: its parent's
        assert "OTTER-55" in await ask_private(w, w.bob, "What is the archived otter idea?")

        # an answer cites the message: jump link, channel, author, date
        target = next(x for x in w.fake.channel_messages(design) if x["content"] == "design note 7 on widget7")
        await w.fake.edit_user_message(target, "design note 7: the walrus code is TIDE-42")
        await settled(w)
        text = await ask_private(w, w.bob, "What is the walrus code?")
        assert "TIDE-42" in text
        jump = f"https://discord.com/channels/{w.guild['id']}/{design['id']}/{target['id']}"
        assert jump in text and "#design · alice · " in text, text

        # a live message is indexed; a deletion is gone from answers within seconds
        live = await w.fake.user_message(design, w.carol, "the heron code is HERON-77")
        await settled(w, 5)
        assert "HERON-77" in await ask_private(w, w.bob, "What is the heron code?")
        await w.fake.delete_message(design, live)
        await settled(w, 5)
        assert "HERON-77" not in await ask_private(w, w.bob, "What is the heron code?")
        await w.fake.bulk_delete(design, [target])
        await settled(w, 5)
        assert "TIDE-42" not in await ask_private(w, w.bob, "What is the walrus code?")

        # a deleted thread's content is forgotten; /index remove forgets a channel's
        thread = next(c for c in w.fake.channels.values() if c.get("name") == "launch plan")
        await w.fake.delete_thread(thread)
        await settled(w, 5)
        assert not [c for c in stored_chunks(w) if "rocket" in c.text]
        inter = await w.command(w.admin, "index remove", channel=design)
        await w.reply(inter, streamed=False)
        await settled(w, 5)
        assert not [c for c in stored_chunks(w) if "widget" in c.text or "OTTER" in c.text]
        assert len(stored_chunks(w)) == GENERAL
        status = await w.command(w.bob, "index status")
        assert "following live" in (await w.reply(status, streamed=False))[0]["content"]


def slow_history(fake: Any, delay: float) -> None:
    """Each history page takes `delay` seconds (a big server, Discord's pace), so a test can stop the bot mid-way."""
    table = []
    for verb, pattern, handler in fake._table:
        if handler.__name__ == "_history":

            async def slow(self: Any, *a: Any, _h: Any = handler, **k: Any) -> Any:
                await asyncio.sleep(delay)
                return await _h(self, *a, **k)

            handler = slow
        table.append((verb, pattern, handler))
    fake._table = table


def prepare_slow(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    """`prepare`, with history pages slowed before the bot starts (once it runs, the first pages may be read)."""
    slow_history(fake, 0.3)
    return prepare(fake, guild)


async def test_a_restart_mid_backfill_resumes_with_none_missing_and_none_twice(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_slow) as w:
        general = int(w.channel["id"])
        await w.fake.wait_for(lambda: cog(w).log.count(general) >= 50, 20)
        # killed mid-backfill: the cog (its tasks, its in-memory state) goes; the data dir stays
        fetched = cog(w).log.count(general)
        await w.bot.unload_extension("bot.discord_app.cogs.history")
        assert 50 <= fetched < GENERAL and len(stored_chunks(w)) < GENERAL
        messages = w.fake.channel_messages(w.channel)
        # while it was down: an edit and a deletion in the part not yet fetched
        messages[-2]["content"] = "general chatter: the lynx code is LYNX-31"
        gone = messages[-1]
        w.fake.messages.pop(int(gone["id"]))
        await w.bot.load_extension("bot.discord_app.cogs.history")
        # while it backfills again: a live edit of a stored message and a live deletion of a stored one
        await w.fake.edit_user_message(messages[0], "general chatter: the puma code is PUMA-12")
        await w.fake.delete_message(w.channel, messages[1])
        await settled(w)
        chunks = stored_chunks(w)
        ids = [dict(c.extra)["message_id"] for c in chunks]
        assert len(ids) == len(set(ids)) == GENERAL - 2  # none missing, none twice
        assert gone["id"] not in ids and messages[1]["id"] not in ids
        texts = {c.text for c in chunks}
        assert {"general chatter: the lynx code is LYNX-31", "general chatter: the puma code is PUMA-12"} <= texts


async def test_a_member_who_cannot_read_the_channel_never_gets_its_messages(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        team = w.fake.channel(w.guild, "team")
        inter = await w.command(w.admin, "index add", channel=team)
        await w.reply(inter, streamed=False)
        await settled(w)
        assert any("TEAM-9090" in c.text for c in stored_chunks(w))
        assert "TEAM-9090" not in await ask_private(w, w.bob, "What is the secret badger code?")
        assert "TEAM-9090" in await ask_private(w, w.alice, "What is the secret badger code?")
        status = await w.command(w.bob, "index status")
        assert f"<#{team['id']}>" not in (await w.reply(status, streamed=False))[0]["content"]


async def test_opt_out_drops_a_members_messages_and_keeps_them_out(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        await settled(w)
        assert any(dict(c.extra)["author"] == "carol" for c in stored_chunks(w))
        inter = await w.command(w.carol, "index optout")
        await w.reply(inter, streamed=False)
        await settled(w, 5)
        assert not any(dict(c.extra)["author"] == "carol" for c in stored_chunks(w))
        await w.fake.user_message(w.channel, w.carol, "carol's private plan is PLAN-5")
        await w.fake.user_message(w.channel, w.alice, "alice's public plan is PLAN-6")
        await settled(w, 5)
        texts = [c.text for c in stored_chunks(w)]
        assert "alice's public plan is PLAN-6" in texts and not any("PLAN-5" in t for t in texts)


async def test_non_admins_cannot_add_channels(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        inter = await w.command(w.bob, "index add", channel=w.fake.channel(w.guild, "team"))
        reply = await w.reply(inter, streamed=False)
        assert "needs" in reply[0]["content"]
        await settled(w)
        assert not any("TEAM-9090" in c.text for c in stored_chunks(w))


def test_a_change_while_a_window_is_being_ingested_keeps_it_dirty(tmp_path):
    """Failed before generations: a page stored between reading a window and unmarking it was never ingested."""
    from bot.discord_app.backfill import HistoryLog

    log = HistoryLog(tmp_path / "h.sqlite")
    log.add_channel(1, 9, "#x", "1")
    log.store(1, 9, [m(5, 1, 0.0, "first")], checkpoint=5)
    read = log.dirty()  # a flush reads the window...
    log.store(1, 9, [m(6, 1, 1.0, "second")], checkpoint=6)  # ...a page lands meanwhile
    log.clean(read)
    assert [d[:2] for d in log.dirty()] == [(1, "1970-01-01")]
    log.delete([6])
    log.store(1, 9, [m(6, 1, 1.0, "second")], checkpoint=6)  # a page fetched before the deletion
    assert [x.id for x in log.window(1, "1970-01-01")] == [5]
    log.close()


async def test_a_forum_post_is_a_document_titled_by_its_post(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        forum = w.fake.add_forum(w.guild["id"], "help")
        post = w.fake.add_public_thread(forum, "Printer jams on page two", owner=w.alice)
        w.fake.seed_message(post, w.alice, "the printer jams when the tray holds over fifty sheets")
        await w.fake.dispatch("CHANNEL_CREATE", forum)
        await w.fake.dispatch("THREAD_CREATE", {**post, "newly_created": True})
        await w.fake.wait_for(lambda: w.bot.get_channel(int(post["id"])) is not None)
        inter = await w.command(w.admin, "index add", {"channel": forum})
        reply = await w.reply(inter, streamed=False)
        assert "Printer jams on page two" in reply[0]["content"], reply[0]["content"]
        await settled(w)
        [chunk] = [c for c in stored_chunks(w) if "tray" in c.text]
        assert chunk.title.startswith("Printer jams on page two ") and chunk.scope == forum["id"]
        # a new post in the indexed forum is followed live
        new = w.fake.add_public_thread(forum, "Scanner is slow", owner=w.bob)
        await w.fake.dispatch("THREAD_CREATE", {**new, "newly_created": True})
        await w.fake.user_message(new, w.bob, "the scanner takes a minute per page at 600 dpi")
        await settled(w, 5)
        assert any(c.title.startswith("Scanner is slow ") for c in stored_chunks(w))


# -- /summarize since: until: (the index for what is older than the last messages fetched) ---------------
MARCH_2 = datetime(2026, 3, 2, 10, tzinfo=UTC).timestamp()
MARCH_4 = datetime(2026, 3, 4, 10, tzinfo=UTC).timestamp()


def prepare_march(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    """`prepare`, and months-old messages: in #general (indexed) and in #random (not indexed)."""
    settings = prepare(fake, guild)
    users = {u["username"]: u for u in fake._users.values() if not u.get("bot")}
    general = fake.channel(guild)
    fake.seed_message(general, users["alice"], "the march second plan mentions the heron dock", at=MARCH_2)
    loose = fake.add_channel(guild["id"], "random")
    for i in range(12):
        who = users["alice"] if i % 2 else users["carol"]
        fake.seed_message(general, who, f"march fourth decision {i}: the launch code is KIWI-{i}", at=MARCH_4 + 60 * i)
        fake.seed_message(loose, who, f"random march fourth note {i} about MANGO-{i}", at=MARCH_4 + 60 * i)
    return settings


def prompts_since(llm: FakeLLM, start: int) -> str:
    return "\n".join(m.content for call in llm.calls[start:] for m in call)


async def test_summarize_a_range_older_than_the_last_fetched_messages_reads_the_index(tmp_path):
    llm = FakeLLM(default=echo_passages)
    async with world(tmp_path, llm, prepare=prepare_march) as w:
        await settled(w)
        w.bot.get_cog("Summarize").range_fetch = 5  # Discord gives the range's last 5; the index the rest
        start = len(llm.calls)
        options = {"scope": "channel", "since": "2026-03-03", "until": "2026-03-04"}
        inter = await w.command(w.bob, "summarize", options)
        await w.reply(inter)
        prompts = prompts_since(llm, start)
        assert all(f"KIWI-{i}" in prompts for i in range(12)), prompts  # KIWI-0..6 are only in the index
        assert "heron dock" not in prompts and "general chatter" not in prompts  # outside the range

        # a channel that is not indexed: the range's last 5 messages, and the reply says what to do
        loose = w.fake.channel(w.guild, "random")
        start = len(llm.calls)
        inter = await w.command(w.bob, "summarize", options, channel=loose)
        [reply] = await w.reply(inter)
        prompts = prompts_since(llm, start)
        assert "MANGO-11" in prompts and "MANGO-7" in prompts and "MANGO-6" not in prompts
        assert "/index add" in reply["content"]

        # a span back from now reaches the recent messages only
        start = len(llm.calls)
        inter = await w.command(w.bob, "summarize", {"scope": "channel", "since": "2d"})
        await w.reply(inter)
        prompts = prompts_since(llm, start)
        assert "general chatter" in prompts and "KIWI" not in prompts


async def test_summarize_a_bad_date_or_an_empty_range_says_what_to_do(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_march) as w:
        await settled(w)
        for options, expected in (
            ({"since": "next tuesday"}, "is not a time I can read: use a date like 2026-03-04"),
            ({"since": "2026-03-05", "until": "2026-03-01"}, "`since:` must be before `until:`"),
            ({"since": "2026-01-01", "until": "2026-01-31"}, "There are no messages here since 2026-01-01 00:00"),
        ):
            inter = await w.command(w.bob, "summarize", {"scope": "channel", **options})
            [reply] = await w.reply(inter, streamed=False)
            assert expected in reply["content"], reply["content"]


# -- attachments in indexed channels: documents tied to their message -------------------------------------
def prepare_files(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    """`prepare`, and a file already posted in #design (a message with no text)."""
    settings = prepare(fake, guild)
    alice = next(u for u in fake._users.values() if u["username"] == "alice")
    design = fake.channel(guild, "design")
    pelican = fake.add_attachment(design["id"], "pelican.txt", b"The pelican code for the harbour is PELI-88.\n")
    fake.seed_message(design, alice, "", attachments=[pelican])
    return settings


def file_docs(w: World) -> dict[str, Any]:
    return {d.title: d for d in w.service.documents(w.namespace()) if d.kind != "chat"}


async def test_attachments_in_an_indexed_channel_become_documents_tied_to_their_message(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_files) as w:
        design = w.fake.channel(w.guild, "design")
        posted = next(m for m in w.fake.channel_messages(design) if m["attachments"])
        inter = await w.command(w.admin, "index add", channel=design)
        await w.reply(inter, streamed=False)
        await settled(w)
        [doc] = [d for t, d in file_docs(w).items() if "pelican" in t]
        assert doc.extra["message_id"] == posted["id"] and doc.extra["scope"] == design["id"]  # the message's channel
        text = await ask_private(w, w.bob, "What is the pelican code for the harbour?")
        jump = f"https://discord.com/channels/{w.guild['id']}/{design['id']}/{posted['id']}"
        assert "PELI-88" in text and jump in text

        # live: a file posted in the indexed channel is indexed, silently; deleting its message forgets it
        live = await w.fake.user_message(
            design, w.carol, "minutes attached", attachments=[("owl.txt", b"The owl code is OWL-12.")]
        )
        await w.fake.wait_for(lambda: any("owl" in t for t in file_docs(w)), 10)
        assert "OWL-12" in await ask_private(w, w.bob, "What is the owl code?")
        assert not w.fake.replies_to(live)
        await w.fake.delete_message(design, live)
        await w.fake.wait_for(lambda: not any("owl" in t for t in file_docs(w)), 10)
        assert "OWL-12" not in await ask_private(w, w.bob, "What is the owl code?")

        # the author's opt-out forgets their files too
        inter = await w.command(w.alice, "index optout")
        await w.reply(inter, streamed=False)
        assert not any("pelican" in t for t in file_docs(w))


# -- /forget message: and channel: ------------------------------------------------------------------------
async def test_forget_a_single_message_by_link_or_id_and_a_thread(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_files) as w:
        design = w.fake.channel(w.guild, "design")
        inter = await w.command(w.admin, "index add", channel=design)
        await w.reply(inter, streamed=False)
        await settled(w)
        notes = {x["content"]: x for x in w.fake.channel_messages(design)}
        target = notes["design note 7 on widget7"]
        link = f"https://discord.com/channels/{w.guild['id']}/{design['id']}/{target['id']}"
        before = len(stored_chunks(w))

        inter = await w.command(w.bob, "forget", {"message": link})  # admins only
        assert "needs" in (await w.reply(inter, streamed=False))[0]["content"]
        inter = await w.command(w.admin, "forget", {"message": link})
        reply = (await w.reply(inter, streamed=False))[0]["content"]
        assert f"Forgot message {target['id']}" in reply, reply
        await settled(w, 5)
        texts = [c.text for c in stored_chunks(w)]
        assert "design note 7 on widget7" not in texts and "design note 8 on widget8" in texts  # its window stays
        assert len(texts) == before - 1
        # an edit does not bring it back
        await w.fake.edit_user_message(target, "design note 7, edited")
        await settled(w, 5)
        assert not any("note 7" in t for t in (c.text for c in stored_chunks(w)))

        # by id; the file posted with a message goes with it
        posted = next(m for m in w.fake.channel_messages(design) if m["attachments"])
        inter = await w.command(w.admin, "forget", {"message": posted["id"]})
        assert "1 file(s)" in (await w.reply(inter, streamed=False))[0]["content"]
        assert not any("pelican" in t for t in file_docs(w))

        # what is not a message of this server, or not indexed, is said so
        for bad, expected in (
            ("https://discord.com/channels/1/2/3", "not a link to a message of this server"),
            ("hello", "not a link to a message of this server"),
            ("1" * 18, "is not indexed here"),
        ):
            inter = await w.command(w.admin, "forget", {"message": bad})
            assert expected in (await w.reply(inter, streamed=False))[0]["content"]

        # a thread
        thread = next(c for c in w.fake.channels.values() if c.get("name") == "launch plan")
        inter = await w.command(w.admin, "forget", {"channel": thread})
        assert "Stopped indexing" in (await w.reply(inter, streamed=False))[0]["content"]
        await settled(w, 5)
        assert not [c for c in stored_chunks(w) if "rocket" in c.text] and [
            c for c in stored_chunks(w) if "widget" in c.text
        ]
        assert "design note 8 on widget8" in [c.text for c in stored_chunks(w)]


# -- private archived threads; edits and deletions while the bot was offline -----------------------------
def prepare_private(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    """`prepare`, and an archived private thread in #design that alice belongs to."""
    settings = prepare(fake, guild)
    alice = next(u for u in fake._users.values() if u["username"] == "alice")
    secret = fake.add_private_thread(fake.channel(guild, "design"), "secret plans", [alice])
    secret["thread_metadata"]["archived"] = True
    fake.seed_message(secret, alice, "the archived private plan is PRIV-31")
    fake.add_role(guild, "bot threads", MANAGE_THREADS)  # given to the bot later
    return settings


async def test_private_archived_threads_are_indexed_with_manage_threads_for_their_members_only(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_private) as w:
        design = w.fake.channel(w.guild, "design")
        inter = await w.command(w.admin, "index add", channel=design)
        reply = (await w.reply(inter, streamed=False))[0]["content"]
        assert "give me **Manage Threads**" in reply, reply
        await settled(w)
        assert not any("PRIV-31" in c.text for c in stored_chunks(w))
        assert not w.fake.rest_calls("GET", "/threads/archived/private")  # not asked for without the permission

        threads = next(r for r in w.guild["roles"] if r["name"] == "bot threads")
        await w.fake.set_member_roles(w.guild, w.fake.bot_user, [threads])
        await w.fake.wait_for(lambda: w.bot.get_guild(int(w.guild["id"])).me.guild_permissions.manage_threads)
        inter = await w.command(w.admin, "index add", channel=design)
        reply = (await w.reply(inter, streamed=False))[0]["content"]
        assert "secret plans" in reply and "Manage Threads" not in reply, reply
        await settled(w)
        [chunk] = [c for c in stored_chunks(w) if "PRIV-31" in c.text]
        secret = next(c for c in w.fake.channels.values() if c.get("name") == "secret plans")
        assert chunk.scope == secret["id"]  # a private thread: its own scope
        assert "PRIV-31" in await ask_private(w, w.alice, "What is the archived private plan?")
        assert "PRIV-31" not in await ask_private(w, w.bob, "What is the archived private plan?")


async def test_edits_and_deletions_made_while_the_bot_was_offline_are_applied_at_start(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_files) as w:
        design = w.fake.channel(w.guild, "design")
        inter = await w.command(w.admin, "index add", channel=design)
        await w.reply(inter, streamed=False)
        await settled(w)
        assert any("pelican" in t for t in file_docs(w))
        await w.bot.unload_extension("bot.discord_app.cogs.history")  # the bot is offline
        notes = {x["content"]: x for x in w.fake.channel_messages(design)}
        notes["design note 50 on widget50"]["content"] = "design note 50: the marten code is MART-5"  # no event
        gone = notes["design note 51 on widget51"]
        w.fake.messages.pop(int(gone["id"]))
        posted = next(m for m in w.fake.channel_messages(design) if m["attachments"])
        w.fake.messages.pop(int(posted["id"]))
        before = len(stored_chunks(w))
        await w.bot.load_extension("bot.discord_app.cogs.history")
        await settled(w)
        texts = [c.text for c in stored_chunks(w)]
        assert "design note 50: the marten code is MART-5" in texts and "design note 50 on widget50" not in texts
        assert "design note 51 on widget51" not in texts and len(texts) == before - 1
        assert not any("pelican" in t for t in file_docs(w))  # the deleted message's file is forgotten too


async def test_status_counts_indexed_messages_apart_from_documents(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        await settled(w)
        w.add_document("handbook.md", "# Handbook\n\nNew people get a laptop on their first day.\n")
        inter = await w.command(w.alice, "status")
        [reply] = await w.reply(inter, streamed=False)
        fields = {f["name"]: f["value"] for f in reply["embeds"][0]["fields"]}
        assert fields["Documents"] == "1" and fields["Chunks"] == "1", fields  # the handbook alone
        assert fields["Indexed messages"] == f"{GENERAL} (1 channel, 1 day)", fields
        inter = await w.command(w.alice, "index status")
        [reply] = await w.reply(inter, streamed=False)
        assert f"{GENERAL} indexed messages in 1 channel and threads, and 0 attached files" in reply["content"]


def test_a_backfill_page_is_stored_in_one_transaction(tmp_path):
    """Failed before: the connection autocommits (isolation_level=None), so `with db:` began no transaction:
    a page that fails half-way left its first messages stored (and each statement was its own commit:
    3,000 messages took 12.7 s to store, now well under a second)."""
    from bot.discord_app.backfill import HistoryLog

    log = HistoryLog(tmp_path / "h.sqlite")
    log.add_channel(1, 9, "#x", "1")
    page = [m(5, 1, 0.0, "first"), m(6, 1, 1.0, None)]  # type: ignore[arg-type]  # NOT NULL fails on the second
    with pytest.raises(sqlite3.IntegrityError):
        log.store(1, 9, page, checkpoint=6)
    assert log.window(1, "1970-01-01") == [] and log.channel(1).checkpoint == 0  # type: ignore[union-attr]
    assert log.dirty() == []
    log.store(1, 9, [m(5, 1, 0.0, "first")], checkpoint=5)
    assert [x.id for x in log.window(1, "1970-01-01")] == [5] and log.channel(1).checkpoint == 5  # type: ignore[union-attr]
    log.close()


def test_a_long_range_is_read_from_the_index_evenly_thinned(tmp_path):
    from bot.discord_app.backfill import HistoryLog

    log = HistoryLog(tmp_path / "h.sqlite")
    log.add_channel(1, 9, "#x", "1")
    log.store(1, 9, [m(i, 1, 86400.0 * i, f"day {i}") for i in range(1, 26)], checkpoint=25)
    found, total = log.between(1, 86400.0 * 3, 25, limit=10)  # days 3..24
    assert total == 22 and 1 < len(found) <= 10
    ids = [x.id for x in found]
    assert ids == sorted(ids) and ids[0] == 3 and ids[-1] >= 20  # from the start of the range to near its end
    assert [x.id for x in log.between(1, None, 4, limit=10)[0]] == [1, 2, 3]
    log.close()


async def test_a_live_edit_during_the_start_rescan_is_not_undone_by_its_older_page(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        await settled(w)
        await w.bot.unload_extension("bot.discord_app.cogs.history")
        table = []
        for verb, pattern, handler in w.fake._table:
            if handler.__name__ == "_history":

                async def stale(self: Any, *a: Any, _h: Any = handler, **k: Any) -> Any:
                    served = copy.deepcopy(await _h(self, *a, **k))  # the page as it is now...
                    await asyncio.sleep(0.5)  # ...arrives late
                    return served

                handler = stale
            table.append((verb, pattern, handler))
        w.fake._table = table
        first = w.fake.channel_messages(w.channel)[0]  # on the rescan's first page
        first["content"] = "general chatter: edited while the bot was away"  # no event
        start = len(w.fake.calls)
        await w.bot.load_extension("bot.discord_app.cogs.history")
        await w.fake.wait_for(lambda: any("/messages" in c.path for c in w.fake.calls[start:]), 5)
        # edited again while the rescan's page (with the first edit) is on its way: the newer text stays
        await w.fake.edit_user_message(first, "general chatter: the ibis code is IBIS-3")
        await settled(w)
        assert "general chatter: the ibis code is IBIS-3" in [c.text for c in stored_chunks(w)]


def stale_history(fake: Any, delay: float) -> None:
    """Each history page is read at once and arrives `delay` seconds later (an edit can come meanwhile)."""
    table = []
    for verb, pattern, handler in fake._table:
        if handler.__name__ == "_history":

            async def stale(self: Any, *a: Any, _h: Any = handler, **k: Any) -> Any:
                served = copy.deepcopy(await _h(self, *a, **k))
                await asyncio.sleep(delay)
                return served

            handler = stale
        table.append((verb, pattern, handler))
    fake._table = table


def prepare_stale(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
    stale_history(fake, 0.5)
    return prepare(fake, guild)


async def test_a_live_edit_of_a_message_whose_page_is_on_its_way_is_kept(tmp_path):
    """Failed before: the edit came before the message was stored (ignored), then the page stored the old text."""
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare_stale) as w:
        await w.fake.wait_for(lambda: any("/messages" in c.path for c in w.fake.calls), 5)
        target = w.fake.channel_messages(w.channel)[5]
        await w.fake.edit_user_message(target, "general chatter: the egret code is EGRET-8")
        await settled(w)
        texts = [c.text for c in stored_chunks(w)]
        assert "general chatter: the egret code is EGRET-8" in texts and len(texts) == GENERAL


def test_a_backlog_of_windows_is_ingested_a_bounded_step_at_a_time(tmp_path, service):
    """Failed before: a flush read every dirty window's messages at once (a 500k-message backfill's
    backlog held in memory as one ingest); now `flush_batch` messages a step, each step unmarked."""
    from types import SimpleNamespace

    from bot.discord_app.backfill import HistoryLog
    from ingest.chat import ChatIngestor

    log = HistoryLog(tmp_path / "h.sqlite")
    log.add_channel(1, 9, "#x", "1")
    day = 86400.0
    messages = [m(100 + i, i % 3, (i // 10) * day + i, f"note {i} about topic{i}") for i in range(300)]
    log.store(1, 9, messages, checkpoint=399)  # 30 days of 10 messages
    chat = ChatIngestor(service.ingestor)
    steps: list[int] = []
    original = chat.ingest_windows

    def recording(namespace: str, windows: Any) -> Any:
        windows = list(windows)
        steps.append(sum(len(w.messages) for w in windows))
        assert len(log.dirty()) == 30 - 3 * (len(steps) - 1)  # the steps before were unmarked
        return original(namespace, windows)

    chat.ingest_windows = recording  # type: ignore[method-assign]
    known = log.channel(1)
    assert known is not None
    items = [(known, d, g) for _c, d, g in log.dirty()]
    me = SimpleNamespace(log=log, chat=chat, flush_batch=25)
    assert History._ingest(me, "g9", items) == 30  # type: ignore[arg-type]
    assert steps[:10] == [30] * 10 and sum(steps) == 300  # 3 windows (30 messages) reach 25: a step
    assert log.dirty() == []
    docs = [d for d in service.documents("g9") if d.kind == "chat"]
    assert len(docs) == 30 and sum(d.chunks for d in docs) == 300
    log.close()
