"""Download's orchestration of one message: stream one run's window from its source into the
raw bucket, with a manifest, its ports passed in as arguments (the decisions it applies are in
services.download.domain).

`download_delivery` wires one SQS delivery: its claim on the run, and a heartbeat that keeps
the message hidden and the lease and the claim alive; `download_run` does the download.
Objects go under `<source_id>/<execution name>/`, so a redelivered message rewrites the same
keys instead of adding a second copy; the ledger row moves from `running` to `downloaded` once,
and a duplicate after that returns the recorded result without downloading again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from services.download import adapters
from services.download.adapters import WrittenObject
from services.download.domain import (
    Claim,
    DownloadProgress,
    Heartbeat,
    StreamProgress,
    cut_parts,
    window_from_plan,
)
from shared.connectors.base import Connector, InvalidConnection, Lines
from shared.errors import DuplicateDelivery, LockLost, PermanentError, TransientError
from shared.rules.flows import (
    FlowType,
    Window,
    WindowField,
    moves_cursor,
    overlap,
    recorded_allowance,
)
from shared.rules.versions import LandingCounts, VersionFilter, key_text_digest
from shared.runtime.deliveries import Delivery
from shared.runtime.observability import logger
from shared.store import runs
from shared.store.db import Database
from shared.store.runs import RunStatus
from shared.timefmt import isoformat


class RunNotStarted(PermanentError):
    error_name = "RunNotStarted"


class RawSink(Protocol):
    def write_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> WrittenObject:
        """One part: records as chunks of JSON lines (each line ending in a newline), each
        with how many lines it holds."""
        ...

    def write_manifest(self, key: str, manifest: Mapping[str, Any]) -> None: ...


def download_delivery(
    request: Mapping[str, Any],
    delivery: Delivery,
    *,
    db: Database,
    connector_for: Callable[[str, str, Mapping[str, Any]], Connector],
    sink: RawSink,
    send_heartbeat: Callable[[str], None],
    lease: timedelta,
    claim_seconds: int,
    heartbeat_seconds: float,
    part_max_records: int,
) -> dict[str, Any]:
    """One delivery of a download-request: a fresh claim on the run, and a heartbeat that
    sends `send_heartbeat(task token)` and renews the lease and the claim, then `download_run`.
    """
    claim = Claim(
        attempt=uuid.uuid4().hex,
        message_id=delivery.message_id,
        ttl=timedelta(seconds=claim_seconds),
    )

    def renew() -> bool:
        # While this delivery is alive its message stays hidden and its claim stays live;
        # if it dies, both lapse together and the message's next delivery takes over.
        delivery.keep_hidden(claim_seconds)
        return lease_renewal(
            db, request["source_id"], request["execution_arn"], lease, claim, heartbeat.progress
        )

    heartbeat = Heartbeat(
        send=lambda: send_heartbeat(request["task_token"]),
        renew_lease=renew,
        interval_seconds=heartbeat_seconds,
    )
    return download_run(
        request,
        db=db,
        connector_for=connector_for,
        sink=sink,
        heartbeat=heartbeat,
        part_max_records=part_max_records,
        claim=claim,
    )


def download_run(
    request: Mapping[str, Any],
    *,
    db: Database,
    connector_for: Callable[[str, str, Mapping[str, Any]], Connector],
    sink: RawSink,
    heartbeat: Heartbeat,
    part_max_records: int,
    claim: Claim,
) -> dict[str, Any]:
    """Download the run's window; returns the fields of a download-result message.

    One delivery at a time downloads a run. A delivery that finds a live claim stands down if
    it is a duplicate copy (another message id: the claimer will report), and retries later if
    it is the same message handed out again (its previous holder may have died; the claim
    expires without heartbeats)."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]
    with db.transaction() as cur:
        run = adapters.load_run(cur, execution_arn)
    if run is None:
        raise RunNotStarted(
            f"execution {execution_arn} has no run in the ledger; validation did not start it"
        )
    if run["status"] in (RunStatus.DOWNLOADED, RunStatus.SUCCEEDED):
        return adapters.result_fields(run)
    if run["status"] != RunStatus.RUNNING or run["locked_by"] != execution_arn:
        raise LockLost(
            f"source {source_id!r} is not locked by {execution_arn} (run status "
            f"{run['status']!r}, lock holder {run['locked_by']!r}); not downloading"
        )

    with db.transaction() as cur:
        holder = adapters.claim_download(cur, execution_arn, claim)
    if holder is not None:
        if holder["download_message_id"] == claim.message_id:
            raise TransientError(
                f"a previous delivery of this message claimed the download until "
                f"{isoformat(holder['download_claimed_until'])}; retrying after it",
                error_name="DownloadInProgress",
            )
        raise DuplicateDelivery(
            f"message {holder['download_message_id']} is downloading this run; "
            f"duplicate {claim.message_id} stands down"
        )

    try:
        with db.transaction() as cur:
            versions = _version_filter(cur, run, window_from_plan(request["plan"]))
        result = _download_claimed(
            request, run, connector_for, sink, heartbeat, part_max_records, versions
        )
        # Only the runs the cursor follows list what they landed, for the Normal windows after
        # them to skip; a backfill reloads a range beside that timeline.
        remembers = moves_cursor(FlowType(run["flow_type"]))
        landed = versions.remembered() if versions is not None and remembers else []
    except Exception:
        # A delivery that fails gives its claim back, so that the message's next delivery
        # (after the retry backoff) need not wait for the claim to lapse.
        with db.transaction() as cur:
            adapters.release_claim(cur, execution_arn, claim.attempt)
        raise
    with db.transaction() as cur:
        recorded = runs.mark_downloaded(cur, result, claim.attempt)
        if recorded is not None and recorded["download_attempt"] == claim.attempt:
            adapters.record_landed(cur, source_id, execution_arn, landed)
    if recorded is None:
        raise LockLost(
            f"source {source_id!r}: the lock or the run changed hands during the download; "
            "its objects are not taken up"
        )
    return adapters.result_fields(recorded)


def _download_claimed(
    request: Mapping[str, Any],
    run: Mapping[str, Any],
    connector_for: Callable[[str, str, Mapping[str, Any]], Connector],
    sink: RawSink,
    heartbeat: Heartbeat,
    part_max_records: int,
    versions: VersionFilter | None,
) -> dict[str, Any]:
    """Stream the window into parts and write the manifest; returns the download's result."""
    execution_arn, source_id = request["execution_arn"], request["source_id"]
    # Every delivery says it is alive before it connects: the wait for an SQS redelivery
    # (retry backoff) must not count against the task's HeartbeatSeconds.
    heartbeat.first_beat()
    plan = request["plan"]
    window = window_from_plan(plan)
    connector = connector_for(source_id, run["source_type"], run["connection"])
    prefix = f"{source_id}/{request['execution_name']}/"
    progress = StreamProgress(connector, heartbeat, versions)
    # Each part streams straight from the source into the sink: memory holds a few pages, not
    # a part.
    for part in cut_parts(progress.track(window), part_max_records):
        key = f"{prefix}part-{len(progress.objects):05d}.jsonl.gz"
        progress.objects.append(sink.write_part(key, part))
        heartbeat.progress.bytes += progress.objects[-1].bytes

    if progress.read and progress.without_key == progress.read:
        raise InvalidConnection(
            f"source {source_id!r}: none of its {progress.read} records has the field "
            f"{connector.key_field!r} that identifies a record; fix the connection's key "
            "setting (key_field, or key_column for a table)"
        )
    malformed = connector.malformed
    if malformed.count:
        logger.warning(
            "malformed rows not loaded",
            extra={"malformed_records": malformed.count, "examples": malformed.examples},
        )
    # One last heartbeat before the manifest: a run cancelled meanwhile stops here, so no
    # manifest ever names the output of a cancelled run.
    heartbeat.beat()
    manifest_key = f"{prefix}manifest.json"
    counts = versions.counts if versions is not None else LandingCounts()
    newest = versions.newest if versions is not None else None
    if counts.future_records:
        logger.warning(
            "records stamped in the future: landed once, not followed by the cursor",
            extra={"future_records": counts.future_records, "examples": counts.future_examples},
        )
    result = {
        "source_id": source_id,
        "execution_arn": execution_arn,
        "records": heartbeat.progress.records,
        "bytes": heartbeat.progress.bytes,
        "objects": len(progress.objects),
        "manifest_key": manifest_key,
        "max_last_modified": isoformat(newest) if newest else None,
        "malformed_records": malformed.count,
        "late_records": counts.late_records,
        "duplicates_skipped": counts.duplicates_skipped,
        "future_records": counts.future_records,
    }
    sink.write_manifest(
        manifest_key,
        {
            "source_id": source_id,
            "execution_arn": execution_arn,
            "execution_name": request["execution_name"],
            "flow_type": plan["flow_type"],
            "window": {
                "field": window.field.value,
                "start": isoformat(window.start),
                "end": isoformat(window.end),
                "start_inclusive": window.start_inclusive,
                "end_inclusive": not window.end_exclusive,
            },
            "records": result["records"],
            "bytes": result["bytes"],
            "max_last_modified": result["max_last_modified"],
            "malformed_records": {"count": malformed.count, "examples": malformed.examples},
            "late_records": counts.late_records,
            "duplicates_skipped": counts.duplicates_skipped,
            "waiting_records": counts.waiting_records,
            "future_records": {
                "count": counts.future_records,
                "examples": counts.future_examples,
            },
            "objects": [obj.__dict__ for obj in progress.objects],
        },
    )
    return result


def _version_filter(cur: Any, run: Mapping[str, Any], window: Window) -> VersionFilter | None:
    """The run's version filter: a Normal run skips what earlier runs landed in its window; the
    explicit reloads (Full Load, Re-specs, a backfill's slice) land their whole window."""
    if window.field is not WindowField.LAST_MODIFIED:
        return None
    normal = FlowType(run["flow_type"]) is FlowType.NORMAL
    return VersionFilter(
        digest=key_text_digest,
        window=window,
        overlap=overlap(recorded_allowance(run["lateness_allowance"])),
        landed=adapters.landed_versions(cur, run["source_id"], window.start) if normal else (),
        dedupe=normal,
        cursor_before=run["cursor_before"] if normal else None,
    )


def lease_renewal(
    db: Database,
    source_id: str,
    execution_arn: str,
    lease: timedelta,
    claim: Claim,
    progress: DownloadProgress | None = None,
) -> bool:
    """Renew the source's lock and this delivery's claim. False if the lock is lost; a claim
    taken over by another delivery (this one was presumed dead) stands this one down. Either
    way, and on a cancel, nothing is written: the lock is checked first, and raising rolls the
    transaction back."""
    with db.transaction() as cur:
        if not runs.renew_lock(cur, source_id, execution_arn, lease):
            return False
        if not adapters.renew_claim(cur, execution_arn, claim, progress):
            raise DuplicateDelivery(
                f"another delivery took over the download of {execution_arn}; standing down"
            )
        if cancelled := runs.cancellation(cur, execution_arn):
            raise cancelled
        return True
