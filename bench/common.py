"""What the benchmarks share: sources to run, the services' logic called directly, loopback
servers and measuring processes."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

from services.download.adapters import S3RawSink
from services.download.domain import Claim, Heartbeat
from services.download.service import download_run
from services.unlocking.service import unlock_run
from services.validation.service import validate_run
from shared.connectors import source_access
from shared.runtime import aws
from shared.runtime.catalogue import RAW_GZIP_LEVEL
from shared.runtime.secrets import connection_secrets_prefix
from shared.runtime.settings import RespecsSettings, SourceAccessSettings
from shared.store.db import Database
from shared.store.sources import SourceSpec, register_source

# As the embedded stack's workers reach sources: the bench's are its vendor, on loopback.
EMBEDDED_ACCESS = SourceAccessSettings(
    connection_secrets_prefix=connection_secrets_prefix("local"),
    reserved_secrets=frozenset(),
    allow_loopback=True,
)


def bench_source(
    db: Database,
    vendor_url: str,
    dataset: str,
    *,
    cursor: datetime | None,
    page_size: int = 1000,
    schedule_interval: str | None = None,
) -> str:
    """A Normal http_api source of the vendor's dataset that has run before (no first-run
    backdating), with this cursor."""
    connection = {"base_url": vendor_url, "dataset": dataset, "page_size": page_size}
    return registered_source(
        db, "http_api", connection, cursor=cursor, schedule_interval=schedule_interval
    )


def registered_source(
    db: Database,
    source_type: str,
    connection: Mapping[str, Any],
    *,
    cursor: datetime | None,
    schedule_interval: str | None = None,
    source_id: str | None = None,
) -> str:
    """A Normal source of any type that has run before, with this cursor (and this id, when
    its connection names a secret of its own)."""
    source_id = source_id or new_source_id()
    register_source(
        db,
        SourceSpec(
            source_id=source_id,
            name="benchmark",
            source_type=source_type,
            connection=dict(connection),
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


def new_source_id() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


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


def direct_validate(
    db: Database, request: Mapping[str, Any], *, clock: Callable[[], datetime]
) -> dict[str, Any]:
    """Validation's logic called directly, for a Normal run; returns its result (with the plan)."""
    return validate_run(
        request,
        db=db,
        clock=clock,
        lease=LONG,
        respecs_tables=frozenset(),
        check_connection=source_access(EMBEDDED_ACCESS).check,
        approval_gate=False,  # Normal runs: the gate only concerns Re-specs queries
    )


def direct_download(
    db: Database,
    request: Mapping[str, Any],
    plan: Any,
    *,
    bucket: str,
    part_max_records: int,
) -> dict[str, Any]:
    """The download service's logic called directly, into the raw bucket, with a heartbeat that
    never beats and a claim of its own; returns its result."""
    return download_run(
        {**request, "plan": plan},
        db=db,
        connector_for=source_access(EMBEDDED_ACCESS).connector,
        sink=S3RawSink(
            aws.client("s3"), bucket, int(os.environ.get("RAW_GZIP_LEVEL", RAW_GZIP_LEVEL))
        ),
        heartbeat=Heartbeat(send=lambda: None, renew_lease=lambda: True, interval_seconds=3600),
        part_max_records=part_max_records,
        claim=Claim(attempt=uuid.uuid4().hex, message_id="bench", ttl=LONG),
    )


def direct_run(db: Database, request: Mapping[str, Any], *, bucket: str) -> dict[str, float]:
    """A Normal run through the three services' logic, back to back in this process, on the
    same database; returns each step's seconds."""
    timings = {}
    started = time.perf_counter()
    validated = direct_validate(db, request, clock=utc_now)
    timings["Validate"] = time.perf_counter() - started
    started = time.perf_counter()
    direct_download(db, request, validated["plan"], bucket=bucket, part_max_records=100_000)
    timings["Download"] = time.perf_counter() - started
    started = time.perf_counter()
    unlock_run(
        {**request, "outcome": "succeeded"},
        db=db,
        respecs=RespecsSettings(allowed_tables=frozenset(), statement_timeout_ms=60_000),
    )
    timings["UnlockAfterSuccess"] = time.perf_counter() - started
    return timings


def utc_now() -> datetime:
    return datetime.now(UTC)


LONG = timedelta(hours=1)


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[str]:
    """`server` (bound to a loopback port) serving from a thread while the block runs; yields
    its base URL."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def json_output(command: list[str], **run: Any) -> dict[str, Any]:
    """The JSON document a measuring process prints on its standard output (`run`: more
    arguments of subprocess.run, such as env)."""
    completed = subprocess.run(command, capture_output=True, text=True, check=True, **run)
    figures: dict[str, Any] = json.loads(completed.stdout)
    return figures
