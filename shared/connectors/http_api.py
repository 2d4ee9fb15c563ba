"""The `http_api` connector: a paged JSON API filtered by last-modified or sold-date range.

connection (contracts/connection-http-api.v1.schema.json):
{"base_url": "https://host:port", "dataset": "listings-a", "page_size": 1000,
 "api_key_secret": "sourceflow/prod/sources/acme/api-key", "api_key_header": "X-Api-Key"}
Requests: GET {base_url}/datasets/{dataset}/records?modified_after=…&modified_until=…
(or sold_from/sold_until), following `next_page_token`, with the API key as a header when the
connection names a secret.

The API key goes only to base_url's own host (shared.connectors.endpoints): redirects are not
followed (a 3xx is refused by name, wherever it points: requests would carry a custom header
such as X-Api-Key to another host), and every connection checks the address it reached before
the request is sent. A vendor's error answer
is quoted as a short excerpt without links, never copied.
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

from shared.connectors.base import InvalidCredentials, MalformedRows, SourceUnreachable
from shared.connectors.endpoints import HostRule, PeerCheckedAdapter, parse_base_url
from shared.errors import PermanentError, TransientError
from shared.rules.flows import Window, WindowField
from shared.runtime.redaction import untrusted_excerpt
from shared.runtime.secrets import Secrets
from shared.timefmt import isoformat, parse_iso

DEFAULT_PAGE_SIZE = 1000
DEFAULT_API_KEY_HEADER = "X-Api-Key"
DEFAULT_KEY_FIELD = "id"
_TIMEOUT = (5, 60)  # connect, read seconds


class SourceDatasetNotFound(PermanentError):
    error_name = "SourceDatasetNotFound"


class SourceRequestRejected(PermanentError):
    error_name = "SourceRequestRejected"


class SourceRedirected(PermanentError):
    """The vendor answered with a redirect, which is never followed (the key stays home)."""

    error_name = "SourceRedirected"


def new_session(rule: HostRule, source_id: str) -> requests.Session:
    session = requests.Session()
    # A short in-process retry rides over a blip without restarting the whole download;
    # anything longer is left to SQS redelivery.
    retry = Retry(
        total=3,
        backoff_factor=0.2,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
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
    # The vendor filters on, and types, the window's field itself: no row is dropped here.
    malformed: MalformedRows = field(default_factory=MalformedRows, init=False, compare=False)

    @classmethod
    def from_connection(
        cls, source_id: str, connection: Mapping[str, Any], *, secrets: Secrets, hosts: HostRule
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
        )

    def check(self) -> None:
        """Only the API key's secret is read. The vendor itself is first asked by download's
        first page, seconds later: a vendor API has no request that proves access without
        reading records, and a probe per run would count against its rate limit."""
        self._headers()

    def records(self, window: Window) -> Iterator[dict[str, Any]]:
        url = f"{self.base_url}/datasets/{quote(self.dataset, safe='')}/records"
        params = {**_window_params(window), "page_size": str(self.page_size)}
        with self.new_session() as session:
            session.headers.update(self._headers())
            while True:
                page = self._get(session, url, params)
                yield from page["records"]
                token = page.get("next_page_token")
                if not token:
                    return
                params["page_token"] = token

    def last_modified(self, record: Mapping[str, Any]) -> datetime | None:
        value = record.get("last_modified")
        return parse_iso(value) if isinstance(value, str) else None

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

    def _get(self, session: requests.Session, url: str, params: dict[str, str]) -> Any:
        try:
            response = session.get(url, params=params, timeout=_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise SourceUnreachable(
                f"source {self.source_id!r}: vendor at {self.base_url} is unreachable: {exc}"
            ) from exc
        if response.status_code == 200:
            return orjson.loads(response.content)
        if 300 <= response.status_code < 400:
            raise _redirected(self.source_id, url, response)
        detail = _error_text(response)
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
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise TransientError(
                f"source {self.source_id!r}: vendor answered {response.status_code}: {detail}",
                error_name="SourceUnavailable",
            )
        raise SourceRequestRejected(
            f"source {self.source_id!r}: vendor rejected the request with "
            f"{response.status_code}: {detail}"
        )


def _window_params(window: Window) -> dict[str, str]:
    if window.field is WindowField.SOLD_DATE:
        # Sold windows start inclusively at 1 January (dates at midnight must be kept).
        return {"sold_from": isoformat(window.start), "sold_until": isoformat(window.end)}
    # The API's last-modified lower bound is exclusive; an inclusive start is the instant
    # one microsecond earlier (timestamps carry at most microseconds).
    after = window.start - timedelta(microseconds=1) if window.start_inclusive else window.start
    # No upper bound: download counts and lands what is stamped past the window's end.
    return {"modified_after": isoformat(after)}


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


def _error_text(response: requests.Response) -> str:
    """What the vendor said, as an excerpt: a JSON answer's `error`, or the text."""
    try:
        said = response.json()
        text = str(said.get("error", response.text)) if isinstance(said, dict) else response.text
    except ValueError:
        text = response.text
    return f"the vendor said: {untrusted_excerpt(text)!r}"
