"""What the embedded stack keeps across a restart of `sourceflow up` on the same state directory.

PostgreSQL keeps its data in `<state dir>/pgdata`; the moto server keeps nothing. So that the
sources registered on a stack keep working after a restart:

- Every address stays the same. The moto server's and the demo vendor's ports are chosen once
  and kept in `<state dir>/ports.json`: an http_api source's stored `base_url` still reaches the
  vendor, and a shell that sourced `local.env` still reaches moto. A kept port that another
  process took is refused by name rather than silently replaced, because the sources stored
  with it would then fail.
- What people put into the emulator is saved when the stack stops and put back when it starts:
  the objects of every bucket but the raw one (the partner's drops, and any bucket an s3_files
  source was pointed at), and every secret. They go to `<state dir>/emulator/` (mode 0700).
  The raw bucket is sourceflow's output (nothing reads it back, and it is the largest), so it
  starts empty; queues, dead letters, the bus, the state machine and its executions are created
  afresh from their definitions (local/provision.py) and start empty too.
- A run under way when the stack stopped has lost its execution: the ledger ends it `failed`
  with `StackRestarted` and its lock is released, so its source's next run need not wait for
  the lock's lease to lapse.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.pg import transaction
from shared.errors import SourceflowError
from shared.rules.workflows import TaskStatus, WorkflowRunStatus
from shared.runtime.catalogue import Step
from shared.store.runs import OPEN_RUN_STATUSES, RunStatus, fail_run, release_lock

PORTS_FILE = "ports.json"
# The partner database reader's password, which each postgres source's secret holds.
PARTNER_PASSWORD_FILE = "partner.password"
EMULATOR_DIR = "emulator"
# The error that ends a run whose execution went with the emulator.
STACK_RESTARTED = "StackRestarted"


class KeptPortTaken(SourceflowError):
    """A port kept in ports.json is in use by another process; the message says what to do."""


def kept_password(path: Path) -> str:
    """A password made once and kept in `path` (mode 0600), read again at every later start."""
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


def kept_port(state_dir: Path, part: str) -> int:
    """The port `part` ("moto", "vendor") listens on: the one kept in `<state dir>/ports.json`,
    or a free one, chosen now and kept."""
    path = state_dir / PORTS_FILE
    ports = json.loads(path.read_text()) if path.exists() else {}
    port = ports.get(part)
    if port is None:
        ports[part] = port = _free_port()
        path.write_text(json.dumps(ports, indent=2) + "\n")
    elif not _is_free(port):
        raise KeptPortTaken(
            f"port {port}, kept in {path} for the {part} so that what was registered against it "
            "keeps working, is in use by another process (another `sourceflow up` on this state "
            f"directory?): stop that process, or delete {path} to choose new ports (sources whose "
            "connection names the old address must then be edited)"
        )
    return int(port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_free(port: int) -> bool:
    """Nothing listens on the port (a connection of the last run in TIME_WAIT does not count:
    the servers bind with SO_REUSEADDR, and so does this test)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the emulator's contents ------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatorState:
    """The buckets' objects and the secrets, saved in `<state dir>/emulator/`: `state.json`
    lists them, each object's bytes in `objects/<sha256>`."""

    directory: Path

    @classmethod
    def of(cls, state_dir: Path) -> EmulatorState:
        return cls(state_dir / EMULATOR_DIR)

    def save(self, s3: Any, secretsmanager: Any, *, raw_bucket: str) -> None:
        """Save what the emulator holds now, replacing the last save only once it is whole."""
        fresh = self.directory.with_name(f"{self.directory.name}.saving")
        shutil.rmtree(fresh, ignore_errors=True)
        (fresh / "objects").mkdir(parents=True, mode=0o700)
        fresh.chmod(0o700)
        objects = []
        for bucket, key, body in _objects(s3, exclude=raw_bucket):
            digest = hashlib.sha256(body).hexdigest()
            (fresh / "objects" / digest).write_bytes(body)
            objects.append({"bucket": bucket, "key": key, "sha256": digest})
        state = {"objects": objects, "secrets": list(_secrets(secretsmanager))}
        index = fresh / "state.json"
        index.touch(mode=0o600)
        index.write_text(json.dumps(state, indent=1))
        shutil.rmtree(self.directory, ignore_errors=True)
        fresh.rename(self.directory)

    def restore(self, s3: Any, secretsmanager: Any) -> int:
        """Put the last save back into a fresh emulator; returns how many things it held."""
        index = self.directory / "state.json"
        if not index.exists():
            return 0
        state = json.loads(index.read_text())
        buckets = {entry["bucket"] for entry in state["objects"]}
        existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
        for bucket in sorted(buckets - existing):
            s3.create_bucket(Bucket=bucket)
        for entry in state["objects"]:
            body = (self.directory / "objects" / entry["sha256"]).read_bytes()
            s3.put_object(Bucket=entry["bucket"], Key=entry["key"], Body=body)
        for secret in state["secrets"]:
            value = (
                {"SecretString": secret["SecretString"]}
                if "SecretString" in secret
                else {"SecretBinary": bytes.fromhex(secret["SecretBinaryHex"])}
            )
            secretsmanager.create_secret(Name=secret["Name"], **value)
        return len(state["objects"]) + len(state["secrets"])


def _objects(s3: Any, *, exclude: str) -> Iterator[tuple[str, str, bytes]]:
    for bucket in s3.list_buckets()["Buckets"]:
        name = bucket["Name"]
        if name == exclude:
            continue
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for listed in page.get("Contents", []):
                body = s3.get_object(Bucket=name, Key=listed["Key"])["Body"]
                with closing(body):
                    yield name, listed["Key"], body.read()


def _secrets(secretsmanager: Any) -> Iterator[dict[str, Any]]:
    """Each secret as CreateSecret's arguments: its name and current value."""
    for page in secretsmanager.get_paginator("list_secrets").paginate():
        for listed in page["SecretList"]:
            value = secretsmanager.get_secret_value(SecretId=listed["ARN"])
            if "SecretString" in value:
                yield {"Name": listed["Name"], "SecretString": value["SecretString"]}
            else:  # bytes: kept in hex, as JSON cannot hold them
                yield {"Name": listed["Name"], "SecretBinaryHex": value["SecretBinary"].hex()}


# -- runs whose execution is gone -------------------------------------------------------------


def end_runs_lost_with_emulator(admin_url: str) -> list[str]:
    """End every run still open in the ledger `failed` (StackRestarted), at the step it was in,
    and release its lock, and every workflow run still under way; returns their execution
    names (the runs', then the workflow runs'). Only for a stack that owns its database: a
    fresh emulator has no executions, so no open run can go on."""
    with transaction(admin_url, rows_as_dicts=True) as cur:
        cur.execute(
            """
            SELECT r.execution_arn, r.execution_name, r.source_id, r.status,
                   EXISTS (SELECT 1 FROM public.run_approval a
                            WHERE a.execution_arn = r.execution_arn AND a.status = 'waiting')
                   AS awaiting_approval
              FROM public.source_run r
             WHERE r.status IN %s ORDER BY r.started_at
            """,
            (tuple(str(status) for status in OPEN_RUN_STATUSES),),
        )
        lost = [dict(row) for row in cur.fetchall()]
        for run in lost:
            fail_run(
                cur,
                run["execution_arn"],
                failed_step=_step_of_open_run(run["status"], run["awaiting_approval"]),
                error=STACK_RESTARTED,
                cause="the embedded stack stopped while this run was under way, and its "
                "execution went with the emulator",
            )
            release_lock(cur, run["source_id"], run["execution_arn"])
        workflow_runs = _end_workflow_runs(cur)
    return [run["execution_name"] for run in lost] + workflow_runs


def _end_workflow_runs(cur: Any) -> list[str]:
    """The workflow runs still under way went with the emulator too: each ends failed, and
    each of its tasks still running (an ingest task waiting for its child run) with it."""
    cur.execute(
        """
        UPDATE public.workflow_task_run
           SET status = %s, error = %s, ended_at = now()
         WHERE status = 'running'
        """,
        (TaskStatus.FAILED, f"{STACK_RESTARTED}: the embedded stack stopped while it ran"),
    )
    cur.execute(
        """
        UPDATE public.workflow_run SET status = %s, ended_at = now()
         WHERE ended_at IS NULL
        RETURNING id
        """,
        (WorkflowRunStatus.FAILED,),
    )
    return sorted(row["id"] for row in cur.fetchall())


def _step_of_open_run(status: str, awaiting_approval: bool) -> Step:
    """Where an open run's execution was: validation opened the ledger row, so past Validate."""
    if status == RunStatus.DOWNLOADED:
        return Step.UNLOCK
    return Step.APPROVE if awaiting_approval else Step.DOWNLOAD
