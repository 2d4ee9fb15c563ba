"""The demo vendor misbehaving on purpose: records pages a hostile or broken vendor would serve,
so that the embedded stack can show what sourceflow does with them (docs/limits.md).

A dataset's fault (`POST /admin/faults` with `"page_mode": MODE`) picks one:
- `gzip_bomb`: a valid, empty page padded with spaces to `inflated_bytes` (300 MB by default),
  sent gzip-encoded: about a thousandth of that on the wire;
- `repeated_token`: the first page again whatever token is asked for, so its next_page_token
  never changes (the dataset must hold more than a page);
- `not_json`: an HTML error page with status 200, as a misrouted proxy answers;
- `json_array`: the records as a bare JSON array, without the object around them;
- `bad_dates`: the records with a last_modified that is no date.
"""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

PAGE_MODES = ("gzip_bomb", "repeated_token", "not_json", "json_array", "bad_dates")
# What the issue measured: a page of 306 KB on the wire that inflates to 300 MB.
DEFAULT_INFLATED_BYTES = 300_000_000
MAX_INFLATED_BYTES = 2_000_000_000
BAD_DATE = "the day before yesterday"
_PADDING_BLOCK = b" " * (1 << 20)


@dataclass(frozen=True)
class RawAnswer:
    """An answer the server sends as it is: its body and the headers beside Content-Length."""

    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


@functools.cache
def gzip_bomb(inflated_bytes: int) -> bytes:
    """A gzip stream of a valid, empty records page padded with spaces to `inflated_bytes`
    (made once per size: compressing 300 MB of spaces takes a second)."""
    head, tail = b'{"records": [', b'], "next_page_token": null}'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    chunks = [compressor.compress(head)]
    padding = max(inflated_bytes - len(head) - len(tail), 0)
    while padding:
        block = _PADDING_BLOCK[: min(padding, len(_PADDING_BLOCK))]
        chunks.append(compressor.compress(block))
        padding -= len(block)
    chunks += [compressor.compress(tail), compressor.flush()]
    return b"".join(chunks)


def hostile_page(
    mode: str, records: list[dict[str, Any]], token: str | None, inflated_bytes: int
) -> RawAnswer | dict[str, Any]:
    """What the vendor answers in `mode` for a page of `records` whose next token is `token`
    (for `repeated_token`, the first page's)."""
    if mode == "gzip_bomb":
        return RawAnswer(
            gzip_bomb(inflated_bytes),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
    if mode == "not_json":
        return RawAnswer(
            b"<html><body>502 Bad Gateway: try again later</body></html>",
            {"Content-Type": "text/html"},
        )
    if mode == "json_array":
        return RawAnswer(json.dumps(records, separators=(",", ":")).encode())
    if mode == "bad_dates":
        records = [{**record, "last_modified": BAD_DATE} for record in records]
    return {"records": records, "next_page_token": token}
