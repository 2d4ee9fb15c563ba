"""The `http_api` connector: a paged JSON API filtered by last-modified or sold-date range.

connection: {"base_url": "http://host:port", "dataset": "listings-a", "page_size": 1000}
Requests: GET {base_url}/datasets/{dataset}/records?modified_after=…&modified_until=…
(or sold_from/sold_until), following `next_page_token`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.connectors import InvalidConnection
from shared.errors import PermanentError, TransientError
from shared.flows import Window, WindowField
from shared.timefmt import isoformat, parse_iso

DEFAULT_PAGE_SIZE = 1000
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


@dataclass
class HttpApiConnector:
    source_id: str
    base_url: str
    dataset: str
    page_size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def from_connection(cls, source_id: str, connection: Mapping[str, Any]) -> HttpApiConnector:
        base_url, dataset = connection.get("base_url"), connection.get("dataset")
        page_size = connection.get("page_size", DEFAULT_PAGE_SIZE)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidConnection(
                f"source {source_id!r}: connection.base_url = {base_url!r} is not valid; "
                "expected an http:// or https:// URL"
            )
        if not isinstance(dataset, str) or not dataset:
            raise InvalidConnection(
                f"source {source_id!r}: connection.dataset = {dataset!r} is not valid; "
                "expected the vendor's dataset name"
            )
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= 10000
        ):
            raise InvalidConnection(
                f"source {source_id!r}: connection.page_size = {page_size!r} is not valid; "
                "expected a whole number from 1 to 10000"
            )
        return cls(source_id, base_url.rstrip("/"), dataset, page_size)

    def records(self, window: Window) -> Iterator[dict[str, Any]]:
        url = f"{self.base_url}/datasets/{quote(self.dataset, safe='')}/records"
        params = {**_window_params(window), "page_size": str(self.page_size)}
        with _session() as session:
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

    def _get(self, session: requests.Session, url: str, params: dict[str, str]) -> Any:
        try:
            response = session.get(url, params=params, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise TransientError(
                f"source {self.source_id!r}: vendor at {self.base_url} is unreachable: {exc}",
                error_name="SourceUnreachable",
            ) from exc
        if response.status_code == 200:
            return response.json()
        detail = _error_text(response)
        if response.status_code == 404:
            raise SourceDatasetNotFound(
                f"source {self.source_id!r}: the vendor has no dataset {self.dataset!r} "
                f"({detail}); fix connection.dataset"
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
    return {"modified_after": isoformat(after), "modified_until": isoformat(window.end)}


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:500]
    except ValueError:
        return response.text[:500]
