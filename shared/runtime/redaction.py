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
# Unicode's control (Cc), line and paragraph separator (Zl, Zp), surrogate (Cs) and private-use
# (Co) characters each become a space, then runs of space become one; format characters (Cf:
# bidi overrides, zero-width) go, so that one hidden inside a secret does not hide it.
_BREAKS = frozenset({"Cc", "Zl", "Zp", "Cs", "Co"})
_INVISIBLE = "Cf"
_SPACES = re.compile(r"\s+")
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


def one_line(text: str) -> str:
    """`text` without control or invisible characters, its whitespace collapsed to single
    spaces."""
    categories = ((char, unicodedata.category(char)) for char in text)
    visible = "".join(
        " " if category in _BREAKS else char
        for char, category in categories
        if category != _INVISIBLE
    )
    return _SPACES.sub(" ", visible).strip()


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(text: str, *, limit: int = ERROR_TEXT_LIMIT) -> str:
    """An error as it may leave the service: redacted, on one line, at most `limit` characters.

    Redacted before and after the invisible characters go, so that a secret echoed with
    zero-width characters inside it is caught too; bounded last, so that no cut leaves part of
    a secret behind."""
    return bounded(redacted(one_line(redacted(text))), limit)


def untrusted_excerpt(text: str, *, limit: int = EXCERPT_LIMIT) -> str:
    """What a vendor or a partner server said, as one of our errors may quote it: its links
    removed, then as `error_text`, at most `limit` characters."""
    return error_text(_LINK.sub(LINK_REMOVED, one_line(text)), limit=limit)
