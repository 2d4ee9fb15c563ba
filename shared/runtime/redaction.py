"""Text that leaves a service: redacted of the secret values this process read, stripped of
control characters, and bounded.

Every error a run fails with goes out through `error_text` (the task's SendTaskFailure cause,
the ledger's error_detail, the Run Failed event and the alert built from both, a failed
delivery's record), and every log line through `redacted` (shared.runtime.observability's
formatter). A vendor's or a partner server's own words are quoted only through
`untrusted_excerpt`: short, on one line, and without links, so that nothing a vendor writes
reaches a person as something to click.

The secret values are those `shared.runtime.secrets.Secrets` and the database settings read in
this process: a process-wide set, because a secret read by one run's connector must not leak
through another's error in the same warm container.
"""

from __future__ import annotations

import json
import re
import unicodedata
from urllib.parse import quote, quote_plus

from shared.errors import bounded_line

REDACTED = "[redacted]"
LINK_REMOVED = "[link removed]"
# Errors are read in an alert and a terminal: one line, long enough for a reason and its fix.
ERROR_TEXT_LIMIT = 1000
# What a vendor or a partner server may say in one of our errors.
EXCERPT_LIMIT = 200
# A value shorter than this is too short to tell apart from ordinary words: shared/runtime/
# secrets refuses it as a secret, so that every secret can be redacted.
MIN_SECRET_LENGTH = 8

_secret_values: set[str] = set()
# Format characters (Unicode Cf: zero-width, bidi overrides) go before anything else is done,
# so that a secret with such characters slipped in between its own shows whole, and is caught.
_FORMAT = "Cf"
# A link a mail or chat client would make clickable: a scheme, or a bare www. host.
_LINK = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.-]{1,20}:/+|www\.)[^\s'\"<>]*")


def remember_secret(value: str) -> None:
    """From now on, `value` (and the ways it is commonly escaped) is redacted everywhere."""
    if len(value) < MIN_SECRET_LENGTH:
        return  # refused as a secret by its reader; never worth blanking ordinary text for
    _secret_values.update(
        {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value, safe="")}
    )


def redacted(text: str) -> str:
    """`text` with every secret value this process read replaced by [redacted]."""
    # Longest first, so that a value containing another is replaced whole.
    for value in sorted(_secret_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def _visible(text: str) -> str:
    return "".join(char for char in text if unicodedata.category(char) != _FORMAT)


def error_text(text: str, *, limit: int = ERROR_TEXT_LIMIT) -> str:
    """An error as it may leave the service: redacted, on one line (shared.errors.bounded_line:
    no control or unprintable characters), at most `limit` characters.

    Redacted before and after the invisible characters go, so that a secret echoed with
    zero-width characters inside it is caught too; cut last, so that no cut leaves part of a
    secret behind."""
    return bounded_line(redacted(_visible(redacted(text))), limit)


def untrusted_excerpt(text: str, *, limit: int = EXCERPT_LIMIT) -> str:
    """What a vendor or a partner server said, as one of our errors may quote it: its links
    removed, then as `error_text`, at most `limit` characters."""
    line = bounded_line(_visible(text), max(len(text), 1))  # a link ends at what was a break
    return error_text(_LINK.sub(LINK_REMOVED, line), limit=limit)
