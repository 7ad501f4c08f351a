"""Unexpected errors, told to users without internals.

A user sees a short message with a reference id (8 hex characters); the log gets the
traceback under the same id, so an admin can find it. Exception text never reaches
Discord: it can hold paths, URLs or a server's own error message.
"""

from __future__ import annotations

import logging
import secrets


def new_reference() -> str:
    return secrets.token_hex(4)


def log_failure(logger: logging.Logger, what: str, exc: BaseException | None = None) -> str:
    """Log `what` failed with the traceback of `exc` (or the current exception); return its reference."""
    ref = new_reference()
    logger.error("%s [ref %s]", what, ref, exc_info=exc if exc is not None else True)
    return ref


def failure_text(ref: str, what: str = "Something went wrong on my side") -> str:
    """What the user reads: no exception text, the reference to quote to an admin."""
    return f"{what} (reference `{ref}`). It has been logged; try again, or give an admin the reference."
