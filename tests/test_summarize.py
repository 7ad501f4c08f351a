"""Summaries by the same rule as answers: the model's sentences are shown only when the
document backs them, else key sentences chosen by code (bot/summarize.py)."""

from __future__ import annotations

import re
import time

from bot.answer import Completed, Token
from bot.repetition import degenerate_at
from bot.summarize import Summarizer, check_summary, key_sentences
from store.types import Chunk
from tests.fakes import FakeEmbedder, FakeLLM

TOPICS = [
    ("Opening", "The bakery opens at six in the morning and bakes bread in a wood oven."),
    ("Dough", "Bread dough rests overnight in the cold room before the bakery oven is lit."),
    ("Flour", "The bakery buys its flour from a mill in the valley every Monday."),
    ("Staff", "Four bakers share the early shift and one of them tends the oven fire."),
    ("Rye", "Rye bread needs a sour starter that the bakers feed twice a day."),
    ("Cakes", "Cakes are baked in the afternoon when the bread oven has cooled a little."),
    ("Orders", "Restaurants order bread by phone before eight in the evening for the next day."),
    ("Delivery", "A van delivers the bread orders to the restaurants before nine each morning."),
    ("Prices", "A loaf of bread costs three euros and a rye loaf costs four euros."),
    ("Waste", "Bread left at closing time is given to the shelter across the street."),
    ("Cleaning", "The oven is swept out every Saturday and the bakery closes on Sunday."),
    ("History", "The bakery was founded in 1921 by the grandmother of the current owner."),
]
FILLER = "Visitors often mention the friendly staff in their reviews."


def bakery(filler: bool = True) -> list[Chunk]:
    """A twelve-section document, long enough for more than one summary window."""
    chunks = []
    for i, (section, sentence) in enumerate(TOPICS):
        text = f"{sentence} {FILLER if filler and i % 3 == 0 else ''} This part of the handbook is section {i + 1}."
        chunks.append(Chunk("bakery", i, text, "Bakery handbook", "bakery.md", section=f"Bakery handbook > {section}"))
    return chunks


def collect(events):
    tokens, answer = [], None
    for event in events:
        if isinstance(event, Token):
            tokens.append(event.text)
        elif isinstance(event, Completed):
            answer = event.answer
    assert answer is not None
    return "".join(tokens), answer


def collapsed(text: str) -> str:
    return " ".join(text.split())


def assert_extractive(answer, chunks):
    """Key sentences: verbatim, in document order, each cited with its location."""
    assert answer.led_by == "quote" and answer.status == "answered" and answer.lead is None
    assert answer.note.startswith("Key sentences chosen from the document")
    lines = answer.text.splitlines()
    assert lines and len(lines) == len(answer.citations)
    order = [c.chunk.index for c in answer.citations]
    assert order == sorted(order)
    for line, c in zip(lines, answer.citations, strict=True):
        assert line == f"• {c.quote} [{c.number}]"
        assert c.quote in collapsed(c.chunk.text)  # verbatim sentence
        assert c.chunk in chunks
    assert answer.reply == answer.text  # what the CLI and plain-text front ends show
    return answer.citations


def test_a_summary_of_backed_sentences_is_the_models():
    chunks = bakery()[:3]
    llm = FakeLLM(
        [
            "The bakery opens at six and bakes bread in a wood oven [1]. "
            "Bread dough rests overnight in the cold room [2]. "
            "The flour comes from a mill in the valley [3]."
        ]
    )
    streamed, answer = collect(Summarizer(llm).stream(chunks, title="Bakery handbook"))
    assert answer.led_by == "model" and answer.rejected == ""
    assert "wood oven [1]" in answer.text and "mill in the valley [3]" in answer.text
    assert [c.number for c in answer.citations] == [1, 2, 3]
    assert all(c.quote in collapsed(c.chunk.text) for c in answer.citations)
    assert "wood oven" in streamed  # the model's phrasing streamed while it was written


def test_a_model_sentence_the_document_does_not_back_is_dropped():
    chunks = bakery()[:3]
    llm = FakeLLM(
        [
            "The bakery opens at six and bakes bread in a wood oven [1]. "
            "The moon landing was broadcast on television in 1969 [2]. "
            "Bread dough rests overnight in the cold room [2]. "
            "The flour comes from a mill in the valley."
        ]
    )
    _, answer = collect(Summarizer(llm).stream(chunks, title="Bakery handbook"))
    assert answer.led_by == "model"
    assert "moon" not in answer.text and "moon" in answer.model_text
    assert "cold room [2]" in answer.text
    assert re.search(r"mill in the valley\.? \[3\]", answer.text)  # uncited but backed: attributed by code


def test_an_irrelevant_summary_is_replaced_by_key_sentences_spread_across_the_document():
    chunks = bakery()
    llm = FakeLLM(default="Pirates sailed the seven seas looking for gold. Parrots can learn to talk [1].")
    summarizer = Summarizer(llm, window_chars=800)
    assert len(summarizer.windows(chunks)) > 1  # map-reduce ran
    _, answer = collect(summarizer.stream(chunks, title="Bakery handbook"))
    assert "Pirates" in answer.model_text and "Pirates" not in answer.text
    assert answer.rejected and "did not pass the checks" in answer.note
    keys = assert_extractive(answer, chunks)
    assert len(keys) >= 3
    where = [c.chunk.index for c in keys]
    assert len(set(where)) == len(where)  # not all from one part of the document
    assert where[0] < 4 and where[-1] >= 8  # from its start to its end
    assert [c.location for c in keys] == [TOPICS[c.chunk.index][0] for c in keys]  # each with its section
    assert FILLER not in answer.text  # said once, but off the document's subject


def test_a_looping_summary_is_cut_while_streaming_and_replaced():
    chunks = bakery()[:3]
    loop = "The bakery bakes bread in the oven " * 30
    streamed, answer = collect(Summarizer(FakeLLM([loop])).stream(chunks, title="Bakery handbook"))
    assert degenerate_at(streamed) is None  # the reader never watched the loop grow
    assert streamed.count("bakes bread") == 1
    assert answer.rejected.startswith("degenerate output")
    assert_extractive(answer, chunks)


def test_a_summary_looping_across_sentences_or_echoing_passages_is_replaced():
    chunks = bakery()[:3]
    across = "The bakery opens at six in the morning [1]. " * 5
    echoed = "[1] The bakery opens at six. [2] Bread dough rests overnight. [3] The bakery buys its flour."
    for reply in (across, echoed, "I don't know."):
        _, answer = collect(Summarizer(FakeLLM([reply])).stream(chunks, title="Bakery handbook"))
        assert answer.led_by == "quote" and answer.rejected, reply
        assert_extractive(answer, chunks)


def test_the_model_failing_gives_the_extractive_summary_not_a_failure(caplog):
    chunks = bakery()
    llm = FakeLLM(default="The bakery opens at six [1].", fail_after=2)
    _, answer = collect(Summarizer(llm).stream(chunks, title="Bakery handbook"))
    assert answer.status == "answered" and answer.rejected == "the model failed"
    assert "fake model crashed" not in answer.note  # the cause goes to the log
    assert "fake model crashed" in caplog.text
    assert_extractive(answer, chunks)


def test_extract_mode_never_calls_the_model():
    llm = FakeLLM(default="The bakery opens at six [1].")
    _, answer = collect(Summarizer(llm, mode="extract").stream(bakery(), title="Bakery handbook"))
    assert llm.calls == [] and answer.rejected == ""
    assert answer.note == "Key sentences chosen from the document."
    assert_extractive(answer, bakery())
    _, answer = collect(Summarizer(None).stream(bakery(), title="Bakery handbook"))
    assert_extractive(answer, bakery())


def test_key_sentences_are_central_not_off_topic():
    text = (
        "Parking is free on Sundays near the old railway station. "
        "The bakery bakes bread in a wood oven every single morning. "
        "Bread from the bakery oven is sold until the evening. "
        "The bakery oven needs dry beech wood for good bread."
    )
    chunks = [Chunk("d", 0, text, "Bakery", "b.md")]
    for embed in (None, FakeEmbedder().embed):
        [key] = key_sentences(chunks, embed=embed, count=1)
        assert "Parking" not in key.quote and "bread" in key.quote.lower(), embed
        two = key_sentences(chunks, embed=embed, count=2)
        assert len(two) == 2 and all("Parking" not in k.quote for k in two)
        assert two[0].quote != two[1].quote


def test_key_sentences_skip_repeats_from_overlapping_chunks_and_fragments():
    a = Chunk("d", 0, "Setup.\n\nThe bot reads its token from the environment on start.", "Guide", "g.md")
    b = Chunk(
        "d", 1, "The bot reads its token from the environment on start. It then joins every guild.", "Guide", "g.md"
    )
    keys = key_sentences([a, b], count=3)
    quotes = [k.quote for k in keys]
    assert len(quotes) == len(set(quotes)) and "Setup." not in quotes
    assert keys[0].chunk is a  # a repeated sentence is located where it first appears


def test_key_sentences_are_fast_on_a_long_document():
    chunks = [
        Chunk("d", i, f"Section {i} explains the widget number {i} and its gear ratio {i * 3}. " * 4, "W", "w.md")
        for i in range(2000)
    ]
    t0 = time.perf_counter()
    keys = key_sentences(chunks)
    lexical_s = time.perf_counter() - t0
    embedder = FakeEmbedder()
    t0 = time.perf_counter()
    dense = key_sentences(chunks, embed=embedder.embed)
    dense_s = time.perf_counter() - t0
    assert len(keys) == len(dense) == 5
    assert keys[0].chunk.index < 400 and keys[-1].chunk.index >= 1600
    assert sum(embedder.calls) <= 256  # a long document is pre-selected before embedding
    assert lexical_s < 3.0 and dense_s < 3.0, (lexical_s, dense_s)


def test_check_summary_rules():
    chunks = bakery()[:3]
    good = "The bakery bakes bread in a wood oven [1]. Bread dough rests overnight [2]."
    text, citations, verdict = check_summary(good, chunks)
    assert verdict == "" and len(citations) == 2
    _, _, verdict = check_summary("The bakery bakes bread in a wood oven [1].", chunks)
    assert verdict == "1 of its 1 sentences are backed by the document"
    # a short document (fewer than six sentences) needs only one backed sentence
    one = "The bakery bakes bread in a wood oven [1]."
    assert check_summary(one, chunks[:1], document_sentences=5)[2] == ""
    assert check_summary(one, chunks[:1], document_sentences=6)[2].startswith("1 of its 1")
    mostly_invented = good + " Whales sing in the ocean [1]. Lions sleep all day [2]. Snow fell in May [3]."
    assert "2 of its 5" in check_summary(mostly_invented, chunks)[2]
    produced = "The bakery bakes bread in a wood oven [1]. Bread dough rests overnight [2] the the the the the"
    assert check_summary(good, chunks, produced=produced + " the the the the")[2].startswith("degenerate")


def test_conversation_summary_falls_back_with_authors_and_jump_links(service, fake_llm):
    fake_llm.replies = ["Everyone agreed on pizza for lunch [1]. The weather was sunny [2]."]
    items = [
        ("alice", "Shall we launch the new website on Friday after the review?", "https://discord.com/channels/1/2/10"),
        ("bob", "Friday works for me, after the security review is done.", "https://discord.com/channels/1/2/11"),
        ("carol", "I will book the security review for Thursday morning.", "https://discord.com/channels/1/2/12"),
        ("dave", "", "https://discord.com/channels/1/2/13"),
    ]
    _, answer = collect(service.summarize_texts_stream(items, "#launch"))
    assert "Shall we launch" in fake_llm.last_prompt
    assert answer.rejected
    keys = assert_extractive(answer, [c.chunk for c in answer.citations])
    assert all(any(c.quote in text for _, text, _ in items) for c in keys)  # the messages' own words
    authors = {c.chunk.title for c in keys}
    assert authors <= {"alice", "bob", "carol"} and len(keys) >= 2
    assert all(c.jump_url and c.jump_url.startswith("https://discord.com/channels/1/2/1") for c in keys)


def test_document_summary_through_the_service_shows_the_models_backed_sentences(service, docs_dir, fake_llm):
    service.ingest_paths("default", [docs_dir])
    fake_llm.replies = [
        "The bot runs on a single server [1]. The Discord token is read from the DISCORD_TOKEN variable [2]."
    ]
    _, answer = collect(service.summarize_document_stream("default", "deploy.md"))
    assert answer.led_by == "model", answer
    assert re.search(r"DISCORD_TOKEN variable \[\d\]", answer.text)


def test_key_sentences_prefer_prose_to_table_rows_and_code_and_drop_list_markers():
    text = (
        "The bot answers questions from the documents of each server.\n"
        "- The bot answers questions in threads and keeps the thread as the conversation.\n"
        "RAGCORD_BOT_ANSWERS=1 RAGCORD_BOT_QUESTIONS=documents server thread\n"
        "`bot` | answers | questions | documents | server.\n"
    )
    chunks = [Chunk("d", 0, text, "Bot", "bot.md")]
    keys = key_sentences(chunks, count=4)
    quotes = [k.quote for k in keys]
    assert "The bot answers questions in threads and keeps the thread as the conversation." in quotes
    assert not any(q.startswith("- ") for q in quotes)
    picked = key_sentences(chunks, count=1)[0].quote
    assert "RAGCORD" not in picked and "|" not in picked


def test_rows_of_a_two_column_table_are_not_prose_even_when_they_end_like_sentences():
    # one " | " a row: the table is still a table (store.text.table_headers), not a run of sentences
    text = (
        "The bot answers questions from the documents of each server.\n"
        "name | what it answers.\n"
        "bot | answers questions from the documents of each server in threads.\n"
        "helper | answers questions from the documents of each server in channels.\n"
    )
    picked = key_sentences([Chunk("d", 0, text, "Bot", "bot.md")], count=1)[0].quote
    assert picked == "The bot answers questions from the documents of each server.", picked


def test_key_rows_of_a_table_come_under_its_header_row():
    # a spreadsheet's chunks each start with its header row: key rows are meaningless without it
    header = "region | product | units sold | revenue"
    rows = [f"Region {i % 4} | gadget model {i} with a long name | {i * 10} units | {i * 99} euros" for i in range(24)]
    chunks = [Chunk("d", n, "\n".join([header, *rows[n * 8 : n * 8 + 8]]), "Sales", "sales.csv") for n in range(3)]
    keys = key_sentences(chunks, count=3)
    quotes = [k.quote for k in keys]
    assert quotes[0] == header and quotes.count(header) == 1, quotes
    assert len(quotes) == 4 and all(q in rows for q in quotes[1:])
    assert [k.number for k in keys] == [1, 2, 3, 4]


def test_nothing_to_summarise_is_declined_not_an_empty_summary():
    blank = [Chunk("d", 0, " \n\n ", "Blank", "b.md")]
    for llm in (FakeLLM(default="The blank page is white [1]."), None):
        _, answer = collect(Summarizer(llm).stream(blank, title="Blank"))
        assert answer.status == "declined" and answer.note == "There is nothing to summarise.", llm
    _, answer = collect(Summarizer(FakeLLM()).stream([], title="Blank"))
    assert answer.status == "declined"


def test_since_and_until_read_dates_times_and_spans():
    from datetime import UTC, datetime, timedelta

    import pytest

    from bot.summarize import parse_range, parse_when

    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert parse_when("2026-03-04", now) == datetime(2026, 3, 4, tzinfo=UTC)
    assert parse_when("2026-03-04", now, end=True) == datetime(2026, 3, 5, tzinfo=UTC)  # the day is included
    assert parse_when(" 2026-03-04 14:30 ", now) == datetime(2026, 3, 4, 14, 30, tzinfo=UTC)
    assert parse_when("7d", now) == now - timedelta(days=7)
    assert parse_when("12 H", now) == now - timedelta(hours=12)
    assert parse_when("2w", now) == now - timedelta(weeks=2)
    assert parse_when("yesterday", now) == datetime(2026, 3, 9, tzinfo=UTC)
    assert parse_range(None, None, now) == (None, now)
    assert parse_range("today", "today", now) == (datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
    for bad in ("next tuesday", "2026-02-30", "7", "x" * 500):
        with pytest.raises(ValueError, match="not a time I can read"):
            parse_when(bad, now)
    with pytest.raises(ValueError, match="must be before"):
        parse_range("2026-03-05", "2026-03-04", now)
