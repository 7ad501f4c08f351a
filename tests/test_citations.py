from bot.citations import (
    attribute,
    best_quote,
    cited_numbers,
    consulted,
    strip_invalid_markers,
    verify,
)
from store.text import split_sentences
from store.types import Chunk


def chunk(text: str, n: int = 0, page: int | None = None) -> Chunk:
    return Chunk(doc_id=f"d{n}", index=0, text=text, title=f"Doc {n}", source=f"/docs/{n}.md", page=page)


PASSAGES = [
    chunk("The bot stores vectors in Chroma. Each guild has its own collection, so documents never leak.", 1),
    chunk("Set RAGCORD_LLM_MODEL_PATH to a GGUF file to use a bigger model. Any llama.cpp model works.", 2, page=7),
]


def test_cited_numbers_handles_lists_and_ranges():
    assert cited_numbers("A [1]. B [2, 3]. C [4-5] and [1].") == [1, 2, 3, 4, 5]
    assert cited_numbers("no markers here") == []


def test_invalid_markers_are_removed_and_valid_kept():
    text = strip_invalid_markers("Use a GGUF file [2][7]. Vectors live in Chroma [1, 9].", {1, 2})
    assert text == "Use a GGUF file [2]. Vectors live in Chroma [1]."


def test_verify_keeps_only_existing_numbers_with_verbatim_quotes():
    text, cites = verify(
        "Point RAGCORD_LLM_MODEL_PATH at a GGUF file [2]. It runs on Mars [5].",
        PASSAGES,
        [0.8, 0.7],
        "How do I use a bigger model?",
    )
    assert "[5]" not in text
    assert [c.number for c in cites] == [2]
    assert cites[0].quote in PASSAGES[1].text  # real text, chosen by code
    assert "GGUF" in cites[0].quote
    assert cites[0].location == "p. 7"


def test_quote_picks_the_supporting_sentence():
    passage = "Intro sentence about nothing much. The tower is 330 metres tall. It was finished in 1889."
    assert (
        best_quote(passage, "How tall is the tower? 330 metres")
        == "The tower is 330 metres tall. It was finished in 1889."
    )
    assert best_quote(passage, "When was it finished? 1889").endswith("It was finished in 1889.")


def test_long_quote_is_shortened_at_word_boundaries_and_stays_verbatim():
    passage = " ".join(f"word{i}" for i in range(200)) + " needle here."
    quote = best_quote(passage, "needle", max_chars=80)
    assert len(quote) <= 82
    assert "needle" in quote
    assert quote.strip("…") in passage


def test_attribution_by_code_only_for_supported_sentences():
    answer = "Each guild has its own collection in Chroma. Bananas are yellow and tasty."
    marked = attribute(answer, PASSAGES)
    assert marked.startswith("Each guild has its own collection in Chroma. [1]")
    assert "tasty. [" not in marked


def test_verify_falls_back_to_no_citation_for_unsupported_text():
    text, cites = verify("Bananas are yellow fruit grown in warm places.", PASSAGES, [0.5, 0.4], "bananas?")
    assert cites == []
    shown = consulted(PASSAGES, [0.5, 0.4], "bananas?", text)
    assert [c.number for c in shown] == [1, 2]
    assert all(c.quote in p.text for c, p in zip(shown, PASSAGES, strict=True))


def test_sentence_split_keeps_abbreviations_and_numbers():
    parts = split_sentences("Use e.g. a GGUF file. Version 3.5 is fine! Done")
    assert parts == ["Use e.g. a GGUF file.", "Version 3.5 is fine!", "Done"]


def test_marker_dropped_when_its_passage_does_not_back_the_sentence():
    text, cites = verify(
        "Each guild has its own collection [1]. Bananas ripen in warm kitchens quickly [1].",
        PASSAGES,
        [0.8, 0.7],
        "How are guilds kept apart?",
    )
    assert text.startswith("Each guild has its own collection [1].")
    assert "quickly [1]" not in text and "Bananas ripen in warm kitchens quickly." in text
    assert [c.number for c in cites] == [1]


def test_short_claim_needs_every_word_in_the_passage():
    from bot.citations import backs

    tower = chunk("The tower was finished in 1889 after two years of work.", 3)
    assert backs("It was finished in 1889 [1].", tower)
    assert not backs("1887 [1]", tower)


def test_consulted_skips_cited_numbers_and_keeps_retrieval_order():
    shown = consulted(PASSAGES, [0.9, 0.8], "bigger model", skip=[1])
    assert [c.number for c in shown] == [2]


def test_a_marker_after_the_full_stop_is_checked_against_its_sentence():
    # "It does X. [2]": the marker belongs to the sentence before it; it used to be split off
    # as a sentence of its own with nothing to check, so any marker there survived.
    chunks = [
        Chunk("d", 0, "Roses need six hours of sun.", "Garden", "g"),
        Chunk("d", 1, "Invoices go out monthly.", "B", "b"),
    ]
    text, citations = verify("Invoices go out every month. [1]", chunks, [0.9, 0.8], "When do invoices go out?")
    assert "[1]" not in text
    assert [c.number for c in citations] == [2]  # attributed by code to the passage that backs it


def test_the_lead_passage_quote_shows_its_next_best_part_instead_of_repeating_the_lead():
    passage = chunk(
        "The festival moved to the harbour in 1998. Its founder was Maria Lopez, a painter from Cadiz. "
        "Tickets are sold at the gate.",
        1,
    )
    lead = "The festival moved to the harbour in 1998."
    # without `avoid`, the question's words pick the sentence the lead already shows
    plain = consulted([passage], [0.9], "When did the festival move to the harbour?", max_quote=60)
    assert plain[0].quote.startswith(lead)
    shown = consulted([passage], [0.9], "When did the festival move to the harbour?", max_quote=60, avoid={1: lead})
    assert lead not in shown[0].quote
    assert shown[0].quote.startswith("Its founder was Maria Lopez")


def test_reader_scores_pick_the_quote_over_lexical_overlap():
    passage = chunk("Budget talks ran late on Monday. The council approved 4 million for the new bridge.", 1)
    question = "How much money did the budget talks give the bridge?"
    lexical = best_quote(passage.text, question, max_chars=60)
    assert lexical.startswith("Budget talks ran late")
    # the reader (lexical + dense + rank) scored the second sentence higher
    read = best_quote(passage.text, question, max_chars=60, sentence_scores={0: 0.4, 1: 1.2})
    assert read.startswith("The council approved 4 million")
    assert read in passage.text or read.rstrip("…") in passage.text
