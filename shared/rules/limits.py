"""Bounds on untrusted input (DESIGN.md, "People, secrets and hostile input"; docs/limits.md).

- `RunLimits`: how much one run may read from its source: the inflated size of one page, the
  pages, the records and the bytes. The defaults are `DEFAULT_RUN_LIMITS`; a source overrides
  any of them in `connection.limits` (contracts/common.v1.schema.json `run_limits` says which
  keys and values are allowed). `ReadMeter` counts a run's reads against them and stops the
  run by name at the first cap it passes; `PageTokens` stops a run that is sent back to a page
  it has already read.
- `STORED_JSON_MAX_DEPTH`, `STORED_JSON_MAX_BYTES`: how deep and how large the hand-written
  JSON of a source row may be (migration 0012's CHECK constraints; a unit test keeps the two
  equal). `stored_json` reads JSON text from sourceflow's own database: what is nested deeper
  comes back as `UnreadableJson`, which the rules that read a row reject by name, so that one
  row never breaks a reader of every row.

Everything here is pure: no clock, no database, no network.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from shared.errors import PermanentError

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class RunLimits:
    """What one run may read from its source before it stops with a named error."""

    # One page as the vendor sends it, once inflated (gzip); for a file drop, one line.
    max_page_bytes: int = 32 * MIB
    # Pages one run follows (http_api).
    max_pages: int = 100_000
    # Records one run reads, malformed ones included.
    max_records: int = 10_000_000
    # Bytes one run reads, inflated: the pages of an API, the objects of a drop, the rows of a
    # table as JSON.
    max_bytes: int = 10 * GIB


DEFAULT_RUN_LIMITS = RunLimits()
LIMIT_KEYS = tuple(limit.name for limit in fields(RunLimits))


def run_limits(connection: Mapping[str, Any]) -> RunLimits:
    """The source's limits: the defaults, with the overrides of `connection.limits` (a
    connection that passed its schema, which allows only these keys, as whole numbers)."""
    overrides = connection.get("limits") or {}
    return replace(DEFAULT_RUN_LIMITS, **{key: int(overrides[key]) for key in overrides})


class LimitExceeded(PermanentError):
    """A run read more than its source's limits allow; `error_name` names the limit."""


# The error each limit stops a run with.
LIMIT_ERRORS = {
    "max_page_bytes": "PageTooLarge",
    "max_pages": "TooManyPages",
    "max_records": "TooManyRecords",
    "max_bytes": "TooManyBytes",
}


class PageTokenRepeated(PermanentError):
    error_name = "PageTokenRepeated"


def limit_exceeded(source_id: str, limits: RunLimits, key: str, what: str) -> LimitExceeded:
    """The error of a run that passed `limits.<key>`: what happened, the limit, and the fix."""
    return LimitExceeded(
        f"source {source_id!r}: {what}, over its limit connection.limits.{key} = "
        f"{getattr(limits, key):,} (default {getattr(DEFAULT_RUN_LIMITS, key):,}); the run "
        f"stops here. If the source really is that large, raise connection.limits.{key} for it "
        "(docs/limits.md)",
        error_name=LIMIT_ERRORS[key],
    )


@dataclass
class ReadMeter:
    """One run's reads from its source, counted against its limits: each count raises the
    limit's named error the moment it passes it."""

    source_id: str
    limits: RunLimits
    pages: int = 0
    records: int = 0
    bytes: int = 0

    def page(self) -> None:
        self.pages += 1
        if self.pages > self.limits.max_pages:
            raise self.exceeded("max_pages", f"it sent more than {self.limits.max_pages:,} pages")

    def record(self, count: int = 1) -> None:
        self.records += count
        if self.records > self.limits.max_records:
            raise self.exceeded(
                "max_records", f"it sent more than {self.limits.max_records:,} records"
            )

    def read(self, size: int) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise self.exceeded("max_bytes", f"it sent more than {self.limits.max_bytes:,} bytes")

    def exceeded(self, key: str, what: str) -> LimitExceeded:
        return limit_exceeded(self.source_id, self.limits, key, what)

    def counts(self) -> dict[str, int]:
        """What the run has read so far, for a continued download to go on counting from."""
        return {"pages": self.pages, "records": self.records, "bytes": self.bytes}

    def resume(self, counts: Mapping[str, Any]) -> None:
        """Go on counting from what an earlier invocation of the run read (`counts`)."""
        self.pages, self.records, self.bytes = counts["pages"], counts["records"], counts["bytes"]


@dataclass
class PageTokens:
    """The page tokens one run has followed: a vendor that hands back a token already followed
    would serve the same pages for ever, so the run stops at once, by name."""

    source_id: str
    # token digest -> the page that sent it; digests, so that long tokens cost little memory.
    _sent_by: dict[bytes, int] = field(default_factory=dict)

    def follow(self, token: str, page: int) -> None:
        """Note that `page` sent `token`; PageTokenRepeated if an earlier page sent it."""
        digest = hashlib.blake2b(token.encode(), digest_size=16).digest()
        earlier = self._sent_by.setdefault(digest, page)
        if earlier != page:
            raise PageTokenRepeated(
                f"source {self.source_id!r}: page {page:,} sent the same next_page_token as "
                f"page {earlier:,}; following it would read the same pages for ever, so the run "
                "stops. The vendor's paging is broken: ask them to fix it"
            )


# -- JSON in sourceflow's own database ----------------------------------------------------------

STORED_JSON_MAX_DEPTH = 32
"""How deeply a source row's connection and batch_execution_params may nest (an empty object or
array, or a scalar, is depth 0; `{"a": 1}` is 1): PostgreSQL's `strict $.**{N}`, the level of
an item N containers deep."""
STORED_JSON_MAX_BYTES = 64 * 1024
"""How large a source row's connection and batch_execution_params may be, as JSON text."""


@dataclass(frozen=True)
class UnreadableJson:
    """A JSON value in the database that sourceflow does not read (too deep): in place of the
    value, what is wrong with it."""

    reason: str

    def __str__(self) -> str:
        return f"<unreadable: {self.reason}>"


def depth_over(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` levels; walks at most `limit` levels, without
    recursion."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return False
    return True


def stored_json(text: str) -> Any:
    """A JSON column's value as sourceflow reads it from its database: `UnreadableJson` when it
    nests deeper than STORED_JSON_MAX_DEPTH (a row written before migration 0012's bounds)."""
    reason = f"nested deeper than {STORED_JSON_MAX_DEPTH} levels"
    try:
        value = json.loads(text)
    except RecursionError:  # the parser's own limit, far beyond ours
        return UnreadableJson(reason)
    return UnreadableJson(reason) if depth_over(value, STORED_JSON_MAX_DEPTH) else value
