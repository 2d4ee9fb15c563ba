"""The embedded stack: PostgreSQL, the moto server with execution on, every queue, the bus and
the state machine from the cloud's definitions, one worker per service, and the demo vendor.

Everything runs under one supervisor process; `LocalStack` starts it all and stops it all.
It writes `<state dir>/local.env` (KEY=value lines) so that other tools and tests can reach it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
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
from local.partner import PartnerSources, create_partner_sources
from local.pg import create_warehouse_tables, require_passwords
from local.provision import BATCH_SIZE, Provisioned, function_timeouts, provision
from local.roles import DEMO_PEOPLE, create_people, create_roles
from local.ticker import Ticker
from local.vendor.records import DEFAULT_DATASET_SPECS
from shared.runtime.catalogue import Timeouts
from shared.runtime.secrets import connection_secrets_prefix

REGION = "us-east-1"
# The emulator accepts any credentials; these keep boto3 from looking for real ones.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
LOCAL_TIMEOUTS = Timeouts(
    validate_seconds=120,
    download_seconds=600,
    # Counted from when the Download task sends its message, so it includes the wait in the
    # queue before a worker picks it up and heartbeats: with many sources due at once and two
    # workers, that wait passed 30 s (make bench, 200 sources). As in the cloud, then.
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


class StackError(RuntimeError):
    pass


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


@dataclass
class LocalStack:
    options: StackOptions
    env: dict[str, str] = field(default_factory=dict)
    provisioned: Provisioned | None = None
    partner: PartnerSources | None = None
    _named: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _pg: Any = None
    _ticker: Ticker | None = None
    _service_urls: dict[str, str] = field(default_factory=dict)
    people: dict[str, Path] = field(default_factory=dict)
    _redeployed: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def env_file(self) -> Path:
        return self.options.state_dir / "local.env"

    @property
    def people_dir(self) -> Path:
        """Each person's credentials file, `<name>.env`: SOURCEFLOW_CREDENTIALS names one."""
        return self.options.state_dir / "people"

    def start(self) -> dict[str, str]:
        state_dir = self.options.state_dir
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.env_file.unlink(missing_ok=True)
        try:
            database_url = self._start_database()
            apply_migrations(database_url)
            create_warehouse_tables(database_url)
            self._service_urls = create_roles(database_url, LOCAL_RESPECS_TABLES)
            self.people = create_people(database_url, DEMO_PEOPLE, self.people_dir)
            endpoint = self._start_moto()
            vendor_url = self._start_vendor()
            aws_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION}
            clients = _clients({**aws_env, **LOCAL_CREDENTIALS})
            names = Names(self.options.stage)
            self.provisioned = provision(clients, names, self.options.timeouts)
            self.partner = create_partner_sources(database_url, clients, names)
            self.env = {
                "SOURCEFLOW_STAGE": self.options.stage,
                "CONNECTION_SECRETS_PREFIX": connection_secrets_prefix(self.options.stage),
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
                **{f"{s.upper()}_QUEUE_URL": url for s, url in self.provisioned.queue_urls.items()},
                **{f"{s.upper()}_DLQ_URL": url for s, url in self.provisioned.dlq_urls.items()},
                **self.partner.env(),
            }
            self._start_workers()
            if self.options.ticker:
                self._ticker = Ticker(clients.events, clients.sqs, names.prefix)
                self._ticker.start()
        except BaseException:
            self.stop()
            raise
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in self.env.items()))
        return self.env

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
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
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
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

    def _start_moto(self) -> str:
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        # MOTO_PORT tells moto's state-machine interpreter where to call SQS and EventBridge.
        self._spawn(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            {"MOTO_PORT": str(port)},
        )
        _wait_for(lambda: requests.get(f"{endpoint}/moto-api/", timeout=1).ok, "moto server")
        requests.post(
            f"{endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}},
            timeout=5,
        ).raise_for_status()
        return endpoint

    def _start_vendor(self) -> str:
        port = _free_port()
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
            "RESPECS_APPROVAL_REQUIRED": str(self.options.approval_gate).lower(),
            # The vendor and the partner database are on this machine: only here may sources
            # reach loopback (shared.connectors.endpoints). The cloud's functions never have it.
            "ALLOW_LOOPBACK_SOURCES": "true",
            "POWERTOOLS_SERVICE_NAME": f"sourceflow-{service}",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            **self._redeployed.get(service, {}),
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
        """SIGKILL the service's workers mid-work, as a crashed container would die."""
        self._stop_workers(service, kill=True)

    def _stop_workers(self, service: str, *, kill: bool) -> None:
        for name, child in list(self._named.items()):
            if name.startswith(f"{service}-") and child.poll() is None:
                if kill:
                    child.kill()
                else:
                    child.terminate()  # the worker finishes its batch, then exits
                child.wait(timeout=30)

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> None:
        log = (self.options.state_dir / "logs" / f"{name}.log").open("ab")
        self._logs.append(log)
        child = subprocess.Popen(
            argv,
            env={**os.environ, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self._named[name] = child


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
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
