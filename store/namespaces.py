"""Namespace names -> the keys stores name their collections by."""

from __future__ import annotations

import re

from store.protocol import StoreError

_NAMESPACE_RE = re.compile(r"[^a-z0-9_-]+")


def namespace_key(namespace: str) -> str:
    """Namespaces become collection names: lower-case letters, digits, _ and -."""
    key = _NAMESPACE_RE.sub("-", namespace.lower()).strip("-_")
    if not key:
        raise StoreError(f"invalid namespace {namespace!r}")
    return key[:60]
