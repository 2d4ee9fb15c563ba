"""Vendors' concurrency limits (public.vendor_limit) and the slots downloads hold under them
(public.vendor_slot, migration 0017), held across workers in the database.

A download of a limited vendor reads only while it holds one of the vendor's slots: a row
leased to its execution and its delivery (the download attempt), taken with `FOR UPDATE SKIP
LOCKED` so that workers taking slots at once never wait on each other, renewed by each of the
delivery's heartbeats, and released when its reading ends or fails. A delivery that dies keeps
its slot only until the lease runs out (the download claim's time to live: both lapse
together). `VendorSlots` is one delivery's holder; the operator's reads and writes of the limits
are at the end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.errors import TransientError
from shared.store.db import Database, fetch_one

# How often a download waiting for a slot looks again, on average (each look is one short
# transaction; the pause is drawn from half to one and a half of this).
SLOT_POLL_SECONDS = 1.0


class VendorSlotsBusy(TransientError):
    """Every slot of the vendor stayed taken for as long as a download waits for one."""

    error_name = "VendorSlotsBusy"


class VendorSlotLost(TransientError):
    """A slot this delivery held was taken by another after its lease ran out (its heartbeats
    stalled): reading on would pass the vendor's limit."""

    error_name = "VendorSlotLost"


@dataclass(frozen=True)
class SlotHolder:
    """Who holds a slot: a run's execution, through one delivery's download attempt."""

    execution_arn: str
    attempt: str
    source_id: str


Slot = tuple[str, int]  # (host, slot number)


class VendorSlots:
    """One download delivery's slots: `hold(host)` around its reading, `renew(cur)` in each
    heartbeat's transaction, `release_all()` when the delivery ends however it ends."""

    def __init__(
        self,
        db: Database,
        holder: SlotHolder,
        *,
        ttl: timedelta,
        wait: Callable[[float], None],
        max_wait_seconds: float,
        random_draw: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db, self._holder, self._ttl = db, holder, ttl
        self._wait, self._max_wait = wait, max_wait_seconds
        self._random, self._monotonic = random_draw, monotonic
        self.held: set[Slot] = set()

    @contextmanager
    def hold(self, host: str) -> Iterator[None]:
        """One of `host`'s slots while the context is open (none needed when the host has no
        limit); waits for one (with `wait`, which heartbeats) up to the bound, then raises
        VendorSlotsBusy."""
        slot = self._take(host)
        try:
            yield
        finally:
            if slot is not None:
                self._release({slot})

    def renew(self, cur: Any) -> None:
        """Extend the lease of every slot held, inside the heartbeat's transaction."""
        if not self.held:
            return
        lost = self.held - renew_slots(cur, self._holder, self._ttl)
        if lost:
            hosts = ", ".join(sorted(f"{host} (slot {slot})" for host, slot in lost))
            raise VendorSlotLost(
                f"source {self._holder.source_id!r}: its slot at {hosts} was taken by another "
                "download after its lease ran out (heartbeats stalled); the download yields and "
                "its message is retried later"
            )

    def release_all(self) -> None:
        """Give back every slot still held (the delivery is over)."""
        if self.held:
            self._release(set(self.held))

    def _take(self, host: str) -> Slot | None:
        deadline = self._monotonic() + self._max_wait
        while True:
            with self._db.transaction() as cur:
                limit = max_concurrent(cur, host)
                if limit is None:
                    return None
                taken = take_slot(cur, host, limit, self._holder, self._ttl)
            if taken is not None:
                self.held.add((host, taken))
                return host, taken
            if self._monotonic() >= deadline:
                raise VendorSlotsBusy(
                    f"source {self._holder.source_id!r}: all {limit} slot(s) of vendor {host} "
                    f"(public.vendor_limit) stayed taken for {self._max_wait:,.0f} s "
                    "(VENDOR_SLOT_WAIT_SECONDS); the download yields and its message is retried "
                    "later. `sourceflow vendors list` shows who holds them"
                )
            self._wait(SLOT_POLL_SECONDS * (0.5 + self._random()))

    def _release(self, slots: set[Slot]) -> None:
        with self._db.transaction() as cur:
            release_slots(cur, self._holder, slots)
        self.held -= slots


# -- the slots' SQL ---------------------------------------------------------------------------


def max_concurrent(cur: Any, host: str) -> int | None:
    """The host's limit; None: not limited."""
    row = fetch_one(cur, "SELECT max_concurrent FROM public.vendor_limit WHERE host = %s", (host,))
    return None if row is None else int(row["max_concurrent"])


def take_slot(cur: Any, host: str, limit: int, holder: SlotHolder, ttl: timedelta) -> int | None:
    """Lease the lowest free slot of the host within `limit` to `holder`; its number, or None
    when every one is taken."""
    # The slots up to the limit exist (a raised limit adds its new ones here).
    cur.execute(
        """
        INSERT INTO public.vendor_slot (host, slot)
        SELECT %s, generate_series(1, %s)
        ON CONFLICT (host, slot) DO NOTHING
        """,
        (host, limit),
    )
    # A slot another transaction is taking right now is skipped, not waited for.
    row = fetch_one(
        cur,
        """
        UPDATE public.vendor_slot s
           SET execution_arn = %(arn)s, attempt = %(attempt)s, source_id = %(source)s,
               taken_at = now(), expires_at = now() + %(ttl)s
          FROM (SELECT host, slot FROM public.vendor_slot
                 WHERE host = %(host)s AND slot <= %(limit)s
                   AND (expires_at IS NULL OR expires_at < now())
                 ORDER BY slot LIMIT 1
                 FOR UPDATE SKIP LOCKED) free
         WHERE (s.host, s.slot) = (free.host, free.slot)
        RETURNING s.slot
        """,
        {
            "arn": holder.execution_arn,
            "attempt": holder.attempt,
            "source": holder.source_id,
            "ttl": ttl,
            "host": host,
            "limit": limit,
        },
    )
    return None if row is None else int(row["slot"])


def renew_slots(cur: Any, holder: SlotHolder, ttl: timedelta) -> set[Slot]:
    """Extend the leases of the slots `holder` still holds; returns them."""
    cur.execute(
        """
        UPDATE public.vendor_slot SET expires_at = now() + %s
         WHERE attempt = %s AND execution_arn = %s
        RETURNING host, slot
        """,
        (ttl, holder.attempt, holder.execution_arn),
    )
    return {(row["host"], int(row["slot"])) for row in cur.fetchall()}


def release_slots(cur: Any, holder: SlotHolder, slots: set[Slot]) -> None:
    """Free these slots if `holder` still holds them (one taken over is another's now)."""
    for host, slot in sorted(slots):
        cur.execute(
            """
            UPDATE public.vendor_slot
               SET execution_arn = NULL, attempt = NULL, source_id = NULL, taken_at = NULL,
                   expires_at = NULL
             WHERE host = %s AND slot = %s AND attempt = %s AND execution_arn = %s
            """,
            (host, slot, holder.attempt, holder.execution_arn),
        )


# -- the operator's ---------------------------------------------------------------------------


def vendor_limits(cur: Any) -> list[dict[str, Any]]:
    """Every limit, with the slots held now (live leases) and who holds them."""
    cur.execute(
        """
        SELECT l.host, l.max_concurrent, l.set_by, l.set_at,
               count(s.slot) AS slots_in_use,
               array_remove(array_agg(s.source_id ORDER BY s.slot), NULL) AS held_by
          FROM public.vendor_limit l
          LEFT JOIN public.vendor_slot s
                 ON s.host = l.host AND s.expires_at >= now()
         GROUP BY l.host
         ORDER BY l.host
        """
    )
    return [dict(row) for row in cur.fetchall()]


def set_vendor_limit(cur: Any, host: str, limit: int) -> dict[str, Any]:
    """Set (or change) the host's limit; returns the row, with who set it."""
    row = fetch_one(
        cur,
        """
        INSERT INTO public.vendor_limit (host, max_concurrent) VALUES (%s, %s)
        ON CONFLICT (host) DO UPDATE SET max_concurrent = EXCLUDED.max_concurrent
        RETURNING host, max_concurrent, set_by, set_at
        """,
        (host, limit),
    )
    assert row is not None  # an upsert returns its row
    return row


def remove_vendor_limit(cur: Any, host: str) -> bool:
    """The host is no longer limited; False when it was not."""
    cur.execute("DELETE FROM public.vendor_limit WHERE host = %s", (host,))
    return bool(cur.rowcount == 1)
