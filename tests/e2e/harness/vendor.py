"""The demo vendor's API as tests drive it: upserts, its clock, faults, concurrency limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from tests.e2e.harness.waits import WAIT_SECONDS


@dataclass
class Vendor:
    url: str

    def put(
        self, dataset: str, records: list[Mapping[str, Any]], *, visible_after_s: int = 0
    ) -> list[dict[str, Any]]:
        """Upsert; returns the records as stored (stamped by the vendor unless they carry
        last_modified), each visible `visible_after_s` after its stamp."""
        response = requests.post(
            f"{self.url}/datasets/{dataset}/records",
            json={"records": records, "visible_after_s": visible_after_s},
            timeout=WAIT_SECONDS,
        )
        response.raise_for_status()
        return list(response.json()["records"])

    def set_clock(self, dataset: str, offset_s: int) -> None:
        """Run the dataset's clock `offset_s` seconds ahead of the run's (negative: behind)."""
        requests.post(
            f"{self.url}/admin/clock",
            json={"dataset": dataset, "offset_s": offset_s},
            timeout=WAIT_SECONDS,
        ).raise_for_status()

    def fault(self, dataset: str, **fault: Any) -> None:
        requests.post(
            f"{self.url}/admin/faults", json={"dataset": dataset, **fault}, timeout=WAIT_SECONDS
        ).raise_for_status()

    def faults(self) -> dict[str, dict[str, Any]]:
        """Each dataset's fault, with the records served since it was set (`served`)."""
        response = requests.get(f"{self.url}/admin/faults", timeout=WAIT_SECONDS)
        response.raise_for_status()
        return dict(response.json()["faults"])

    def clear_faults(self) -> None:
        requests.delete(f"{self.url}/admin/faults", timeout=WAIT_SECONDS).raise_for_status()

    def limit(self, dataset: str, max_concurrent: int, *, retry_after_s: int = 1) -> None:
        """Serve at most `max_concurrent` record requests of the dataset at once; answer the
        others 429 with Retry-After."""
        requests.post(
            f"{self.url}/admin/limits",
            json={
                "dataset": dataset,
                "max_concurrent": max_concurrent,
                "retry_after_s": retry_after_s,
            },
            timeout=WAIT_SECONDS,
        ).raise_for_status()

    def limits(self) -> dict[str, dict[str, Any]]:
        """Each limit with what the vendor saw: max_seen (in flight at once, refused ones
        counted), refused, pages served."""
        response = requests.get(f"{self.url}/admin/limits", timeout=WAIT_SECONDS)
        response.raise_for_status()
        return dict(response.json()["limits"])

    def clear_limits(self) -> None:
        requests.delete(f"{self.url}/admin/limits", timeout=WAIT_SECONDS).raise_for_status()
