"""The console shows values as the operator's command does (ops.output.cell): one way to read a
time or a duration, whichever a person looks at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console.app import when
from ops.output import cell


def test_the_console_shows_times_and_durations_as_the_operators_command_does() -> None:
    # The run page showed `0:10:00` and `… UTC` where `sourceflow runs show` says `10m` and `Z`
    moment = datetime(2026, 11, 28, 12, 0, 5, 250000, tzinfo=UTC)
    assert when(moment) == cell(moment) == "2026-11-28 12:00:05Z"
    assert when(timedelta(minutes=10)) == "10m"
    assert when("as it is") == "as it is"
