"""Loaders for the formats teams share (issue 14, item 1): DOCX, PPTX, XLSX, CSV/TSV,
OpenDocument, EPUB, RTF and e-mail. Every file is built here with the format's own library
(or written as text), so the tests need no shared data."""

from __future__ import annotations

import contextlib
import io
import time
import zipfile
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.service import RagService
from ingest.loaders import SUPPORTED_SUFFIXES, LoadError, load_bytes
from ingest.loaders.office import OLE_MAGIC
from store.types import Chunk, LoadedDocument

MB = 1024 * 1024
NS = "office"


def load(data: bytes, name: str) -> LoadedDocument:
    return load_bytes(data, name, max_bytes=50 * MB, source=f"test://{name}")


def everything(doc: LoadedDocument) -> str:
    return "\n".join(s.text for s in doc.sections)


# -- builders -------------------------------------------------------------------------------------
def make_docx() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "Team Handbook"
    d.sections[0].header.paragraphs[0].text = "Confidential header line"
    d.sections[0].footer.paragraphs[0].text = "Page footer text"
    d.add_heading("Onboarding", level=1)
    d.add_paragraph("New hires get a laptop on day one.")
    d.add_heading("Accounts", level=2)
    d.add_paragraph("The VPN token is issued by the helpdesk.")
    table = d.add_table(rows=3, cols=2)
    for r, (a, b) in enumerate([("System", "Owner"), ("VPN", "Helpdesk"), ("Payroll", "Finance")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    d.add_heading("Leave", level=1)
    d.add_paragraph("Vacation requests go through the portal.")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def make_pptx() -> bytes:
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Quarterly Review"
    first.placeholders[1].text = "Revenue grew in every region."
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Roadmap"
    group = second.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(2), Inches(3), Inches(1))
    box.text_frame.text = "Nested launch plan for the mobile app"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "Milestone", "Date"
    table.cell(1, 0).text, table.cell(1, 1).text = "Beta", "March"
    second.notes_slide.notes_text_frame.text = "Mention the hiring freeze."
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_xlsx(rows: int = 60, *, far_row: int | None = None) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Budget"
    sheet.append(["Item", "Team", "Cost"])
    for n in range(rows):
        sheet.append([f"item-{n}", f"team-{n % 3}", n * 10])
    sheet["E2"] = "=SUM(C2:C9)"
    if far_row:
        sheet.cell(row=far_row, column=1, value="far away")
    secret = book.create_sheet("Secret")
    secret.append(["password", "hunter2"])
    secret.sheet_state = "hidden"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# -- DOCX -----------------------------------------------------------------------------------------
def test_docx_headings_tables_headers_and_footers() -> None:
    doc = load(make_docx(), "handbook.docx")
    assert doc.kind == "docx" and doc.title == "Team Handbook"
    by_heading = {s.heading: s.text for s in doc.sections}
    assert by_heading["Onboarding"] == "New hires get a laptop on day one."
    accounts = by_heading["Onboarding > Accounts"]
    assert "VPN token" in accounts
    assert "System | Owner" in accounts and "System: VPN; Owner: Helpdesk" in accounts  # header kept per row
    assert by_heading["Leave"].startswith("Vacation requests")  # a level-1 heading resets the path
    assert "Confidential header line" in by_heading["Header"] and "Page footer text" in by_heading["Footer"]


def test_docx_footnotes_are_read_from_the_part_xml() -> None:
    from ingest.loaders.docx import _footnotes

    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    xml = (
        f'<w:footnotes xmlns:w="{w}"><w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:t>--</w:t></w:r></w:p>'
        '</w:footnote><w:footnote w:id="1"><w:p><w:r><w:t>Source: the 2024 </w:t></w:r><w:r><w:t>audit.</w:t>'
        "</w:r></w:p></w:footnote></w:footnotes>"
    ).encode()
    assert _footnotes(xml, "a.docx") == "[1] Source: the 2024 audit."


# -- PPTX -----------------------------------------------------------------------------------------
def test_pptx_slides_titles_groups_tables_and_notes() -> None:
    doc = load(make_pptx(), "deck.pptx")
    assert doc.kind == "pptx" and doc.pages == 2
    assert [(s.page, s.heading) for s in doc.sections] == [(1, "Quarterly Review"), (2, "Roadmap")]
    slide2 = doc.sections[1].text
    assert "Nested launch plan" in slide2  # inside a group shape
    assert "Milestone: Beta; Date: March" in slide2
    assert "Notes: Mention the hiring freeze." in slide2
    chunk = Chunk("d", 0, slide2, doc.title, doc.source, page=2, section="Roadmap", extra=tuple(doc.extra.items()))
    assert chunk.where == "slide 2 · Roadmap"


# -- XLSX -----------------------------------------------------------------------------------------
def test_xlsx_rows_in_pieces_with_header_and_range() -> None:
    doc = load(make_xlsx(), "budget.xlsx")
    assert doc.kind == "xlsx" and len(doc.sections) > 1
    for s in doc.sections:
        assert s.text.startswith("Item | Team | Cost\n")  # the header repeated in every piece
        assert s.heading.startswith("Budget!A")
    assert doc.sections[0].heading.startswith("Budget!A2:")
    last = doc.sections[-1].heading
    assert last.endswith(":E61") or last.endswith("61")
    text = everything(doc)
    assert "item-59 | team-2 | 590" in text
    assert "=SUM" not in text  # cached values only, never formulas
    assert "hunter2" not in text and any("hidden sheets were skipped: Secret" in w for w in doc.warnings)


def test_xlsx_claiming_a_million_rows_is_capped_quickly() -> None:
    data = make_xlsx(rows=5, far_row=1_000_000)
    start = time.perf_counter()
    doc = load(data, "huge.xlsx")
    assert time.perf_counter() - start < 5
    assert "item-4" in everything(doc) and "far away" not in everything(doc)
    assert any("rows after row 1,007 were skipped (1,000 empty rows in a row)" in w for w in doc.warnings)


# -- CSV / TSV ------------------------------------------------------------------------------------
def test_csv_sniffs_delimiter_and_encoding_and_repeats_header() -> None:
    lines = ["Ville;Café;Note"] + [f"Paris-{n};Crème brûlée {n};{n}" for n in range(80)]
    doc = load("\n".join(lines).encode("cp1252"), "cafes.csv")
    assert doc.kind == "csv" and len(doc.sections) > 1
    assert all(s.text.startswith("Ville | Café | Note\n") for s in doc.sections)
    assert doc.sections[0].heading.startswith("rows 2-")
    assert "Paris-79 | Crème brûlée 79 | 79" in doc.sections[-1].text
    assert doc.sections[-1].heading.endswith("-81")


def test_tsv_is_read_with_tabs() -> None:
    doc = load(b"name\trole\nAda\tengineer\nLin\tdesigner\n", "team.tsv")
    assert doc.sections[0].text == "name | role\nAda | engineer\nLin | designer"
    assert doc.sections[0].heading == "rows 2-3"


# -- OpenDocument ---------------------------------------------------------------------------------
def _odf_bytes(document: object) -> bytes:
    out = io.BytesIO()
    document.write(out)  # type: ignore[attr-defined]
    return out.getvalue()


def test_odt_headings_and_table() -> None:
    from odf.opendocument import OpenDocumentText
    from odf.table import Table, TableCell, TableRow
    from odf.text import H, P

    d = OpenDocumentText()
    d.text.addElement(H(outlinelevel=1, text="Policies"))
    d.text.addElement(P(text="Expenses need a receipt."))
    d.text.addElement(H(outlinelevel=2, text="Travel"))
    table = Table(name="T")
    for a, b in [("City", "Per diem"), ("Oslo", "90")]:
        row = TableRow()
        for value in (a, b):
            cell = TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    d.text.addElement(table)
    doc = load(_odf_bytes(d), "policies.odt")
    assert doc.kind == "odt"
    by_heading = {s.heading: s.text for s in doc.sections}
    assert by_heading["Policies"] == "Expenses need a receipt."
    assert "City: Oslo; Per diem: 90" in by_heading["Policies > Travel"]


def test_ods_sheets_and_odp_slides() -> None:
    from odf.draw import Frame, Page, TextBox
    from odf.opendocument import OpenDocumentPresentation, OpenDocumentSpreadsheet
    from odf.style import MasterPage, PageLayout
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    sheet_doc = OpenDocumentSpreadsheet()
    table = Table(name="Stock")
    for values in [("Part", "Count"), ("bolt", "12"), ("nut", "40")]:
        row = TableRow()
        for v in values:
            cell = TableCell()
            cell.addElement(P(text=v))
            row.addElement(cell)
        table.addElement(row)
    empty = TableRow(numberrowsrepeated=1_000_000)  # claims a million empty rows
    empty.addElement(TableCell())
    table.addElement(empty)
    sheet_doc.spreadsheet.addElement(table)
    doc = load(_odf_bytes(sheet_doc), "stock.ods")
    assert [(s.heading, s.text) for s in doc.sections] == [("Stock!A2:B3", "Part | Count\nbolt | 12\nnut | 40")]

    deck = OpenDocumentPresentation()
    layout = PageLayout(name="L")
    deck.automaticstyles.addElement(layout)
    master = MasterPage(name="M", pagelayoutname=layout)
    deck.masterstyles.addElement(master)
    for n in (1, 2):
        page = Page(masterpagename=master, name=f"page{n}")
        frame = Frame(width="20cm", height="3cm", x="1cm", y="1cm")
        box = TextBox()
        box.addElement(P(text=f"Slide body number {n}"))
        frame.addElement(box)
        page.addElement(frame)
        deck.presentation.addElement(page)
    slides = load(_odf_bytes(deck), "talk.odp")
    assert [(s.page, s.heading, s.text) for s in slides.sections] == [
        (1, "page1", "Slide body number 1"),
        (2, "page2", "Slide body number 2"),
    ]
    assert slides.extra["page_label"] == "slide"


# -- EPUB, RTF ------------------------------------------------------------------------------------
def test_epub_chapters_are_sections_titled_from_the_toc() -> None:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("id1")
    book.set_title("Field Guide")
    book.set_language("en")
    chapters = []
    for n, (title, body) in enumerate([("Birds", "Herons wade in shallow water."), ("Trees", "Oaks live long.")]):
        c = epub.EpubHtml(title=title, file_name=f"ch{n}.xhtml", lang="en")
        c.content = f"<html><body><p>{body}</p><p hidden>invisible words</p></body></html>"
        book.add_item(c)
        chapters.append(c)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = chapters
    out = io.BytesIO()
    epub.write_epub(out, book)
    doc = load(out.getvalue(), "guide.epub")
    assert doc.kind == "epub" and doc.title == "Field Guide"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Birds", "Herons wade in shallow water."),
        ("Trees", "Oaks live long."),
    ]


def test_rtf_text_and_code_page() -> None:
    rtf = rb"{\rtf1\ansi\ansicpg1252{\fonttbl\f0 Arial;}\f0 Caf\'e9 opens at \b nine\b0 .\par Second line\u8364?.}"
    doc = load(rtf, "memo.rtf")
    assert doc.kind == "rtf"
    assert "Café opens at nine." in doc.sections[0].text and "Second line€" in doc.sections[0].text
    assert load(rtf, "memo.txt").kind == "rtf"  # the content says RTF


# -- e-mail ---------------------------------------------------------------------------------------
def test_eml_keeps_headers_prefers_plain_and_reads_attachments() -> None:
    msg = EmailMessage()
    msg["Subject"] = "Outage report"
    msg["From"] = "Ops <ops@example.com>"
    msg["Date"] = "Tue, 01 Dec 2026 10:00:00 +0000"
    msg.set_content("The database failed over at 09:14.")
    msg.add_alternative("<p>HTML version should not be used</p>", subtype="html")
    msg.add_attachment(b"host,status\ndb1,down\n", maintype="text", subtype="csv", filename="hosts.csv")
    msg.add_attachment(b"\x89PNG\r\n", maintype="image", subtype="png", filename="graph.png")
    doc = load(msg.as_bytes(), "outage.eml")
    assert doc.kind == "eml" and doc.title == "Outage report"
    body = doc.sections[0].text
    assert body.startswith("Subject: Outage report\nFrom: Ops <ops@example.com>")
    assert "Date: Tue, 01 Dec 2026" in body and "failed over at 09:14" in body and "HTML version" not in body
    assert doc.extra["email_from"] == "Ops <ops@example.com>"
    attached = [s for s in doc.sections if s.heading.startswith("Attachment: hosts.csv")]
    assert len(attached) == 1 and attached[0].text == "host | status\ndb1 | down"
    assert any("graph.png" in w for w in doc.warnings)


def test_eml_html_only_body_goes_through_the_html_loader() -> None:
    msg = EmailMessage()
    msg["Subject"] = "Newsletter"
    msg.set_content("<html><body><script>x()</script><p>Visible news</p></body></html>", subtype="html")
    doc = load(msg.as_bytes(), "news.eml")
    assert "Visible news" in doc.sections[0].text and "x()" not in doc.sections[0].text


# -- refusals and detection -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.docx", "a.pptx", "a.xlsx", "a.odt", "a.ods", "a.odp", "a.epub"])
def test_broken_and_encrypted_zip_formats_are_refused_in_one_line(name: str) -> None:
    good = {"a.pptx": make_pptx, "a.xlsx": make_xlsx}.get(name, make_docx)()
    for data in (good[: len(good) // 2], b"PK\x03\x04 not really a zip", OLE_MAGIC + b"\x00" * 600):
        with pytest.raises(LoadError) as info:
            load(data, name)
        message = str(info.value)
        assert "\n" not in message and name in message
    with pytest.raises(LoadError, match="password-protected"):
        load(OLE_MAGIC + b"\x00" * 600, name)


def test_decompression_bomb_is_refused_in_under_a_second() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", b"\x00" * (64 * MB))
    data = out.getvalue()
    assert len(data) < MB
    start = time.perf_counter()
    with pytest.raises(LoadError, match="decompression bomb"):
        load(data, "bomb.docx")
    assert time.perf_counter() - start < 1


def test_format_comes_from_the_content_not_the_name() -> None:
    assert load(make_xlsx(), "really-a-sheet.docx").kind == "xlsx"
    assert load(make_docx(), "attachment.zip").kind == "docx"


def test_new_suffixes_are_supported() -> None:
    for suffix in (".docx", ".pptx", ".xlsx", ".csv", ".tsv", ".odt", ".ods", ".odp", ".epub", ".rtf", ".eml"):
        assert suffix in SUPPORTED_SUFFIXES


# -- end to end -----------------------------------------------------------------------------------
def test_answers_cite_a_docx_heading_and_an_xlsx_range(service: RagService) -> None:
    service.ingest_bytes(NS, make_docx(), "handbook.docx", source="upload:handbook.docx")
    service.ingest_bytes(NS, make_xlsx(), "budget.xlsx", source="upload:budget.xlsx")
    answer = service.ask(NS, "Who issues the VPN token?")
    top = answer.hits[0].chunk
    assert "VPN token" in top.text and top.where == "Onboarding > Accounts"
    answer = service.ask(NS, "What does item-42 of team-0 cost?")
    top = next(h.chunk for h in answer.hits if "item-42" in h.chunk.text)
    assert top.where.startswith("Budget!A") and "Item | Team | Cost" in top.text


# -- damaged real files: only LoadError -----------------------------------------------------------
_GOOD: dict[str, bytes] = {}


def _good(name: str) -> bytes:
    if name not in _GOOD:
        _GOOD[name] = {"a.docx": make_docx, "a.pptx": make_pptx, "a.xlsx": make_xlsx}[name]()
    return _GOOD[name]


@settings(max_examples=max(5, (settings.default.max_examples if settings.default else 100) // 4), deadline=None)
@given(
    name=st.sampled_from(["a.docx", "a.pptx", "a.xlsx"]),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_damaged_office_files_load_or_raise_load_error(name: str, edits: list[tuple[float, int]]) -> None:
    data = bytearray(_good(name))
    for where, value in edits:
        data[int(where * (len(data) - 1))] = value
    try:
        doc = load(bytes(data), name)
    except LoadError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert doc.sections and all(s.text.strip() for s in doc.sections)


@given(text=st.text(alphabet="{}\\'rtfansi0123456789abc ;\n*", max_size=300))
def test_rtf_soup_loads_or_raises_load_error(text: str) -> None:
    try:
        load(("{\\rtf1 " + text).encode(), "soup.rtf")
    except LoadError as exc:
        assert str(exc) and "\n" not in str(exc)


@given(text=st.text(max_size=400))
def test_eml_soup_loads_or_raises_load_error(text: str) -> None:
    try:
        load(text.encode("utf-8", "surrogatepass"), "soup.eml")
    except LoadError as exc:
        assert str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("name", ["a.docx", "a.pptx", "a.xlsx", "a.odt", "a.epub"])
def test_zip_with_an_unsupported_version_is_refused_not_a_crash(name: str) -> None:
    data = bytearray(make_docx())
    directory = data.index(b"PK\x01\x02")  # the first central directory entry
    data[directory + 6 : directory + 8] = b"\xff\x00"  # "version needed to extract": 25.5
    with pytest.raises(LoadError, match="damaged"):
        load(bytes(data), name)


def test_odf_with_a_damaged_manifest_is_refused_not_a_crash() -> None:
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    d = OpenDocumentText()
    d.text.addElement(P(text="Body text."))
    data = bytearray(_odf_bytes(d))
    local = data.index(b"PK\x03\x04META"[:4], data.index(b"META-INF/manifest.xml") - 30)
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    for i in range(4):  # garble the member's compressed bytes: a bad CRC or a zlib error
        data[start + 2 + i] ^= 0xFF
    with pytest.raises(LoadError, match="damaged"):
        load(bytes(data), "broken.odt")


@pytest.mark.parametrize("pattern", ['"a"\n', ',"', ' "x" ,'])
def test_csv_delimiter_sniffing_is_linear(pattern: str) -> None:
    data = (pattern * (64 * 1024 // len(pattern))).encode()  # csv.Sniffer's regexes took 16 s on the first
    start = time.perf_counter()
    with contextlib.suppress(LoadError):
        load(data, "quotes.csv")
    assert time.perf_counter() - start < 1


def test_csv_delimiter_is_the_consistent_one_not_the_most_frequent() -> None:
    text = "name;notes\nAda;likes a, b, c\nLin;x, y\nBo;none\n"
    doc = load(text.encode(), "people.csv")
    assert doc.sections[0].text == "name | notes\nAda | likes a, b, c\nLin | x, y\nBo | none"


@pytest.mark.parametrize(
    "head",
    [b"From: " + b'"a" ' * 20_000, b"To: " + b"a@b, " * 20_000, b"Content-Type: text/plain; " + b'a="b"; ' * 8_000],
)
def test_eml_with_huge_headers_loads_in_linear_time(head: bytes) -> None:
    data = b"Subject: long headers\n" + head + b"\n\nThe body survives."
    start = time.perf_counter()
    doc = load(data, "long.eml")  # the stdlib's header parser took 2.7 s on 80 KB of '"a" '
    assert time.perf_counter() - start < 1
    assert doc.title == "long headers" and "The body survives." in doc.sections[0].text


def test_docx_text_boxes_are_read_once() -> None:
    import docx
    from docx.oxml import parse_xml

    d = docx.Document()
    p = d.add_paragraph("Before the box.")
    box = (
        '<w:r xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
        'xmlns:v="urn:schemas-microsoft-com:vml"><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing>'
        "<w:txbxContent><w:p><w:r><w:t>Boxed warning text</w:t></w:r></w:p></w:txbxContent></w:drawing>"
        "</mc:Choice><mc:Fallback><w:pict><v:shape><v:textbox><w:txbxContent><w:p><w:r><w:t>Boxed warning text"
        "</w:t></w:r></w:p></w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r>"
    )
    p._p.append(parse_xml(box))
    out = io.BytesIO()
    d.save(out)
    doc = load(out.getvalue(), "box.docx")
    assert everything(doc).count("Boxed warning text") == 1
    assert "Before the box." in everything(doc)
