"""Downloads longer than one invocation (issue 17, deliver 1), end to end on the embedded stack:
the download worker is cut off at its function timeout as Lambda's is (local/worker.py), each
invocation stops before it at a committed part, and the state machine continues the download in
new Download tasks until the window is done; a worker killed in the middle is taken over by the
message's next delivery, which goes on after the last committed part. A partner table whose
first row comes late keeps its task alive, and one whose key column has no index is warned of."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from psycopg2 import sql

from local.partner import create_listings_table, upsert_listings
from local.provision import function_timeouts
from shared.runtime.catalogue import PART_MAX_RECORDS
from tests.builders import listing
from tests.e2e.harness import Harness, wait_for
from tests.e2e.harness.stack import HEARTBEAT_SECONDS

DAY = timedelta(days=1)
# The download's function timeout in these tests: an invocation stops a second before it (a
# quarter of it: services/download/domain.py invocation_budget).
TINY_FUNCTION_SECONDS = 4


@pytest.fixture
def tiny_invocations(harness: Harness) -> Iterator[None]:
    """The download workers redeployed with a 4 s function timeout and parts of four records;
    redeployed as the stack had them afterwards."""
    stack = harness.stack
    stack.redeploy(
        "download",
        {"SOURCEFLOW_FUNCTION_TIMEOUT": str(TINY_FUNCTION_SECONDS), "PART_MAX_RECORDS": "4"},
    )
    try:
        yield
    finally:
        stack.redeploy(
            "download",
            {
                "SOURCEFLOW_FUNCTION_TIMEOUT": str(
                    function_timeouts(stack.options.timeouts)["download"]
                ),
                "PART_MAX_RECORDS": str(PART_MAX_RECORDS),
            },
        )


def download_tasks(harness: Harness, execution_arn: str) -> int:
    """How many Download tasks the execution ran."""
    sfn = harness.aws("stepfunctions")
    pages = sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn)
    return sum(
        1
        for page in pages
        for event in page["events"]
        if event["type"] == "TaskStateEntered"
        and event["stateEnteredEventDetails"]["name"] == "Download"
    )


def mid_invocation(harness: Harness, execution_arn: str, *, records: int) -> bool:
    """Whether a delivery of the run is in the middle of an invocation, its claim live and one
    of its parts committed, with `records` landed in all."""
    with harness.db.transaction() as cur:
        cur.execute(
            """
            SELECT 1 FROM public.source_run r
              JOIN public.download_checkpoint c
                ON c.execution_arn = r.execution_arn AND c.download_attempt = r.download_attempt
             WHERE r.execution_arn = %s AND r.download_claimed_until > now()
               AND r.progress_records >= %s
            """,
            (execution_arn, records),
        )
        return cur.fetchone() is not None


def landed_versions(harness: Harness, execution_arn: str) -> tuple[int, int]:
    """The versions the run listed as landed: all of them, and the distinct ones."""
    with harness.db.transaction() as cur:
        cur.execute(
            "SELECT count(*) AS listed, count(DISTINCT (last_modified, key_digest)) AS distinct_"
            " FROM public.landed_version WHERE execution_arn = %s",
            (execution_arn,),
        )
        row = cur.fetchone()
    return row["listed"], row["distinct_"]


@pytest.mark.parametrize("page_format", ["json", "jsonl"], ids=["json-pages", "json-lines"])
def test_a_download_over_many_invocations_with_a_worker_killed_lands_every_record_once(
    harness: Harness, tiny_invocations: None, page_format: str
) -> None:
    # Given a source a day behind 50 records served one a page (as JSON pages, or JSON lines),
    # each page 0.3 s late (15 s of download at the least), and download invocations that may
    # run 4 s each
    slow = harness.slow_source(pages=50, delay_ms=300, runtime_count=2)
    harness.change_connection(slow.source_id, format=page_format)
    arn = harness.start(slow.source_id)

    # When the download workers are killed in the middle of an invocation, a third of the way
    # through the download, and new ones start
    wait_for(lambda: mid_invocation(harness, arn, records=15), "an invocation under way")
    harness.stack.kill_workers("download")
    harness.stack.start_workers("download")
    result = harness.finish(arn, slow.source_id)

    # Then the run succeeded after at least five Download tasks, each invocation going on from
    # the last committed part
    assert result.status == "SUCCEEDED", result
    assert download_tasks(harness, arn) >= 5
    assert result.run["download_invocations"] >= download_tasks(harness, arn)
    # And every record of the vendor's dataset landed exactly once, in parts the manifest names
    manifest, records = harness.raw_output(result)
    expected = [f"{slow.dataset}-{index:05d}" for index in range(50)]
    assert sorted(record["id"] for record in records) == expected
    assert result.run["records"] == manifest["records"] == 50
    assert len(manifest["objects"]) >= 13  # parts of four records at the most
    # And each version is listed as landed once, for the Normal windows after it to skip
    assert landed_versions(harness, arn) == (50, 50)
    assert result.source is not None and result.source["locked_by"] is None


def partner_table_source(harness: Harness, table: str, *, rows: int) -> str:
    """The partner table `table`, created with `rows` listings modified since a day ago."""
    create_listings_table(harness.partner.owner_url, table)
    now = datetime.now(UTC)
    upsert_listings(
        harness.partner.owner_url,
        table,
        [listing(table, index, now - DAY / 10) for index in range(rows)],
    )
    return table


def a_postgres_source(harness: Harness, relation: str) -> str:
    """A postgres source a day behind, reading the partner's `relation` (a table or a view)."""
    name = harness.unique_name()
    return harness.new_source(
        name,
        source_type="postgres",
        connection=harness.partner_table_connection(relation, name),
        cursor=datetime.now(UTC) - DAY,
        runtime_count=2,
    )


def partner_sql(harness: Harness, statement: sql.Composable) -> None:
    with closing(psycopg2.connect(harness.partner.owner_url)) as conn, conn, conn.cursor() as cur:
        cur.execute(statement)


def drop_primary_key(harness: Harness, table: str) -> None:
    """The table's key column loses its index (the primary key's)."""
    partner_sql(
        harness,
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(table), sql.Identifier(f"{table}_pkey")
        ),
    )


def test_a_partner_query_whose_first_row_comes_after_the_heartbeat_timeout_succeeds(
    harness: Harness,
) -> None:
    # Given a partner view whose rows take 6 s each to compute, over a table without an index:
    # read in key order, they come only after a sort of 24 s, past the Download task's
    # HeartbeatSeconds
    table = partner_table_source(harness, f"slow_{harness.unique_name().replace('-', '_')}", rows=4)
    view = f"{table}_view"
    drop_primary_key(harness, table)
    partner_sql(
        harness,
        sql.SQL("CREATE VIEW {} AS SELECT * FROM {} WHERE length(pg_sleep(6)::text) >= 0").format(
            sql.Identifier(view), sql.Identifier(table)
        ),
    )
    assert HEARTBEAT_SECONDS < 4 * 6
    source_id = a_postgres_source(harness, view)

    # When it runs, Then the download heartbeats while the query starts, and the run succeeds
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    assert result.run["records"] == 4


def test_a_partner_table_whose_key_column_has_no_index_succeeds_with_a_warning(
    harness: Harness,
) -> None:
    # Given a partner table whose key column has no index
    table = partner_table_source(
        harness, f"noidx_{harness.unique_name().replace('-', '_')}", rows=3
    )
    drop_primary_key(harness, table)
    source_id = a_postgres_source(harness, table)

    # When it runs, Then it succeeds, and its Run Succeeded event tells the operator the fix
    result = harness.run(source_id)
    assert result.status == "SUCCEEDED", result
    event = harness.outcome_events({result.execution_arn})[result.execution_arn]
    [warning] = event["detail"]["warnings"]
    assert f"'listing_id' of public.{table} has no index" in warning
    assert f"CREATE INDEX ON public.{table} (listing_id)" in warning
