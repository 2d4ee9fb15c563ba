"""The embedded stack: PostgreSQL, the moto server with execution on, every queue, the bus and
the state machine from the cloud's definitions, one worker per service, and the demo vendor.

Everything runs under one supervisor process; `LocalStack` starts it all and stops it all, and
`supervise` starts a dead worker again (local/supervisor.py). It writes `<state dir>/local.env`
(shell assignments: `set -a; . local.env`) so that other tools and tests can reach it. What a
restart on the same state directory keeps (addresses, drops, secrets) is local/restart.py's.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import requests

from infra.migrate import apply_migrations
from infra.resources import SERVICES, Names
from local.iam import Decisions, LocalResources, enforce, grant_least_privilege
from local.partner import PartnerSources, create_partner_sources
from local.pg import create_warehouse_tables, require_passwords
from local.provision import BATCH_SIZE, Provisioned, function_timeouts, provision
from local.restart import (
    PARTNER_PASSWORD_FILE,
    EmulatorState,
    end_runs_lost_with_emulator,
    kept_password,
    kept_port,
)
from local.roles import (
    DEMO_PEOPLE,
    WAREHOUSE_TARGET,
    create_people,
    create_roles,
    create_warehouse_login,
)
from local.supervisor import Restarts
from local.ticker import Ticker
from local.vendor.records import DEFAULT_DATASET_SPECS
from ops.config import LOGS_DIR_VARIABLE, write_env_file
from ops.logs import service_of_worker
from shared.errors import SourceflowError
from shared.rules.workflows import SQL_TARGETS_VARIABLE
from shared.runtime.catalogue import Timeouts
from shared.runtime.secrets import connection_secrets_prefix

log = logging.getLogger("sourceflow.stack")
REGION = "us-east-1"
# The emulator accepts any credentials; these keep boto3 from looking for real ones. Under
# least privilege they are the operator's, who may do everything (local/moto_iam.py).
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
LOCAL_TIMEOUTS = Timeouts(
    validate_seconds=120,
    download_seconds=600,
    # Counted from when the Download task sends its message, so it includes the wait in the
    # queue before a worker picks it up and heartbeats. The scheduler admits no more runs at once
    # than there are download workers (shared/rules/admission.py), so that wait is a poll's;
    # runs started around the scheduler (the demo, tests) may still queue. As in the cloud.
    download_heartbeat_seconds=120,
    unlock_seconds=120,
    max_receive_count=4,
    retry_backoff_seconds=0.5,
    heartbeat_interval_seconds=2.0,
    lock_lease_seconds=300,
    # A worker runs a batch of ten one after the other, and nothing cuts it off (the function
    # timeout is only what its Lambda context says): the visibility leaves a loaded machine
    # time for a whole batch, and every delivery the queue allows still fits inside the task's
    # timeout (84 s of 120; Timeouts.delivery_problems).
    validation_function_seconds=20,
    validation_visibility_seconds=20,
    unlocking_function_seconds=20,
    unlocking_visibility_seconds=20,
    # A download's invocation is cut off at this, as Lambda's is (local/worker.py), and stops to
    # be continued 30 s before it: longer than any one test's delivery (a page that hangs 55 s,
    # tests/e2e/test_task_timeout.py), so only the tests that set their own meet it.
    download_function_seconds=120,
    download_stop_margin_seconds=30,
)
DEFAULT_DATASETS = DEFAULT_DATASET_SPECS
LOCAL_RESPECS_TABLES = frozenset({"public.listing_attributes"})


class StackError(SourceflowError):
    """A part of the stack did not start, or stopped; the message names it and its log."""


@dataclass
class StackOptions:
    state_dir: Path
    database_url: str | None = None
    workers_per_service: int = 2
    timeouts: Timeouts = LOCAL_TIMEOUTS
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    stage: str = "local"
    # Fire the schedule rules on their expressions (tests fire them on demand instead).
    ticker: bool = True
    # Re-specs queries wait for a second person's approval (validation's RESPECS_APPROVAL_REQUIRED).
    approval_gate: bool = True
    # IAM enforced as in the cloud (local/iam.py): each service's workers sign as a user holding
    # its template's policy, the state machine's calls are checked against its role's; the
    # operator (local.env's key) may do everything. Every decision goes to `decisions_file`.
    least_privilege: bool = False


@dataclass
class LocalStack:
    options: StackOptions
    env: dict[str, str] = field(default_factory=dict)
    provisioned: Provisioned | None = None
    partner: PartnerSources | None = None
    _named: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # Each process's log, its command and environment (to start a dead worker again), and when
    # it started (time.monotonic).
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)
    _commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)
    restarts: Restarts = field(default_factory=Restarts)
    # Set once the emulator holds what the last stop saved: only then may stopping save it again.
    _emulator_restored: bool = False
    _pg: Any = None
    _ticker: Ticker | None = None
    _service_urls: dict[str, str] = field(default_factory=dict)
    _warehouse_url: str = ""
    people: dict[str, Path] = field(default_factory=dict)
    _redeployed: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each service's own credentials, when IAM is enforced (StackOptions.least_privilege).
    _service_credentials: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def env_file(self) -> Path:
        return self.options.state_dir / "local.env"

    @property
    def people_dir(self) -> Path:
        """Each person's credentials file, `<name>.env`: SOURCEFLOW_CREDENTIALS names one."""
        return self.options.state_dir / "people"

    @property
    def logs_dir(self) -> Path:
        return self.options.state_dir / "logs"

    @property
    def decisions(self) -> Decisions:
        """The enforcing moto server's authorization decisions (StackOptions.least_privilege)."""
        return Decisions(self.options.state_dir / "iam-decisions.jsonl")

    @property
    def iam_resources(self) -> LocalResources:
        """The stack's resources by the names the templates' policies give them."""
        if self.partner is None:
            raise StackError("the stack has not started: it has no resources yet")
        return LocalResources(Names(self.options.stage), self.partner.drops_bucket)

    def start(self) -> dict[str, str]:
        state_dir = self.options.state_dir
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            # First: a kept port in use most likely means another `up` on this state directory,
            # whose database, runs and local.env must not be touched.
            ports = {part: kept_port(state_dir, part) for part in ("moto", "vendor")}
            self.env_file.unlink(missing_ok=True)  # a stack killed before it could remove it
            database_url = self._start_database()
            apply_migrations(database_url)
            if self._pg is not None:  # its own database: every open run's execution is gone
                end_runs_lost_with_emulator(database_url)
            create_warehouse_tables(database_url)
            self._service_urls = create_roles(database_url, LOCAL_RESPECS_TABLES)
            self._warehouse_url = create_warehouse_login(database_url)
            self.people = create_people(database_url, DEMO_PEOPLE, self.people_dir)
            endpoint = self._start_moto(ports["moto"])
            vendor_url = self._start_vendor(ports["vendor"])
            aws_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION}
            clients = _clients({**aws_env, **LOCAL_CREDENTIALS})
            names = Names(self.options.stage)
            self.provisioned = provision(clients, names, self.options.timeouts)
            self.partner = create_partner_sources(
                database_url,
                clients,
                names,
                kept_password(state_dir / PARTNER_PASSWORD_FILE),
            )
            EmulatorState.of(state_dir).restore(clients.s3, clients.secretsmanager)
            self._emulator_restored = True
            if self.options.least_privilege:
                iam = aws_client({**aws_env, **LOCAL_CREDENTIALS}, "iam")
                self._service_credentials = grant_least_privilege(iam, self.iam_resources)
                enforce(endpoint)
            self.env = {
                "SOURCEFLOW_STAGE": self.options.stage,
                "CONNECTION_SECRETS_PREFIX": connection_secrets_prefix(self.options.stage),
                # The vendor and the partner database are on this machine: only here may
                # sources reach loopback (shared.connectors.endpoints; the cloud's functions
                # never have it). The workers read it, and the operator's command checks new
                # connections by the same rule.
                "ALLOW_LOOPBACK_SOURCES": "true",
                "DATABASE_URL": database_url,
                **aws_env,
                **LOCAL_CREDENTIALS,
                "STATE_MACHINE_ARN": self.provisioned.state_machine_arn,
                "RAW_BUCKET": self.provisioned.raw_bucket,
                "VENDOR_URL": vendor_url,
                "EVENT_BUS_NAME": self.provisioned.event_bus,
                "RESPECS_ALLOWED_TABLES": ",".join(sorted(LOCAL_RESPECS_TABLES)),
                "NOTIFICATIONS_QUEUE_URL": self.provisioned.notifications_queue_url,
                "ALERTS_QUEUE_URL": self.provisioned.alerts_queue_url,
                "ALERTS_TOPIC_ARN": self.provisioned.alerts_topic_arn,
                "NOTIFICATIONS_TOPIC_ARN": self.provisioned.notifications_topic_arn,
                # A workflow's sql tasks reach the demo warehouse, and nothing else.
                SQL_TARGETS_VARIABLE: json.dumps({WAREHOUSE_TARGET: self._warehouse_url}),
                **{f"{s.upper()}_QUEUE_URL": url for s, url in self.provisioned.queue_urls.items()},
                **{f"{s.upper()}_DLQ_URL": url for s, url in self.provisioned.dlq_urls.items()},
                **self.partner.env(),
                LOGS_DIR_VARIABLE: str(self.logs_dir.resolve()),
            }
            self._start_workers()
            if self.options.ticker:
                self._ticker = Ticker(clients.events, clients.sqs, names.prefix)
                self._ticker.start()
        except BaseException:
            self.stop()
            raise
        write_env_file(self.env_file, self.env)
        return self.env

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        self._save_emulator_state()
        # Workers first, the vendor and moto last. A worker replaced (redeploy, kill_workers)
        # was waited for when it stopped; only the process that took its name is left here.
        children = list(reversed(self._named.values()))
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        self._named.clear()
        for log_file in self._logs.values():
            log_file.close()
        self._logs.clear()
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
        if self.env:  # this stack's settings, not those of another on the same state directory
            self.env_file.unlink(missing_ok=True)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the parts ------------------------------------------------------------------------

    def _start_database(self) -> str:
        if self.options.database_url:
            return self.options.database_url
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
            warnings.simplefilter("ignore")
            import pgserver  # only the embedded stack needs it

            self._pg = pgserver.get_server(self.options.state_dir / "pgdata", cleanup_mode="stop")
        return require_passwords(self._pg, self.options.state_dir)

    def _save_emulator_state(self) -> None:
        """What people put into the emulator, for the next start (local/restart.py)."""
        if not self._emulator_restored or self.provisioned is None:
            return  # the emulator never held all of it: the last save stays
        self._emulator_restored = False
        clients = _clients({**self.env, **LOCAL_CREDENTIALS})
        try:
            EmulatorState.of(self.options.state_dir).save(
                clients.s3, clients.secretsmanager, raw_bucket=self.provisioned.raw_bucket
            )
        except Exception as exc:  # the stack still stops; the last save stays
            log.warning("could not save the emulator's buckets and secrets: %s", exc)

    def _start_moto(self, port: int) -> str:
        endpoint = f"http://127.0.0.1:{port}"
        server = ["-m", "moto.server"]
        if self.options.least_privilege:  # moto's server, bridged and recording decisions
            server = ["-m", "local.moto_iam", str(self.decisions.path)]
        # MOTO_PORT tells moto's state-machine interpreter where to call SQS and EventBridge.
        self._spawn(
            "moto",
            [sys.executable, *server, "-H", "127.0.0.1", "-p", str(port)],
            {"MOTO_PORT": str(port)},
        )
        _wait_for(lambda: requests.get(f"{endpoint}/moto-api/", timeout=1).ok, "moto server")
        requests.post(
            f"{endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}},
            timeout=5,
        ).raise_for_status()
        return endpoint

    def _start_vendor(self, port: int) -> str:
        url = f"http://127.0.0.1:{port}"
        datasets = [arg for spec in self.options.datasets for arg in ("--dataset", spec)]
        self._spawn(
            "vendor",
            [sys.executable, "-m", "local.vendor", "--port", str(port), *datasets],
            {},
        )
        _wait_for(lambda: requests.get(f"{url}/health", timeout=1).ok, "demo vendor API")
        return url

    def _start_workers(self) -> None:
        for service in SERVICES:
            self.start_workers(service)

    def start_workers(self, service: str) -> None:
        """The service's worker processes (one Lambda container each)."""
        timeouts = self.options.timeouts
        assert self.provisioned is not None
        env = {
            **self.env,
            "DATABASE_URL": self._service_urls[service],
            "SOURCEFLOW_QUEUE_URL": self.provisioned.queue_urls[service],
            "SOURCEFLOW_BATCH_SIZE": str(BATCH_SIZE[service]),
            "SOURCEFLOW_FUNCTION_TIMEOUT": str(function_timeouts(timeouts)[service]),
            **timeouts_environment(timeouts),
            **admission_environment(self.options.workers_per_service),
            "RESPECS_APPROVAL_REQUIRED": str(self.options.approval_gate).lower(),
            "POWERTOOLS_SERVICE_NAME": f"sourceflow-{service}",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            **self._redeployed.get(service, {}),
            **self._service_credentials.get(service, {}),
        }
        for index in range(self.options.workers_per_service):
            self._spawn(f"{service}-{index}", [sys.executable, "-m", "local.worker", service], env)

    def redeploy(self, service: str, settings: dict[str, str]) -> None:
        """Replace the service's workers with ones whose environment has `settings` changed,
        as deploying the service with new settings would; they finish their batch first."""
        self._redeployed[service] = {**self._redeployed.get(service, {}), **settings}
        self._stop_workers(service, kill=False)
        self.start_workers(service)

    def kill_workers(self, service: str) -> None:
        """SIGKILL the service's workers mid-work, as a crashed container would die; nothing
        starts them again until `start_workers` (a test decides when)."""
        self._stop_workers(service, kill=True)

    def _stop_workers(self, service: str, *, kill: bool) -> None:
        for name in [name for name in self._named if service_of_worker(name) == service]:
            child = self._named.pop(name)
            self.restarts.forget(name)
            if child.poll() is None:
                if kill:
                    child.kill()
                else:
                    child.terminate()  # the worker finishes its batch, then exits
                child.wait(timeout=30)

    def supervise(self) -> list[str]:
        """Start again each worker that died (not stopped on purpose) once its restart is due,
        as Lambda replaces a dead container; returns what happened, one line each. A dead moto
        server or vendor cannot be replaced (the emulator's state went with it): StackError."""
        now = time.monotonic()
        said = []
        for name, child in self._named.items():
            status = child.poll()
            if status is None or self.restarts.waiting(name):
                continue
            service = service_of_worker(name)
            if service is None:
                raise StackError(
                    f"the {name} exited with status {status}; see {self.logs_dir / name}.log. "
                    "The stack stops: start it again with `sourceflow up`"
                )
            death = self.restarts.died(
                name, status=status, lived_seconds=now - self._started_at[name], now=now
            )
            log_file = self._logs[name]
            log_file.write(death.log_line(service).encode() + b"\n")
            log_file.flush()
            said.append(death.text())
        for name in self.restarts.due(now):
            argv, extra_env = self._commands[name]
            self._spawn(name, argv, extra_env)
            said.append(f"worker {name} started again (pid {self._named[name].pid})")
        return said

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> None:
        if name in self._logs:
            self._logs.pop(name).close()
        log_file = (self.logs_dir / f"{name}.log").open("ab")
        self._logs[name] = log_file
        child = subprocess.Popen(
            argv,
            env={**os.environ, **extra_env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self._named[name] = child
        self._commands[name] = (argv, extra_env)
        self._started_at[name] = time.monotonic()


def timeouts_environment(timeouts: Timeouts) -> dict[str, str]:
    """The environment variables through which the services read `timeouts` (their settings.py;
    tests/unit/test_templates.py proves they read them back)."""
    return {
        "MAX_RECEIVE_COUNT": str(timeouts.max_receive_count),
        "RETRY_BACKOFF_SECONDS": str(timeouts.retry_backoff_seconds),
        "LOCK_LEASE_SECONDS": str(timeouts.lock_lease_seconds),
        "HEARTBEAT_SECONDS": str(timeouts.heartbeat_interval_seconds),
        "DOWNLOAD_CLAIM_SECONDS": str(timeouts.download_claim_seconds),
        "DOWNLOAD_STOP_MARGIN_SECONDS": str(timeouts.download_stop_margin_seconds),
        "APPROVAL_TIMEOUT_SECONDS": str(timeouts.approval_seconds),
        "VALIDATE_TIMEOUT_SECONDS": str(timeouts.validate_seconds),
    }


def admission_environment(download_workers: int) -> dict[str, str]:
    """What the scheduler admits runs by (shared/rules/admission.py): the downloads that can run
    at once on the embedded stack are its download workers, each taking a batch of one."""
    return {
        "DOWNLOAD_CONCURRENCY": str(download_workers),
        "DOWNLOAD_BATCH_SIZE": str(BATCH_SIZE["download"]),
    }


def _die_with_parent() -> None:
    """Children get SIGTERM if the supervisor dies, so nothing outlives `sourceflow up`."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _clients(env: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(
        sqs=aws_client(env, "sqs"),
        s3=aws_client(env, "s3"),
        events=aws_client(env, "events"),
        sfn=aws_client(env, "stepfunctions"),
        sns=aws_client(env, "sns"),
        secretsmanager=aws_client(env, "secretsmanager"),
    )


def _wait_for(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise StackError(f"{what} did not start within {timeout:.0f}s; see .sourceflow/logs/")


def aws_client(env: dict[str, str], service_name: str) -> Any:
    """A boto3 client for a running stack, from its local.env values."""
    from ops.config import OperatorConfig

    return OperatorConfig(env, "the local stack").client(service_name)
