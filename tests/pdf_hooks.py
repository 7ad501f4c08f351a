"""Parse functions for the PDF worker's tests: importable, since the worker is a spawned process.

`parse_or_misbehave` parses like `load_bytes`, except on file names that ask for trouble:
"crash*" kills the process, "stall*" sleeps for an hour, "bug*" raises an unexpected error.
Every document it returns records the process that parsed it in `extra["parsed_by"]`.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ingest.loaders import load_bytes
from store.types import LoadedDocument


def parse_or_misbehave(data: bytes, filename: str, **kwargs: Any) -> LoadedDocument:
    if filename.startswith("crash"):
        os._exit(3)
    if filename.startswith("stall"):
        time.sleep(3600)
    if filename.startswith("bug"):
        raise ValueError("a bug in the parser")
    doc = load_bytes(data, filename, **kwargs)
    doc.extra["parsed_by"] = str(os.getpid())
    return doc
