"""Datasets of each source type — the vendor's HTTP API, a partner's CSV drops in S3 (with field
names of their own), a partner's PostgreSQL table — and a source over one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from local.partner import create_listings_table, put_drop, upsert_listings
from tests.e2e.harness import Harness


@dataclass
class Dataset:
    """Listings under one name at a source of one type, and the fields its records name the id
    and the last-modified stamp with. Each type says how to `put` listings and the connection."""

    harness: Harness
    name: str
    source_type: ClassVar[str]
    id_field: ClassVar[str]
    modified_field: ClassVar[str]


@dataclass
class VendorApi(Dataset):
    """An http_api dataset at the demo vendor."""

    source_type = "http_api"
    id_field = "id"
    modified_field = "last_modified"

    def put(self, listings: list[Mapping[str, Any]]) -> None:
        self.harness.vendor.put(self.name, listings)

    def connection(self) -> dict[str, Any]:
        return {"base_url": self.harness.vendor.url, "dataset": self.name}


@dataclass
class CsvDrops(Dataset):
    """A partner's CSV drops under a prefix of their own; each `put` is one more drop. The
    partner names its dates modified_at and sold_on."""

    drops: int = 0
    source_type = "s3_files"
    id_field = "id"
    modified_field = "modified_at"
    renamed: ClassVar[dict[str, str]] = {"last_modified": "modified_at", "sold_date": "sold_on"}

    def put(self, listings: list[Mapping[str, Any]]) -> None:
        self.drops += 1
        rows = [{self.renamed.get(k, k): v for k, v in listing.items()} for listing in listings]
        key = f"{self.name}/drop-{self.drops:03d}.csv"
        put_drop(self.harness.aws("s3"), self.harness.partner.drops_bucket, key, rows, "csv")

    def connection(self) -> dict[str, Any]:
        return self.harness.partner.drops_connection(
            f"{self.name}/", "csv", last_modified_field="modified_at", sold_date_field="sold_on"
        )


@dataclass
class PartnerTable(Dataset):
    """A listings table of its own in the partner database; `put` upserts."""

    source_type = "postgres"
    id_field = "listing_id"
    modified_field = "updated_at"

    def __post_init__(self) -> None:
        create_listings_table(self.harness.partner.owner_url, self.table)

    @property
    def table(self) -> str:
        return "listings_" + self.name.replace("-", "_")

    def put(self, listings: list[Mapping[str, Any]]) -> None:
        upsert_listings(self.harness.partner.owner_url, self.table, listings)

    def connection(self) -> dict[str, Any]:
        return self.harness.partner_table_connection(self.table, self.name)


SourceData = VendorApi | CsvDrops | PartnerTable
KINDS: dict[str, type[SourceData]] = {
    kind.source_type: kind for kind in (VendorApi, CsvDrops, PartnerTable)
}


def new_source(harness: Harness, data: SourceData, **settings: Any) -> str:
    return harness.new_source(
        data.name, source_type=data.source_type, connection=data.connection(), **settings
    )
