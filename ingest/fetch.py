"""Fetching a web page for ingest (`ragcord ingest https://…`, `/ingest url:`, a URL in a watched channel).

One GET with httpx, within limits, refusing what a bot that fetches on a member's
behalf must not fetch:

- only http and https URLs;
- no private, loopback, link-local, multicast, reserved or unspecified address
  (IPv4 and IPv6, IPv4-mapped IPv6 included) unless RAGCORD_FETCH_ALLOW_PRIVATE;
  the check runs where the connection is made (a network backend under httpx): the
  host is resolved once, every address is checked, and the socket connects to the
  address that was checked, so a DNS answer that changes between a check and the
  connection (rebinding) cannot slip through. TLS still verifies the URL's host name;
- redirects are followed here, at most `MAX_REDIRECTS`, each hop checked the same way;
- the size limit (RAGCORD_MAX_FILE_MB) is checked from Content-Length first, then on
  the bytes as they stream in (decoded: a compressed bomb stops at the limit too);
- a time limit: connect (RAGCORD_FETCH_CONNECT_TIMEOUT_S) and total
  (RAGCORD_FETCH_TIMEOUT_S; a read waits at most what is left of it);
- environment proxies are not used (they would connect to addresses not checked here).

Every refusal is a `FetchError` (a `LoadError`): one line the user can act on; the
cause goes to the log.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httpcore
import httpx

from ingest.loaders import LoadError, _human_size

if TYPE_CHECKING:
    from ingest.pipeline import Ingestor
    from ingest.sources import IngestResult, ProgressCallback

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
USER_AGENT = "ragcord (document ingest; +https://github.com/ragcord)"
_DNS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch-dns")  # getaddrinfo has no timeout of its own
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})  # (httpx's `is_redirect` counts 304 Not Modified too)
_ALLOW_HINT = "set RAGCORD_FETCH_ALLOW_PRIVATE=true to allow it"


class FetchError(LoadError):
    """A page that cannot be fetched; the message is one line the user can act on."""


class HostRefused(FetchError):
    """The host's name does not resolve, or it resolves to an address that is not fetched."""


@dataclass(frozen=True, slots=True)
class FetchOptions:
    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 30.0  # the whole fetch, redirects included
    connect_timeout_s: float = 10.0
    allow_private: bool = False
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def from_settings(cls, s: Any) -> FetchOptions:
        """From a `bot.settings.Settings` (read by attribute: ingest does not import bot)."""
        return cls(
            max_bytes=s.max_file_bytes,
            timeout_s=s.fetch_timeout_s,
            connect_timeout_s=s.fetch_connect_timeout_s,
            allow_private=s.fetch_allow_private,
        )


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # the final URL, after redirects
    status: int  # 200, or 304 (not modified: `data` is empty)
    data: bytes = b""
    content_type: str = ""  # the media type, lower case, without parameters
    charset: str = ""
    etag: str = ""
    last_modified: str = ""


def check_url(url: str) -> httpx.URL:
    """The URL parsed, or a FetchError if it is not an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(f"{_short(url)} is not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        shown = f"{parsed.scheme}:" if parsed.scheme else "no scheme"
        raise FetchError(f"{_short(url)}: only http:// and https:// URLs can be ingested (this one has {shown})")
    if not parsed.host:
        raise FetchError(f"{_short(url)} has no host name")
    return parsed


def refused_reason(address: str) -> str:
    """Why a connection to this IP address is refused by default ('' if it is a public address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for test, what in (
        (ip.is_loopback, "a loopback"),
        (ip.is_unspecified, "an unspecified"),
        (ip.is_link_local, "a link-local"),
        (ip.is_multicast, "a multicast"),
        (ip.is_reserved, "a reserved"),
        (ip.is_private, "a private"),
        (not ip.is_global, "a non-public"),  # 100.64.0.0/10 (carrier-grade NAT) and the like
    ):
        if test:
            return f"{what} address"
    return ""


class _Guard:
    """Resolves a host and keeps only the addresses that may be connected to."""

    def __init__(self, options: FetchOptions) -> None:
        self.options = options

    def addresses(self, host: str, port: int, timeout: float | None) -> list[tuple[int, str]]:
        future = _DNS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=timeout)
        except FutureTimeout as exc:
            raise HostRefused(f"looking up {host} took too long; check the address or try again later") from exc
        except (OSError, UnicodeError, ValueError) as exc:  # gaierror; a name the resolver rejects
            log.info("DNS lookup of %s failed: %s", host, exc)
            raise HostRefused(f"cannot find the host {host} (DNS lookup failed); check the address") from exc
        found = list(dict.fromkeys((int(family), str(sockaddr[0])) for family, _t, _p, _c, sockaddr in infos))
        if not self.options.allow_private:
            for _family, address in found:
                if reason := refused_reason(address):
                    log.warning("refused to fetch from %s: it resolves to %s (%s)", host, address, reason)
                    raise HostRefused(f"{host} is {reason} ({address}): not fetched ({_ALLOW_HINT})")
        if not found:
            raise HostRefused(f"cannot find the host {host} (no address); check the address")
        return found


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's own socket backend, connecting only to addresses the guard checked."""

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for _family, address in self.guard.addresses(host, port, timeout):
            try:  # TLS (if any) is started on this stream with the URL's host name, not the address
                return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, options: FetchOptions) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            network_backend=_GuardedBackend(_Guard(options)),
        )


def fetch(url: str, options: FetchOptions, *, etag: str = "", last_modified: str = "") -> Fetched:
    """GET `url` within the limits; with `etag`/`last_modified`, a 304 comes back as `Fetched(status=304)`."""
    current = check_url(url)
    deadline = time.monotonic() + options.timeout_s
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    with httpx.Client(transport=_GuardedTransport(options), trust_env=False, follow_redirects=False) as client:
        for hop in range(options.max_redirects + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _too_slow(url, options)
            timeout = httpx.Timeout(remaining, connect=min(options.connect_timeout_s, remaining))
            try:
                with client.stream("GET", current, headers=headers, timeout=timeout) as response:
                    if response.status_code in _REDIRECTS:
                        current = _next_hop(url, current, response)
                        continue
                    return _read(url, response, options, deadline)
            except HostRefused as exc:
                if hop == 0:
                    raise
                raise FetchError(f"{_short(url)} redirects to {exc}") from exc
            except httpx.TimeoutException as exc:
                log.info("fetching %s timed out: %r", current, exc)
                raise _too_slow(url, options) from exc
            except httpx.TooManyRedirects as exc:  # not raised with follow_redirects=False, but to be sure
                raise FetchError(f"{_short(url)} redirects too often") from exc
            except httpx.HTTPError as exc:
                log.info("fetching %s failed: %r", current, exc)
                raise FetchError(f"cannot fetch {_short(url)}: {_network_reason(exc)}; try again later") from exc
    raise FetchError(f"{_short(url)} redirects more than {options.max_redirects} times; not fetched")


def _next_hop(url: str, current: httpx.URL, response: httpx.Response) -> httpx.URL:
    location = response.headers.get("location", "")
    if not location:
        raise FetchError(f"{_short(url)} redirects without saying where ({response.status_code})")
    try:
        target = current.join(location)
    except (httpx.InvalidURL, ValueError) as exc:
        raise FetchError(f"{_short(url)} redirects to an invalid URL") from exc
    log.info("%s redirects to %s", current, target)
    try:
        return check_url(str(target))
    except FetchError as exc:
        raise FetchError(f"{_short(url)} redirects to {exc}") from exc


def _read(url: str, response: httpx.Response, options: FetchOptions, deadline: float) -> Fetched:
    got = response.headers
    media, _, params = got.get("content-type", "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    common: dict[str, Any] = {
        "url": str(response.url),
        "content_type": media.strip().lower(),
        "charset": charset,
        "etag": got.get("etag", ""),
        "last_modified": got.get("last-modified", ""),
    }
    if response.status_code == 304:
        return Fetched(status=304, **common)
    if response.status_code >= 400 or response.status_code < 200:
        log.info("fetching %s: HTTP %s %s", response.url, response.status_code, response.reason_phrase)
        hint = "check the address" if response.status_code < 500 else "the site failed; try again later"
        raise FetchError(
            f"{_short(url)}: the server answered {response.status_code} {response.reason_phrase}".rstrip()
            + f" ({hint})"
        )
    name = _short(url)
    declared = got.get("content-length", "")
    if declared.isdigit() and int(declared) > options.max_bytes:  # compressed: more still once inflated
        raise _too_big(name, int(declared), options)
    try:
        return _stream(url, name, response, options, deadline, common)
    except zlib.error as exc:
        log.info("%s: cannot decompress the body: %s", response.url, exc)
        raise FetchError(f"{name}: the server sent a damaged compressed body; try again later") from exc


def _stream(
    url: str, name: str, response: httpx.Response, options: FetchOptions, deadline: float, common: dict[str, Any]
) -> Fetched:
    data = bytearray()
    decoder = _decoder(_encoding(response.headers), name)
    for raw in response.iter_raw(_CHUNK):
        if decoder is None:
            data += raw
        else:
            pending = raw
            while pending:  # decoded a bounded piece at a time: a compression bomb stops at the limit
                data += decoder.decompress(pending, options.max_bytes + 1 - len(data) + 1)
                pending = decoder.unconsumed_tail
                if len(data) > options.max_bytes:
                    break
        if len(data) > options.max_bytes:
            raise _too_big(name, None, options)
        if time.monotonic() > deadline:
            raise _too_slow(url, options)
    if decoder is not None:
        data += decoder.flush()
        if len(data) > options.max_bytes:
            raise _too_big(name, None, options)
    return Fetched(status=response.status_code, data=bytes(data), **common)


def _encoding(headers: httpx.Headers) -> str:
    return (headers.get("content-encoding", "") or "identity").strip().lower()


def _decoder(encoding: str, name: str) -> Any:
    if encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise FetchError(f"{name}: the server sent an encoding ragcord cannot read ({encoding})")


def _too_big(name: str, size: int | None, options: FetchOptions) -> FetchError:
    what = f"is {_human_size(size)}, over" if size is not None else "is over"
    return FetchError(
        f"{name} {what} the {_human_size(options.max_bytes)} limit (raise RAGCORD_MAX_FILE_MB to index it)"
    )


def _too_slow(url: str, options: FetchOptions) -> FetchError:
    return FetchError(
        f"{_short(url)} did not answer within {options.timeout_s:g} s (raise RAGCORD_FETCH_TIMEOUT_S, or try later)"
    )


def _network_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            return "its TLS certificate could not be verified (expired, self-signed or for another host)"
        return "the connection failed"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server broke the connection"
    return "a network error"


def _short(url: str, limit: int = 120) -> str:
    url = " ".join(str(url).split())
    return url if len(url) <= limit else url[: limit - 1] + "…"


# -- ingest ----------------------------------------------------------------------------------------

_SUFFIX_FOR_TYPE = {
    "application/pdf": ".pdf",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/csv": ".csv",
    "text/tab-separated-values": ".tsv",
    "application/rtf": ".rtf",
    "text/rtf": ".rtf",
    "message/rfc822": ".eml",
    "application/epub+zip": ".epub",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods",
    "application/vnd.oasis.opendocument.presentation": ".odp",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/tiff": ".tif",
}


class WebCache:
    """ETag and Last-Modified of each fetched page, per document, in a small JSON file beside the store.

    An entry is used only while the stored document is the version it was recorded with (same
    content fingerprint, same metadata and settings), so a forgotten or changed document is
    fetched in full again. Losing the file only costs a full fetch: read and write errors are logged.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, str]:
        with self._lock:
            return dict(self._load().get(key, {}))

    def put(self, key: str, entry: dict[str, str]) -> None:
        with self._lock:
            entries = self._load()
            entries.pop(key, None)
            entries[key] = entry
            while len(entries) > _CACHE_ENTRIES:
                del entries[next(iter(entries))]
            if self.path is None:
                self._memory = entries
                return
            tmp = self.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps(entries), encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError:
                log.warning("could not save the web page cache %s", self.path, exc_info=True)
                tmp.unlink(missing_ok=True)

    _memory: dict[str, dict[str, str]] | None = None

    def _load(self) -> dict[str, dict[str, str]]:
        if self.path is None:
            if self._memory is None:
                self._memory = {}
            return self._memory
        try:
            got = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        except (OSError, ValueError):
            log.warning("ignoring unreadable %s", self.path, exc_info=True)
            return {}
        if not isinstance(got, dict):
            return {}
        return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in got.items() if isinstance(v, dict)}


_CACHE_ENTRIES = 20_000


def url_filename(url: str, content_type: str, data: bytes) -> str:
    """A file name for the fetched bytes: the URL's last path segment, with the suffix its type implies.

    The name only suggests the format; the loaders sniff the content (a PDF is a PDF whatever it is called).
    """
    from ingest.loaders import SUPPORTED_SUFFIXES

    parsed = httpx.URL(url)
    name = unquote(PurePosixPath(parsed.path).name) or parsed.host or "page"
    name = "".join(ch if ch.isprintable() and ch not in "/\\" else "_" for ch in name)[:120]
    suffix = PurePosixPath(name).suffix.lower()
    implied = _SUFFIX_FOR_TYPE.get(content_type, "")
    if implied == ".html" and not data.startswith((b"%PDF", b"PK\x03\x04")):
        return name if suffix in (".html", ".htm", ".xhtml") else f"{name}.html"
    if suffix in SUPPORTED_SUFFIXES or not implied:
        return name
    return f"{name}{implied}"


def ingest_url(
    ingestor: Ingestor,
    namespace: str,
    url: str,
    *,
    options: FetchOptions,
    cache: WebCache,
    source: str | None = None,
    extra: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    isolated: bool = False,
) -> IngestResult:
    """Fetch `url` and ingest what it holds (see `Ingestor.ingest_url`)."""
    from ingest.loaders import detect_kind
    from ingest.loaders import web as web_loader
    from ingest.sources import IngestResult, Source
    from store.types import document_id_for

    try:
        parsed = check_url(url)
    except FetchError as exc:
        return IngestResult(url, _short(url), "skipped", str(exc), doc_id=document_id_for(source or url))
    url = str(parsed)
    source = source or url
    doc_id = document_id_for(source)
    wanted = dict(extra or {})
    signature = hashlib.sha256(json.dumps([sorted(wanted.items()), ingestor._settings_sig]).encode()).hexdigest()[:16]
    cache_key = f"{namespace}\x1f{doc_id}"
    previous = ingestor.store.document(namespace, doc_id)
    entry = cache.get(cache_key)
    usable = (
        previous is not None and entry.get("fingerprint") == previous.content_hash and entry.get("sig") == signature
    )
    validators = {"etag": entry.get("etag", ""), "last_modified": entry.get("last_modified", "")} if usable else {}
    try:
        got = fetch(url, options, **validators)
    except FetchError as exc:
        log.info("not ingesting %s: %s", url, exc)
        title = previous.title if previous is not None else _short(url)
        return IngestResult(source, title, "failed" if _transient(exc) else "skipped", str(exc), doc_id=doc_id)
    if got.status == 304:
        if previous is None or not validators:  # a 304 to a request without validators: nothing to keep
            return IngestResult(source, _short(url), "failed", f"{_short(url)}: the server answered 304", doc_id=doc_id)
        log.info("%s not modified (304): nothing fetched or embedded", url)
        return IngestResult(
            source, previous.title, "unchanged", chunks=previous.chunks, pages=previous.pages, doc_id=doc_id
        )
    name = url_filename(got.url, got.content_type, got.data)
    data, load = got.data, None
    meta = {"url": got.url, "jump_url": _link_safe(got.url), **wanted}
    try:
        kind = detect_kind(got.data, name)
    except LoadError as exc:
        return IngestResult(source, name, "skipped", str(exc), doc_id=doc_id)
    if kind == "html":
        try:
            page = web_loader.extract(got.data, url=got.url, charset=got.charset)
        except LoadError as exc:  # binary bytes called HTML
            return IngestResult(source, name, "skipped", str(exc), doc_id=doc_id)
        if page is not None:  # else the HTML loader reads all of its visible text
            data, load = web_loader.encode(*page), web_loader.load
    item = Source(lambda: data, name, source, None, meta)
    result = ingestor.ingest_source(namespace, item, progress=progress, isolated=isolated, loader=load)
    if result.status in ("added", "updated", "unchanged") and (got.etag or got.last_modified):
        stored = ingestor.store.document(namespace, doc_id)
        if stored is not None:
            cache.put(
                cache_key,
                {
                    "etag": got.etag,
                    "last_modified": got.last_modified,
                    "fingerprint": stored.content_hash,
                    "sig": signature,
                },
            )
    return result


def _transient(exc: FetchError) -> bool:
    """A timeout, a failed connection or a server error (worth retrying later), not a refusal."""
    cause = exc.__cause__
    text = str(exc)
    return isinstance(cause, httpx.HTTPError) or "try again later" in text or "did not answer" in text


_UNSAFE_IN_LINK = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]")


def _link_safe(url: str) -> str:
    """The URL with every character that could end a Markdown link or a code span percent-encoded."""
    safe = _UNSAFE_IN_LINK.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), url)
    return safe.replace("[", "%5B").replace("]", "%5D").replace("'", "%27").replace("*", "%2A")
