from __future__ import annotations

from store.lexical import Bm25Index, Bm25Params, LexicalIndexes
from store.retrieval import Retriever
from store.text import terms

NS = "default"


def test_bm25_ranks_stems_and_ignores_stop_words():
    index = Bm25Index.build(
        [
            ("a", "Refunds are processed within ten business days."),
            ("b", "The refund policy: refunding takes days."),
            ("c", "Roses need sun."),
        ],
        "g1",
    )
    hits = index.search("refund", 5)
    assert [cid for cid, _ in hits] == ["b", "a"]  # stemmed: refund, refunds, refunding
    assert all(score > 0 for _, score in hits)
    assert index.search("the are of", 5) == []  # only stop words
    assert index.search("zeppelin", 5) == []
    scores = index.score_all("roses")
    assert scores is not None and index.score_of(scores, "c") > 0 == index.score_of(scores, "a")
    assert index.score_of(scores, "unknown") == 0.0


def test_empty_index_answers_nothing():
    index = Bm25Index.build([], "g0")
    assert len(index) == 0 and index.search("anything", 3) == [] and index.score_all("anything") is None


def test_index_follows_ingest_reingest_and_forget(service, docs_dir):
    service.ingest_paths(NS, [docs_dir])
    index = service.retriever.lexical_index(NS)
    assert set(index.ids) == service.store.live_ids(NS)
    # titles are indexed with the text: "Garden" is only the HTML page's title
    found = index.search("garden", 3)
    assert found and service.store.get_chunks(NS, [found[0][0]])[0].title == "Garden"

    again = service.retriever.lexical_index(NS)
    assert again is index  # nothing changed: same generation, same index
    service.ingest_paths(NS, [docs_dir])  # unchanged files commit nothing
    assert service.retriever.lexical_index(NS) is index

    (docs_dir / "billing.txt").write_text("Quarterly invoices replace the monthly ones.\n")
    service.ingest_paths(NS, [docs_dir])
    changed = service.retriever.lexical_index(NS)
    assert changed.generation != index.generation
    assert set(changed.ids) == service.store.live_ids(NS)
    assert changed.search("quarterly", 3) and not changed.search("refunds", 3)

    service.forget(NS, "billing.txt")
    forgotten = service.retriever.lexical_index(NS)
    assert set(forgotten.ids) == service.store.live_ids(NS)
    assert forgotten.search("quarterly invoices", 3) == []


def test_index_is_saved_and_reloaded_by_generation(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir])
    built = service.retriever.lexical_index(NS)
    assert service.retriever.lexical.builds == 1

    # a restart: a new process loads the saved index instead of rebuilding it
    fresh = LexicalIndexes(tmp_path / "lexical")
    restarted = Retriever(service.store, service.embedder, fresh)
    loaded = restarted.lexical_index(NS)
    assert fresh.builds == 0
    assert loaded.ids == built.ids and loaded.generation == built.generation
    assert loaded.search("roses sun", 2) == built.search("roses sun", 2)

    # the store moved on: the saved index is stale and is rebuilt, then saved again
    (docs_dir / "extra.md").write_text("# Extra\n\nThe zeppelin hangar opens at dawn.\n")
    service.ingest_paths(NS, [docs_dir])
    assert restarted.lexical_index(NS).search("zeppelin", 1)
    assert fresh.builds == 1
    third = LexicalIndexes(tmp_path / "lexical")
    assert Retriever(service.store, service.embedder, third).lexical_index(NS).search("zeppelin", 1)
    assert third.builds == 0

    # other BM25 settings: the saved index does not fit and is rebuilt once
    tuned = LexicalIndexes(tmp_path / "lexical", Bm25Params(k1=0.9, b=0.4))
    Retriever(service.store, service.embedder, tuned).lexical_index(NS)
    assert tuned.builds == 1


def test_unreadable_saved_index_is_rebuilt(service, docs_dir, tmp_path):
    service.ingest_paths(NS, [docs_dir])
    service.retriever.lexical_index(NS)
    folder = next(p for p in (tmp_path / "lexical").iterdir() if p.is_dir())
    (folder / "ids.json").write_text("{not json")
    fresh = LexicalIndexes(tmp_path / "lexical")
    index = Retriever(service.store, service.embedder, fresh).lexical_index(NS)
    assert fresh.builds == 1 and set(index.ids) == service.store.live_ids(NS)


def test_a_term_few_chunks_hold_weighs_more_and_one_no_visible_chunk_holds_weighs_most():
    index = Bm25Index.build(
        [
            ("a", "Name the owner of each deploy and the cause of each outage.", "guild"),
            ("b", "Name one reviewer for every change.", "guild"),
            ("c", "Name the channel where releases are announced.", "guild"),
            ("d", "Immunodeficiency notes from the private lab.", "lab"),
        ],
        "g1",
    )
    weights = index.term_rarity({"name", "caus", "immunodefici", "zzz"}, frozenset({"guild"}))
    assert weights["name"] < weights["caus"] < weights["zzz"]
    # a term only a hidden channel holds weighs as one nobody holds: rarity tells nothing of it
    assert weights["immunodefici"] == weights["zzz"]
    assert index.term_rarity({"immunodefici"}, None)["immunodefici"] < weights["zzz"]


def test_an_identifier_is_also_the_words_it_is_made_of():
    # teams' documents name settings and code: `RAGCORD_ANSWER_MODE`, `chunk_tokens`, embedModel;
    # a question in plain words ("answer mode") must match them, and the whole name still matches
    assert {"ragcord_answer_mod", "ragcord", "answer", "mode"} <= terms("Set `RAGCORD_ANSWER_MODE`.")
    assert {"chunk_token", "chunk", "token", "embedmodel", "emb", "model"} <= terms("chunk_tokens, embedModel()")
    assert terms("McDonald") >= {"mcdonald"} and terms("plain words") == {"plain", "word"}
    index = Bm25Index.build(
        [
            ("a", "Set `RAGCORD_ANSWER_MODE` to extract for the fastest bot."),
            ("b", "Every answer names its sources."),
            ("c", "Call `embedModel()` before the first query."),
        ],
        "g1",
    )
    assert index.search("answer mode", 3)[0][0] == "a"
    assert index.search("embed model", 3)[0][0] == "c"
    assert index.search("RAGCORD_ANSWER_MODE", 3)[0][0] == "a"


def test_an_identifier_in_the_question_is_matched_whole_not_by_its_parts():
    # documents are indexed with an identifier's words, a question is not: "mkd_test.docx" asks for
    # that file, and a chunk that only says "test" does not answer it
    index = Bm25Index.build([("a", "mkd_test.docx is 135824 bytes."), ("b", "A test of the parser.")], "g1")
    assert [cid for cid, _ in index.search("mkd_test.docx", 3)] == ["a"]
    assert [cid for cid, _ in index.search("What is the mkd test?", 3)][0] == "a"


def test_a_word_matches_the_forms_stemming_misses():
    # Snowball strips suffixes, so "longest" stayed "longest" and "began" "began": "How long may a
    # question be?" could not match "Longest question accepted"; the dictionary form comes first
    assert terms("longest") == terms("long") and terms("biggest") == terms("big")
    assert terms("began") == terms("begins") and terms("written") == terms("writes")
    assert terms("children") == terms("child") and terms("mice") == terms("mouse")
    assert terms("refunding") == terms("refunds") and terms("running") == terms("ran")
    index = Bm25Index.build(
        [("a", "Longest question accepted, in characters."), ("b", "Every question is read twice by the model.")],
        "g1",
    )
    assert [cid for cid, _ in index.search("How long may a question be?", 3)][0] == "a"
    assert index.search("When did it begin?", 3) == []


def test_a_clipped_word_matches_the_word_it_shortens():
    # teams write "docs", "config" and "repo" in questions where the documents say "documents",
    # "configuration" and "repository": "How do I add a folder of docs?" was declined
    assert terms("docs") == terms("documents") and terms("doc") == terms("document")
    assert terms("config") == terms("configuration") and terms("repos") == terms("repositories")
    assert terms("admins") == terms("administrators") and terms("info") == terms("information")
    index = Bm25Index.build(
        [("a", "Ingest adds or updates documents."), ("b", "The folder is walked, newest first.")], "g1"
    )
    assert [cid for cid, _ in index.search("update docs", 3)][0] == "a"
