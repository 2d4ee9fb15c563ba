"""Demo vendor API: a deterministic HTTP server of real-estate listing records.

It stands in for a third-party `http_api` source in the local stack, the tests and the
benchmarks, so it has to behave like a real vendor (filters, keyset pagination, upserts that
bump `last_modified`, the odd failure) while staying reproducible: every generated record is a
pure function of (dataset name, index, anchor), where the anchor is "the present" for the data.

On request it also misbehaves the way real sources do with time: an upsert's records may become
visible only some seconds after their stamp (`visible_after_s`, like a long transaction stamped
at its start), and a dataset's clock may run ahead of or behind the server's (`POST /admin/clock`).

Memory stays small even for a million records: records are rendered on demand from their index,
only a sorted array of packed (last_modified, index) keys plus an array of sold dates is kept per
dataset, and upserted records live in a small overlay that shadows the generated ones.

Run it with `python -m local.vendor --port 8081 [--dataset listings-a=5000 ...]`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import heapq
import json
import signal
import struct
import sys
import threading
import time
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_DATASETS: dict[str, int] = {"listings-a": 5000, "listings-b": 2000}
# The same as `--dataset` arguments (NAME=SIZE).
DEFAULT_DATASET_SPECS = tuple(f"{name}={size}" for name, size in DEFAULT_DATASETS.items())
# The line `main` prints first, followed by the base URL, for a supervisor to read.
ANNOUNCEMENT = "vendor listening on "
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10000
# Ids are zero-padded to this many digits so that string order equals index order, which lets
# the index sort on integers; it also caps a dataset's size.
ID_DIGITS = 7
MAX_DATASET_SIZE = 10**ID_DIGITS
EPOCH_START = datetime(1995, 1, 1, tzinfo=UTC)
EPOCH_START_S = int(EPOCH_START.timestamp())
STATUSES = ("for_sale", "sold", "withdrawn")
SOLD_SHARE = 0.35
WITHDRAWN_SHARE_OF_UNSOLD = 0.12
TIMESTAMP_FILTERS = ("modified_after", "modified_until", "sold_from", "sold_until")
QUERY_PARAMS = (*TIMESTAMP_FILTERS, "page_size", "page_token")
TIMESTAMP_EXAMPLE = "an ISO-8601 timestamp such as 2024-05-01T12:00:00Z"
MAX_BODY_BYTES = 64 * 1024 * 1024
# Bounds of the time misbehaviour a test may ask for: a late commit, a dataset's clock offset.
MAX_VISIBLE_AFTER_S = 86400
MAX_CLOCK_OFFSET_S = 366 * 86400

Record = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------


def format_timestamp(seconds: int) -> str:
    """Render epoch seconds the way the vendor does: `YYYY-MM-DDTHH:MM:SSZ`.

    Fixed-width UTC strings sort like the instants they name, which keeps ordering by the string
    and by the number interchangeable.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 timestamp into an aware UTC datetime; raise ValueError if it is not one.

    Accepts `Z` or any offset and fractional seconds. A timestamp without an offset is read as
    UTC, the only zone the vendor speaks. A space where an offset's `+` belongs is put back,
    because an unencoded `+` in a query string arrives decoded as a space.
    """
    text = value.strip()
    if "T" in text and " " in text:
        text = text.replace(" ", "+")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:59:59-01:00 is past the last representable day
        raise ValueError(f"{value!r} is out of range") from exc


def floor_seconds(moment: datetime) -> int:
    """Whole epoch seconds at or before `moment`, exact (no float rounding of microseconds)."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)


def ceil_seconds(moment: datetime) -> int:
    """Whole epoch seconds at or after `moment`; inclusive lower bounds need the ceiling."""
    floor = floor_seconds(moment)
    return floor if moment.microsecond == 0 else floor + 1


def default_anchor(now: datetime | None = None) -> datetime:
    """The present floored to the hour, so restarts within the hour regenerate the same data."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------------------------------------
# Deterministic record generation
# ---------------------------------------------------------------------------------------------

CITIES: tuple[tuple[str, tuple[str, ...], int], ...] = (
    # (city, postcode districts, typical price per square metre in GBP)
    ("London", ("E1", "E8", "N7", "N16", "SE15", "SW4", "W12", "NW3"), 7600),
    ("Manchester", ("M1", "M4", "M14", "M20", "M21"), 3300),
    ("Leeds", ("LS1", "LS6", "LS8", "LS17"), 2900),
    ("Bristol", ("BS1", "BS3", "BS6", "BS8"), 4200),
    ("Edinburgh", ("EH3", "EH6", "EH10", "EH12"), 4000),
    ("Glasgow", ("G1", "G3", "G12", "G41"), 2600),
    ("Birmingham", ("B1", "B13", "B15", "B30"), 2800),
    ("Liverpool", ("L1", "L8", "L17", "L18"), 2400),
    ("Cardiff", ("CF10", "CF11", "CF23", "CF24"), 2900),
    ("Brighton", ("BN1", "BN2", "BN3"), 5100),
    ("Oxford", ("OX1", "OX2", "OX4"), 5800),
    ("Newcastle", ("NE1", "NE2", "NE6"), 2300),
)
STREET_NAMES = (
    "Albert", "Victoria", "Station", "Church", "Park", "Mill", "Queen's", "King's", "Chapel",
    "Grove", "Willow", "Oak", "Cedar", "Elm", "Meadow", "Orchard", "Bridge", "Market", "Castle",
    "Windsor", "Highfield", "Springfield", "Mount Pleasant", "Richmond", "Harbour", "Canal",
)  # fmt: skip
STREET_SUFFIXES = (
    "Road", "Street", "Lane", "Avenue", "Close", "Gardens", "Terrace", "Crescent", "Way", "Place",
)  # fmt: skip
# (property type, label in descriptions, min bedrooms, max bedrooms)
PROPERTY_TYPES: tuple[tuple[str, str, int, int], ...] = (
    ("flat", "flat", 1, 3),
    ("maisonette", "maisonette", 1, 3),
    ("terraced", "terraced house", 2, 4),
    ("semi_detached", "semi-detached house", 2, 5),
    ("detached", "detached house", 3, 6),
    ("bungalow", "bungalow", 1, 4),
)
AGENTS = (
    "Harper & Lowe", "Northgate Estates", "Fenwick Residential", "Ashdown Property",
    "Blake Moreton", "Cityside Lettings & Sales", "Greenacre Homes", "Marlow Hart",
    "Quayside Estates", "Thornbury & Co", "Wren Property Partners", "Holloway Finch",
)  # fmt: skip
ADJECTIVES = (
    "Bright", "Spacious", "Well-presented", "Charming", "Recently renovated", "Light-filled",
    "Characterful", "Modern", "Beautifully maintained", "Deceptively spacious",
)  # fmt: skip
FEATURES = (
    "a south-facing garden", "off-street parking", "a newly fitted kitchen", "period features",
    "a private balcony", "a large loft with scope to extend", "gas central heating throughout",
    "double glazing", "an open-plan living space", "a utility room", "a garage",
    "a family bathroom and en-suite", "high ceilings", "a home office", "a sunny roof terrace",
)  # fmt: skip
CLOSINGS = (
    "Close to local schools, shops and transport links.",
    "A short walk from the station and the high street.",
    "Offered with no onward chain.",
    "Viewing is highly recommended.",
    "Ideal for first-time buyers or investors.",
    "Within easy reach of parks and the city centre.",
)
POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


def record_id(name: str, index: int) -> str:
    """The vendor's id for a generated record; zero-padded so ids sort like their indices."""
    return f"{name}-{index:0{ID_DIGITS}d}"


_blake2b = hashlib.blake2b
_four_words = struct.Struct(">4Q").unpack_from
_UNIT = 1.0 / float(1 << 53)  # top 53 bits of a 64-bit word scaled into [0, 1)
_SOLD_BELOW = int(SOLD_SHARE * (1 << 64))
_LISTED_SPREAD_S = 400 * 86400


def _digest(name: str, index: int) -> bytes:
    """64 stable bytes per record; a hash (not `hash()`) so they survive restarts.

    The first 32 bytes fix the record's times, the rest pick its attributes. Drawing from the
    digest instead of a seeded `random.Random` matters here: seeding a Mersenne Twister costs
    about 5 microseconds per record, more than all the rest of rendering a record.
    """
    return _blake2b(f"{name}\x00{index}".encode(), digest_size=64).digest()


def record_times(name: str, index: int, anchor_s: int) -> tuple[int, int, int | None]:
    """(last_modified, listed_date, sold_date) in epoch seconds for one generated record.

    Cheap enough to compute for every record when the sort index is built. `last_modified` is
    anchor - span * u**3: cubing crowds records towards the anchor, like a real feed where recent
    edits dominate (about 14% fall in the last 30 days and 4% in the last day).
    """
    return _times(_four_words(_digest(name, index)), anchor_s)


def _times(words: tuple[int, int, int, int], anchor_s: int) -> tuple[int, int, int | None]:
    """`record_times` from already computed words, so rendering hashes a record only once."""
    w_modified, w_listed, w_sold, w_sold_at = words
    u = (w_modified >> 11) * _UNIT
    last_modified = anchor_s - int((anchor_s - EPOCH_START_S) * u * u * u)
    listed = last_modified - int((w_listed >> 11) * _UNIT * _LISTED_SPREAD_S)
    if listed < EPOCH_START_S:
        listed = EPOCH_START_S
    if w_sold >= _SOLD_BELOW:
        return last_modified, listed, None
    return last_modified, listed, listed + int((last_modified - listed) * (w_sold_at >> 11) * _UNIT)


def _pick(options: Sequence[Any], byte: int) -> Any:
    """One of `options` chosen by a digest byte (the slight modulo bias is harmless here)."""
    return options[byte % len(options)]


def _description(draw: bytes, label: str, bedrooms: int, street: str, city: str) -> str:
    """A sentence or two of estate-agent prose, so rows have a realistic serialised size."""
    first = draw[0] % len(FEATURES)
    second = (first + 1 + draw[1] % (len(FEATURES) - 1)) % len(FEATURES)  # never the same
    return (
        f"{_pick(ADJECTIVES, draw[2])} {bedrooms}-bedroom {label} on {street}, {city}, with "
        f"{FEATURES[first]} and {FEATURES[second]}. {_pick(CLOSINGS, draw[3])}"
    )


def generate_record(name: str, index: int, anchor: datetime) -> Record:
    """The generated record `index` of dataset `name` as the vendor serves it.

    A pure function of its arguments, so any page can be rendered on demand without storing
    records, and two servers with the same anchor serve identical data.
    """
    return render_record(name, index, floor_seconds(anchor))


def render_record(name: str, index: int, anchor_s: int) -> Record:
    """`generate_record` with the anchor already in epoch seconds (the per-page hot path)."""
    digest = _digest(name, index)
    last_modified, listed, sold = _times(_four_words(digest), anchor_s)
    draw = digest[32:]
    city, districts, price_per_sqm = _pick(CITIES, draw[0])
    kind, label, min_beds, max_beds = _pick(PROPERTY_TYPES, draw[1])
    bedrooms = min_beds + draw[2] % (max_beds - min_beds + 1)
    street = f"{_pick(STREET_NAMES, draw[3])} {_pick(STREET_SUFFIXES, draw[4])}"
    floor_area = round(bedrooms * (17.0 + draw[5] / 20.0) + 12.0 + draw[6] / 11.0, 1)
    if sold is not None:
        status = "sold"
    elif draw[7] < WITHDRAWN_SHARE_OF_UNSOLD * 256:
        status = "withdrawn"
    else:
        status = "for_sale"
    unit = _pick(POSTCODE_LETTERS, draw[8]) + _pick(POSTCODE_LETTERS, draw[9])
    price_factor = 0.8 + 0.45 * int.from_bytes(draw[10:12], "big") / 65535
    return {
        "id": record_id(name, index),
        "last_modified": format_timestamp(last_modified),
        "sold_date": None if sold is None else format_timestamp(sold),
        "status": status,
        "listed_date": format_timestamp(listed),
        "address": f"{1 + int.from_bytes(draw[12:14], 'big') % 240} {street}",
        "city": city,
        "postcode": f"{_pick(districts, draw[14])} {1 + draw[15] % 9}{unit}",
        "property_type": kind,
        "bedrooms": bedrooms,
        "bathrooms": max(1, min(bedrooms, 1 + draw[16] % 3)),
        "floor_area_sqm": floor_area,
        "price": int(round(floor_area * price_per_sqm * price_factor, -3)),
        "currency": "GBP",
        "agent": _pick(AGENTS, draw[17]),
        "description": _description(draw[18:22], label, bedrooms, street, city),
    }


def default_record(record_id_: str, last_modified: str) -> Record:
    """Defaults for a record inserted by id alone: unknown facts are empty or null, not invented."""
    return {
        "id": record_id_,
        "last_modified": last_modified,
        "sold_date": None,
        "status": "for_sale",
        "listed_date": last_modified,
        "address": "",
        "city": "",
        "postcode": "",
        "property_type": "other",
        "bedrooms": None,
        "bathrooms": None,
        "floor_area_sqm": None,
        "price": None,
        "currency": "GBP",
        "agent": "",
        "description": "",
    }


# ---------------------------------------------------------------------------------------------
# Errors, queries and tokens
# ---------------------------------------------------------------------------------------------


class HttpError(Exception):
    """An error the handler turns into a JSON response with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


# ---------------------------------------------------------------------------------------------
# Server state: datasets and faults
# ---------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Injected misbehaviour for one dataset's record pages (see `POST /admin/faults`)."""

    fail_status: int | None = None
    after_records: int = 0
    page_delay_ms: int = 0
    fail_times: int | None = None  # failures left before the fault clears itself; None = forever
    served: int = 0  # records served for the dataset since the fault was set

    def describe(self) -> dict[str, Any]:
        """The fault as the admin endpoint reports it."""
        return {
            "fail_status": self.fail_status,
            "after_records": self.after_records,
            "page_delay_ms": self.page_delay_ms,
            "fail_times": self.fail_times,
            "served": self.served,
        }


@dataclass
class VendorState:
    """Everything the server knows; shared by the handler threads, guarded by one lock."""

    anchor: datetime
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    datasets: dict[str, Dataset] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set when the faults are cleared: pages waiting out an injected delay go on at once, so a
    # test that hung a request leaves no request hanging behind it.
    faults_cleared: threading.Event = field(default_factory=threading.Event)
    # Benchmarks only: every records page, once rendered, is served again from memory, so that
    # what is measured downstream is not the vendor's rendering.
    page_cache: dict[str, bytes] | None = None

    def add(self, name: str, size: int) -> Dataset:
        """Register a dataset anchored at the server's anchor."""
        with self.lock:
            dataset = Dataset(name, size, self.anchor)
            self.datasets[name] = dataset
            return dataset

    def get(self, name: str) -> Dataset:
        """The named dataset, or a 404 that lists the known ones so the caller can fix the name."""
        with self.lock:
            dataset = self.datasets.get(name)
            known = ", ".join(sorted(self.datasets)) or "(none)"
        if dataset is None:
            raise HttpError(404, f"unknown dataset {name!r}; known datasets: {known}")
        return dataset

    def get_or_create(self, name: str) -> Dataset:
        """The named dataset, created empty if new: upserts may start a dataset."""
        with self.lock:
            dataset = self.datasets.get(name)
            if dataset is None:
                dataset = Dataset(name, 0, self.anchor)
                self.datasets[name] = dataset
            return dataset

    def readable(self, name: str) -> Dataset:
        """The named dataset as a reader sees it now: upserts whose time has come are visible."""
        dataset = self.get(name)
        dataset.publish(self.clock())
        return dataset

    def before_page(self, name: str) -> None:
        """Apply a dataset's fault before serving a page: delay, then maybe fail."""
        with self.lock:
            fault = self.faults.get(name)
            delay = 0 if fault is None else fault.page_delay_ms
            cleared = self.faults_cleared
        if delay:
            cleared.wait(delay / 1000)
        with self.lock:
            fault = self.faults.get(name)
            if fault is None or fault.fail_status is None or fault.served < fault.after_records:
                return
            status, served = fault.fail_status, fault.served
            if fault.fail_times is not None:
                fault.fail_times -= 1
                if fault.fail_times <= 0:
                    fault.fail_status = None
        raise HttpError(
            status, f"injected fault for dataset {name!r}: failing after {served} records"
        )

    def after_page(self, name: str, served: int) -> None:
        """Count records served, which is what `after_records` is measured against."""
        with self.lock:
            fault = self.faults.get(name)
            if fault is not None:
                fault.served += served


def _int_field(body: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> Any:
    """An optional bounded integer from a JSON body, or 400 naming the field."""
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HttpError(
            400, f"{name}={value!r} is not valid; expected an integer from {low} to {high}"
        )
    return value


def parse_fault(body: Mapping[str, Any]) -> tuple[str, Fault]:
    """The dataset name and fault described by a `POST /admin/faults` body."""
    name = body.get("dataset")
    if not isinstance(name, str) or not name:
        raise HttpError(400, f"dataset={name!r} is not valid; expected a dataset name")
    fault = Fault(
        fail_status=_int_field(body, "fail_status", None, 400, 599),
        after_records=_int_field(body, "after_records", 0, 0, 2**62),
        page_delay_ms=_int_field(body, "page_delay_ms", 0, 0, 600_000),
        fail_times=_int_field(body, "fail_times", None, 1, 2**62),
    )
    return name, fault


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class VendorServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the vendor state for its handlers."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: VendorState) -> None:
        super().__init__(address, VendorHandler)
        self.state = state

    @property
    def base_url(self) -> str:
        """Where clients reach this server (the real port, also when bound to port 0)."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class VendorHandler(BaseHTTPRequestHandler):
    """Routes requests to the state; every response, errors included, is JSON."""

    server: VendorServer
    protocol_version = "HTTP/1.1"  # keep-alive: benchmarks page through many requests
    timeout = 60  # drop idle keep-alive connections rather than hold a thread forever

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle("POST")

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a line per request would drown test and benchmark output."""

    def _handle(self, method: str) -> None:
        """Read the body first (keep-alive needs it consumed even on errors), route, reply."""
        pages = self.server.state.page_cache
        if pages is not None:
            if method == "GET" and (cached := pages.get(self.path)) is not None:
                self._read_body()
                self._send(200, cached)
                return
            if method != "GET":
                pages.clear()  # an upsert or a fault changes what pages say
        try:
            body = self._read_body()
            status, payload = self._route(method, body)
        except HttpError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # a bug must still answer, or the client hangs
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        encoded = json.dumps(payload, separators=(",", ":")).encode()
        if pages is not None and method == "GET" and status == 200 and "/records" in self.path:
            pages[self.path] = encoded
        self._send(status, encoded)

    def _read_body(self) -> Any:
        """The parsed JSON body, or None when there is none."""
        length_header = self.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else 0
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise HttpError(413, f"body of {length} bytes is over the {MAX_BODY_BYTES} byte limit")
        if length == 0:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc

    def _send(self, status: int, payload: bytes) -> None:
        """Write a JSON response with an exact length, as keep-alive requires."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Dispatch on (method, path); unknown paths are 404, wrong methods 405."""
        url = urlsplit(self.path)
        parts = [unquote(part) for part in url.path.split("/") if part]
        state = self.server.state
        if parts == ["health"]:
            _require_method(method, "GET")
            return 200, {"status": "ok"}
        if parts == ["datasets"]:
            _require_method(method, "GET")
            with state.lock:
                datasets = list(state.datasets.values())
            return 200, {"datasets": [d.describe() for d in datasets]}
        if len(parts) == 3 and parts[0] == "datasets" and parts[2] == "records":
            _require_method(method, "GET", "POST")
            if method == "POST":
                return 200, _post_records(state, parts[1], body)
            return 200, _get_records(state, parts[1], url.query)
        if len(parts) == 3 and parts[0] == "datasets" and parts[2] == "count":
            _require_method(method, "GET")
            query, _ = parse_query(url.query)
            return 200, {"count": state.readable(parts[1]).count(query)}
        if parts == ["admin", "faults"]:
            _require_method(method, "POST", "DELETE")
            return 200, _faults(state, method, body)
        if parts == ["admin", "clock"]:
            _require_method(method, "POST")
            return 200, _clock(state, body)
        raise HttpError(404, f"no endpoint at {url.path}; see GET /health, /datasets")


def _require_method(method: str, *allowed: str) -> None:
    """405 when the path exists but not for this method."""
    if method not in allowed:
        raise HttpError(405, f"method {method} not allowed here; use {' or '.join(allowed)}")


def _get_records(state: VendorState, name: str, query_string: str) -> dict[str, Any]:
    """`GET /datasets/{name}/records`: one filtered page, subject to injected faults."""
    dataset = state.readable(name)
    query, page_size = parse_query(query_string)
    state.before_page(name)
    records, token = dataset.page(query, page_size)
    state.after_page(name, len(records))
    return {"records": records, "next_page_token": token}


def _post_records(state: VendorState, name: str, body: Any) -> dict[str, Any]:
    """`POST /datasets/{name}/records`: upsert a batch, creating the dataset if needed; the
    records are stamped by the dataset's clock unless they carry last_modified, and with
    `"visible_after_s": N` they become visible only N seconds after their stamp."""
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise HttpError(400, 'body must be {"records": [ {"id": ..., ...}, ... ]}')
    visible_after_s = _int_field(body, "visible_after_s", 0, 0, MAX_VISIBLE_AFTER_S)
    dataset = state.get_or_create(name)
    stored = dataset.upsert(records, dataset.now_s(state.clock()), visible_after_s)
    return {"upserted": len(stored), "records": stored}


def _faults(state: VendorState, method: str, body: Any) -> dict[str, Any]:
    """`POST` sets one dataset's fault (resetting its served count); `DELETE` clears all."""
    if method == "DELETE":
        with state.lock:
            state.faults.clear()
            state.faults_cleared.set()
            state.faults_cleared = threading.Event()
        return {"faults": {}}
    if not isinstance(body, dict):
        raise HttpError(400, 'body must be {"dataset": name, "fail_status": 500, ...}')
    name, fault = parse_fault(body)
    state.get(name)
    with state.lock:
        state.faults[name] = fault
        return {"faults": {n: f.describe() for n, f in state.faults.items()}}


def _clock(state: VendorState, body: Any) -> dict[str, Any]:
    """`POST /admin/clock`: set how far one dataset's clock runs ahead of the server's
    (`offset_s`, negative: behind); it stamps that dataset's upserts from then on."""
    name = body.get("dataset") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise HttpError(400, 'body must be {"dataset": name, "offset_s": seconds}')
    offset = _int_field(body, "offset_s", 0, -MAX_CLOCK_OFFSET_S, MAX_CLOCK_OFFSET_S)
    dataset = state.get(name)
    with state.lock:
        dataset.clock_offset_s = offset
        now_s = dataset.now_s(state.clock())
    return {"dataset": name, "offset_s": offset, "now": format_timestamp(now_s)}


# ---------------------------------------------------------------------------------------------
# Starting and running
# ---------------------------------------------------------------------------------------------


def _as_anchor(anchor: datetime | str | None) -> datetime:
    """An anchor at whole seconds in UTC; the default is the current hour."""
    if anchor is None:
        return default_anchor()
    moment = parse_timestamp(anchor) if isinstance(anchor, str) else anchor.astimezone(UTC)
    moment = moment.replace(microsecond=0)
    if moment <= EPOCH_START:
        raise ValueError(f"anchor {moment.isoformat()} must be after {EPOCH_START.isoformat()}")
    return moment


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    datasets: Mapping[str, int] | None = None,
    anchor: datetime | str | None = None,
    clock: Callable[[], datetime] | None = None,
    cache_pages: bool = False,
) -> VendorServer:
    """A bound but not yet serving vendor server (port 0 picks a free port)."""
    state = VendorState(anchor=_as_anchor(anchor), page_cache={} if cache_pages else None)
    if clock is not None:
        state.clock = clock
    for name, size in (DEFAULT_DATASETS if datasets is None else datasets).items():
        state.add(name, size)
    return VendorServer((host, port), state)


def start_vendor(
    host: str = "127.0.0.1",
    port: int = 0,
    datasets: Mapping[str, int] | None = None,
    anchor: datetime | str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> tuple[VendorServer, str]:
    """Serve in a daemon thread, for tests; stop with `stop_vendor(server)`."""
    server = make_server(host, port, datasets, anchor, clock)
    _serve_in_thread(server)
    return server, server.base_url


def _serve_in_thread(server: VendorServer) -> threading.Thread:
    """Serve from a daemon thread; a short poll interval makes `shutdown()` return quickly."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="vendor", daemon=True
    )
    thread.start()
    return thread


def stop_vendor(server: VendorServer) -> None:
    """Stop serving and release the socket."""
    server.shutdown()
    server.server_close()


def _dataset_arg(text: str) -> tuple[str, int]:
    """argparse type for `--dataset name=size`."""
    name, sep, size = text.partition("=")
    if not sep or not name or not size.isdigit() or int(size) > MAX_DATASET_SIZE:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid; expected name=size with size from 0 to {MAX_DATASET_SIZE}"
        )
    return name, int(size)


def _anchor_arg(text: str) -> datetime:
    """argparse type for `--anchor`."""
    try:
        return _as_anchor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: {exc}") from exc


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of `python -m local.vendor`."""
    parser = argparse.ArgumentParser(prog="python -m local.vendor", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0 = any)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--anchor", type=_anchor_arg, default=None, help="ISO time the data treats as now"
    )
    parser.add_argument(
        "--dataset",
        type=_dataset_arg,
        action="append",
        default=None,
        metavar="NAME=SIZE",
        help=f"serve this dataset (repeatable; default {' '.join(DEFAULT_DATASET_SPECS)})",
    )
    parser.add_argument(
        "--cache-pages",
        action="store_true",
        help="benchmarks: keep each rendered records page in memory and serve it from there",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT, announcing the address on one line for a supervisor."""
    args = parse_args(argv)
    datasets = dict(args.dataset) if args.dataset else None
    server = make_server(args.host, args.port, datasets, args.anchor, cache_pages=args.cache_pages)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    thread = _serve_in_thread(server)
    for dataset in list(server.state.datasets.values()):
        threading.Thread(target=dataset.warm, name=f"warm-{dataset.name}", daemon=True).start()
    print(f"{ANNOUNCEMENT}{server.base_url}", flush=True)
    while not stopping.wait(0.2):
        pass
    stop_vendor(server)
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
