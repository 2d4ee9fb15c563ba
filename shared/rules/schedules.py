"""Schedules: EventBridge rule expressions (`rate(…)`, `cron(…)`) and per-source schedules.

A schedule is a series of due slots. A rate's slots are aligned to the Unix epoch (every
15 minutes means :00, :15, :30, :45), so every scheduler replica computes the same slot for the
same moment — that slot names the execution, which is what makes a duplicate tick harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A cron whose days never come (30 February) has no slot after this moment either; one that
# comes only on 29 February has one within eight years of any moment.
_SOME_MOMENT = datetime(2001, 1, 1, tzinfo=UTC)
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


class InvalidSchedule(ValueError):
    pass


@dataclass(frozen=True)
class Schedule:
    expression: str
    every: timedelta | None = None  # a rate
    cron: str | None = None  # a five-field cron, in UTC

    def previous_slot(self, now: datetime) -> datetime:
        """The newest due instant at or before `now`."""
        if self.every is not None:
            periods = (now - _EPOCH) // self.every
            return _EPOCH + periods * self.every
        assert self.cron is not None
        # croniter's get_prev is strictly before; a moment exactly on a slot is that slot.
        nudged = now.astimezone(UTC) + timedelta(microseconds=1)
        return croniter(self.cron, nudged).get_prev(datetime).astimezone(UTC)  # type: ignore[no-any-return]

    def next_slot(self, now: datetime) -> datetime:
        """The first due instant strictly after `now`."""
        if self.every is not None:
            return self.previous_slot(now) + self.every
        assert self.cron is not None
        return croniter(self.cron, now.astimezone(UTC)).get_next(datetime).astimezone(UTC)  # type: ignore[no-any-return]

    def period_at(self, moment: datetime) -> timedelta:
        """The length of the schedule period `moment` falls in: a rate's `every`; for a cron,
        the gap between the slots around it (a weekday cron's Friday period lasts until
        Monday)."""
        if self.every is not None:
            return self.every
        return self.next_slot(moment) - self.previous_slot(moment)


def parse_rule_expression(expression: str) -> Schedule:
    """An EventBridge schedule expression: `rate(5 minutes)` or `cron(0 12 * * ? *)`."""
    text = expression.strip()
    rate = _RATE.match(text)
    if rate:
        amount, unit = int(rate.group(1)), rate.group(2).removesuffix("s")
        if amount < 1:
            raise InvalidSchedule(f"{expression!r}: a rate must be at least 1 {unit}")
        return Schedule(text, every=timedelta(seconds=amount * _UNITS[unit]))
    if text.startswith("cron(") and text.endswith(")"):
        fields = text[5:-1].split()
        if len(fields) != 6:
            raise InvalidSchedule(
                f"{expression!r}: an EventBridge cron has six fields "
                "(minutes hours day-of-month month day-of-week year)"
            )
        minutes, hours, day, month, weekday, year = fields
        if year not in ("*", "?"):
            raise InvalidSchedule(f"{expression!r}: only '*' is supported in the year field")
        # EventBridge numbers weekdays 1-7 from Sunday; cron numbers them 0-6. Only day numbers
        # shift: not the n of "6#3" (third Friday) nor a "/" step.
        weekday = re.sub(r"(?<![#/\d])\d+", lambda m: str(int(m.group()) - 1), weekday)
        five = " ".join(f.replace("?", "*") for f in (minutes, hours, day, month, weekday))
        return Schedule(text, cron=_checked_cron(five, expression))
    raise InvalidSchedule(
        f"{expression!r} is not a schedule expression; expected rate(N minutes|hours|days) "
        "or cron(minutes hours day-of-month month day-of-week year)"
    )


def source_schedule(
    source_id: str, interval: timedelta | None, cron: str | None, *, kind: str = "source"
) -> Schedule | None:
    """A source's own schedule (or a workflow's, `kind`): `schedule_interval` or a five-field
    `schedule_cron` (UTC)."""
    if interval is not None and cron is not None:
        raise InvalidSchedule(f"{kind} {source_id!r} has both schedule_interval and schedule_cron")
    if interval is not None:
        if interval < timedelta(minutes=1):
            raise InvalidSchedule(
                f"{kind} {source_id!r}: schedule_interval {interval} is under a minute; give "
                "one of a minute or more"
            )
        return Schedule(f"every {interval}", every=interval)
    if cron is not None:
        return Schedule(cron, cron=_checked_cron(cron, f"{kind} {source_id!r} schedule_cron"))
    return None


def due_slot(
    schedule: Schedule | None, last_slot: datetime | None, now: datetime
) -> datetime | None:
    """The slot a scheduled thing (a source, a workflow) is due a run for at `now`, or None:
    the newest slot at or before now, unless a run was already started for it."""
    if schedule is None:
        return None
    slot = schedule.previous_slot(now)
    return slot if last_slot is None or last_slot < slot else None


def _checked_cron(five_fields: str, what: str) -> str:
    if len(five_fields.split()) != 5 or not croniter.is_valid(five_fields):
        raise InvalidSchedule(
            f"{what}: {five_fields!r} is not a valid five-field cron "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'"
        )
    try:
        croniter(five_fields, _SOME_MOMENT).get_next(datetime)
    except CroniterBadDateError:
        # Without this check, the slot of such a source fails every scheduler tick.
        raise InvalidSchedule(
            f"{what}: {five_fields!r} never comes (no such day in any month); fix the "
            "day-of-month or month field"
        ) from None
    return five_fields
