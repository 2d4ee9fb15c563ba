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

A download resumes between pages (`position`): after a page's last record, the token of the
next page and what the run has read so far. Inside a page there is no position: a page asked
for again may hold other records than the first time (a record modified since moves to a later
page), so only its token marks a place in the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import orjson
import requests
from urllib3.util.retry import Retry

from shared.connectors.base import (
    InvalidCredentials,
    MalformedRows,
    Position,
    SourceUnreachable,
    Waiting,
    no_waiting,
)
from shared.connectors.endpoints import HostRule, PeerCheckedAdapter, parse_base_url
from shared.connectors.pacing import UNPACED, Pacing, vendor_host
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


class SourceRedirected(PermanentError):
    """The vendor answered with a redirect, which is never followed (the key stays home)."""

    error_name = "SourceRedirected"


class SourceThrottled(TransientError):
    """The vendor kept answering 429 or 503 past the most one page may wait: the download
    yields, and its message is retried later."""

    error_name = "SourceThrottled"


def new_session(rule: HostRule, source_id: str) -> requests.Session:
    session = requests.Session()
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
        return cls(
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
        # `waiting` goes unused: a vendor that does not answer must not be kept alive (the
        # download's heartbeats stop, and its task times out).
        self.malformed, self._position = MalformedRows(), None
        meter, tokens = ReadMeter(self.source_id, self.limits), PageTokens(self.source_id)
        url = f"{self.base_url}/datasets/{quote(self.dataset, safe='')}/records"
        params = {**_window_params(window), "page_size": str(self.page_size)}
        if resume is not None:
            meter.resume(resume["read"])
            if resume["page_token"] is None:
                return  # the earlier read ended with the last page
            params["page_token"] = resume["page_token"]
        with self.pacing.slot(vendor_host(self.base_url)), self.new_session() as session:
            session.headers.update(self._headers())
            while True:
                meter.page()
                records, token = self._page(session, url, params, meter)
                for number, record in enumerate(records, start=1):
                    meter.record()
                    if not isinstance(record, dict):
                        where = f"page {meter.pages} record {number}"
                        self.malformed.add(where, f"is a JSON {_json_type(record)}, not an object")
                        continue
                    if number == len(records):
                        self._position = {"page_token": token, "read": meter.counts()}
                    yield record
                    self._position = None
                if not records:  # an empty page checks in: the download stays alive
                    self._position = {"page_token": token, "read": meter.counts()}
                    yield None
                    self._position = None
                if token is None:
                    return
                tokens.follow(token, meter.pages)
                params["page_token"] = token

    @property
    def position(self) -> Position | None:
        return self._position

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        value = record.get("last_modified")
        if not isinstance(value, str):
            return None
        try:
            return parse_iso(value)
        except ValueError:
            return None  # download counts the record as malformed

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

    def _page(
        self, session: requests.Session, url: str, params: dict[str, str], meter: ReadMeter
    ) -> tuple[list[Any], str | None]:
        """The records of one page and the token of the next (None: the last page)."""
        document = self._get(session, url, params, meter)
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
        token = document.get("next_page_token")
        if isinstance(token, int) and not isinstance(token, bool):
            token = str(token)
        if token is not None and not isinstance(token, str):
            raise MalformedPage(
                f"source {self.source_id!r}: page {page:,} from the vendor has a "
                f"next_page_token that is a JSON {_json_type(token)}, not a text"
            )
        return document["records"], token or None

    def _get(
        self, session: requests.Session, url: str, params: dict[str, str], meter: ReadMeter
    ) -> Any:
        throttle = PageThrottle(self.pacing.throttle)
        while (response := self._send(session, url, params)).status_code in THROTTLED_STATUSES:
            self.pacing.wait(self._throttled_wait(response, throttle, meter.pages))
        with response:
            if response.status_code == 200:
                body = self._body(response, meter)
                try:
                    return orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    raise MalformedPage(
                        f"source {self.source_id!r}: page {meter.pages:,} from the vendor is not "
                        f"JSON ({exc}); the vendor's API is broken, or connection.base_url names "
                        "something else"
                    ) from None
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


def _window_params(window: Window) -> dict[str, str]:
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
