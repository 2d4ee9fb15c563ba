"""The `http_api` connector: a paged JSON API filtered by last-modified or sold-date range.

connection (contracts/connection-http-api.v1.schema.json):
{"base_url": "http://host:port", "dataset": "listings-a", "page_size": 1000,
 "api_key_secret": "sourceflow/acme-api", "api_key_header": "X-Api-Key"}
Requests: GET {base_url}/datasets/{dataset}/records?modified_after=…&modified_until=…
(or sold_from/sold_until), following `next_page_token`, with the API key as a header when the
connection names a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.connectors.base import InvalidCredentials, MalformedRows, SourceUnreachable
from shared.errors import PermanentError, TransientError
from shared.rules.flows import Window, WindowField
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


def _session() -> requests.Session:
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
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
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
    key_field: str = DEFAULT_KEY_FIELD
    new_session: Callable[[], requests.Session] = field(default=_session, repr=False, compare=False)
    # The vendor filters on, and types, the window's field itself: no row is dropped here.
    malformed: MalformedRows = field(default_factory=MalformedRows, init=False, compare=False)

    @classmethod
    def from_connection(
        cls, source_id: str, connection: Mapping[str, Any], *, secrets: Secrets
    ) -> HttpApiConnector:
        """From a connection that passed its schema (`shared.connectors.parse_connection`)."""
        secret = connection.get("api_key_secret")
        api_key = (
            ApiKey(secret, connection.get("api_key_header", DEFAULT_API_KEY_HEADER))
            if secret
            else None
        )
        return cls(
            source_id,
            connection["base_url"].rstrip("/"),
            connection["dataset"],
            connection.get("page_size", DEFAULT_PAGE_SIZE),
            api_key,
            secrets,
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
            used_by=f"source {self.source_id!r}: connection.api_key_secret",
        )
        return {self.api_key.header: value}

    def _get(self, session: requests.Session, url: str, params: dict[str, str]) -> Any:
        try:
            response = session.get(url, params=params, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise SourceUnreachable(
                f"source {self.source_id!r}: vendor at {self.base_url} is unreachable: {exc}"
            ) from exc
        if response.status_code == 200:
            return orjson.loads(response.content)
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


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:500]
    except ValueError:
        return response.text[:500]
