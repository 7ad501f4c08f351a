"""The Chroma client's life: where the store is, opening, reopening and outages.

Errors are sorted in one place (`is_transient`): a connection failure, a timeout or
a server-side 5xx is an outage, retried a few times with backoff (about 2.5 s in
all, reopening the client between attempts) and then raised as `StoreUnavailable`;
the next call tries again, so the store recovers by itself when the server is
back. Only Chroma's `NotFoundError` means "no such collection". Anything else is a
real error and propagates unchanged.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from store.protocol import StoreDamaged, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Attempts and backoff of one operation during an outage (bounded: ~2.5 s in all).
RETRY_ATTEMPTS = 4
RETRY_WITHIN_S = 2.5


@dataclass(frozen=True, slots=True)
class ChromaLocation:
    """Where the store lives: a folder (embedded) or a server."""

    path: Path | None = None
    host: str | None = None
    port: int = 8000

    @property
    def describe(self) -> str:
        if not self.host:
            return f"embedded chroma at {self.path}"
        host, port, _ssl = parse_host(self.host, self.port)
        return f"chroma server {host}:{port}"


def parse_host(host: str, default_port: int) -> tuple[str, int, bool]:
    """'h', 'h:p' or 'http[s]://h[:p]' -> (host, port, ssl)."""
    ssl = host.startswith("https://")
    bare = re.sub(r"^https?://", "", host).rstrip("/")
    if ":" in bare:
        name, port = bare.rsplit(":", 1)
        return name, int(port), ssl
    return bare, default_port, ssl


# Chroma's words when an embedded collection's vector index on disk cannot be read (store/chroma_repair.py)
_DAMAGED = re.compile(r"hnsw segment (?:reader|writer)|loading hnsw index|pickle file", re.IGNORECASE)


def is_damaged(exc: BaseException) -> bool:
    """A collection's vector index on disk is unreadable: retrying cannot help, rebuilding does."""
    from chromadb.errors import InternalError

    return isinstance(exc, InternalError) and bool(_DAMAGED.search(str(exc)))


def is_transient(exc: BaseException) -> bool:
    """A failure that may pass: the server unreachable, a timeout, a server-side error."""
    import httpx
    from chromadb.errors import InternalError, RateLimitError

    if is_damaged(exc):
        return False
    if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError | InternalError | RateLimitError):
        return True
    text = str(exc)
    # the HTTP client raises a bare Exception with the body of a 5xx it cannot map
    return type(exc) is Exception and bool(re.search(r"\b50[234]\b|Service Unavailable|Bad Gateway", text))


def is_not_found(exc: BaseException) -> bool:
    from chromadb.errors import NotFoundError

    return isinstance(exc, NotFoundError)


class ChromaConnection:
    """Owns one chromadb client; `reopen` replaces only this client (never the process-wide cache)."""

    def __init__(self, location: ChromaLocation, *, request_timeout_s: float = 30.0) -> None:
        self.location = location
        self.request_timeout_s = request_timeout_s
        self.client: Any = None
        self.opened_at = 0.0
        self.broken = False

    def open(self) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        try:
            if self.location.host:
                host, port, ssl = parse_host(self.location.host, self.location.port)
                self._probe(host, port, ssl)  # the client's constructor talks to the server with no timeout
                client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=chroma_settings)
                _bound_requests(client, self.request_timeout_s)
                client.heartbeat()
            else:
                assert self.location.path is not None
                self.location.path.mkdir(parents=True, exist_ok=True)
                client = chromadb.PersistentClient(path=str(self.location.path), settings=chroma_settings)
        except Exception as exc:
            if self.location.host:
                raise StoreUnavailable(
                    f"cannot reach {self.location.describe} ({str(exc).rstrip('.')}): is `chroma run` up? "
                    "Check CHROMA_HOST."
                ) from exc
            raise StoreError(f"cannot open {self.location.describe}: {exc}. Check RAGCORD_DATA_DIR.") from exc
        self.client = client
        self.opened_at = time.time()
        self.broken = False

    def _probe(self, host: str, port: int, ssl: bool) -> None:
        """A bounded heartbeat before chromadb's client (whose first requests wait for ever) is made."""
        import httpx

        url = f"{'https' if ssl else 'http'}://{host}:{port}/api/v2/heartbeat"
        timeout = httpx.Timeout(self.request_timeout_s, connect=min(self.request_timeout_s, 3.0))
        httpx.get(url, timeout=timeout)  # a transport error propagates; any HTTP answer means it is up

    def close(self) -> None:
        """Release this client. Chroma counts the clients of an embedded folder and stops its
        shared system with the last one, so this never disturbs another store in the process."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.close()
        except Exception:
            log.debug("closing chroma client failed", exc_info=True)

    def reopen(self) -> None:
        self.close()
        self.open()


def _bound_requests(client: Any, seconds: float) -> None:
    """chromadb's HTTP client waits for ever (timeout=None): a stalled server would hang every
    question. Bound each request, so a stall becomes an outage like a dead server."""
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(seconds, connect=min(seconds, 3.0))
    else:
        log.debug("cannot bound the chroma client's requests (no httpx session found)")


class _Guarded(Protocol):
    _lock: threading.RLock
    _conn: ChromaConnection
    _depth: int

    def _after_reopen(self) -> None: ...

    def _repair_damaged(self) -> bool: ...

    def _repair_pending(self) -> None: ...


S = TypeVar("S", bound=_Guarded)


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run a store method under the store's lock, retrying an outage with backoff.

    Only the outermost guarded call retries (a method calling another one does not
    multiply the attempts). Between attempts the client is reopened, so a server that
    came back (even restarted, with new connections) is used at once.
    """

    @functools.wraps(method)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            if self._depth:
                return method(self, *args, **kwargs)
            self._depth += 1
            try:
                return _with_retries(self, lambda: method(self, *args, **kwargs))
            finally:
                self._depth -= 1

    return wrapper


def _with_retries(store: _Guarded, run: Callable[[], R]) -> R:
    from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay
    from tenacity.wait import wait_exponential

    from store.chroma_repair import damaged_message

    conn = store._conn
    where, server = conn.location.describe, bool(conn.location.host)

    def before(_state: Any) -> None:
        if conn.broken or conn.client is None:
            try:
                conn.reopen()
                store._after_reopen()
            except StoreError:
                pass  # still down; the attempt fails fast and is retried or reported

    def attempt() -> R:
        before(None)
        if conn.client is None:
            raise StoreUnavailable(f"{conn.location.describe} is unreachable")
        try:
            store._repair_pending()
            return run()
        except Exception as exc:
            if is_transient(exc):
                conn.broken = True
            if not is_damaged(exc):
                raise
            log.error("%s: a vector index is damaged", where, exc_info=True)
            if not store._repair_damaged():
                raise StoreDamaged(damaged_message(where, server=server)) from exc
        try:
            return run()  # once more, on the rebuilt index
        except Exception as exc:
            if is_damaged(exc):  # the probe saw a sound index, yet this read fails: not ours to mend
                raise StoreDamaged(damaged_message(where, " and a rebuild did not mend it", server=server)) from exc
            raise

    retrying = Retrying(
        stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(RETRY_WITHIN_S),
        wait=wait_exponential(multiplier=0.2, max=1.0),
        retry=retry_if_exception(lambda e: is_transient(e) or isinstance(e, StoreUnavailable)),
        reraise=False,
    )
    try:
        return retrying(attempt)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        log.warning("%s unreachable after %d attempts", conn.location.describe, RETRY_ATTEMPTS, exc_info=cause)
        where = conn.location.describe
        hint = "Is `chroma run` up? Check CHROMA_HOST." if conn.location.host else "Check RAGCORD_DATA_DIR."
        raise StoreUnavailable(
            f"the document store ({where}) is unreachable right now. {hint} "
            "ragcord reconnects by itself when it is back."
        ) from cause
