"""The demo's sources, at least one of each type, and the data behind each: the vendor's
datasets (http_api), a partner's CSV drops in S3 (s3_files) and a partner's table (postgres).

Between the demo's rounds each source's data changes, and each can say how many of its records
fall in a window: that is how the demo checks that every run loaded what its flow promises.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg2
import requests
from psycopg2 import sql

from local.partner import (
    PartnerSources,
    create_listings_table,
    put_drop,
    upsert_listings,
)
from local.vendor.records import default_anchor, generate_record
from shared.rules.flows import FlowType, WindowField
from shared.timefmt import isoformat, parse_iso

PARTNER_RECORDS = 1000  # records in the partner's drops and table when the demo starts


@dataclass(frozen=True)
class DemoSource:
    source_id: str
    source_type: str
    name: str  # the vendor's dataset, the partner's drops prefix or table
    backdate_days: int
    changed: int  # records the source modifies between the first two rounds
    added: int  # records the source adds between the first two rounds
    special_flow: FlowType  # the third round's: Re-specs or Sold


DEMO_SOURCES = (
    DemoSource("demo-listings-a", "http_api", "listings-a", 30, 40, 10, FlowType.RESPECS),
    DemoSource("demo-listings-b", "http_api", "listings-b", 7, 5, 0, FlowType.SOLD),
    DemoSource("demo-drops", "s3_files", "demo-drops", 30, 20, 5, FlowType.SOLD),
    DemoSource("demo-partner", "postgres", "demo_listings", 30, 15, 5, FlowType.RESPECS),
)


class SourceData(Protocol):
    def connection(self) -> dict[str, Any]: ...

    def reset(self) -> None:
        """The source's records as they are before the first round."""
        ...

    def change(self, changed: int, added: int) -> None:
        """Modify `changed` records (a price change) and add `added` new ones, now."""
        ...

    def count(self, window_field: WindowField, start: datetime, end: datetime) -> int:
        """How many of the source's records have `window_field` in [start, end]."""
        ...


def source_data(
    source: DemoSource, env: dict[str, str], s3: Any, secretsmanager: Any
) -> SourceData:
    partner = PartnerSources.from_env(env)
    if source.source_type == "http_api":
        return VendorData(env["VENDOR_URL"], source.name)
    if source.source_type == "s3_files":
        return DropsData(s3, partner, source.name)
    password_secret = partner.bind_reader_password(secretsmanager, source.source_id)
    return TableData(partner, source.name, password_secret)


@dataclass
class VendorData:
    url: str
    dataset: str

    def connection(self) -> dict[str, Any]:
        return {"base_url": self.url, "dataset": self.dataset}

    def reset(self) -> None:
        """Nothing to do: the vendor generates its datasets afresh whenever the stack starts."""

    def change(self, changed: int, added: int) -> None:
        # The vendor stamps what it is sent with its own clock.
        page = requests.get(
            f"{self.url}/datasets/{self.dataset}/records", params={"page_size": changed}, timeout=10
        )
        page.raise_for_status()
        modified = [
            {"id": record["id"], "price": int(record["price"]) + 1000}
            for record in page.json()["records"]
        ]
        new = [{"id": f"{self.dataset}-new-{index:04d}"} for index in range(added)]
        requests.post(
            f"{self.url}/datasets/{self.dataset}/records",
            json={"records": modified + new},
            timeout=10,
        ).raise_for_status()

    def count(self, window_field: WindowField, start: datetime, end: datetime) -> int:
        if window_field is WindowField.SOLD_DATE:
            params = {"sold_from": isoformat(start), "sold_until": isoformat(end)}
        else:  # the vendor's lower bound on last-modified is exclusive
            after = start - timedelta(microseconds=1)
            params = {"modified_after": isoformat(after), "modified_until": isoformat(end)}
        response = requests.get(
            f"{self.url}/datasets/{self.dataset}/count", params=params, timeout=10
        )
        response.raise_for_status()
        return int(response.json()["count"])


@dataclass
class PartnerRecords:
    """Vendor-like records a partner holds, generated from its name, and the changes it makes."""

    name: str
    anchor: datetime = field(default_factory=default_anchor)

    def initial(self) -> list[dict[str, Any]]:
        return [self._record(index) for index in range(PARTNER_RECORDS)]

    def changes(self, changed: int, added: int) -> list[dict[str, Any]]:
        """The first `changed` records with a new price, and `added` new ones, modified now."""
        now = isoformat(datetime.now(UTC).replace(microsecond=0))
        modified = [
            {**record, "price": record["price"] + 1000}
            for record in map(self._record, range(changed))
        ]
        new = [self._record(PARTNER_RECORDS + index) for index in range(added)]
        return [{**record, "last_modified": now} for record in modified + new]

    def _record(self, index: int) -> dict[str, Any]:
        return generate_record(self.name, index, self.anchor)


@dataclass
class DropsData:
    """CSV drops under a prefix: the first with every record, then one per change. A change
    does not rewrite earlier drops, so a modified record is in two of them."""

    s3: Any
    partner: PartnerSources
    prefix: str
    records: PartnerRecords = field(init=False)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    drops: int = 0

    def __post_init__(self) -> None:
        self.records = PartnerRecords(self.prefix)

    def connection(self) -> dict[str, Any]:
        return self.partner.drops_connection(f"{self.prefix}/", "csv")

    def reset(self) -> None:
        # The drops bucket keeps its objects across restarts (local/restart.py): an earlier
        # demo's drops go first.
        bucket = self.partner.drops_bucket
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{self.prefix}/"
        ):
            for listed in page.get("Contents", []):
                self.s3.delete_object(Bucket=bucket, Key=listed["Key"])
        self.dropped, self.drops = [], 0
        self._drop(self.records.initial())

    def change(self, changed: int, added: int) -> None:
        self._drop(self.records.changes(changed, added))

    def count(self, window_field: WindowField, start: datetime, end: datetime) -> int:
        moments = (row[window_field.value] for row in self.dropped)
        return sum(1 for moment in moments if moment and start <= parse_iso(moment) <= end)

    def _drop(self, rows: list[dict[str, Any]]) -> None:
        self.drops += 1
        key = f"{self.prefix}/drop-{self.drops:03d}.csv"
        put_drop(self.s3, self.partner.drops_bucket, key, rows, "csv")
        self.dropped.extend(rows)


@dataclass
class TableData:
    """A listings table in the partner database; a change updates rows in place."""

    partner: PartnerSources
    table: str
    password_secret: str  # the source's own (PartnerSources.bind_reader_password)
    records: PartnerRecords = field(init=False)

    def __post_init__(self) -> None:
        self.records = PartnerRecords(self.table)

    def connection(self) -> dict[str, Any]:
        return self.partner.table_connection(self.table, self.password_secret)

    def reset(self) -> None:
        create_listings_table(self.partner.owner_url, self.table)
        upsert_listings(self.partner.owner_url, self.table, self.records.initial())

    def change(self, changed: int, added: int) -> None:
        upsert_listings(self.partner.owner_url, self.table, self.records.changes(changed, added))

    def count(self, window_field: WindowField, start: datetime, end: datetime) -> int:
        setting = (
            "last_modified_column"
            if window_field is WindowField.LAST_MODIFIED
            else "sold_date_column"
        )
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} BETWEEN %s AND %s").format(
            sql.Identifier(self.table), sql.Identifier(self.connection()[setting])
        )
        with closing(psycopg2.connect(self.partner.owner_url)) as conn, conn.cursor() as cur:
            cur.execute(query, (start, end))
            return int(cur.fetchone()[0])
