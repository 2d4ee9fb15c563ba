"""The demo vendor's datasets: queries and page tokens, the sorted keys of generated records,
the overlay of upserted ones (with their visibility and clock), and upsert merging."""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import threading
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any
from urllib.parse import parse_qs

from local.vendor.records import (
    DEFAULT_PAGE_SIZE,
    ID_DIGITS,
    MAX_DATASET_SIZE,
    MAX_PAGE_SIZE,
    PAGE_FORMATS,
    QUERY_PARAMS,
    STATUSES,
    TIMESTAMP_EXAMPLE,
    Record,
    _digest,
    _four_words,
    _times,
    ceil_seconds,
    default_record,
    floor_seconds,
    format_timestamp,
    generate_record,
    parse_timestamp,
    record_id,
    record_times,
    render_record,
)

# ---------------------------------------------------------------------------------------------
# Errors, queries and tokens
# ---------------------------------------------------------------------------------------------


class HttpError(Exception):
    """An error the handler turns into a JSON response with this status (and these headers
    beside its Content-Type, such as a 429's Retry-After)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Query:
    """Filters of a records or count request, normalised to inclusive whole-second bounds.

    Records carry seconds precision, so `modified_after=t` (exclusive) becomes
    `last_modified >= floor(t) + 1`, and fractional inclusive bounds round inwards.
    """

    lm_min: int | None = None
    lm_max: int | None = None
    sold_min: int | None = None
    sold_max: int | None = None
    after: tuple[int, str] | None = None  # keyset: strictly after this (last_modified, id)

    @property
    def filters_sold(self) -> bool:
        """Sold filters need a per-record check; the others are ranges of the sort order."""
        return self.sold_min is not None or self.sold_max is not None

    @property
    def scan_min(self) -> int | None:
        """Lowest last_modified worth scanning: a sold_date is never after last_modified."""
        bounds = [b for b in (self.lm_min, self.sold_min) if b is not None]
        return max(bounds) if bounds else None

    def sold_ok(self, sold: int | None) -> bool:
        """Whether a sold date passes the sold filters (null never does when they are set)."""
        if not self.filters_sold:
            return True
        if sold is None:
            return False
        if self.sold_min is not None and sold < self.sold_min:
            return False
        return self.sold_max is None or sold <= self.sold_max


def encode_token(last_modified: int, record_id_: str) -> str:
    """Opaque keyset token: base64url JSON of the last (last_modified, id) served."""
    raw = json.dumps({"lm": format_timestamp(last_modified), "id": record_id_}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, str]:
    """The (last_modified, id) inside a token; HttpError 400 if this server did not issue it."""
    problem = f"page_token {token!r} is not valid; expected the next_page_token of a previous page"
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        lm, rid = data["lm"], data["id"]
        if not isinstance(lm, str) or not isinstance(rid, str):
            raise ValueError("wrong field types")
        return floor_seconds(parse_timestamp(lm)), rid
    except (binascii.Error, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise HttpError(400, problem) from exc


def _single_params(query_string: str) -> dict[str, str]:
    """Query parameters as one value each, rejecting unknown or repeated names.

    A typo such as `modified_since` would otherwise silently return the whole dataset.
    """
    params: dict[str, str] = {}
    for key, values in parse_qs(query_string, keep_blank_values=True).items():
        if key not in QUERY_PARAMS:
            raise HttpError(
                400, f"unknown query parameter {key!r}; expected one of {', '.join(QUERY_PARAMS)}"
            )
        if len(values) > 1:
            raise HttpError(400, f"query parameter {key!r} given {len(values)} times; give it once")
        params[key] = values[0]
    return params


def _timestamp_param(params: Mapping[str, str], name: str) -> datetime | None:
    """One timestamp filter, or HttpError 400 naming the parameter, the value and the format."""
    value = params.get(name)
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise HttpError(
            400, f"{name}={value!r} is not valid; expected {TIMESTAMP_EXAMPLE}"
        ) from exc


def parse_query(query_string: str) -> tuple[Query, int]:
    """The normalised filters and page size of a records/count request."""
    params = _single_params(query_string)
    after = _timestamp_param(params, "modified_after")
    until = _timestamp_param(params, "modified_until")
    sold_from = _timestamp_param(params, "sold_from")
    sold_until = _timestamp_param(params, "sold_until")
    token = params.get("page_token") or None
    query = Query(
        lm_min=None if after is None else floor_seconds(after) + 1,
        lm_max=None if until is None else floor_seconds(until),
        sold_min=None if sold_from is None else ceil_seconds(sold_from),
        sold_max=None if sold_until is None else floor_seconds(sold_until),
        after=None if token is None else decode_token(token),
    )
    return query, _page_size(params.get("page_size"))


def page_format(query_string: str) -> str:
    """How the records page is to be sent (`format`, default json), or HttpError 400."""
    value = _single_params(query_string).get("format", PAGE_FORMATS[0])
    if value not in PAGE_FORMATS:
        raise HttpError(400, f"format={value!r} is not valid; expected one of {PAGE_FORMATS}")
    return value


def _page_size(value: str | None) -> int:
    """The page size, defaulting and bounded so one request cannot ask for everything."""
    if value is None:
        return DEFAULT_PAGE_SIZE
    expected = f"expected an integer from 1 to {MAX_PAGE_SIZE}"
    try:
        size = int(value)
    except ValueError as exc:
        raise HttpError(400, f"page_size={value!r} is not valid; {expected}") from exc
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise HttpError(400, f"page_size={value!r} is out of range; {expected}")
    return size


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Upserted:
    """An overlay record with its sort key and sold date pre-parsed for filtering."""

    record: Record
    last_modified: int
    sold: int | None


# One candidate of a page: (last_modified, id, generated index or overlay record).
_Candidate = tuple[int, str, "int | _Upserted"]


class Dataset:
    """One named dataset: `size` generated records, shadowed by upserted ones.

    The sort index packs (last_modified, index) into one int per record (`lm * 10**7 + index`)
    in an `array`, because a million tuples would cost far more memory than 8 bytes each. Since
    generated ids sort like their indices, integer order is exactly (last_modified, id) order.
    """

    def __init__(self, name: str, size: int, anchor: datetime) -> None:
        if not 0 <= size <= MAX_DATASET_SIZE:
            raise ValueError(f"dataset {name!r} size {size} must be from 0 to {MAX_DATASET_SIZE}")
        self.name = name
        self.size = size
        self.anchor = anchor
        self.anchor_s = floor_seconds(anchor)
        self._prefix = f"{name}-"
        self._lock = threading.RLock()
        self._keys: array[int] | None = None
        self._sold: array[int] | None = None  # sold date per sorted position, -1 when unsold
        self._overlay: dict[str, _Upserted] = {}
        self._overlay_keys: list[tuple[int, str]] = []
        self._shadowed: set[int] = set()
        # The dataset's clock runs this many seconds ahead of the server's (negative: behind).
        self.clock_offset_s = 0
        # Upserts not yet visible, by when they become visible (epoch seconds, dataset's clock);
        # until then pages and counts serve the record's previous version, if any.
        self._unpublished: list[tuple[int, int, str, _Upserted]] = []
        self._upserts = 0

    def describe(self) -> dict[str, Any]:
        """The dataset's entry in `GET /datasets`."""
        return {"name": self.name, "size": self.size, "anchor": format_timestamp(self.anchor_s)}

    def _index(self) -> tuple[array[int], array[int]]:
        """The sorted keys and aligned sold dates, built once on first use (under the lock)."""
        with self._lock:
            if self._keys is None or self._sold is None:
                packed: list[int] = []
                sold_by_index = array("q", bytes(8 * self.size))
                name, anchor_s = self.name, self.anchor_s
                for index in range(self.size):
                    last_modified, _, sold = _times(_four_words(_digest(name, index)), anchor_s)
                    packed.append(last_modified * MAX_DATASET_SIZE + index)
                    if sold is not None:
                        sold_by_index[index] = sold
                    else:
                        sold_by_index[index] = -1
                packed.sort()
                self._keys = array("q", packed)
                self._sold = array("q", (sold_by_index[k % MAX_DATASET_SIZE] for k in packed))
            return self._keys, self._sold

    def warm(self) -> None:
        """Build the index now, so the first query of a big dataset does not wait seconds."""
        self._index()

    def now_s(self, server_now: datetime) -> int:
        """The dataset's clock in whole seconds, the precision of last_modified."""
        return floor_seconds(server_now) + self.clock_offset_s

    def publish(self, server_now: datetime) -> None:
        """Make visible the upserts whose time has come, in the order they become visible."""
        now = server_now.timestamp() + self.clock_offset_s
        with self._lock:
            while self._unpublished and self._unpublished[0][0] <= now:
                _, _, rid, entry = heapq.heappop(self._unpublished)
                self._store(rid, entry)

    def base_index(self, record_id_: str) -> int | None:
        """The generated index an id names, or None if it is not a generated record's id."""
        digits = record_id_.removeprefix(self._prefix)
        if digits == record_id_ or len(digits) != ID_DIGITS or not digits.isdigit():
            return None
        index = int(digits)
        return index if index < self.size else None

    # -- reading ---------------------------------------------------------------------------

    def _base_range(self, keys: array[int], query: Query) -> tuple[int, int]:
        """Positions [start, stop) of the sorted keys that the time bounds and the token allow."""
        low = query.scan_min
        start = 0 if low is None else bisect_left(keys, low * MAX_DATASET_SIZE)
        stop = len(keys)
        if query.lm_max is not None:
            stop = bisect_left(keys, (query.lm_max + 1) * MAX_DATASET_SIZE)
        if query.after is not None:
            lm, rid = query.after
            same_lm_start = bisect_left(keys, lm * MAX_DATASET_SIZE)
            same_lm_stop = bisect_left(keys, (lm + 1) * MAX_DATASET_SIZE)
            position = bisect_right(
                keys,
                rid,
                same_lm_start,
                same_lm_stop,
                key=lambda k: record_id(self.name, k % MAX_DATASET_SIZE),
            )
            start = max(start, position)
        return start, stop

    def _base_candidates(self, query: Query) -> Iterator[_Candidate]:
        """Generated records matching `query`, in order, skipping ids the overlay replaced."""
        keys, sold = self._index()
        start, stop = self._base_range(keys, query)
        shadowed = self._shadowed
        for position in range(start, stop):
            key = keys[position]
            index = key % MAX_DATASET_SIZE
            if shadowed and index in shadowed:
                continue
            if query.filters_sold:
                sold_s = sold[position]
                if not query.sold_ok(None if sold_s < 0 else sold_s):
                    continue
            yield key // MAX_DATASET_SIZE, record_id(self.name, index), index

    def _overlay_candidates(self, query: Query) -> Iterator[_Candidate]:
        """Upserted records matching `query`, in (last_modified, id) order."""
        keys = self._overlay_keys
        low = query.scan_min
        start = 0 if low is None else bisect_left(keys, (low, ""))
        if query.after is not None:
            start = max(start, bisect_right(keys, query.after))
        for position in range(start, len(keys)):  # not keys[start:]: no copy per page
            last_modified, rid = keys[position]
            if query.lm_max is not None and last_modified > query.lm_max:
                break
            entry = self._overlay[rid]
            if query.sold_ok(entry.sold):
                yield last_modified, rid, entry

    def _candidates(self, query: Query) -> Iterator[_Candidate]:
        """Generated and upserted matches merged into one (last_modified, id) order.

        The two streams never share an id (overlay ids are shadowed in the generated one), so
        the merge never has to compare the third element.
        """
        return heapq.merge(self._base_candidates(query), self._overlay_candidates(query))

    def page(self, query: Query, page_size: int) -> tuple[list[Record], str | None]:
        """One page of records and the token for the next page (None on the last page).

        Candidates are chosen under the lock so an upsert cannot interleave, and rendered
        outside it, since generation is pure and overlay records are never mutated in place.
        """
        with self._lock:
            chosen = list(islice(self._candidates(query), page_size + 1))
        more = len(chosen) > page_size
        chosen = chosen[:page_size]
        records = [
            generate_record(self.name, item, self.anchor) if isinstance(item, int) else item.record
            for _, _, item in chosen
        ]
        token = encode_token(chosen[-1][0], chosen[-1][1]) if more else None
        return records, token

    def count(self, query: Query) -> int:
        """How many records match; without sold filters it is bisect arithmetic, not a scan."""
        with self._lock:
            if query.filters_sold or query.after is not None:
                return sum(1 for _ in self._candidates(query))
            keys, _ = self._index()
            start, stop = self._base_range(keys, query)
            hidden = 0
            for index in self._shadowed:
                last_modified, _, _ = record_times(self.name, index, self.anchor_s)
                position = bisect_left(keys, last_modified * MAX_DATASET_SIZE + index)
                hidden += start <= position < stop
            return stop - start - hidden + sum(1 for _ in self._overlay_candidates(query))

    # -- writing ---------------------------------------------------------------------------

    def current(self, record_id_: str) -> Record | None:
        """The record an id names right now: upserted, else generated, else None."""
        with self._lock:
            entry = self._overlay.get(record_id_)
            if entry is not None:
                return entry.record
        index = self.base_index(record_id_)
        return None if index is None else render_record(self.name, index, self.anchor_s)

    def upsert(self, given: Sequence[Record], now_s: int, visible_after_s: int = 0) -> list[Record]:
        """Merge or insert records; all are validated before any is stored (all or nothing).

        With `visible_after_s`, each record stays out of pages and counts until that many
        seconds after its last_modified stamp (by the dataset's clock), as a partner's long
        transaction, stamped when it began, is seen only when it commits.
        """
        with self._lock:
            pending: dict[str, _Upserted] = {}
            for fields in given:
                rid = _required_id(fields)
                base = pending[rid].record if rid in pending else self.current(rid)
                pending[rid] = merge_record(base, fields, now_s)
            for rid, entry in pending.items():
                if visible_after_s:
                    self._upserts += 1
                    visible_at = entry.last_modified + visible_after_s
                    heapq.heappush(self._unpublished, (visible_at, self._upserts, rid, entry))
                else:
                    self._store(rid, entry)
            return [entry.record for entry in pending.values()]

    def _store(self, rid: str, entry: _Upserted) -> None:
        """Put one record in the overlay, moving its sort key and shadowing a generated twin."""
        old = self._overlay.get(rid)
        if old is not None:
            del self._overlay_keys[bisect_left(self._overlay_keys, (old.last_modified, rid))]
        self._overlay[rid] = entry
        insort(self._overlay_keys, (entry.last_modified, rid))
        index = self.base_index(rid)
        if index is not None:
            self._shadowed.add(index)


def _required_id(fields: Record) -> str:
    """The id of an upserted record; every record must name one."""
    rid = fields.get("id")
    if not isinstance(rid, str) or not rid:
        raise HttpError(400, f"record {_preview(fields)} has no id; expected a non-empty string")
    return rid


def _preview(value: Any) -> str:
    """A short rendering of a bad input for error messages."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _timestamp_field(fields: Record, name: str) -> int | None:
    """A record's timestamp field as epoch seconds (None if null); 400 if it is not one."""
    value = fields.get(name)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(name)
        return floor_seconds(parse_timestamp(value))
    except ValueError as exc:
        message = f"record {fields.get('id')!r}: {name}={value!r} is not valid"
        raise HttpError(400, f"{message}; expected {TIMESTAMP_EXAMPLE} or null") from exc


def _reconcile_status(merged: Record, fields: Record) -> None:
    """Keep `status` and `sold_date` consistent: a record is sold exactly when it has a date.

    Whichever of the two the caller gave wins; giving both inconsistently is an error.
    """
    status = merged.get("status")
    if status not in STATUSES:
        raise HttpError(
            400,
            f"record {merged['id']!r}: status={status!r}; expected one of {', '.join(STATUSES)}",
        )
    sold = merged.get("sold_date") is not None
    if sold == (status == "sold"):
        return
    if "status" in fields and "sold_date" in fields:
        raise HttpError(
            400,
            f"record {merged['id']!r}: status={status!r} contradicts "
            f"sold_date={merged.get('sold_date')!r}; 'sold' exactly when sold_date is set",
        )
    if "sold_date" in fields:
        merged["status"] = "sold" if sold else "for_sale"
    else:
        merged["sold_date"] = merged["last_modified"] if status == "sold" else None


def merge_record(base: Record | None, fields: Record, now_s: int) -> _Upserted:
    """The record after an upsert: given fields replace old ones; last_modified becomes now.

    A caller-supplied last_modified wins, which lets tests and backfills place records in time.
    A new record starts from `default_record`. Timestamps are normalised to the vendor format so
    ordering by string and by time agree.
    """
    rid = _required_id(fields)
    given_lm = _timestamp_field(fields, "last_modified")
    last_modified = now_s if given_lm is None else given_lm
    merged = dict(base) if base is not None else default_record(rid, format_timestamp(now_s))
    merged.update(fields)
    merged["last_modified"] = format_timestamp(last_modified)
    for name in ("sold_date", "listed_date"):
        seconds = _timestamp_field(merged, name)
        merged[name] = None if seconds is None else format_timestamp(seconds)
    _reconcile_status(merged, fields)
    sold = _timestamp_field(merged, "sold_date")
    if sold is not None and sold > last_modified:
        raise HttpError(
            400,
            f"record {rid!r}: sold_date={merged['sold_date']!r} is after "
            f"last_modified={merged['last_modified']!r}; a sale cannot postdate the record",
        )
    return _Upserted(record=merged, last_modified=last_modified, sold=sold)
