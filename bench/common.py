"""What the benchmarks share: sources to run, and the services' logic called directly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.sources import SourceSpec, register_source
from shared.db import Database


def bench_source(
    db: Database,
    vendor_url: str,
    dataset: str,
    *,
    cursor: datetime | None,
    page_size: int = 1000,
    schedule_interval: str | None = None,
) -> str:
    """A Normal source that has run before (no first-run backdating), with this cursor."""
    source_id = f"bench-{uuid.uuid4().hex[:10]}"
    register_source(
        db,
        SourceSpec(
            source_id=source_id,
            name="benchmark",
            source_type="http_api",
            connection={"base_url": vendor_url, "dataset": dataset, "page_size": page_size},
            batch_execution_params={"flow_type": "Normal"},
        ),
    )
    with db.transaction() as cur:
        cur.execute(
            "UPDATE public.source SET runtime_count = 5, last_modified_date = %s,"
            " schedule_interval = %s::interval WHERE source_id = %s",
            (cursor, schedule_interval, source_id),
        )
    return source_id


def task_request(source_id: str) -> dict[str, Any]:
    """The task fields of a message, for calling a service's logic without the state machine."""
    name = f"{source_id}-{uuid.uuid4().hex[:8]}"
    return {
        "execution_arn": f"arn:aws:states:us-east-1:123456789012:execution:bench:{name}",
        "execution_name": name,
        "source_id": source_id,
        "task_token": "bench",
        "correlation_id": name,
    }


def utc_now() -> datetime:
    return datetime.now(UTC)


LONG = timedelta(hours=1)
