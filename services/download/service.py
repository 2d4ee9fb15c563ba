"""Download's orchestration of one message: stream one run's window from its source into the
raw bucket, part by part, with a manifest, its ports passed in as arguments (the decisions it
applies are in services.download.domain).

`download_delivery` wires one SQS delivery: its claim on the run, a heartbeat that keeps the
message hidden and the lease, the claim and the delivery's vendor slot alive, the pacing its
connector waits on the vendor with (shared.connectors.pacing), and the invocation's time
budget; `download_run` does the download. Each part is committed with the position its source
resumes from after it (`public.download_checkpoint`) and the versions it landed, so a
redelivered or continued download goes on after its last committed part. An invocation whose
budget is spent stops at its next checkpoint and answers "more" (the state machine continues it
in a new Download task); the one that reaches the end writes the manifest, naming every part of
the run. Objects go under `<source_id>/<execution name>/`, numbered in the run's order, so a
part written again after a crash rewrites the same key; the ledger row moves from `running` to
`downloaded` once, and a duplicate after that returns the recorded result without downloading
again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from itertools import chain
from typing import Any, Protocol

from services.download import adapters
from services.download.adapters import Checkpoint, SpooledPart
from services.download.domain import (
    UNBOUNDED,
    Budget,
    Claim,
    DownloadProgress,
    Heartbeat,
    Part,
    StreamProgress,
    Tally,
    invocation_budget,
    window_from_plan,
)
from shared.connectors.base import Connector, InvalidConnection, Lines
from shared.connectors.pacing import Pacing
from shared.errors import DuplicateDelivery, LockLost, PermanentError, TransientError
from shared.rules.flows import (
    FlowType,
    Window,
    WindowField,
    moves_cursor,
    overlap,
    recorded_allowance,
)
from shared.rules.throttling import ThrottlePolicy
from shared.rules.versions import Version, VersionFilter, key_text_digest
from shared.runtime.catalogue import (
    CLOUD_TIMEOUTS,
    VENDOR_MAX_WAIT_SECONDS,
    VENDOR_SLOT_WAIT_SECONDS,
)
from shared.runtime.deliveries import Delivery
from shared.runtime.observability import logger
from shared.store import runs
from shared.store.db import Database
from shared.store.runs import RunStatus
from shared.store.vendor_limits import SlotHolder, VendorSlots
from shared.timefmt import isoformat


class RunNotStarted(PermanentError):
    error_name = "RunNotStarted"


class RawSink(Protocol):
    def spool_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> SpooledPart:
        """One part, compressed, its upload left to the caller: records as chunks of JSON
        lines (each line ending in a newline), each with how many lines it holds."""
        ...

    def write_manifest(self, key: str, manifest: Mapping[str, Any]) -> None: ...


def download_delivery(
    request: Mapping[str, Any],
    delivery: Delivery,
    *,
    db: Database,
    connector_for: Callable[..., Connector],
    sink: RawSink,
    send_heartbeat: Callable[[str], None],
    lease: timedelta,
    claim_seconds: int,
    heartbeat_seconds: float,
    part_max_records: int,
    stop_margin_seconds: float = CLOUD_TIMEOUTS.download_stop_margin_seconds,
    vendor_max_wait_seconds: float = VENDOR_MAX_WAIT_SECONDS,
    vendor_slot_wait_seconds: float = VENDOR_SLOT_WAIT_SECONDS,
) -> dict[str, Any]:
    """One delivery of a download-request: a fresh claim on the run, a heartbeat that sends
    `send_heartbeat(task token)` and renews the lease, the claim and the vendor slot, and the
    time budget of the delivery's invocation, then `download_run`, its connector paced by this
    delivery: a throttled page waits (at most `vendor_max_wait_seconds`) and a limited vendor's
    slot is waited for (at most `vendor_slot_wait_seconds`) while the heartbeat goes on.
    `connector_for(source_id, source_type, connection, pacing=…)` builds the connector. A
    request without `continuation` comes from a state machine that cannot continue a download:
    it runs to the end.
    """
    # Hidden for a claim's time from the start: a delivery that dies before its first heartbeat
    # (a continuation's first seconds) gives its message back as soon as one that dies after.
    delivery.keep_hidden(claim_seconds)
    continuation = request.get("continuation")
    claim = Claim(
        attempt=uuid.uuid4().hex,
        message_id=delivery.message_id,
        ttl=timedelta(seconds=claim_seconds),
        continuation=continuation or 0,
    )

    def renew() -> bool:
        # While this delivery is alive its message stays hidden and its claim stays live;
        # if it dies, both lapse together (its vendor slot too) and the message's next delivery
        # takes over.
        delivery.keep_hidden(claim_seconds)
        return lease_renewal(
            db,
            request["source_id"],
            request["execution_arn"],
            lease,
            claim,
            heartbeat.progress,
            slots,
        )

    heartbeat = Heartbeat(
        send=lambda: send_heartbeat(request["task_token"]),
        renew_lease=renew,
        interval_seconds=heartbeat_seconds,
    )
    slots = VendorSlots(
        db,
        SlotHolder(request["execution_arn"], claim.attempt, request["source_id"]),
        ttl=claim.ttl,
        wait=heartbeat.wait,
        max_wait_seconds=vendor_slot_wait_seconds,
    )
    pacing = Pacing(
        throttle=ThrottlePolicy(vendor_max_wait_seconds), wait=heartbeat.wait, slot=slots.hold
    )
    budget = (
        UNBOUNDED
        if continuation is None
        else invocation_budget(delivery.time_left(), stop_margin_seconds)
    )
    try:
        return download_run(
            request,
            db=db,
            connector_for=partial(connector_for, pacing=pacing),
            sink=sink,
            heartbeat=heartbeat,
            part_max_records=part_max_records,
            claim=claim,
            budget=budget,
        )
    finally:
        # The connector gives its slot back when its reading ends; a download that failed
        # elsewhere (writing a part) may have left its reading suspended, slot and all.
        slots.release_all()


def download_run(
    request: Mapping[str, Any],
    *,
    db: Database,
    connector_for: Callable[[str, str, Mapping[str, Any]], Connector],
    sink: RawSink,
    heartbeat: Heartbeat,
    part_max_records: int,
    claim: Claim,
    budget: Budget = UNBOUNDED,
) -> dict[str, Any]:
    """Download the run's window from its last committed part; returns the fields of a
    download-result message (with `more` when the budget ran out first).

    One delivery at a time downloads a run. A delivery that finds a live claim stands down if
    it is a duplicate copy (another message id of the same Download task: the claimer will
    report), and retries later if it is the same message handed out again (its previous holder
    may have died; the claim expires without heartbeats) or the task after the claimer's (the
    claimer's task is over: it stops at its next heartbeat)."""
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
        _wait_or_stand_down(holder, claim)

    try:
        with db.transaction() as cur:
            committed = adapters.checkpoints(cur, execution_arn)
            resumed = Tally.from_json(committed[-1].tally) if committed else Tally()
            own = adapters.own_landed(cur, source_id, execution_arn) if committed else set()
            versions = _version_filter(cur, run, window_from_plan(request["plan"]), resumed, own)
        # Only the runs the cursor follows list what they landed, for the Normal windows after
        # them to skip; a backfill reloads a range beside that timeline.
        remembers = versions is not None and moves_cursor(FlowType(run["flow_type"]))

        def landed() -> list[Any]:
            return versions.take_unsaved() if versions is not None and remembers else []

        def commit(checkpoint: Checkpoint, listed: list[Any], *, last: bool) -> None:
            with db.transaction() as cur:
                if not adapters.commit_checkpoint(
                    cur, execution_arn, claim.attempt, checkpoint, last=last
                ):
                    _claim_or_lock_lost(cur, execution_arn, claim)
                adapters.record_landed(cur, source_id, execution_arn, listed)

        download = _Download(
            request,
            run,
            connector_for(source_id, run["source_type"], run["connection"]),
            sink,
            heartbeat,
            versions,
            landed,
            commit,
        )
        with PartUploads() as uploads:
            result = download.resume(committed, resumed, part_max_records, budget, uploads)
    except Exception:
        # A delivery that fails gives its claim back, so that the message's next delivery
        # (after the retry backoff) need not wait for the claim to lapse.
        with db.transaction() as cur:
            adapters.release_claim(cur, execution_arn, claim.attempt)
        raise
    if result.get("more"):
        return result  # committed with its last checkpoint, which gave the claim back
    final = landed()
    with db.transaction() as cur:
        recorded = runs.mark_downloaded(cur, result, claim.attempt, warnings=download.warnings)
        if recorded is not None and recorded["download_attempt"] == claim.attempt:
            adapters.record_landed(cur, source_id, execution_arn, final)
    if recorded is None:
        raise LockLost(
            f"source {source_id!r}: the lock or the run changed hands during the download; "
            "its objects are not taken up"
        )
    return adapters.result_fields(recorded)


def _wait_or_stand_down(holder: Mapping[str, Any], claim: Claim) -> None:
    """A live claim another delivery holds: wait for it (retry later), or stand down."""
    until = isoformat(holder["download_claimed_until"])
    if holder["download_message_id"] == claim.message_id:
        raise TransientError(
            f"a previous delivery of this message claimed the download until {until}; "
            "retrying after it",
            error_name="DownloadInProgress",
        )
    if (holder["download_continuation"] or 0) < claim.continuation:
        raise TransientError(
            f"a delivery of an earlier Download task of this run holds the claim until {until};"
            " that task is over, so it stops at its next heartbeat: retrying after it",
            error_name="DownloadInProgress",
        )
    raise DuplicateDelivery(
        f"message {holder['download_message_id']} is downloading this run; "
        f"duplicate {claim.message_id} stands down"
    )


def _claim_or_lock_lost(cur: Any, execution_arn: str, claim: Claim) -> None:
    """A checkpoint that could not commit: another delivery took the claim over (this one was
    presumed dead), or the lock or the run changed hands."""
    if not adapters.holds_claim(cur, execution_arn, claim.attempt):
        raise DuplicateDelivery(
            f"another delivery took over the download of {execution_arn}; standing down"
        )
    raise LockLost(
        f"the lock or the run of {execution_arn} changed hands during the download; "
        "its part is not committed"
    )


@dataclass
class _Download:
    """One invocation's download of a run: its parts, its checkpoints, and its end (the
    manifest, or "more")."""

    request: Mapping[str, Any]
    run: Mapping[str, Any]
    connector: Connector
    sink: RawSink
    heartbeat: Heartbeat
    versions: VersionFilter | None
    # The versions landed since the last call, to list with a part (none if not remembered).
    landed: Callable[[], list[Any]]
    commit: Callable[..., None]
    warnings: list[str] | None = None

    def resume(
        self,
        committed: list[Checkpoint],
        resumed: Tally,
        part_max_records: int,
        budget: Budget,
        uploads: PartUploads,
    ) -> dict[str, Any]:
        """Stream the window into parts from the last checkpoint, committing each once it is
        uploaded (`uploads`, while the next part is read); then the manifest, or the progress
        so far with `more` when the budget ran out first."""
        # Every delivery says it is alive before it connects: the wait for an SQS redelivery
        # (retry backoff) must not count against the task's HeartbeatSeconds.
        self.heartbeat.first_beat()
        self.heartbeat.progress = DownloadProgress(resumed.records, resumed.bytes)
        progress = StreamProgress(
            self.connector,
            self.heartbeat,
            self.versions,
            resumed,
            [c.written for c in committed if c.written is not None],
        )
        position = committed[-1].position if committed else None
        window = window_from_plan(self.request["plan"])
        chunks = progress.track(window, position, part_max_records, budget.spent)
        sequence = len(committed)
        while True:
            part = Part(chunks, self.connector.resumable, part_max_records, budget)
            spooled = self._write(part, progress)
            end = part.end
            assert end is not None  # the part's lines were read to their end
            if end.last or end.position is None:
                # The end of the window (the manifest follows the upload), or of a part of a
                # source that cannot resume: nothing to commit.
                uploads.submit(spooled)
                if end.last:
                    break
                continue
            sequence += 1
            tally = progress.tally()
            written = spooled.written if spooled is not None else None
            checkpoint = Checkpoint(sequence, written, end.position, tally.to_json())
            uploads.submit(spooled, partial(self.commit, checkpoint, self.landed(), last=end.stop))
            if end.stop:
                uploads.wait()
                logger.info(
                    "download continues in a new task",
                    extra={"records": tally.records, "parts": len(progress.objects)},
                )
                return {**self._fields(tally, progress), "more": True}
        uploads.wait()
        return self._finish(progress)

    def _write(self, part: Part, progress: StreamProgress) -> SpooledPart | None:
        """The part's object, numbered in the run's order, compressed; None when it holds no
        record."""
        lines = iter(part)
        first = next(lines, None)
        if first is None:
            return None
        prefix = f"{self.request['source_id']}/{self.request['execution_name']}/"
        key = f"{prefix}part-{len(progress.objects):05d}.jsonl.gz"
        # Each part streams straight from the source into the sink: memory holds a page.
        spooled = self.sink.spool_part(key, chain([first], lines))
        progress.objects.append(spooled.written)
        self.heartbeat.progress.bytes += spooled.written.bytes
        return spooled

    def _finish(self, progress: StreamProgress) -> dict[str, Any]:
        """The end of the window: the manifest, naming every part of the run; the result."""
        tally = progress.tally()
        if tally.read and tally.without_key == tally.read:
            raise InvalidConnection(
                f"source {self.request['source_id']!r}: none of its {tally.read} records has "
                f"the field {self.connector.key_field!r} that identifies a record; fix the "
                "connection's key setting (key_field, or key_column for a table)"
            )
        malformed, counts = tally.malformed, tally.counts
        if malformed.count:
            logger.warning(
                "malformed rows not loaded",
                extra={"malformed_records": malformed.count, "examples": malformed.examples},
            )
        if counts.future_records:
            logger.warning(
                "records stamped in the future: landed once, not followed by the cursor",
                extra={"future_records": counts.future_records, "examples": counts.future_examples},
            )
        for warning in tally.warnings:
            logger.warning("download warning", extra={"warning": warning})
        self.warnings = tally.warnings
        # One last heartbeat before the manifest: a run cancelled meanwhile stops here, so no
        # manifest ever names the output of a cancelled run.
        self.heartbeat.beat()
        result = self._fields(tally, progress)
        plan, window = self.request["plan"], window_from_plan(self.request["plan"])
        self.sink.write_manifest(
            result["manifest_key"],
            {
                "source_id": result["source_id"],
                "execution_arn": result["execution_arn"],
                "execution_name": self.request["execution_name"],
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

    def _fields(self, tally: Tally, progress: StreamProgress) -> dict[str, Any]:
        """The download-result fields of the run so far."""
        prefix = f"{self.request['source_id']}/{self.request['execution_name']}/"
        return {
            "source_id": self.request["source_id"],
            "execution_arn": self.request["execution_arn"],
            "records": tally.records,
            "bytes": tally.bytes,
            "objects": len(progress.objects),
            "manifest_key": f"{prefix}manifest.json",
            "max_last_modified": isoformat(tally.newest) if tally.newest else None,
            "malformed_records": tally.malformed.count,
            "late_records": tally.counts.late_records,
            "duplicates_skipped": tally.counts.duplicates_skipped,
            "future_records": tally.counts.future_records,
        }


class PartUploads:
    """Uploads a run's parts and commits each after its upload, on a thread of its own, one
    part at a time: a part goes up while the next one is read and compressed. A failure (the
    bucket refusing, the claim or the lock lost at the commit) is raised by the next `submit` or
    `wait`; leaving the block waits for the part in flight."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-upload")
        self._pending: Future[None] | None = None

    def __enter__(self) -> PartUploads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.wait()
            elif self._pending is not None:
                # Failing already: the part in flight ends, whatever becomes of it.
                wait_for([self._pending])
        finally:
            self._thread.shutdown()

    def submit(self, spooled: SpooledPart | None, then: Callable[[], None] = lambda: None) -> None:
        """Upload `spooled` (None: nothing to upload), then call `then` (its commit), once the
        part before is up and committed."""
        try:
            self.wait()
        except BaseException:
            if spooled is not None:
                spooled.discard()
            raise
        self._pending = self._thread.submit(_upload_then, spooled, then)

    def wait(self) -> None:
        """Until the part in flight is up and committed; raises what stopped it."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


def _upload_then(spooled: SpooledPart | None, then: Callable[[], None]) -> None:
    if spooled is not None:
        spooled.upload()
    then()


def _version_filter(
    cur: Any,
    run: Mapping[str, Any],
    window: Window,
    resumed: Tally,
    own: set[Version],
) -> VersionFilter | None:
    """The run's version filter, as the run's last checkpoint left it (`resumed`, and the
    versions it listed, `own`): a Normal run skips what earlier runs landed in its window; the
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
        counts=resumed.counts,
        newest=resumed.newest,
        own=own,
    )


def lease_renewal(
    db: Database,
    source_id: str,
    execution_arn: str,
    lease: timedelta,
    claim: Claim,
    progress: DownloadProgress | None = None,
    slots: VendorSlots | None = None,
) -> bool:
    """Renew the source's lock, this delivery's claim and its vendor slots. False if the lock
    is lost; a claim taken over by another delivery (this one was presumed dead) stands this one
    down, and a slot taken over stops it (VendorSlotLost). Either way, and on a cancel, nothing
    is written: the lock is checked first, and raising rolls the transaction back."""
    with db.transaction() as cur:
        if not runs.renew_lock(cur, source_id, execution_arn, lease):
            return False
        if not adapters.renew_claim(cur, execution_arn, claim, progress):
            raise DuplicateDelivery(
                f"another delivery took over the download of {execution_arn}; standing down"
            )
        if slots is not None:
            slots.renew(cur)
        if cancelled := runs.cancellation(cur, execution_arn):
            raise cancelled
        return True
