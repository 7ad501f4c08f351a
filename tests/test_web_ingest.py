"""Web pages by URL (ingest/fetch.py, ingest/loaders/web.py) against a local HTTP server the tests start."""

from __future__ import annotations

import contextlib
import gzip
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ingest import fetch as fetch_module
from ingest.fetch import FetchError, FetchOptions, fetch, refused_reason
from tests.pdfgen import make_pdf

NS = "default"
OPEN = FetchOptions(allow_private=True, timeout_s=10.0)  # the local server is on 127.0.0.1

ARTICLE = """<!doctype html><html><head><meta charset="utf-8"><title>Widget Handbook</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a> | <a href="/shop">Shop</a></nav>
<article><h1>Widget Handbook</h1>
<p>The widget calibration interval is fourteen days for every factory line, and operators record each
calibration in the shared maintenance log kept beside the line.</p>
<h2>Storage</h2>
<p>Widgets are stored at a temperature between ten and twenty degrees Celsius in the dry warehouse near
the loading dock, away from direct sunlight.</p>
<p>Read <a href="https://evil.example/phish">the storage rules</a> before moving any pallet of widgets.</p>
</article>
<footer>Copyright Acme Widgets. All rights reserved. Served at {stamp}.</footer></body></html>"""


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Site:
    """A local HTTP server: `routes` maps a path to a `Route` or a function of the request handler."""

    port: int
    routes: dict[str, Route | Callable[[BaseHTTPRequestHandler], Route]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = state.routes.get(self.path.split("?")[0]) or Route(404, b"not here")
            if callable(route):
                route = route(self)
            time.sleep(route.delay_s)
            self.send_response(route.status)
            headers = {"Content-Length": str(len(route.body)), **route.headers}
            for key, value in headers.items():
                if value:
                    self.send_header(key, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped reading
                self.wfile.write(route.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def html(text: str = ARTICLE, **headers: str) -> Route:
    return Route(
        body=text.replace("{stamp}", str(time.time_ns())).encode(),
        headers={"Content-Type": "text/html; charset=utf-8", **headers},
    )


# -- pages, files, citations ---------------------------------------------------------------------------


def test_html_page_is_ingested_with_its_main_text_and_cited_by_title_and_url(service, site, embedder):
    site.routes["/guide"] = html()
    result = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN)
    assert result.status == "added", result
    [doc] = service.documents(NS)
    assert doc.title == "Widget Handbook" and doc.kind == "web" and doc.source == site.url("/guide")

    hits = service.retriever.search(NS, "widget storage temperature warehouse", 4)
    chunk = hits[0].chunk
    assert "between ten and twenty degrees Celsius" in chunk.text
    assert chunk.section == "Widget Handbook > Storage"  # trafilatura's headings became the section path
    assert chunk.where == "Storage"
    extra = dict(chunk.extra)
    assert extra["url"] == site.url("/guide") and extra["jump_url"] == site.url("/guide")
    stored = " ".join(h.chunk.text for h in service.retriever.search(NS, "copyright about shop home", 10))
    assert "All rights reserved" not in stored and "About us" not in stored  # menus and footers left out
    assert "evil.example" not in stored and "the storage rules" in stored  # a link keeps its text only

    # the Discord citation names the title and links to the page (a link of the bot's, to the URL ingested)
    from bot.citations import Citation
    from bot.discord_app.streaming import source_line

    line = source_line(Citation(1, chunk, "Widgets are stored at a temperature", hits[0].score))
    assert line.startswith("**[1] Widget Handbook**") and f"[jump]({site.url('/guide')})" in line


def test_link_markup_in_a_url_cannot_break_the_citation_link(service, site):
    site.routes["/a(b)"] = html()
    result = service.ingestor.ingest_url(NS, site.url("/a(b)"), fetch=OPEN)
    assert result.status == "added", result
    [doc] = service.documents(NS)
    assert doc.extra["url"].endswith("/a(b)")
    assert doc.extra["jump_url"].endswith("/a%28b%29")  # no ")" to end the Markdown link early


def test_a_pdf_link_is_read_by_the_pdf_loader_whatever_its_content_type(service, site):
    pdf = make_pdf(["The first page is a cover.", "Backups run every night at two in the morning."], title="Ops")
    site.routes["/download"] = Route(body=pdf, headers={"Content-Type": "application/octet-stream"})
    result = service.ingestor.ingest_url(NS, site.url("/download?id=7"), fetch=OPEN)
    assert result.status == "added", result
    [doc] = service.documents(NS)
    assert doc.kind == "pdf" and doc.pages == 2
    [hit, *_] = service.retriever.search(NS, "when do backups run", 2)
    assert hit.chunk.page == 2 and dict(hit.chunk.extra)["url"] == site.url("/download?id=7")


def test_a_page_trafilatura_finds_no_main_text_in_is_read_whole_by_the_html_loader(service, site):
    site.routes["/tiny"] = html("<html><head><title>Tiny</title></head><body><p>Short note.</p></body></html>")
    result = service.ingestor.ingest_url(NS, site.url("/tiny"), fetch=OPEN)
    assert result.status == "added", result
    [doc] = service.documents(NS)
    assert doc.title == "Tiny" and doc.chunks == 1


# -- re-fetching -------------------------------------------------------------------------------------


def test_unchanged_refetch_with_etag_gets_304_and_embeds_nothing(service, site, embedder):
    def page(handler: BaseHTTPRequestHandler) -> Route:
        if handler.headers.get("If-None-Match") == '"v1"':
            return Route(304)
        return html(ETag='"v1"', **{"Last-Modified": "Mon, 01 Dec 2025 10:00:00 GMT"})

    site.routes["/guide"] = page
    assert service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN).status == "added"
    embedded = embedder.embedded
    again = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN)
    assert again.status == "unchanged" and again.chunks > 0, again
    assert embedder.embedded == embedded
    sent = site.requests[-1][1]
    assert sent["if-none-match"] == '"v1"' and sent["if-modified-since"] == "Mon, 01 Dec 2025 10:00:00 GMT"

    # forgotten: the validators are not sent any more (a 304 would leave nothing to answer from)
    service.forget(NS, "Widget Handbook")
    assert service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN).status == "added"
    assert "if-none-match" not in site.requests[-1][1]


def test_unchanged_refetch_without_validators_is_recognised_by_its_fingerprint(service, site, embedder):
    site.routes["/guide"] = lambda _h: html()  # the footer's time stamp changes on every fetch
    assert service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN).status == "added"
    embedded = embedder.embedded
    again = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN)
    assert again.status == "unchanged"
    assert embedder.embedded == embedded
    changed = ARTICLE.replace("fourteen days", "twenty-one days")
    site.routes["/guide"] = lambda _h: html(changed)
    assert service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN).status == "updated"
    assert embedder.embedded > embedded


# -- refusals ------------------------------------------------------------------------------------------


def test_a_private_address_is_refused_by_default_and_allowed_by_the_setting(service, site):
    site.routes["/guide"] = html()
    result = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=FetchOptions())
    assert result.status == "skipped"
    assert "loopback address (127.0.0.1)" in result.reason and "RAGCORD_FETCH_ALLOW_PRIVATE=true" in result.reason
    assert "\n" not in result.reason
    assert site.requests == [] and service.documents(NS) == []  # nothing was sent, nothing stored
    from bot.settings import Settings

    allowed = FetchOptions.from_settings(Settings(fetch_allow_private=True, _env_file=None))  # type: ignore[call-arg]
    assert service.ingestor.ingest_url(NS, site.url("/guide"), fetch=allowed).status == "added"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("172.16.5.4", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_non_public_addresses_are_named(address, why):
    assert refused_reason(address) == f"{'an' if why[0] in 'aeiou' else 'a'} {why} address"


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "8.8.8.8"])
def test_public_addresses_pass(address):
    assert refused_reason(address) == ""


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> list[str]:
    """Host names resolved to these addresses (others fail); returns the names looked up."""
    looked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        looked.append(host)
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        if host.replace(".", "").isdigit():
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (host, port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked


def test_connects_to_the_address_it_checked_with_the_urls_host_name(site, monkeypatch):
    site.routes["/page"] = html()
    looked = fake_dns(monkeypatch, {"wiki.internal": "127.0.0.1"})
    got = fetch(f"http://wiki.internal:{site.port}/page", OPEN)
    assert got.status == 200 and b"Widget Handbook" in got.data
    # resolved once, where the connection is made, which then connects to that address (a literal: no lookup)
    assert looked == ["wiki.internal", "127.0.0.1"]
    assert site.requests[-1][1]["host"] == f"wiki.internal:{site.port}"
    with pytest.raises(FetchError, match=r"wiki.internal is a loopback address \(127.0.0.1\)"):
        fetch(f"http://wiki.internal:{site.port}/page", FetchOptions())


def test_a_redirect_to_a_private_address_is_refused(site, monkeypatch):
    # the local server stands for a public one here: 127.0.0.1 passes, everything else is checked as usual
    real = fetch_module.refused_reason
    monkeypatch.setattr(fetch_module, "refused_reason", lambda a: "" if a == "127.0.0.1" else real(a))
    site.routes["/go"] = Route(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    site.routes["/file"] = Route(301, headers={"Location": "file:///etc/passwd"})
    site.routes["/ok"] = Route(302, headers={"Location": "/final"})
    site.routes["/final"] = html()
    site.routes["/loop"] = Route(302, headers={"Location": "/loop"})
    with pytest.raises(FetchError, match=r"redirects to .*169.254.169.254 is a link-local address"):
        fetch(site.url("/go"), FetchOptions())
    with pytest.raises(FetchError, match=r"redirects to .*only http:// and https://"):
        fetch(site.url("/file"), FetchOptions())
    got = fetch(site.url("/ok"), FetchOptions())
    assert got.url == site.url("/final") and b"Widget" in got.data
    with pytest.raises(FetchError, match="redirects more than 5 times"):
        fetch(site.url("/loop"), FetchOptions())
    assert sum(1 for path, _ in site.requests if path == "/loop") == 6


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.pdf", "gopher://x", "javascript:alert(1)", "/etc/passwd"]
)
def test_only_http_and_https_urls_are_fetched(service, url):
    result = service.ingestor.ingest_url(NS, url, fetch=OPEN)
    assert result.status == "skipped" and "\n" not in result.reason
    assert "only http:// and https:// URLs can be ingested" in result.reason or "no host name" in result.reason
    assert service.documents(NS) == []


def test_size_limit_from_content_length_streaming_and_compression(site):
    small = FetchOptions(allow_private=True, max_bytes=64 * 1024)
    site.routes["/declared"] = Route(body=b"x" * 10, headers={"Content-Length": str(10 * 1024 * 1024)})
    with pytest.raises(FetchError, match=r"is 10 MB, over the 64 KB limit \(raise RAGCORD_MAX_FILE_MB"):
        fetch(site.url("/declared"), small)
    site.routes["/undeclared"] = Route(body=b"y" * (512 * 1024), headers={"Content-Length": ""})
    with pytest.raises(FetchError, match=r"/undeclared is over the 64 KB limit \(raise RAGCORD_MAX_FILE_MB"):
        fetch(site.url("/undeclared"), small)
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MB of zeros in ~50 KB
    site.routes["/bomb"] = Route(body=bomb, headers={"Content-Encoding": "gzip"})
    started = time.perf_counter()
    with pytest.raises(FetchError, match="over the 64 KB limit"):
        fetch(site.url("/bomb"), small)
    assert time.perf_counter() - started < 2.0
    site.routes["/gz"] = Route(body=gzip.compress(b"hello " * 100), headers={"Content-Encoding": "gzip"})
    assert fetch(site.url("/gz"), small).data == b"hello " * 100


def test_http_errors_dns_failure_and_timeout_are_one_line_and_leave_the_store_unchanged(service, site, monkeypatch):
    site.routes["/guide"] = html()
    assert service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN).status == "added"
    [before] = service.documents(NS)

    site.routes["/guide"] = Route(500, b"oops")
    failed = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN)
    assert failed.status == "failed" and "the server answered 500 Internal Server Error" in failed.reason
    site.routes["/guide"] = Route(404, b"gone")
    gone = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN)
    assert gone.status == "skipped" and "answered 404 Not Found (check the address)" in gone.reason
    site.routes["/guide"] = Route(body=b"<p>late</p>", delay_s=1.5)
    slow = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=FetchOptions(allow_private=True, timeout_s=0.5))
    assert slow.status == "failed" and "did not answer within 0.5 s" in slow.reason
    fake_dns(monkeypatch, {})
    missing = service.ingestor.ingest_url(NS, "https://no-such-host.invalid/page", fetch=OPEN)
    assert missing.status == "skipped"
    assert missing.reason == "cannot find the host no-such-host.invalid (DNS lookup failed); check the address"
    for r in (failed, gone, slow, missing):
        assert "\n" not in r.reason
    [after] = service.documents(NS)
    assert after.content_hash == before.content_hash and after.chunk_ids == before.chunk_ids


def test_connection_refused_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(FetchError, match=r"cannot fetch .*: the connection failed; try again later"):
        fetch(f"http://127.0.0.1:{port}/", OPEN)


# -- front ends ----------------------------------------------------------------------------------------


def test_cli_ingests_a_url_and_refuses_another_scheme_in_one_line(service, site, monkeypatch, capsys):
    import bot.cli as cli

    site.routes["/guide"] = html()
    monkeypatch.setattr(cli, "_service", lambda settings: service)
    monkeypatch.setenv("RAGCORD_FETCH_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("RAGCORD_DATA_DIR", str(service.settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["ingest", site.url("/guide")]) == 0
    out = capsys.readouterr().out
    assert "added" in out and "Widget Handbook" in out
    assert [d.title for d in service.documents(NS)] == ["Widget Handbook"]

    assert cli.main(["ingest", "ftp://example.com/a.pdf"]) == 0  # refused ("skipped"), not failed
    out = capsys.readouterr().out
    assert "skipped" in out and "only http:// and https://" in out

    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    import argparse

    args = argparse.Namespace(question=["widget", "storage", "temperature"], top_k=0, evidence_only=True)
    assert cli.cmd_ask(args, service.settings.model_copy(update={"answer_mode": "extract"}), console) == 0
    assert f"Widget Handbook, Storage <{site.url('/guide')}>" in buffer.getvalue()


async def test_discord_ingest_url_then_an_answer_cites_the_page_by_title_with_a_link(tmp_path, site):
    from tests.discord_harness import world
    from tests.fakes import FakeLLM, cite_first_passage

    site.routes["/guide"] = html()
    async with world(tmp_path, FakeLLM(default=cite_first_passage), fetch_allow_private=True) as w:
        inter = await w.command(w.admin, "ingest", {"url": site.url("/guide")})
        await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 15)
        report = w.fake.interaction_messages(inter)[0]["content"]
        assert "Widget Handbook" in report and "added" in report
        [doc] = w.service.documents(w.namespace())
        assert doc.source == site.url("/guide") and doc.kind == "web"

        answer = await w.answer(await w.ask(w.alice, "At what temperature are widgets stored in the warehouse?"))
        embed = answer[-1]["embeds"][0]["description"]
        assert "**[1] Widget Handbook**" in embed and f"[jump]({site.url('/guide')})" in embed
        assert "evil.example" not in str(answer)  # the page's own link never reaches Discord

        inter = await w.command(w.admin, "ingest", {"url": "ftp://example.com/a.pdf"})
        await w.fake.wait_for(lambda: "Ingest report" in str(w.fake.interaction_messages(inter)), 15)
        table = w.fake.interaction_messages(inter)[0]["content"]
        assert "refused" in table and "only http:// and https://" in table

        inter = await w.command(w.admin, "ingest", {})
        await w.fake.wait_for(lambda: w.fake.interaction_messages(inter), 10)
        assert "give a web page's address in `url:`" in str(w.fake.interaction_messages(inter))


async def test_a_url_posted_in_a_watched_channel_is_ingested_and_forgotten_with_its_post(tmp_path, site):
    from tests.discord_harness import world
    from tests.fakes import FakeLLM

    def watch_general(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
        return {"watch_channels": [int(fake.channel(guild)["id"])], "fetch_allow_private": True}

    site.routes["/guide"] = html()
    async with world(tmp_path, FakeLLM(), prepare=watch_general) as w:
        post = await w.fake.user_message(w.channel, w.alice, f"the handbook: <{site.url('/guide')}>.", mention=False)
        await w.fake.wait_for(lambda: w.fake.replies_to(post), 15)
        reply = w.fake.replies_to(post)[0]["content"]
        assert "Widget Handbook" in reply and "added" in reply
        [doc] = w.service.documents(w.namespace())
        assert doc.source == f"discord:{w.guild['id']}:{w.channel['id']}:{site.url('/guide')}"
        assert doc.extra["message_id"] == post["id"] and doc.extra["jump_url"] == site.url("/guide")
        await w.fake.delete_message(w.channel, post)
        await w.fake.wait_for(lambda: not w.service.documents(w.namespace()), 10)


async def test_a_link_from_a_member_without_the_uploader_role_is_skipped_without_a_reply(tmp_path, site):
    # links are everyday chat: a reply under every one of them would flood a watched channel
    from tests.discord_harness import world
    from tests.fakes import FakeLLM

    def watch_with_roles(fake: Any, guild: dict[str, Any]) -> dict[str, Any]:
        fake.uploader_role = fake.add_role(guild, "uploaders")
        fake.dora = fake.add_user("dora")
        fake.add_member(guild["id"], fake.dora, [fake.uploader_role])
        return {
            "watch_channels": [int(fake.channel(guild)["id"])],
            "uploader_role_ids": [int(fake.uploader_role["id"])],
            "fetch_allow_private": True,
        }

    site.routes["/guide"] = html()
    async with world(tmp_path, FakeLLM(), prepare=watch_with_roles) as w:
        chat = await w.fake.user_message(w.channel, w.alice, f"look: {site.url('/guide')}", mention=False)
        files = await w.fake.user_message(w.channel, w.alice, "and a file", attachments=[("a.md", b"# A\n\nText.\n")])
        await w.fake.wait_for(lambda: w.fake.replies_to(files), 10)  # the file still gets its refusal
        assert "not indexed" in w.fake.replies_to(files)[0]["content"]
        assert not w.fake.replies_to(chat) and not site.requests and not w.service.documents(w.namespace())
        ok = await w.fake.user_message(w.channel, w.fake.dora, f"look: {site.url('/guide')}", mention=False)
        await w.fake.wait_for(lambda: w.fake.replies_to(ok), 15)
        assert "added" in w.fake.replies_to(ok)[0]["content"]


def test_posted_urls_are_found_once_without_trailing_punctuation():
    from bot.discord_app.cogs.watcher import posted_urls

    text = "see https://a.example/x, <https://b.example/y?q=1> and (https://a.example/x). ftp://c.example"
    assert posted_urls(text) == ["https://a.example/x", "https://b.example/y?q=1"]
    assert posted_urls("no links here") == []
    assert len(posted_urls(" ".join(f"https://h{i}.example/" for i in range(10)))) == 3


def _tls_files(tmp_path: Any, host: str) -> tuple[str, str, str]:
    """A CA and a server certificate for `host`, signed by it (PEM files)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(paths[0]), str(paths[1]), str(paths[2])


def test_https_verifies_the_urls_host_name_while_connecting_to_the_checked_address(tmp_path, monkeypatch):
    import ssl

    import httpx

    ca, cert, key = _tls_files(tmp_path, "wiki.internal")
    names: list[str | None] = []
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<html><head><title>Wiki</title></head><body><p>Secure page text.</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real_context = httpx.create_ssl_context

    def trusting(**kwargs: Any) -> ssl.SSLContext:
        context = real_context(**kwargs)
        context.load_verify_locations(ca)
        return context

    monkeypatch.setattr(fetch_module.httpx, "create_ssl_context", trusting)
    fake_dns(monkeypatch, {"wiki.internal": "127.0.0.1", "other.internal": "127.0.0.1"})
    try:
        got = fetch(f"https://wiki.internal:{port}/page", OPEN)
        assert got.status == 200 and b"Secure page text" in got.data
        assert names and names[-1] == "wiki.internal"  # SNI: the URL's host, though the socket went to 127.0.0.1
        with pytest.raises(FetchError, match="its TLS certificate could not be verified"):
            fetch(f"https://other.internal:{port}/page", OPEN)  # the certificate is for wiki.internal
    finally:
        server.shutdown()
        server.server_close()


def test_a_damaged_compressed_body_is_one_line_not_a_crash(service, site):
    site.routes["/bad"] = Route(body=b"this is not gzip at all", headers={"Content-Encoding": "gzip"})
    result = service.ingestor.ingest_url(NS, site.url("/bad"), fetch=OPEN)
    assert result.status == "failed" and "damaged compressed body" in result.reason  # the server's fault: retry
    assert service.documents(NS) == []


def test_a_host_name_the_resolver_rejects_is_one_line(monkeypatch):
    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        raise ValueError("embedded null character")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(FetchError, match="cannot find the host bad.example"):
        fetch("http://bad.example/", OPEN)


def test_binary_bytes_served_as_html_are_refused_in_one_line(service, site):
    site.routes["/bin"] = Route(body=bytes(range(256)) * 20, headers={"Content-Type": "text/html"})
    result = service.ingestor.ingest_url(NS, site.url("/bin"), fetch=OPEN)
    assert result.status == "skipped" and "looks like a binary file" in result.reason
    assert service.documents(NS) == []


def test_a_store_outage_fails_the_url_with_the_stores_message(service, site, monkeypatch):
    from store.protocol import StoreUnavailable

    site.routes["/guide"] = html()

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the store is unreachable")

    monkeypatch.setattr(service.store, "document", down)
    result = service.ingestor.ingest_url(NS, site.url("/guide"), fetch=OPEN)
    assert result.status == "failed" and result.reason == "the store is unreachable"
