"""Rebuilding an embedded collection whose vector index a crash left unreadable.

chromadb 1.5.9 saves an embedded collection's HNSW index every 1,000 writes, and
rewrites its id map (`index_metadata.pickle`) in place: a process killed inside
that write leaves the file truncated, and from then on every read of the
collection fails ("Error creating hnsw segment reader"). Upstream has since made
the write atomic, but no release on PyPI carries it. Everything else a collection
holds (ids, texts, metadata, the write log) is in SQLite, which survives a crash.

So a process that meets such an error and holds the encoder (the bot, an ingest,
`ragcord reindex`) repairs the store under the writer lock and retries:

1. It probes every ragcord collection and notes the damaged ones in
   `ragcord-repair.json` (before changing anything, so a repair that stops half-way
   is finished by the next process rather than taken for a sound store).
2. It sets each damaged vector index aside: the segment's folder is renamed and its
   applied-log mark in SQLite removed, so Chroma starts it empty and the
   collection reads again (its texts and metadata), though its vectors are gone.
3. A manifest (one zero vector per document) is rewritten from its own records.
   A live chunk collection is re-embedded from its stored texts into a new
   collection and switched to in one write, as `ragcord reindex` does; a chunk
   collection that is no longer live is dropped.
4. The set-aside folders and the note are removed.

A process without the encoder (or a Chroma server, whose files are not ours)
changes nothing and raises `StoreDamaged`, saying what repairs it. Any process that
meets the damage after another one rebuilt it (it waited for the writer lock, or it
cannot rebuild) probes again, finds the store sound and reads on.

The folder layout and the two SQLite tables touched (`segments`, `max_seq_id`) are
chromadb's own and are checked before use: when they are not what this expects,
the repair refuses and says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from store.chroma_records import batched
from store.protocol import StoreDamaged

if TYPE_CHECKING:
    from store.chroma import ChromaStore

log = logging.getLogger(__name__)

NOTE = "ragcord-repair.json"
SET_ASIDE = ".damaged"


def damaged_message(where: str, why: str = "", *, server: bool = False) -> str:
    said = (
        f"the document store's vector index ({where}) is damaged: a process was probably killed while "
        f"Chroma saved it{why}."
    )
    if server:  # its files are the server's: ragcord cannot rebuild them (docs/chroma-server.md)
        return (
            f"{said} Every read of that collection fails until the server's folder is fixed: stop the server and "
            "restore its folder from a backup, or start it on an empty folder and ingest the documents again."
        )
    return (
        f"{said} The texts are intact: the next ragcord process that loads the encoder "
        "(the bot, `ragcord ingest` or `ragcord reindex`) rebuilds it."
    )


def repair(store: ChromaStore) -> bool:
    """Repair every damaged ragcord collection of an embedded store. True: it reads again.

    Under the writer lock nothing may be damaged any more: another process met the same
    damage and rebuilt it first. That is True too; the caller reads again."""
    path = store.location.path
    assert path is not None and store.embed_check is not None and store.encoder
    note = path / NOTE
    crashed: list[str] = []
    hold = store._writer.hold("*", recover=crashed.extend) if store._writer else nullcontext()
    with hold:  # a crashed writer's sweep waits: it reads the collections this repairs
        pending = _read_note(note) | _probe(store)
        if not pending:
            log.info("no vector index is damaged now (another process rebuilt it); reading again")
            if crashed:
                store._recover(crashed)
            return True
        log.warning(
            "the vector index of %s is damaged; rebuilding it from the stored texts", ", ".join(sorted(pending))
        )
        _write_note(note, pending)
        store._conn.close()  # Chroma must not hold the folders that are set aside
        try:
            for name in sorted(pending):
                _set_aside(path, name)
        finally:
            store._conn.open()
            store._after_reopen()
        for name in sorted(pending, key=lambda n: not n.endswith("_docs")):  # manifests first: they say what is live
            _rebuild(store, name)
        for folder in path.glob(f"*{SET_ASIDE}"):
            shutil.rmtree(folder, ignore_errors=True)
        note.unlink(missing_ok=True)
        if crashed:
            store._recover(crashed)
    log.warning("rebuilt the vector index of %s", ", ".join(sorted(pending)))
    return True


def damaged_now(store: ChromaStore) -> bool:
    """Whether a ragcord collection reads as damaged now (or a rebuild is half-way)."""
    path = store.location.path
    return bool(path is not None and (path / NOTE).exists()) or bool(_probe(store))


def _probe(store: ChromaStore) -> set[str]:
    from store.chroma_client import is_damaged

    damaged = set()
    for name in store._collection_names():
        if not name.startswith("rc_"):
            continue
        try:
            col = store._collection(name)
            if col is not None:  # dropped since it was listed
                col.get(limit=1, include=[])
        except Exception as exc:
            if not is_damaged(exc):
                raise
            damaged.add(name)
    return damaged


def _read_note(note: Path) -> set[str]:
    try:
        return {str(n) for n in json.loads(note.read_text(encoding="utf-8"))}
    except FileNotFoundError:
        return set()
    except (OSError, ValueError, TypeError) as exc:
        raise StoreDamaged(f"{note} is unreadable ({exc}); remove it and restart to probe the store again") from exc


def _write_note(note: Path, names: set[str]) -> None:
    tmp = note.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(sorted(names), out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, note)


def _set_aside(path: Path, name: str) -> None:
    """Rename the collection's vector segment folder and forget how much of the log it applied."""
    db = sqlite3.connect(path / "chroma.sqlite3", timeout=30)
    try:
        rows = db.execute(
            "SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
            "WHERE c.name = ? AND s.scope = 'VECTOR'",
            (name,),
        ).fetchall()
        if len(rows) != 1:
            raise StoreDamaged(damaged_message(name, f" (found {len(rows)} vector segments, expected one)"))
        segment = str(rows[0][0])
        folder = path / segment
        if folder.exists():
            aside = path / f"{segment}{SET_ASIDE}"
            shutil.rmtree(aside, ignore_errors=True)
            folder.rename(aside)
        with db:
            db.execute("DELETE FROM max_seq_id WHERE segment_id = ?", (segment,))
    except sqlite3.Error as exc:
        raise StoreDamaged(damaged_message(name, f" and its SQLite tables are not as expected ({exc})")) from exc
    finally:
        db.close()


def _rebuild(store: ChromaStore, name: str) -> None:
    col = store._collection(name)
    if col is None:
        return  # dropped meanwhile (a reindex's leftover swept by a writer)
    if name.endswith("_docs"):
        got = col.get(include=["metadatas", "documents"])
        records = list(zip(got["ids"], got["documents"], got["metadatas"], strict=True))
        for part in batched(records, store.max_batch_size):
            ids, docs, metas = (list(column) for column in zip(*part, strict=True))
            store._write_records(name, ids, docs, metas, np.zeros((len(part), 1), dtype=np.float32))
        return
    ns = _namespace_of(store, name, col)
    if ns is None:
        log.info("dropping %s: damaged and not the live collection of any namespace", name)
        store._client.delete_collection(name)
        return
    from store import reindex

    assert store.embed_check is not None and store.encoder
    reindex.rebuild(store, ns, store.embed_check, store.encoder, progress=_logged(name))


def _logged(name: str) -> Callable[[int, int], None]:
    """Progress of a rebuild in the log, every tenth of the way (it can take minutes; nobody watches a bar)."""
    shown = [-1]

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth > shown[0]:
            shown[0] = tenth
            log.warning("rebuilding %s: %d of %d chunks re-embedded", name, done, total)

    return progress


def _namespace_of(store: ChromaStore, name: str, col: Any) -> str | None:
    """The namespace whose live chunk collection `name` is, or None."""
    meta = dict(col.metadata or {})
    key = name[3:].split(".", 1)[0]
    ns = str(meta.get("ragcord:namespace") or key)
    store._index.pop(ns, None)
    live = store._record(ns).collection or f"rc_{key}"
    return ns if live == name else None
