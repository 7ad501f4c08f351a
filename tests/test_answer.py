from __future__ import annotations

import re

import numpy as np
import pytest

from bot.answer import Answerer, Completed, Evidence, Retrieved, Token, Turn, standalone_query
from bot.checks import tidy
from bot.prompts import SYSTEM
from bot.settings import Settings
from store.types import Chunk, Hit
from tests.fakes import cite_first_passage

NS = "default"


def test_answer_cites_verified_passages_with_quotes(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    fake_llm.replies = [cite_first_passage]
    answer = service.ask(NS, "Where is the Discord token read from?")
    assert answer.status == "answered"
    assert answer.citations, answer
    cite = answer.citations[0]
    assert "DISCORD_TOKEN" in cite.quote
    assert cite.quote in cite.chunk.text  # verbatim
    assert cite.chunk.section == "Deploying > Tokens"


def test_prompt_numbers_passages_and_starts_with_fixed_system_prompt(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    service.ask(NS, "When are invoices sent?")
    messages = fake_llm.calls[-1]
    assert messages[0].role == "system" and messages[0].content == SYSTEM
    user = messages[-1].content
    assert "[1] Invoices are sent" in user or "[2] Invoices are sent" in user
    assert "Question: When are invoices sent?" in user
    assert "<script>" not in user and "alert" not in user


def test_no_relevant_passage_declines_without_calling_the_model(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    answer = service.ask(NS, "quantum chromodynamics lattice gauge theory")
    assert answer.status == "declined"
    assert "couldn't find" in answer.note
    assert fake_llm.calls == []


def test_empty_namespace_declines(service, fake_llm):
    answer = service.ask("empty", "anything at all?")
    assert answer.status == "declined" and fake_llm.calls == []


def test_invalid_citation_numbers_never_shown(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    fake_llm.replies = ["Refunds take ten business days [9]. Invoices go out monthly [0]."]
    answer = service.ask(NS, "How long do refunds take?")
    assert "[9]" not in answer.text and "[0]" not in answer.text
    assert all(1 <= c.number <= len(answer.hits) for c in answer.evidence)
    assert answer.evidence, "falls back to supported or consulted passages"
    assert all(c.quote in c.chunk.text for c in answer.evidence)


def test_stream_events_in_order(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    fake_llm.replies = ["Roses need six hours of sun [1]."]
    events = list(service.ask_stream(NS, "How much sun do roses need?"))
    assert isinstance(events[0], Retrieved)
    assert isinstance(events[1], Evidence) and "six hours of sun" in events[1].lead.quote  # before any token
    assert all(isinstance(e, Token) for e in events[2:-1]) and len(events) > 4
    assert isinstance(events[-1], Completed)
    assert "".join(e.text for e in events[2:-1]).startswith("Roses need")


def test_model_failure_ends_with_explanation(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    fake_llm.fail_after = 2
    fake_llm.replies = ["Roses need six hours of sun [1]."]
    answer = service.ask(NS, "How much sun do roses need?")
    # the reader's quote still answers; the model's half-written text is not shown
    assert answer.status == "answered" and answer.led_by == "quote" and answer.text == ""
    assert "six hours of sun" in answer.reply
    assert answer.rejected == "the model failed" and "the model failed" in answer.note


def test_model_failure_without_evidence_ends_with_explanation(service, docs_dir, fake_llm):
    from bot.reader import SentenceSelector

    service.ingest_paths(NS, [docs_dir])
    answerer = service.answerer
    answerer.selector = SentenceSelector(None, passages=0)  # a reader that finds nothing
    fake_llm.fail_after = 2
    fake_llm.replies = ["Roses need six hours of sun [1]."]
    answer = answerer.ask(NS, "How much sun do roses need?")
    assert answer.status == "failed"
    assert answer.note.startswith("the model failed:") and "try again" in answer.note


def test_follow_up_question_carries_earlier_topic():
    history = [Turn("How do refunds work for invoices?", "Refunds take ten days [1].")]
    query = standalone_query("and how long do they take?", history, max_turns=4)
    assert "refunds" in query and "invoices" in query
    assert standalone_query("hello there", history, max_turns=0) == "hello there"


def test_summary_of_document_cites_real_text(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    fake_llm.replies = ["The bot runs on a single server [1]. The token comes from DISCORD_TOKEN [2]."]
    answer = service.collect(service.summarize_document_stream(NS, "deploy.md"))
    assert answer.citations
    assert all(c.quote in c.chunk.text for c in answer.citations)
    assert "Summarise" in fake_llm.last_prompt


def test_lexical_coverage_counts_stemmed_question_terms_in_passage_title_and_section():
    from bot.answer import lexical_coverage
    from store.types import Chunk, Hit

    hit = Hit(Chunk("d", 0, "Point the setting at a GGUF file.", "Using a bigger model", "m.md", section="Models"), 0.2)
    assert lexical_coverage("How do I use a bigger model?", hit) == 1.0
    assert lexical_coverage("Who won the 1998 world cup final?", hit) == 0.0
    assert lexical_coverage("model?", hit) == 0.0  # one term is too little to vouch for relevance


def test_model_reads_the_sentences_of_each_passage_that_match_the_question():
    from bot.prompts import answer_messages
    from store.types import Chunk

    filler = " ".join(f"Sentence {i} talks about gardening and the weather in spring." for i in range(12))
    text = f"{filler} The backup job runs every night at 02:00 UTC and keeps 30 days. {filler}"
    chunk = Chunk("d1", 0, text, "Ops", "ops.md")
    user = answer_messages("When does the backup job run?", [chunk], passage_chars=200)[-1].content
    passage = user.split("[1] ", 1)[1].split("\n")[0]
    assert "The backup job runs every night at 02:00 UTC" in passage  # found in the middle, not the head
    assert len(passage) <= 201 and passage.rstrip("…").strip() in " ".join(text.split())
    whole = answer_messages("When does the backup job run?", [chunk], passage_chars=0)[-1].content
    assert " ".join(text.split()) in whole  # 0 keeps the whole passage


def test_a_model_that_repeats_itself_is_stopped_and_its_answer_says_each_sentence_once(service, docs_dir, fake_llm):
    service.ingest_paths(NS, [docs_dir])
    loop = "Roses need six hours of sun [1]. Water them weekly. " + "Roses need six hours of sun. [2] " * 30
    fake_llm.replies = [loop]
    answer = service.ask(NS, "How much sun do roses need?")
    assert answer.text.count("six hours") == 1, answer.text
    assert "Water them weekly." in answer.text
    assert answer.timings["tokens"] < 30  # stopped at the first repeat, not at the end of the loop


def test_repetition_guard_passes_distinct_sentences_and_closes_the_model_stream():
    from bot.repetition import drop_repeated_sentences, stop_when_repeating

    closed: list[bool] = []

    def model(text: str):  # type: ignore[no-untyped-def]
        try:
            yield from re.findall(r"\S+\s*", text)
        finally:
            closed.append(True)

    plain = "1. Install it. 2. Run it.\nThe token is read from the environment [1]. Version 3.5 works."
    assert "".join(stop_when_repeating(model(plain))) == plain and closed == [True]
    looping = "Start the bot. [1] Then sync. [1] Start the bot. [2] Then sync. Then sync."
    assert "".join(stop_when_repeating(model(looping))) == "Start the bot. [1] Then sync. [1] Start the bot. "
    assert closed == [True, True]  # stopped mid-stream: the model's generator was closed
    assert drop_repeated_sentences(looping) == "Start the bot. [1] Then sync. [1]"
    assert drop_repeated_sentences("- Add it.\n- Add it.\n- Test it.\n") == "- Add it.\n- Test it.\n"
    snippet = "Use this:\n\n```\nrestart: always\nrestart: always\n```\n\nThen start it."
    assert "".join(stop_when_repeating(model(snippet))) == snippet  # lines of a snippet are not sentences
    assert drop_repeated_sentences(snippet) == snippet
    assert drop_repeated_sentences(plain) == plain
    # a real model's piece after the repeat was " [": the stop leaves it, the final text does not
    assert tidy("Check the quote. [1] Then sync. Then sync. [") == "Check the quote. [1] Then sync."


def test_a_store_outage_is_said_as_one_not_as_nothing_found(service, docs_dir, fake_llm, monkeypatch):
    from store.protocol import STORE_OUTAGE_NOTICE, StoreUnavailable

    service.ingest_paths(NS, [docs_dir])

    def down(*args, **kwargs):
        raise StoreUnavailable("cannot reach chroma at 127.0.0.1:8000")

    monkeypatch.setattr(service.retriever, "search", down)
    answer = service.ask(NS, "How long do refunds take?")
    assert answer.status == "failed" and answer.note == STORE_OUTAGE_NOTICE
    assert "127.0.0.1" not in answer.note and fake_llm.calls == []


def test_a_damaged_index_that_cannot_be_rebuilt_here_is_said_without_internals(
    service, docs_dir, fake_llm, monkeypatch
):
    from store.protocol import STORE_DAMAGED_NOTICE, StoreDamaged

    service.ingest_paths(NS, [docs_dir])
    monkeypatch.setattr(service.store, "_repair_damaged", lambda: False)  # as on a Chroma server

    def damaged(*args, **kwargs):
        from chromadb.errors import InternalError

        raise InternalError("Error constructing hnsw segment reader: Error deserializing pickle file: EOF")

    col = service.store._chunks(NS)
    monkeypatch.setattr(type(col), "query", damaged)
    with pytest.raises(StoreDamaged):
        service.store.query(NS, service.embedder.embed_query("refunds"), 3)
    answer = service.ask(NS, "How long do refunds take?")
    assert answer.status == "failed" and answer.note == STORE_DAMAGED_NOTICE
    assert "pickle" not in answer.note and fake_llm.calls == []


class _FarPassages:
    """A retriever whose passages embed far from the question (cosine `dense`), while the
    sentence `close` embeds at cosine `sentence` to it (every other sentence at 0)."""

    def __init__(self, texts: list[str], close: str, dense: float, sentence: float) -> None:
        self.texts, self.close, self.dense, self.sentence = texts, close, dense, sentence
        self.embedder = self

    def embed(self, texts):
        c = self.sentence
        return np.asarray([[c, (1 - c * c) ** 0.5] if t == self.close else [0.0, 1.0] for t in texts])

    def embed_query(self, text):
        return np.asarray([1.0, 0.0])

    def term_rarity(self, namespace, query, scopes=None):
        return {}  # every word weighs the same

    def search(self, namespace, query, k, scopes=None, vector=None):
        return [
            Hit(Chunk(f"d{i}", 0, t, f"Doc {i}", f"doc{i}.md"), score=0.5, dense=self.dense)
            for i, t in enumerate(self.texts)
        ]


FAR = [
    "Our office plants are watered on Mondays. The kettle is descaled every month by facilities.",
    "Parking permits are renewed in January at the front desk.",
]


@pytest.mark.parametrize(("sentence", "status"), [(0.6, "cautious"), (0.3, "declined")])
def test_a_passage_that_embeds_far_is_still_answered_when_one_of_its_sentences_is_close(sentence, status):
    # a 200-word passage dilutes the one sentence that answers; that sentence's own cosine tells
    retriever = _FarPassages(FAR, "The kettle is descaled every month by facilities.", dense=0.25, sentence=sentence)
    answer = Answerer(retriever, None, min_score=0.32, min_sentence_score=0.45).ask(
        NS, "How frequently does the kettle get cleaned?"
    )
    assert answer.status == status, answer
    if status == "cautious":
        assert answer.lead is not None and "every month" in answer.lead.quote


@pytest.mark.parametrize(("dense", "status"), [(0.315, "cautious"), (0.30, "declined")])
def test_by_default_the_decline_threshold_sits_halfway_between_unrelated_and_answerable_passages(dense, status):
    # tuning half of XQuAD dev: the best passage of an unrelated question that nothing else
    # rescues reaches 0.303, the lowest of an answerable one 0.320; the default is halfway
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    retriever = _FarPassages(FAR, "The kettle is descaled every month by facilities.", dense=dense, sentence=0.0)
    answer = Answerer(
        retriever, None, min_score=settings.min_score, min_sentence_score=settings.min_sentence_score
    ).ask(NS, "How frequently does the kettle get cleaned?")
    assert answer.status == status, answer


def test_the_keyword_rescue_weighs_words_by_rarity_so_common_ones_cannot_vouch_for_a_passage(service):
    # the passages embed far from both questions (min_score 0.99): only the keyword rescue can answer
    text = (
        "Name one owner for every service. The cause of each outage is written down by its owner. "
        "Owners review the alerts of their service every week."
    )
    service.ingest_bytes(NS, text.encode(), "owners.md", source="owners.md", title="Owners")
    service.settings = service.settings.model_copy(
        update={"min_score": 0.99, "caution_score": 0.99, "min_sentence_score": 0.0}
    )
    # every telling word is there: answered, with a caution
    assert service.ask(NS, "Who has written down the cause of each outage?").status == "cautious"
    # 3 of its 4 words are there, but the one that tells (found nowhere) is not: declined
    assert service.ask(NS, "Name one of the causes of immunodeficiency.").status == "declined"
