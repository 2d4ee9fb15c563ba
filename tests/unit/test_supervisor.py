"""When `sourceflow up` starts a dead worker again (local/supervisor.py), and the line it logs."""

from __future__ import annotations

import signal

from local.supervisor import RestartPolicy, Restarts
from ops.logs import parse_lines

POLICY = RestartPolicy(first_delay_seconds=1.0, max_delay_seconds=8.0, healthy_after_seconds=60.0)


def test_each_death_in_a_row_doubles_the_wait_up_to_the_cap() -> None:
    restarts = Restarts(POLICY)
    delays = []
    for _ in range(6):
        delays.append(
            restarts.died("download-0", status=1, lived_seconds=2, now=0).restart_in_seconds
        )
        assert restarts.due(100) == ["download-0"]
    assert delays == [1, 2, 4, 8, 8, 8]


def test_a_worker_that_lived_long_enough_starts_again_quickly() -> None:
    restarts = Restarts(POLICY)
    for _ in range(3):
        restarts.died("download-0", status=1, lived_seconds=2, now=0)
    death = restarts.died("download-0", status=-9, lived_seconds=61, now=0)
    assert (death.deaths_in_a_row, death.restart_in_seconds) == (1, 1.0)


def test_a_restart_is_due_only_once_its_wait_is_over_and_not_after_a_stop_on_purpose() -> None:
    restarts = Restarts(POLICY)
    restarts.died("download-0", status=1, lived_seconds=2, now=10.0)
    restarts.died("unlocking-1", status=1, lived_seconds=2, now=10.0)
    assert restarts.waiting("download-0")
    assert restarts.due(10.5) == []
    restarts.forget("unlocking-1")
    assert restarts.due(11.0) == ["download-0"]
    assert not restarts.waiting("download-0") and restarts.due(99) == []
    # each worker is counted on its own
    assert restarts.died("download-1", status=1, lived_seconds=2, now=0).deaths_in_a_row == 1


def test_a_death_is_said_by_its_signal_or_status_and_logged_as_the_logs_command_reads() -> None:
    restarts = Restarts(POLICY)
    killed = restarts.died("download-0", status=-signal.SIGKILL, lived_seconds=42.4, now=0)
    assert killed.text() == (
        "worker download-0 was killed by SIGKILL after 42s; starting it again in 1s "
        "(death 1 in a row)"
    )
    exited = restarts.died("download-0", status=70, lived_seconds=1, now=0)
    assert "download-0 exited with status 70" in exited.text()

    [line] = parse_lines([killed.log_line("download")], service="download", origin="download-0")
    assert (line.level, line.message) == ("ERROR", killed.text())
    assert line.fields["exit_status"] == -signal.SIGKILL
