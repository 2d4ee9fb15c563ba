"""shared.store.vendor_limits on a real PostgreSQL: a vendor's slots are leases held across
workers — taken without waiting on each other, fenced by the delivery that took them, renewed by
its heartbeats, freed by a crash's expiry — and a limit is a person's to set; and download's
deliveries hold them (services.download.service.download_delivery)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from local.roles import create_roles
from ops.vendors import NotLimited, set_limit, unset_limit, vendors_list
from services.download.adapters import WrittenObject
from services.download.service import download_delivery
from shared.connectors.base import Lines, Position, Waiting, no_waiting
from shared.errors import TransientError
from shared.rules.flows import Window
from shared.runtime.deliveries import Delivery
from shared.store import vendor_limits
from shared.store.db import Database
from shared.store.vendor_limits import (
    SlotHolder,
    VendorSlotLost,
    VendorSlots,
    VendorSlotsBusy,
    release_slots,
    renew_slots,
    take_slot,
)
from tests.builders import records_modified
from tests.fakes import FakeConnector, FakeSink
from tests.integration.conftest import (
    CURSOR,
    RESPECS_TABLES,
    MakeSource,
    NewExecution,
    validate,
)

MINUTE = timedelta(minutes=1)


@pytest.fixture
def host(db: Database, people: dict[str, Database]) -> Iterator[str]:
    """A vendor of the test's own, limited to 2 at once by a person."""
    name = f"vendor-{uuid.uuid4().hex[:12]}.example"
    with people["it_alice"].transaction() as cur:
        vendor_limits.set_vendor_limit(cur, name, 2)
    yield name
    with people["it_alice"].transaction() as cur:
        vendor_limits.remove_vendor_limit(cur, name)


def a_holder(name: str = "") -> SlotHolder:
    execution = f"arn:aws:states:eu-west-1:000000000000:execution:sourceflow-local-run:{name}"
    return SlotHolder(execution + uuid.uuid4().hex[:8], uuid.uuid4().hex, f"src-{name or 'x'}")


def take(db: Database, host: str, holder: SlotHolder, ttl: timedelta = MINUTE) -> int | None:
    with db.transaction() as cur:
        limit = vendor_limits.max_concurrent(cur, host)
        assert limit is not None
        return take_slot(cur, host, limit, holder, ttl)


def slots_of(db: Database, host: str) -> list[dict[str, Any]]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT slot, attempt, source_id, expires_at > now() AS live"
            " FROM public.vendor_slot WHERE host = %s ORDER BY slot",
            (host,),
        )
        return [dict(row) for row in cur.fetchall()]


# -- leases -----------------------------------------------------------------------------------


def test_no_more_holders_than_the_limit_and_a_released_slot_is_taken_again(
    db: Database, host: str
) -> None:
    first, second, third = a_holder("a"), a_holder("b"), a_holder("c")
    assert (take(db, host, first), take(db, host, second)) == (1, 2)
    assert take(db, host, third) is None
    with db.transaction() as cur:
        release_slots(cur, first, {(host, 1)})
    assert take(db, host, third) == 1
    assert [row["attempt"] for row in slots_of(db, host)] == [third.attempt, second.attempt]


def test_only_the_delivery_that_took_a_slot_renews_or_releases_it(db: Database, host: str) -> None:
    holder = a_holder("a")
    assert take(db, host, holder) == 1
    # Another delivery of the same execution (a fence on the attempt), and another execution
    imposters = [
        SlotHolder(holder.execution_arn, uuid.uuid4().hex, holder.source_id),
        SlotHolder(a_holder().execution_arn, holder.attempt, holder.source_id),
    ]
    with db.transaction() as cur:
        for imposter in imposters:
            assert renew_slots(cur, imposter, MINUTE) == set()
            release_slots(cur, imposter, {(host, 1)})
        assert renew_slots(cur, holder, MINUTE) == {(host, 1)}
    assert slots_of(db, host)[0]["attempt"] == holder.attempt


def test_a_crashed_holders_slot_expires_and_its_late_renewal_stops_it(
    db: Database, host: str
) -> None:
    # Given both slots held, one by a delivery whose heartbeats stopped (its lease is short)
    crashed = VendorSlots(
        db,
        a_holder("crashed"),
        ttl=timedelta(milliseconds=200),
        wait=time.sleep,
        max_wait_seconds=0,
    )
    with crashed.hold(host):
        assert take(db, host, a_holder("b")) == 2
        # When its lease runs out, Then another takes its slot
        time.sleep(0.4)
        late = a_holder("late")
        assert take(db, host, late) == 1
        # And the crashed one, heartbeating again, learns it lost the slot: it must stop
        lost = rf"slot at {host} \(slot 1\) was taken"
        with pytest.raises(VendorSlotLost, match=lost) as caught, db.transaction() as cur:
            crashed.renew(cur)
        assert caught.value.error_name == "VendorSlotLost"
    # And leaving it frees nothing of the new holder's
    assert slots_of(db, host)[0]["attempt"] == late.attempt


def test_workers_taking_slots_at_once_each_get_their_own_and_never_pass_the_limit(
    migrated_url: str, host: str
) -> None:
    # Given twelve workers, each with its own connection, taking a slot at the same moment
    start, taken, errors = threading.Barrier(12), [], []

    def worker() -> None:
        own = Database(migrated_url, application_name="it-vendor-slots")
        try:
            start.wait()
            taken.append(take(own, host, a_holder()))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then exactly two got a slot, each its own, and the others none, at once
    assert errors == []
    assert sorted(slot for slot in taken if slot is not None) == [1, 2]
    assert taken.count(None) == 10


def test_a_lowered_limit_leaves_held_slots_to_their_holders_and_a_raised_one_adds_slots(
    db: Database, host: str, people: dict[str, Database]
) -> None:
    first, second = a_holder("a"), a_holder("b")
    assert (take(db, host, first), take(db, host, second)) == (1, 2)
    with people["it_bob"].transaction() as cur:
        vendor_limits.set_vendor_limit(cur, host, 1)
    with db.transaction() as cur:
        release_slots(cur, first, {(host, 1)})
        # slot 2 is still the second holder's, and above the limit: nobody takes it again
        assert renew_slots(cur, second, MINUTE) == {(host, 2)}
        release_slots(cur, second, {(host, 2)})
    third, fourth = a_holder("c"), a_holder("d")
    assert (take(db, host, third), take(db, host, fourth)) == (1, None)
    with people["it_bob"].transaction() as cur:
        vendor_limits.set_vendor_limit(cur, host, 4)
    assert take(db, host, fourth) == 2
    assert [row["slot"] for row in slots_of(db, host)] == [1, 2, 3, 4]


# -- one delivery's holder --------------------------------------------------------------------


def test_a_download_waits_for_a_slot_heartbeating_and_takes_the_first_freed(
    db: Database, host: str
) -> None:
    # Given both slots held
    busy = [a_holder("a"), a_holder("b")]
    for holder in busy:
        take(db, host, holder)
    waits: list[float] = []

    def wait(seconds: float) -> None:  # a heartbeat's wait; the first frees a slot meanwhile
        waits.append(seconds)
        if len(waits) == 3:
            with db.transaction() as cur:
                release_slots(cur, busy[1], {(host, 2)})

    # When a download asks for one, Then it waits (heartbeating) until one is freed, and takes it
    slots = VendorSlots(db, a_holder("waiting"), ttl=MINUTE, wait=wait, max_wait_seconds=600)
    with slots.hold(host):
        assert slots.held == {(host, 2)}
        assert len(waits) == 3 and all(0.5 <= pause <= 1.5 for pause in waits)
    # And gives it back when it is done
    assert slots.held == set()
    assert slots_of(db, host)[1]["attempt"] is None


def test_a_download_that_waits_past_the_bound_yields_by_name(db: Database, host: str) -> None:
    for holder in (a_holder("a"), a_holder("b")):
        take(db, host, holder)
    slots = VendorSlots(db, a_holder("late"), ttl=MINUTE, wait=time.sleep, max_wait_seconds=0.5)
    busy = rf"all 2 slot\(s\) of vendor {host}"
    with pytest.raises(VendorSlotsBusy, match=busy) as caught, slots.hold(host):
        pytest.fail("no slot was free")
    assert "(VENDOR_SLOT_WAIT_SECONDS)" in str(caught.value)
    assert caught.value.error_name == "VendorSlotsBusy"


def test_a_vendor_without_a_limit_needs_no_slot(db: Database) -> None:
    host = f"free-{uuid.uuid4().hex[:8]}.example"
    slots = VendorSlots(db, a_holder(), ttl=MINUTE, wait=time.sleep, max_wait_seconds=0)
    with slots.hold(host):
        assert slots.held == set()
    assert slots_of(db, host) == []


def test_the_download_role_takes_renews_and_releases_slots(migrated_url: str, host: str) -> None:
    download = Database(create_roles(migrated_url, RESPECS_TABLES)["download"])
    try:
        slots = VendorSlots(download, a_holder(), ttl=MINUTE, wait=time.sleep, max_wait_seconds=0)
        with slots.hold(host), download.transaction() as cur:
            slots.renew(cur)
        assert slots.held == set()
    finally:
        download.close()


# -- a person sets the limit ------------------------------------------------------------------


def test_a_limit_records_the_login_that_set_it(
    db: Database, host: str, people: dict[str, Database]
) -> None:
    with people["it_carol"].transaction() as cur:
        row = vendor_limits.set_vendor_limit(cur, host, 3)
    assert (row["host"], row["max_concurrent"], row["set_by"]) == (host, 3, "it_carol")
    take(db, host, a_holder("a"))
    with db.transaction() as cur:
        [listed] = [row for row in vendor_limits.vendor_limits(cur) if row["host"] == host]
    assert (listed["max_concurrent"], listed["slots_in_use"], listed["held_by"]) == (
        3,
        1,
        ["src-a"],
    )


def test_the_operators_list_shows_each_vendor_its_sources_and_its_limit(
    db: Database, people: dict[str, Database], make_source: MakeSource
) -> None:
    # Given a source reaching vendor.invalid (every source of this tier does), and a limit on it
    make_source()
    host = f"Vendor-{uuid.uuid4().hex[:8]}.example"
    with pytest.raises(NotLimited, match=r"has no limit; `sourceflow vendors list`"):
        unset_limit(people["it_bob"], host)
    limit = set_limit(people["it_bob"], f"https://{host}:443/api", 5)
    assert (limit["host"], limit["set_by"], limit["sources"]) == (host.lower(), "it_bob", 0)

    # When the operator lists the vendors
    listed = {row["host"]: row for row in vendors_list(people["it_alice"])}

    # Then each vendor shows its sources, its limit and who set it
    assert listed["vendor.invalid"]["sources"] >= 1
    assert listed["vendor.invalid"]["max_concurrent"] is None
    assert {k: listed[host.lower()][k] for k in ("sources", "max_concurrent", "set_by")} == {
        "sources": 0,
        "max_concurrent": 5,
        "set_by": "it_bob",
    }
    assert unset_limit(people["it_alice"], host) == host.lower()


# -- download's deliveries hold them ----------------------------------------------------------


@dataclass
class SlotReader(FakeConnector):
    """A vendor's connector: reads its records while it holds the vendor's slot, and notes the
    vendor's slots (read through `db`) as each record is read."""

    host: str = ""
    db: Database | None = None
    seen: list[list[dict[str, Any]]] = field(default_factory=list)

    def records(
        self, window: Window, resume: Position | None = None, *, waiting: Waiting = no_waiting
    ) -> Iterator[dict[str, Any] | None]:
        assert self.db is not None
        with self.pacing.slot(self.host):
            for record in super().records(window, resume):
                self.seen.append(slots_of(self.db, self.host))
                yield record


class FullDisk(FakeSink):
    """A sink that fails in the middle of a part: the connector's reading is left suspended."""

    def write_part(self, key: str, chunks: Iterable[tuple[Lines, int]]) -> WrittenObject:
        next(iter(chunks))
        raise TransientError(f"cannot write s3://raw/{key}: the disk is full")


def deliver(db: Database, request: Mapping[str, Any], reader: SlotReader, sink: FakeSink) -> Any:
    """One delivery of the run's download-request, heartbeating on every record."""
    return download_delivery(
        request,
        Delivery(message_id="message-1", receive_count=1, keep_hidden=lambda _: None),
        db=db,
        connector_for=reader.factory(),
        sink=sink,
        send_heartbeat=lambda _: None,
        lease=timedelta(hours=1),
        claim_seconds=45,
        heartbeat_seconds=0.001,
        part_max_records=1000,
    )


def a_validated_run(
    db: Database, make_source: MakeSource, new_execution: NewExecution
) -> tuple[Any, dict[str, Any]]:
    execution = new_execution(make_source(cursor=CURSOR))
    return execution, execution.download(validate(db, execution)["plan"])


RECORDS = records_modified(*(CURSOR + timedelta(minutes=minute) for minute in (1, 2, 3)))


def test_a_delivery_reads_holding_its_slot_renewed_by_its_heartbeats_then_gives_it_back(
    db: Database, host: str, make_source: MakeSource, new_execution: NewExecution, sink: FakeSink
) -> None:
    # Given a validated run of a limited vendor's source
    execution, request = a_validated_run(db, make_source, new_execution)
    reader = SlotReader(RECORDS, host=host, db=db)

    # When one delivery downloads it
    result = deliver(db, request, reader, sink)

    # Then it read holding a slot in its execution's name, its lease renewed by the heartbeats
    assert result["records"] == 3
    held = [seen[0] for seen in reader.seen]
    assert {(row["source_id"], row["live"]) for row in held} == {(execution.source_id, True)}
    assert len({row["attempt"] for row in held}) == 1
    # And the slot is free again
    assert slots_of(db, host)[0]["attempt"] is None


def test_a_delivery_that_fails_while_its_reading_is_suspended_gives_its_slot_back(
    db: Database, host: str, make_source: MakeSource, new_execution: NewExecution
) -> None:
    # Given a delivery whose sink fails in the middle of a part, the reading left mid-stream
    execution, request = a_validated_run(db, make_source, new_execution)
    reader = SlotReader(RECORDS, host=host, db=db)
    with pytest.raises(TransientError, match="the disk is full"):
        deliver(db, request, reader, FullDisk())
    # Then it held the slot, and gave it back when the delivery ended
    assert reader.seen[0][0]["source_id"] == execution.source_id
    assert all(row["attempt"] is None for row in slots_of(db, host))
