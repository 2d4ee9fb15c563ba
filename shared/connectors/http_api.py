"""The `http_api` connector: a paged JSON API filtered by last-modified or sold-date range.

connection (contracts/connection-http-api.v1.schema.json):
{"base_url": "https://host:port", "dataset": "listings-a", "page_size": 1000,
 "api_key_secret": "sourceflow/prod/sources/acme/api-key", "api_key_header": "X-Api-Key"}
Requests: GET {base_url}/datasets/{dataset}/records?modified_after=…&modified_until=…
(or sold_from/sold_until), following `next_page_token`, with the API key as a header when the
connection names a secret.

A vendor is untrusted (docs/limits.md): each page is inflated as it streams in and dropped at
the source's `max_page_bytes`, pages and bytes are counted against its limits, a token already
followed stops the run (PageTokenRepeated), and a page that is not a JSON object with a records
list stops it too (MalformedPage); a record that is not an object is counted as malformed.

A vendor is also owed courtesy (shared.connectors.pacing): a download reads while it holds one
of its vendor's concurrency slots (when public.vendor_limit limits that host), and a page the
vendor answers with 429 or 503 is asked for again after the wait its Retry-After names
(shared.rules.throttling: never sooner, with jitter, bounded), without restarting the download.

The API key goes only to base_url's own host (shared.connectors.endpoints): no redirect is
followed (a 3xx is refused by name, wherever it points: requests would carry a custom header
such as X-Api-Key to another host), and every connection checks the address it reached before
the request is sent. A vendor's error answer is quoted as a short excerpt without links.

A vendor that can answer in JSON lines (`connection.format` "jsonl") is read without a record
ever becoming a dict (`JsonLinesApiConnector`), and either format reads the next page on a
thread of its own while the download lands this one (shared.connectors.prefetch).

A download resumes between pages (`position`): after a page, the token of the next page and
what the run has read so far. Inside a page there is no position: a page asked for again may
hold other records than the first time (a record modified since moves to a later page), so only
its token marks a place in the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import attrgetter
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import msgspec
import orjson
import requests
from urllib3.util.retry import Retry

from shared.connectors.base import (
    InvalidCredentials,
    MalformedRows,
    Page,
    Position,
    SourceUnreachable,
    Waiting,
    no_waiting,
)
from shared.connectors.endpoints import HostRule, PeerCheckedAdapter, parse_base_url
from shared.connectors.pacing import UNPACED, Pacing, vendor_host
from shared.connectors.prefetch import prefetched
from shared.errors import PermanentError, TransientError
from shared.rules.flows import Window, WindowField
from shared.rules.limits import DEFAULT_RUN_LIMITS, PageTokens, ReadMeter, RunLimits, run_limits
from shared.rules.throttling import THROTTLED_STATUSES, PageThrottle, retry_after_seconds
from shared.runtime.observability import logger
from shared.runtime.redaction import untrusted_excerpt
from shared.runtime.secrets import Secrets
from shared.timefmt import isoformat, parse_iso

DEFAULT_PAGE_SIZE = 1000
DEFAULT_API_KEY_HEADER = "X-Api-Key"
DEFAULT_KEY_FIELD = "id"
LAST_MODIFIED_FIELD = "last_modified"
# How a vendor answers (`connection.format`): JSON pages, or JSON lines.
FORMATS = ("json", "jsonl")
# Where a JSON-lines answer names the next page's token (absent or empty: the last page).
NEXT_PAGE_TOKEN_HEADER = "Next-Page-Token"
REQUEST_TIMEOUT = (5, 60)  # connect, read seconds (the stop margin holds a read: catalogue)

# Inflated bytes taken from the stream at a time: the most a page may overshoot its limit by.
_CHUNK_BYTES = 1 << 16
# The most of an error answer's body that is read: enough for the vendor's message.
_ERROR_BODY_BYTES = 64 * 1024


class SourceDatasetNotFound(PermanentError):
    error_name = "SourceDatasetNotFound"


class SourceRequestRejected(PermanentError):
    error_name = "SourceRequestRejected"


class MalformedPage(PermanentError):
    """A page that is not what the API promises: a JSON object with a `records` list."""

    error_name = "MalformedPage"


T = TypeVar("T")
# What a page is made of on the reading thread, of the vendor's answer (its body and headers),
# and the next page's token it names.
PageParser = Callable[[bytearray, Mapping[str, str], ReadMeter], tuple[T, str | None]]


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """A page as the reading thread made it (`content`), the pages (this one's number) and bytes
    the run had read once it came, and the next page's token (None: the last page)."""

    content: T
    pages: int
    bytes: int
    token: str | None

    def position(self, meter: ReadMeter) -> Position:
        """Where the run resumes after this page: the token, and what it has read by then (the
        records counted by the download's thread, which has taken this page and no later one)."""
        read = {"pages": self.pages, "records": meter.records, "bytes": self.bytes}
        return {"page_token": self.token, "read": read}


class SourceRedirected(PermanentError):
    """The vendor answered with a redirect, which is never followed (the key stays home)."""

    error_name = "SourceRedirected"


class SourceThrottled(TransientError):
    """The vendor kept answering 429 or 503 past the most one page may wait: the download
    yields, and its message is retried later."""

    error_name = "SourceThrottled"


def new_session(rule: HostRule, source_id: str) -> requests.Session:
    session = requests.Session()
    # A request carries what the source's connection says and nothing from the environment:
    # no ~/.netrc credentials for the vendor's host, no proxy (the peer is checked, not a
    # proxy's); and no looking for them at every page (~4% of a JSON-lines download).
    session.trust_env = False
    # A short in-process retry rides over a blip (a lost connection, a 502 or 504) without
    # restarting the whole download; anything longer is left to SQS redelivery. A 429 or 503 is
    # the connector's own to wait out (`HttpApiConnector._get`): urllib3 would sleep whatever
    # Retry-After says, unbounded and without a heartbeat.
    retry = Retry(
        total=3,
        backoff_factor=0.2,
        status_forcelist=(502, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, PeerCheckedAdapter(rule, source_id, max_retries=retry))
    return session


@dataclass(frozen=True)
class ApiKey:
    secret: str  # the Secrets Manager reference, never the key
    header: str


@dataclass
class HttpApiConnector:
    source_id: str
    base_url: str
    dataset: str
    page_size: int
    api_key: ApiKey | None
    secrets: Secrets = field(repr=False, compare=False)
    new_session: Callable[[], requests.Session] = field(repr=False, compare=False)
    key_field: str = DEFAULT_KEY_FIELD
    limits: RunLimits = DEFAULT_RUN_LIMITS
    pacing: Pacing = field(default=UNPACED, repr=False, compare=False)
    # Records that are not JSON objects; the vendor filters on, and types, the window's field.
    malformed: MalformedRows = field(default_factory=MalformedRows, init=False, compare=False)
    warnings: list[str] = field(default_factory=list, init=False, compare=False)
    resumable = True
    _position: Position | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_connection(
        cls,
        source_id: str,
        connection: Mapping[str, Any],
        *,
        secrets: Secrets,
        hosts: HostRule,
        pacing: Pacing = UNPACED,
    ) -> HttpApiConnector:
        """From a connection that passed its schema (`shared.connectors.parse_connection`);
        its base_url is parsed here."""
        secret = connection.get("api_key_secret")
        api_key = (
            ApiKey(secret, connection.get("api_key_header", DEFAULT_API_KEY_HEADER))
            if secret
            else None
        )
        base_url = parse_base_url(
            source_id, connection["base_url"], hosts, carries_key=api_key is not None
        )
        kind = JsonLinesApiConnector if connection.get("format") == "jsonl" else cls
        return kind(
            source_id,
            base_url,
            connection["dataset"],
            connection.get("page_size", DEFAULT_PAGE_SIZE),
            api_key,
            secrets,
            lambda: new_session(hosts, source_id),
            connection.get("key_field", DEFAULT_KEY_FIELD),
            run_limits(connection),
            pacing,
        )

    def check(self) -> None:
        """Only the API key's secret is read. The vendor itself is first asked by download's
        first page, seconds later: a vendor API has no request that proves access without
        reading records, and a probe per run would count against its rate limit."""
        self._headers()

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        """The records of each page, and a check-in after each page (where `position` is the
        page's)."""
        # `waiting` goes unused: a vendor that does not answer must not be kept alive (the
        # download's heartbeats stop, and its task times out).
        self.malformed, self._position = MalformedRows(), None
        meter = ReadMeter(self.source_id, self.limits)
        for fetched in self._fetching(window, resume, meter, self._document):
            yield from self._objects(fetched.content, fetched.pages, meter)
            yield from self._check_in(fetched.position(meter))

    def _check_in(self, position: Position) -> Iterator[None]:
        """A check-in after a page: the one place a download may stop and resume from."""
        self._position = position
        yield None
        self._position = None

    def _fetching(
        self, window: Window, resume: Position | None, meter: ReadMeter, parse: PageParser[T]
    ) -> Iterator[Fetched[T]]:
        """The pages after `resume` as `parse` makes them, read ahead (`prefetched`), so that the
        next page is on its way while this one is used."""
        params = {**window_params(window), "page_size": str(self.page_size), **self.asks}
        if resume is not None:
            meter.resume(resume["read"])
            if resume["page_token"] is None:
                return  # the earlier read ended with the last page
            params["page_token"] = resume["page_token"]
        yield from prefetched(partial(self._read, params, meter, parse))

    def _read(
        self, params: dict[str, str], meter: ReadMeter, parse: PageParser[T]
    ) -> Iterator[Fetched[T]]:
        """Each page as `parse` makes it of the vendor's answer, following the page tokens,
        while holding one of the vendor's concurrency slots."""
        tokens = PageTokens(self.source_id)
        url = f"{self.base_url}/datasets/{quote(self.dataset, safe='')}/records"
        with self.pacing.slot(vendor_host(self.base_url)), self.new_session() as session:
            session.headers.update(self._headers())
            while True:
                meter.page()
                body, headers = self._get(session, url, params, meter)
                content, token = parse(body, headers, meter)
                yield Fetched(content, meter.pages, meter.bytes, token)
                if token is None:
                    return
                tokens.follow(token, meter.pages)
                params["page_token"] = token

    @property
    def position(self) -> Position | None:
        return self._position

    @property
    def asks(self) -> dict[str, str]:
        """What the requests ask of the vendor beside the window and the page: nothing more."""
        return {}

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        return _stamp(record.get(LAST_MODIFIED_FIELD))

    def _headers(self) -> dict[str, str]:
        if self.api_key is None:
            return {}
        value = self.secrets.value(
            self.api_key.secret,
            key="api_key",
            source_id=self.source_id,
            setting="connection.api_key_secret",
        )
        return {self.api_key.header: value}

    def _document(
        self, body: bytearray, headers: Mapping[str, str], meter: ReadMeter
    ) -> tuple[list[Any], str | None]:
        """The records list of a JSON page, and the token of the next (None: the last page)."""
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedPage(
                f"source {self.source_id!r}: page {meter.pages:,} from the vendor is not "
                f"JSON ({exc}); the vendor's API is broken, or connection.base_url names "
                "something else"
            ) from None
        page = meter.pages
        if not isinstance(document, dict) or not isinstance(document.get("records"), list):
            shape = (
                "an object without a records list"
                if isinstance(document, dict)
                else f"a JSON {_json_type(document)}"
            )
            raise MalformedPage(
                f"source {self.source_id!r}: page {page:,} from the vendor is {shape}, not an "
                "object with a records list; the vendor's API is broken, or connection.base_url "
                "names something else"
            )
        return document["records"], self._token(document.get("next_page_token"), page)

    def _objects(self, records: list[Any], page: int, meter: ReadMeter) -> Iterator[dict[str, Any]]:
        """A JSON page's records, counted; one that is not an object is counted as malformed."""
        meter.record(len(records))
        for number, record in enumerate(records, start=1):
            if isinstance(record, dict):
                yield record
            else:
                where = f"page {page} record {number}"
                self.malformed.add(where, f"is a JSON {_json_type(record)}, not an object")

    def _token(self, token: Any, page: int) -> str | None:
        """The next page's token as the vendor gave it (a number is taken as its text)."""
        if isinstance(token, int) and not isinstance(token, bool):
            token = str(token)
        if token is not None and not isinstance(token, str):
            raise MalformedPage(
                f"source {self.source_id!r}: page {page:,} from the vendor has a "
                f"next_page_token that is a JSON {_json_type(token)}, not a text"
            )
        return token or None

    def _get(
        self, session: requests.Session, url: str, params: dict[str, str], meter: ReadMeter
    ) -> tuple[bytearray, Mapping[str, str]]:
        """A page's body and the answer's headers, after waiting out the vendor's 429s and 503s;
        any other answer raises its named error."""
        throttle = PageThrottle(self.pacing.throttle)
        while (response := self._send(session, url, params)).status_code in THROTTLED_STATUSES:
            self.pacing.wait(self._throttled_wait(response, throttle, meter.pages))
        with response:
            if response.status_code == 200:
                return self._body(response, meter), response.headers
            if 300 <= response.status_code < 400:
                raise _redirected(self.source_id, url, response)
            detail = _error_text(self._body(response, None))
        if response.status_code == 404:
            raise SourceDatasetNotFound(
                f"source {self.source_id!r}: the vendor has no dataset {self.dataset!r} "
                f"({detail}); fix connection.dataset"
            )
        if response.status_code in (401, 403):
            fix = (
                f"fix the key in the secret {self.api_key.secret!r}"
                if self.api_key
                else "name the secret holding the API key in connection.api_key_secret"
            )
            raise InvalidCredentials(
                f"source {self.source_id!r}: the vendor refused the credentials with "
                f"{response.status_code} ({detail}); {fix}"
            )
        if response.status_code == 408 or response.status_code >= 500:
            raise TransientError(
                f"source {self.source_id!r}: vendor answered {response.status_code}: {detail}",
                error_name="SourceUnavailable",
            )
        raise SourceRequestRejected(
            f"source {self.source_id!r}: vendor rejected the request with "
            f"{response.status_code}: {detail}"
        )

    def _send(
        self, session: requests.Session, url: str, params: dict[str, str]
    ) -> requests.Response:
        try:
            return session.get(
                url, params=params, timeout=REQUEST_TIMEOUT, stream=True, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise self._unreachable(exc) from exc

    def _throttled_wait(
        self, response: requests.Response, throttle: PageThrottle, page: int
    ) -> float:
        """How long to wait before asking for the page again after a 429 or 503; stops the
        download (SourceThrottled) when the vendor asks the page to wait past the bound."""
        with response:
            detail = _error_text(self._body(response, None))
        asked = retry_after_seconds(response.headers.get("Retry-After"), self.pacing.now())
        wait = throttle.next_wait(asked, self.pacing.random())
        if wait is None:
            asks = "" if asked is None else f", asking for {asked:,.0f} s more (Retry-After),"
            raise SourceThrottled(
                f"source {self.source_id!r}: the vendor answered page {page:,} with "
                f"{response.status_code} ({detail}){asks} after {throttle.retries} wait(s) of "
                f"{throttle.waited:,.0f} s in all: past the "
                f"{throttle.policy.max_wait_seconds:,.0f} s one page may wait "
                "(VENDOR_MAX_WAIT_SECONDS); the download yields and its message is retried later"
            )
        logger.info(
            "vendor throttled a page; asking again after a wait",
            extra={
                "page": page,
                "status": response.status_code,
                "retry_after_seconds": asked,
                "wait_seconds": round(wait, 3),
            },
        )
        return wait

    def _body(self, response: requests.Response, meter: ReadMeter | None) -> bytearray:
        """The answer's body, inflated as it streams in: a page is stopped at the source's
        max_page_bytes (PageTooLarge) and counted against its max_bytes; of an error answer
        (`meter` None), only the start is read."""
        cap = meter.limits.max_page_bytes if meter else _ERROR_BODY_BYTES
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK_BYTES):
                if len(body) + len(chunk) > cap:
                    if meter is None:
                        return body + chunk[: cap - len(body)]
                    raise meter.exceeded(
                        "max_page_bytes",
                        f"page {meter.pages:,} inflates to more than {cap:,} bytes",
                    )
                body += chunk
        except requests.exceptions.ContentDecodingError as exc:
            raise MalformedPage(
                f"source {self.source_id!r}: an answer from the vendor does not inflate: its "
                f"Content-Encoding is broken ({type(exc).__name__})"
            ) from None
        except requests.RequestException as exc:
            raise self._unreachable(exc) from exc
        if meter is not None:
            meter.read(len(body))
        return body

    def _unreachable(self, exc: requests.RequestException) -> SourceUnreachable:
        return SourceUnreachable(
            f"source {self.source_id!r}: vendor at {self.base_url} is unreachable: {exc}"
        )


@dataclass
class JsonLinesApiConnector(HttpApiConnector):
    """An http_api source whose vendor answers in JSON lines (`connection.format` "jsonl"):
    asked with `format=jsonl`, it sends a page as one record per line and the next page's
    token in the Next-Page-Token header. Its pages land as they came (`PageReader`): download
    needs of each record only its stamp and key, which one pass over the page decodes (msgspec,
    skipping every other field) while it proves each line one JSON object. A page that fails
    that proof is read line by line: a line that is not a JSON object is counted as malformed,
    and a page without a single one stops the run (MalformedPage)."""

    _fields: msgspec.json.Decoder[list[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._fields = msgspec.json.Decoder(list[_record_fields(self.key_field)])  # type: ignore[misc]

    @property
    def asks(self) -> dict[str, str]:
        return {"format": "jsonl"}

    def pages(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[Page]:
        self.malformed = MalformedRows()
        meter = ReadMeter(self.source_id, self.limits)
        # The reading thread only fetches (the token is in a header): a page is checked here,
        # while the next one is on its way.
        for fetched in self._fetching(window, resume, meter, self._as_it_came):
            yield self._lines_page(fetched, meter)

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        for page in self.pages(window, resume, waiting=waiting):
            yield from map(orjson.loads, page.lines.splitlines())
            assert page.position is not None  # every page of an API is a place to resume from
            yield from self._check_in(page.position)

    def _as_it_came(
        self, body: bytearray, headers: Mapping[str, str], meter: ReadMeter
    ) -> tuple[bytearray, str | None]:
        """A page as it came, and the next page's token."""
        return body, self._token(headers.get(NEXT_PAGE_TOKEN_HEADER), meter.pages)

    def _lines_page(self, fetched: Fetched[bytearray], meter: ReadMeter) -> Page:
        body = fetched.content
        if body and not body.endswith(b"\n"):
            body += b"\n"
        fields = self._decoded(body)
        # The lines counted as what a copy without them lacks: 3x as fast as bytearray.count.
        if fields is None or len(fields) != len(body) - len(body.replace(b"\n", b"")):
            lines, stamps, keys, number = self._line_by_line(body, fetched.pages, meter)
            return Page(b"".join(lines), stamps, keys, number, fetched.position(meter))
        meter.record(len(fields))
        stamps = _stamps(list(map(_STAMP, fields)))
        keys = list(map(_KEY, fields))
        return Page(body, stamps, keys, len(fields), fetched.position(meter))

    def _decoded(self, body: bytearray) -> list[Any] | None:
        """Each line's stamp and key, if every line is one JSON object in UTF-8 (the page's
        lines made a JSON array, decoded in one pass); None if not."""
        if not body.isascii():
            try:
                body.decode()  # msgspec does not look into the text it skips
            except UnicodeDecodeError:
                return None
        # One copy of the page, edited in place: memory bandwidth is what a page costs.
        array = body.replace(b"\n", b",")
        array[-1:] = b"]"  # in place of the last line's newline (none: an empty page)
        array[0:0] = b"["
        try:
            return self._fields.decode(array)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return None

    def _line_by_line(
        self, body: bytearray, page: int, meter: ReadMeter
    ) -> tuple[list[bytes], list[datetime | None], list[Any], int]:
        """The lines of a page that failed the one-pass proof that are JSON objects, with
        their stamps and keys, and how many lines it had."""
        lines: list[bytes] = []
        stamps: list[datetime | None] = []
        keys: list[Any] = []
        number = 0
        for line in body.split(b"\n"):
            line = line.strip()
            if not line:
                continue  # a blank line holds no record
            number += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                self.malformed.add(f"page {page} record {number}", f"is not JSON ({exc})")
                continue
            if not isinstance(record, dict):
                where = f"page {page} record {number}"
                self.malformed.add(where, f"is a JSON {_json_type(record)}, not an object")
                continue
            lines.append(bytes(line) + b"\n")
            stamps.append(self.last_modified(record))
            keys.append(record.get(self.key_field))
        meter.record(number)
        if number and not lines:
            raise MalformedPage(
                f"source {self.source_id!r}: page {page:,} from the vendor has no line "
                "that is a JSON object; the vendor's API is broken, or connection.base_url names "
                "something else"
            )
        return lines, stamps, keys, number


def _record_fields(key_field: str) -> type[msgspec.Struct]:
    """What a JSON-lines page is decoded into, a record at a time: its key and its stamp, as
    JSON has them (every other field is skipped)."""
    fields = {"key": key_field, "stamp": LAST_MODIFIED_FIELD}
    if key_field == LAST_MODIFIED_FIELD:  # the stamp is the key: one field, read twice
        return msgspec.defstruct("RecordStamp", [("stamp", Any, None)], rename=fields)
    return msgspec.defstruct(
        "RecordFields", [("key", Any, None), ("stamp", Any, None)], rename=fields
    )


def _stamp(value: Any) -> datetime | None:
    """A record's last-modified date; None if it has none, or one that does not parse."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None  # download counts the record as malformed


def _stamps(values: list[Any]) -> list[datetime | None]:
    """`_stamp` of each value; the common case (every value a UTC date-time) in one pass."""
    try:
        stamps = list(map(datetime.fromisoformat, values))
    except (TypeError, ValueError):
        return list(map(_stamp, values))
    if set(map(_TZINFO, stamps)) == {UTC}:
        return stamps  # type: ignore[return-value]
    return list(map(_stamp, values))


_TZINFO = attrgetter("tzinfo")
_STAMP, _KEY = attrgetter("stamp"), attrgetter("key")


def window_params(window: Window) -> dict[str, str]:
    # The API's upper bounds are inclusive: a backfill slice's [start, end) ends at
    # `last_included`.
    if window.field is WindowField.SOLD_DATE:
        # Sold windows start inclusively at 1 January (dates at midnight must be kept).
        return {
            "sold_from": isoformat(window.start),
            "sold_until": isoformat(window.last_included),
        }
    # The API's last-modified lower bound is exclusive; an inclusive start is the instant
    # one microsecond earlier (timestamps carry at most microseconds).
    after = window.start - timedelta(microseconds=1) if window.start_inclusive else window.start
    if window.reads_past_end:
        # No upper bound: download counts and lands what is stamped past the window's end.
        return {"modified_after": isoformat(after)}
    return {"modified_after": isoformat(after), "modified_until": isoformat(window.last_included)}


def _redirected(source_id: str, url: str, response: requests.Response) -> SourceRedirected:
    here, there = urlsplit(url), urlsplit(urljoin(url, response.headers.get("Location", "")))
    if (there.scheme, there.netloc.lower()) == (here.scheme, here.netloc.lower()):
        where = "within its host"
    else:
        # The vendor's words: the scheme and the host (with its port) only, as an excerpt.
        where = f"to another host ({untrusted_excerpt(f'{there.scheme} {there.netloc}')})"
    return SourceRedirected(
        f"source {source_id!r}: the vendor answered {response.status_code}, a redirect "
        f"{where}; sourceflow follows no redirect, so that the API key goes only to "
        "base_url's host: fix connection.base_url if the vendor moved"
    )


def _error_text(body: bytes | bytearray) -> str:
    """The vendor's own words for an error, as an excerpt (short, one line, no links, no
    secret): the `error` member of a JSON answer, or its text."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    text = document.get("error") if isinstance(document, dict) else None
    said = str(text if text is not None else body.decode("utf-8", "replace"))
    return f"the vendor said: {untrusted_excerpt(said)!r}"


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"
