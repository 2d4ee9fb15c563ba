"""The demo vendor's records: timestamps as the vendor writes them, and deterministic listing
records, each a pure function of (dataset name, index, anchor)."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

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
QUERY_PARAMS = (*TIMESTAMP_FILTERS, "page_size", "page_token", "format")
# How a records page is sent: a JSON object, or JSON lines (`format=jsonl`: one record per line,
# the next page's token in a header).
PAGE_FORMATS = ("json", "jsonl")
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
