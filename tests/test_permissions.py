"""Permission-aware retrieval through the fake Discord and the real discord.py client (issue 13, part 1).

The guild: #general (everyone), #team (role-gated: @everyone denied, the team role allowed),
#ops (everyone, but a member overwrite denies carol) and a private thread "plans" under
#general (alice and ada joined it). Each holds a document with a unique code word and a
unique payload; the model echoes every passage it is given, so a leak shows in the text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from bot.llm import Message
from tests.discord_fake import FakeDiscord, FakeInteraction
from tests.discord_harness import World, answer_finished, world
from tests.fakes import FakeLLM

VIEW = 1 << 10
HISTORY = 1 << 16


def echo_passages(messages: Sequence[Message]) -> str:
    """Repeat every passage of the prompt (with its marker): whatever retrieval let through is shown."""
    user = messages[-1].content
    found = re.findall(r"^\[(\d+)\] (.+)$", user, re.MULTILINE)
    return " ".join(f"{text} [{n}]" for n, text in found) or "I don't know."


def doc_text(word: str, payload: str) -> str:
    return f"The {word} code word guards the {word} vault. The {word} vault combination is {payload}.\n"


def prepare(fake: FakeDiscord, guild: dict[str, Any]) -> dict[str, Any]:
    """Roles, gated channels and a private thread, before the bot starts (GUILD_CREATE carries them)."""
    team = fake.add_role(guild, "team")
    admin_role = next(r for r in guild["roles"] if r["name"] == "ragcord-admin")
    users = {u["username"]: u for u in fake._users.values() if not u.get("bot")}
    ada, alice, carol = users["ada"], users["alice"], users["carol"]
    fake.add_member(guild["id"], ada, [admin_role, team])
    fake.add_member(guild["id"], alice, [team])
    fake.add_member(guild["id"], carol, [team])
    everyone = guild["roles"][0]
    general = fake.channel(guild)
    team_channel = fake.add_channel(guild["id"], "team")
    fake.set_overwrites(
        team_channel, (everyone, 0, VIEW), (team, VIEW | HISTORY, 0), (fake.bot_user, VIEW | HISTORY, 0)
    )
    ops = fake.add_channel(guild["id"], "ops")
    fake.set_overwrites(ops, (carol, 0, VIEW))
    fake.add_private_thread(general, "plans", [alice, ada])
    return {"watch_channels": [int(ops["id"])], "rate_limit_per_minute": 0}


async def ingest(w: World, channel: dict[str, Any], filename: str, text: str, **options: Any) -> None:
    attachment = w.fake.add_attachment(channel["id"], filename, text.encode())
    inter = await w.command(w.admin, "ingest", {"file": attachment, **options}, channel=channel)
    await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 15)
    [report] = w.fake.interaction_messages(inter)
    assert "added" in report["content"], report["content"]


def sent_since(fake: FakeDiscord, start: int) -> str:
    """Everything the bot sent the fake since call number `start` (contents, embeds, choices)."""
    return "\n".join(json.dumps(c.json) for c in fake.calls[start:] if c.json is not None)


async def test_a_private_channel_document_is_not_quoted_to_a_member_who_cannot_read_it(tmp_path):
    """Failed before scopes: bob (no team role) asking in #general got the #team document's payload."""
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        team = w.fake.channel(w.guild, "team")
        await ingest(w, team, "quokka.txt", doc_text("quokka", "TEAM-7731"))
        start = len(w.fake.calls)
        question = await w.ask(w.bob, "What is the quokka vault combination?")
        await w.answer(question)
        assert "TEAM-7731" not in sent_since(w.fake, start)

        start = len(w.fake.calls)
        inter = await w.command(w.bob, "ask", {"question": "What is the quokka vault combination?", "private": True})
        await w.reply(inter)
        assert "TEAM-7731" not in sent_since(w.fake, start)

        # alice has the team role: she gets it (privately, or in #team itself)
        inter = await w.command(w.alice, "ask", {"question": "What is the quokka vault combination?", "private": True})
        assert "TEAM-7731" in "\n".join(m["content"] for m in await w.reply(inter))


async def test_a_watched_channel_attachment_keeps_its_channel_scope(tmp_path):
    """Failed before scopes: carol (denied #ops by a member overwrite) got the #ops attachment's payload."""
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        ops = w.fake.channel(w.guild, "ops")
        post = await w.fake.user_message(
            ops, w.admin, "runbook", attachments=[("marmot.txt", doc_text("marmot", "OPS-4410").encode())]
        )
        await w.fake.wait_for(lambda: any("marmot" in m["content"] for m in w.fake.replies_to(post)))
        start = len(w.fake.calls)
        inter = await w.command(w.carol, "ask", {"question": "What is the marmot vault combination?", "private": True})
        await w.reply(inter)
        assert "OPS-4410" not in sent_since(w.fake, start)
        inter = await w.command(w.bob, "ask", {"question": "What is the marmot vault combination?", "private": True})
        assert "OPS-4410" in "\n".join(m["content"] for m in await w.reply(inter))


# -- the permission matrix ----------------------------------------------------------------------------
WORDS = {  # code word -> (payload, where the document arrives, how)
    "zephyr": ("GEN-1001", "general", "ingest"),
    "quokka": ("TEAM-7731", "team", "ingest"),
    "ibex": ("PUB-9090", "team", "public"),  # /ingest visibility:public in a gated channel: guild-wide
    "marmot": ("OPS-4410", "ops", "watch"),
    "narwhal": ("PLAN-5520", "plans", "ingest"),
}
SCOPE = {"zephyr": "guild", "quokka": "team", "ibex": "guild", "marmot": "ops", "narwhal": "plans"}
READS = {  # written by hand from the setup, not computed by the code under test
    "ada": {"general", "team", "ops", "plans"},
    "alice": {"general", "team", "ops", "plans"},
    "bob": {"general", "ops"},
    "carol": {"general", "team"},
}
AUDIENCE = {"general": {"general"}, "team": {"team"}, "ops": {"ops"}, "plans": {"plans", "general"}}


def visible(word: str, readable: set[str]) -> bool:
    return SCOPE[word] == "guild" or SCOPE[word] in readable


def interaction_calls(fake: FakeDiscord, inter: FakeInteraction) -> str:
    """Every body the bot sent for this interaction (its callback, follow-ups and edits)."""
    return "\n".join(json.dumps(c.json) for c in fake.calls if inter.token in c.path and c.json is not None)


def reply_calls(fake: FakeDiscord, question: dict[str, Any]) -> str:
    """Every body the bot sent for the messages answering `question` (creates and edits)."""
    chain = {question["id"], *(m["id"] for m in fake.replies_to(question))}
    out = []
    for c in fake.calls:
        if not isinstance(c.json, dict):
            continue
        ref = (c.json.get("message_reference") or {}).get("message_id")
        edited = c.method == "PATCH" and c.path.rsplit("/", 1)[-1] in chain
        if (c.method == "POST" and ref in chain) or edited:
            out.append(json.dumps(c.json))
    return "\n".join(out)


def summary_finished(fake: FakeDiscord, inter: FakeInteraction) -> Callable[[], bool]:
    def done() -> bool:
        msgs = fake.interaction_messages(inter)
        return answer_finished(msgs) or (bool(msgs) and "Nothing to summarise" in msgs[-1]["content"])

    return done


def reported(fake: FakeDiscord, post: dict[str, Any], word: str) -> bool:
    return any(word in m["content"] for m in fake.replies_to(post))


class Matrix:
    def __init__(self, w: World) -> None:
        self.w = w
        fake = w.fake
        self.users = {u["username"]: u for u in (w.admin, w.alice, w.bob, w.carol)}
        self.channels = {name: fake.channel(w.guild, name) for name in ("general", "team", "ops")}
        self.channels["plans"] = next(c for c in fake.channels.values() if c.get("name") == "plans")
        self.asks = 0
        self.leaks: list[str] = []
        self.missing: list[str] = []

    def doc_id(self, word: str) -> str:
        return next(d.doc_id for d in self.w.service.documents(self.w.namespace()) if d.title == f"{word}.txt")

    def check(self, what: str, sent: str, allowed: set[str], wanted: str | None) -> None:
        self.asks += 1
        for word, (payload, _, _) in WORDS.items():
            if payload in sent and not visible(word, allowed):
                self.leaks.append(f"{what}: {word}")
        if wanted is not None and visible(wanted, allowed) and WORDS[wanted][0] not in sent:
            self.missing.append(f"{what}: {wanted}")

    async def ask_all(self, user: str, channels: set[str], words: list[str]) -> None:
        w, fake, member = self.w, self.w.fake, self.users[user]
        for cname in sorted(channels):
            channel = self.channels[cname]
            public = READS[user] & AUDIENCE[cname]
            for word in words:
                question = f"What is the {word} vault combination?"
                posted = await w.ask(member, question, channel=channel)
                await w.answer(posted, timeout=15)
                self.check(f"{user} mention in #{cname}", reply_calls(fake, posted), public, word)
                for private in (False, True):
                    inter = await w.command(member, "ask", {"question": question, "private": private}, channel=channel)
                    await w.reply(inter, timeout=15)
                    allowed = READS[user] if private else public
                    self.check(f"{user} /ask private={private} #{cname}", interaction_calls(fake, inter), allowed, word)
                inter = await w.command(member, "summarize", {"document": self.doc_id(word)}, channel=channel)
                await fake.wait_for(summary_finished(fake, inter), 15)
                self.check(f"{user} /summarize #{cname}", interaction_calls(fake, inter), public, word)
            # browsing: /sources (public) and the document autocomplete (only the typist sees it)
            inter = await w.command(member, "sources", channel=channel)
            await w.reply(inter, streamed=False)
            self.check_titles(f"{user} /sources #{cname}", interaction_calls(fake, inter), public)
            choices = await fake.autocomplete(channel, member, "summarize", {"document": ""}, "document")
            self.check_titles(f"{user} autocomplete #{cname}", json.dumps(choices), READS[user])

    def check_titles(self, what: str, sent: str, allowed: set[str]) -> None:
        for word in WORDS:
            shown = f"{word}.txt" in sent
            if shown != visible(word, allowed):
                (self.leaks if shown else self.missing).append(f"{what}: {word}")


async def setup_documents(w: World) -> None:
    fake = w.fake
    channels = {name: fake.channel(w.guild, name) for name in ("general", "team", "ops")}
    channels["plans"] = next(c for c in fake.channels.values() if c.get("name") == "plans")
    for word, (payload, where, how) in WORDS.items():
        text = doc_text(word, payload)
        if how == "watch":
            post = await fake.user_message(
                channels[where], w.admin, "file", attachments=[(f"{word}.txt", text.encode())]
            )
            await fake.wait_for(functools.partial(reported, fake, post, word), 15)
        else:
            extra = {"visibility": "public"} if how == "public" else {}
            await ingest(w, channels[where], f"{word}.txt", text, **extra)


async def test_permission_matrix(tmp_path):
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        await setup_documents(w)
        m = Matrix(w)
        for user, channels in READS.items():
            await m.ask_all(user, channels, list(WORDS))
        assert m.asks >= 200, m.asks
        assert not m.leaks, m.leaks
        assert not m.missing, m.missing

        # a role removed while the bot runs (GUILD_MEMBER_UPDATE): alice's next answer leaves #team out
        before = m.asks
        await w.fake.set_member_roles(w.guild, w.alice, [])
        READS["alice"] = {"general", "ops", "plans"}
        try:
            await m.ask_all("alice", {"general"}, ["quokka", "zephyr"])
        finally:
            READS["alice"] = {"general", "team", "ops", "plans"}
        assert m.asks > before and not m.leaks, m.leaks
        assert not m.missing, m.missing


async def test_a_channel_update_drops_the_cached_permissions(tmp_path):
    """bob's roles do not change, so only CHANNEL_UPDATE can tell the bot he may now read #team."""
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        team = w.fake.channel(w.guild, "team")
        await ingest(w, team, "quokka.txt", doc_text("quokka", "TEAM-7731"))
        question = {"question": "What is the quokka vault combination?", "private": True}
        inter = await w.command(w.bob, "ask", question)
        await w.reply(inter)
        assert "TEAM-7731" not in interaction_calls(w.fake, inter)
        computed = w.bot.readable.computed

        inter = await w.command(w.bob, "ask", question)
        await w.reply(inter)
        assert w.bot.readable.computed == computed  # served from the cache

        everyone = w.guild["roles"][0]
        team_role = next(r for r in w.guild["roles"] if r["name"] == "team")
        grants = (everyone, 0, VIEW), (team_role, VIEW | HISTORY, 0), (w.bob, VIEW | HISTORY, 0)
        w.fake.set_overwrites(team, *grants)
        await w.fake.dispatch("CHANNEL_UPDATE", team)
        await w.fake.wait_for(lambda: w.bot.readable.computed == computed and not w.bot.readable._cache)
        inter = await w.command(w.bob, "ask", question)
        await w.reply(inter)
        assert "TEAM-7731" in interaction_calls(w.fake, inter)


async def test_direct_messages_see_guild_wide_documents_only(tmp_path):
    guild_namespace: dict[str, str] = {}

    def dm_prepare(fake: FakeDiscord, guild: dict[str, Any]) -> dict[str, Any]:
        guild_namespace["ns"] = f"g{guild['id']}"
        return {**prepare(fake, guild), "allow_dms": True, "dm_namespace": guild_namespace["ns"]}

    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=dm_prepare) as w:
        await ingest(w, w.fake.channel(w.guild, "team"), "quokka.txt", doc_text("quokka", "TEAM-7731"))
        await ingest(w, w.channel, "zephyr.txt", doc_text("zephyr", "GEN-1001"))
        dm = w.fake.add_dm(w.alice)  # alice may read #team in the server, but a DM is not the server
        for word in ("quokka", "zephyr"):
            start = len(w.fake.calls)
            posted = await w.fake.user_message(dm, w.alice, f"What is the {word} vault combination?")
            await w.answer(posted)
            sent = sent_since(w.fake, start)
            assert "TEAM-7731" not in sent
            assert word != "zephyr" or "GEN-1001" in sent


async def test_a_channel_summary_needs_its_history(tmp_path):
    """The bot reads history with its own permissions: carol, kept out of #ops, gets no summary of it."""
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        ops = w.fake.channel(w.guild, "ops")
        await w.fake.user_message(ops, w.bob, "The ops rota changes on Friday, says OPS-4410.")
        inter = await w.command(w.carol, "summarize", {"scope": "channel"}, channel=ops)
        [reply] = await w.reply(inter, streamed=False)
        assert "can't read this channel" in reply["content"] and "OPS-4410" not in interaction_calls(w.fake, inter)
        inter = await w.command(w.bob, "summarize", {"scope": "channel"}, channel=ops)
        await w.reply(inter)
        assert "OPS-4410" in interaction_calls(w.fake, inter)


async def test_a_private_thread_needs_membership(tmp_path):
    """Its parent is #general (everyone), but only the thread's members get its documents; one who
    leaves it (THREAD_MEMBERS_UPDATE) no longer does."""
    async with world(tmp_path, FakeLLM(default=echo_passages), prepare=prepare) as w:
        plans = next(c for c in w.fake.channels.values() if c.get("name") == "plans")
        await ingest(w, plans, "narwhal.txt", doc_text("narwhal", "PLAN-5520"))
        question = {"question": "What is the narwhal vault combination?", "private": True}
        for user, sees in ((w.alice, True), (w.bob, False)):
            inter = await w.command(user, "ask", question)
            await w.reply(inter)
            assert ("PLAN-5520" in interaction_calls(w.fake, inter)) is sees, user["username"]
        await w.fake.leave_thread(plans, w.alice)
        await w.fake.wait_for(lambda: not w.bot.readable._cache)
        inter = await w.command(w.alice, "ask", question)
        await w.reply(inter)
        assert "PLAN-5520" not in interaction_calls(w.fake, inter)
