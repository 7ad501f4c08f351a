"""E-mail messages (.eml) through the standard library's `email` (policy=default, with each
header value cut to 2,000 characters before it is parsed, since the header parser is slow on
long ones).

The subject is the title; From, To and Date head the text and go into the document's
extra metadata. The body prefers text/plain over HTML (HTML through the HTML loader).
Attachments that ragcord can read are loaded by their own loaders and come back as extra
sections of the message, headed "Attachment: <name>" (and their own heading after it),
so a citation names the message and the attachment; the others are listed in a warning.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from email.message import EmailMessage, Message
from typing import Any

from ingest.loaders import LoadError
from ingest.loaders.html import parse_html
from ingest.loaders.text import decode_text
from store.types import LoadedDocument, Section

MAX_DEPTH = 3  # messages attached to messages
MAX_ATTACHMENTS = 50
MAX_HEADER_CHARS = 2_000  # of one header's value: the stdlib's header parser is slow on long ones


class _BoundedPolicy(email.policy.EmailPolicy):
    """policy=default, but each header value is cut to MAX_HEADER_CHARS before it is parsed
    (80 KB of '"a" ' in a From header took 2.7 s, 56 KB of Content-Type parameters 2 s)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        return super().header_fetch_parse(name, value[:MAX_HEADER_CHARS])


_POLICY = _BoundedPolicy()


def load(data: bytes, *, filename: str, source: str, max_bytes: int, depth: int = 0) -> LoadedDocument:
    try:
        msg = email.message_from_bytes(data, policy=_POLICY)
        if not isinstance(msg, EmailMessage) or not msg.keys():
            raise LoadError(f"{filename} is not an e-mail message (no headers)")
        subject = _header(msg, "subject")
        head = {k: _header(msg, k) for k in ("from", "to", "date")}
        body = _body(msg, filename)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - the email package on malformed input
        raise LoadError(f"{filename} is not a readable e-mail message ({type(exc).__name__}: {exc})") from exc
    lines = [f"{k.capitalize()}: {v}" for k, v in (("subject", subject), *head.items()) if v]
    doc = LoadedDocument(source=source, title=subject, kind="eml", sections=[])
    doc.sections.append(Section("\n".join(lines) + ("\n\n" + body if body else "")))
    doc.extra.update({f"email_{k}": v for k, v in head.items() if v})
    _attachments(msg, doc, filename, max_bytes, depth)
    return doc


def _header(msg: EmailMessage, name: str) -> str:
    try:
        return " ".join(str(msg.get(name, "") or "").split())
    except Exception:  # noqa: BLE001 - a malformed header loses only itself
        return ""


def _content(part: Message, filename: str) -> str:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    if part.get_content_type() == "text/html":
        return "\n\n".join(s.text for s in parse_html(decode_text(raw, filename, declared=charset)).sections)
    return decode_text(raw, filename, declared=charset).strip()


def _body(msg: EmailMessage, filename: str) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        return _content(part, filename)
    except LoadError:
        return ""  # a binary body is no text


def _attachments(msg: EmailMessage, doc: LoadedDocument, filename: str, max_bytes: int, depth: int) -> None:
    from ingest.loaders import SUPPORTED_SUFFIXES, load_bytes

    skipped = []
    for n, part in enumerate(msg.iter_attachments()):
        if not isinstance(part, EmailMessage):
            continue
        name = part.get_filename() or f"attachment-{n + 1}"
        if n >= MAX_ATTACHMENTS:
            skipped.append(f"{name} (over {MAX_ATTACHMENTS} attachments)")
            continue
        payload = part.get_payload(decode=True)
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            payload = (
                inner[0].as_bytes() if isinstance(inner, list) and inner and isinstance(inner[0], Message) else payload
            )
            name = name if name.lower().endswith(".eml") else f"{name}.eml"
        data = payload if isinstance(payload, bytes) else b""
        suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if suffix not in SUPPORTED_SUFFIXES and part.get_content_maintype() == "text":
            suffix, name = ".txt", name + ".txt"
        if suffix not in SUPPORTED_SUFFIXES or (suffix == ".eml" and depth >= MAX_DEPTH):
            skipped.append(name)
            continue
        try:
            if suffix == ".eml":
                inner_doc = load(data, filename=name, source=doc.source, max_bytes=max_bytes, depth=depth + 1)
            else:
                inner_doc = load_bytes(data, name, max_bytes=max_bytes, source=doc.source)
        except LoadError as exc:
            doc.warnings.append(f"attachment {name} was not indexed: {exc}")
            continue
        for s in inner_doc.sections:
            heading = f"Attachment: {name}" + (f" > {s.heading}" if s.heading else "")
            doc.sections.append(Section(s.text, page=s.page, heading=heading))
        doc.warnings.extend(f"attachment {name}: {w}" for w in inner_doc.warnings)
    if skipped:
        doc.warnings.append(f"attachments not indexed (unsupported type): {', '.join(skipped)}")
