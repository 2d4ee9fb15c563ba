"""Sources of a test's own: vendor datasets, registered sources, and what an operator writes
into a source row by hand."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg2.extras import Json

from local.partner import PartnerSources, put_source_secret
from local.stack import LocalStack, aws_client
from shared.store.db import Database, session_login
from shared.store.sources import SourceSpec, get_source, register_source
from tests.builders import listing
from tests.e2e.harness.vendor import Vendor

_counter = itertools.count(1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class SlowSource:
    source_id: str
    dataset: str
    cursor: datetime


@dataclass
class Sources:
    stack: LocalStack
    db: Database
    vendor: Vendor

    @staticmethod
    def unique_name() -> str:
        """A name no other test of any session uses (datasets, tables, prefixes)."""
        return f"t{next(_counter):03d}-{os.getpid()}"

    @property
    def partner(self) -> PartnerSources:
        """The partner database and drops bucket the stack created."""
        return PartnerSources.from_env(self.stack.env)

    @staticmethod
    def source_id_of(dataset: str) -> str:
        """The id `new_source` gives the source named after `dataset`."""
        return f"src-{dataset}"

    def source_secret(self, source_id: str, name: str, value: str) -> str:
        """The source's own secret `name` holding `value` (created, or brought up to date);
        returns its name, for the connection to reference."""
        secretsmanager = aws_client(self.stack.env, "secretsmanager")
        return put_source_secret(
            secretsmanager, self.partner.secrets.secret_for(source_id, name), value
        )

    def partner_table_connection(self, table: str, dataset: str) -> dict[str, Any]:
        """The connection of the source named after `dataset` reading a partner table, with the
        reader's password in a secret of the source's own."""
        secretsmanager = aws_client(self.stack.env, "secretsmanager")
        secret = self.partner.bind_reader_password(secretsmanager, self.source_id_of(dataset))
        return self.partner.table_connection(table, secret)

    def new_dataset(self, records_ago: list[timedelta], *, now: datetime | None = None) -> str:
        """A vendor dataset of its own for one test, with records modified `ago` before now."""
        dataset = self.unique_name()
        now = now or datetime.now(UTC)
        self.vendor.put(
            dataset, [listing(dataset, i, now - ago) for i, ago in enumerate(records_ago)]
        )
        return dataset

    def new_source(
        self,
        dataset: str,
        *,
        cursor: datetime | None = None,
        runtime_count: int = 0,
        params: Mapping[str, Any] | None = None,
        backdate_days: int = 30,
        is_active: bool = True,
        base_url: str | None = None,
        source_type: str = "http_api",
        connection: Mapping[str, Any] | None = None,
    ) -> str:
        """A source named after `dataset`; by default the vendor's http_api dataset."""
        source_id = self.source_id_of(dataset)
        register_source(
            self.db,
            SourceSpec(
                source_id=source_id,
                name=f"test source {dataset}",
                source_type=source_type,
                connection=connection
                or {"base_url": base_url or self.vendor.url, "dataset": dataset},
                backdate_days=backdate_days,
                batch_execution_params=params,
                is_active=is_active,
            ),
        )
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET last_modified_date = %s, runtime_count = %s"
                " WHERE source_id = %s",
                (cursor, runtime_count, source_id),
            )
        return source_id

    def slow_source(
        self, pages: int, delay_ms: int, *, runtime_count: int, now: datetime | None = None
    ) -> SlowSource:
        """A source a day behind a dataset of `pages` records modified since, served one record
        a page, each page `delay_ms` late: a download that is under way for a while."""
        now = now or datetime.now(UTC)
        dataset = self.new_dataset([DAY / 10] * pages, now=now)
        cursor = now - DAY
        source_id = self.new_source(dataset, runtime_count=runtime_count, cursor=cursor)
        self.set_page_size(source_id, 1)
        self.vendor.fault(dataset, page_delay_ms=delay_ms)
        return SlowSource(source_id, dataset, cursor)

    def run_source_row(self, source_id: str) -> dict[str, Any]:
        source = get_source(self.db, source_id)
        assert source is not None, source_id
        return source

    def admin_login(self) -> str:
        """The login of the stack's administrator, as the database records what it does."""
        with self.db.transaction() as cur:
            return session_login(cur)

    def set_params(self, source_id: str, params: Mapping[str, Any] | None) -> None:
        """What an operator does by hand: write batch_execution_params directly."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET batch_execution_params = %s WHERE source_id = %s",
                (Json(dict(params)) if params is not None else None, source_id),
            )

    def set_lock(
        self,
        source_id: str,
        holder: str | None,
        locked_at: datetime | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        """Write the source's lock directly: held by `holder` (an execution ARN), or released
        when all three are None."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET locked_by = %s, locked_at = %s, lock_expires_at = %s"
                " WHERE source_id = %s",
                (holder, locked_at, expires_at, source_id),
            )

    def set_page_size(self, source_id: str, page_size: int) -> None:
        self.change_connection(source_id, page_size=page_size)

    def change_connection(self, source_id: str, **changes: Any) -> None:
        """The source's connection with `changes` made to it."""
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET connection = connection || %s WHERE source_id = %s",
                (Json(changes), source_id),
            )

    def set_schedule(
        self,
        source_id: str,
        *,
        interval: str | None = None,
        cron: str | None = None,
        last_slot: datetime | None = None,
    ) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE public.source SET schedule_interval = %s::interval, schedule_cron = %s,"
                " last_scheduled_slot = %s WHERE source_id = %s",
                (interval, cron, last_slot, source_id),
            )

    def seed_attributes(self, source_id: str, count: int) -> None:
        """Listing attribute rows of the source for a Re-specs query to update."""
        with self.db.transaction() as cur:
            for index in range(count):
                cur.execute(
                    "INSERT INTO public.listing_attributes (source_id, listing_id, attribute,"
                    " value) VALUES (%s, %s, 'area_unit', 'sqft')",
                    (source_id, f"L{index}"),
                )

    def attributes(self, source_id: str) -> dict[str, str]:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT listing_id, value FROM public.listing_attributes WHERE source_id = %s",
                (source_id,),
            )
            return {row["listing_id"]: row["value"] for row in cur.fetchall()}

    def flow_history(self, source_id: str) -> list[dict[str, Any]]:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT * FROM public.source_flow_history WHERE source_id = %s ORDER BY change_id",
                (source_id,),
            )
            return [dict(row) for row in cur.fetchall()]
