"""The `sourceflow` command."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from infra.resources import SERVICES
from ops.output import cell as _cell
from ops.output import echo_json, run_exit_code, to_json
from ops.output import json_option as _json_option
from ops.output import print_rows as _print_rows
from shared.store.runs import RunStatus

DEFAULT_STATE_DIR = Path(".sourceflow")


def _state_dir(help_text: str) -> Any:
    """The --state-dir option, with what it means to the commands that take it."""
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        default=DEFAULT_STATE_DIR,
        show_default=True,
        help=help_text,
    )


# `up` and `demo` start a stack of their own there; the other commands reach a running one.
stack_dir_option = _state_dir("Where the embedded PostgreSQL data, logs and local.env live.")
state_dir_option = _state_dir(
    "Where a running local stack wrote local.env (the environment overrides it)."
)


class _OneLineErrors(click.Group):
    """An operator sees one line saying what is wrong and what to do, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        import botocore.exceptions
        import psycopg2

        from shared.errors import SourceflowError

        try:
            return super().invoke(ctx)
        except (SourceflowError, psycopg2.Error) as exc:
            raise click.ClickException(str(exc).strip().splitlines()[0]) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise click.ClickException(
                f"{exc}; is the local stack running (`sourceflow up`), or AWS_ENDPOINT_URL right?"
            ) from None
        except botocore.exceptions.NoCredentialsError:
            raise click.ClickException(
                "no AWS credentials: start the local stack (`sourceflow up`) or configure AWS"
            ) from None
        except botocore.exceptions.ClientError as exc:
            raise click.ClickException(str(exc)) from None
        except botocore.exceptions.BotoCoreError as exc:  # a broken AWS config file, …
            raise click.ClickException(
                f"AWS configuration: {exc}; fix it, or point AWS_CONFIG_FILE and "
                "AWS_SHARED_CREDENTIALS_FILE at good ones"
            ) from None


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="sourceflow", prog_name="sourceflow")
def main() -> None:
    """sourceflow: incremental ingestion through one Step Functions state machine."""


# -- sources ----------------------------------------------------------------------------------


@main.group()
def sources() -> None:
    """The sources: their flow, cursor, lock and last run."""


@sources.command("list")
@click.option("--deleted", is_flag=True, help="The deleted sources too.")
@_json_option
@state_dir_option
def sources_list(deleted: bool, as_json: bool, state_dir: Path) -> None:
    """Every source: type, active (or why not), flow, LMD cursor, runtime count, lock, last
    run, and its freshness: how long ago it last succeeded, when it is next due, and whether
    it is overdue (no success for more than its overdue_after_periods schedule periods)."""
    from ops.sources import sources_list

    with _database(state_dir) as (_, db):
        rows = sources_list(db, deleted=deleted)
    _print_rows(
        rows,
        as_json,
        "sources",
        [
            "source_id",
            "source_type",
            "is_active",
            "disabled",
            "flow",
            "last_modified_date",
            "runtime_count",
            "locked_by",
            "lock_expires_at",
            "last_run_status",
            "last_run_at",
            "last_success_age",
            "next_due_at",
            "overdue",
        ],
    )


@sources.command("show")
@click.argument("source_id")
@_json_option
@state_dir_option
def sources_show(source_id: str, as_json: bool, state_dir: Path) -> None:
    """One source, its last runs and its flow history."""
    from ops.sources import source_show

    with _database(state_dir) as (_, db):
        shown = source_show(db, source_id)
    if as_json:
        echo_json(shown)
        return
    source = shown["source"]
    _print_rows(
        [{"field": k, "value": v} for k, v in source.items()],
        False,
        f"source {source_id}",
        ["field", "value"],
        counted=False,
    )
    _print_rows(shown["runs"], False, "last runs", RUN_COLUMNS)
    _print_rows(
        shown["flow_history"],
        False,
        "flow history",
        ["change_id", "changed_at", "changed_by", "reason", "from_params", "to_params"],
    )
    _print_rows(
        shown["changes"],
        False,
        "settings history",
        ["change_id", "changed_at", "changed_by", "action", "reason", "changes"],
    )


def _connection(value: str | None) -> dict[str, Any] | None:
    """--connection: a JSON object, or @FILE holding one."""
    if value is None:
        return None
    text, origin = value, "--connection"
    if value.startswith("@"):
        try:
            text, origin = Path(value[1:]).read_text(), value[1:]
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}") from None
    try:
        connection = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise click.BadParameter(f"{origin} is not JSON ({exc}); give an object") from None
    if not isinstance(connection, dict):
        raise click.BadParameter(f"{origin} is not a JSON object")
    return connection


def _source_settings_options(command: Any) -> Any:
    """The settings `sources add` and `sources edit` take (edit: only those given change)."""
    options = [
        click.option("--type", "source_type", help="http_api, s3_files or postgres."),
        click.option("--connection", help="Its connection: a JSON object, or @FILE."),
        click.option("--name", help="What people call it (default: its id)."),
        click.option("--backdate-days", type=int, help="Days its first run loads (default 30)."),
        click.option("--schedule-cron", help="Runs on this five-field cron (UTC)."),
        click.option("--schedule-interval", help="Runs every this long, e.g. 15m, 1h."),
        click.option("--lateness-allowance", help="How late records may appear (default 10m)."),
        click.option(
            "--overdue-after-periods",
            type=float,
            help="Schedule periods without a success before it is overdue (default 2).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _given_settings(**options: Any) -> dict[str, Any]:
    """The options given, in sources-file terms (a schedule given replaces the other)."""
    if options["schedule_cron"] is not None and options["schedule_interval"] is not None:
        raise click.UsageError("give --schedule-cron or --schedule-interval, not both")
    given = {
        "type": options["source_type"],
        "connection": _connection(options["connection"]),
        "name": options["name"],
        "backdate_days": options["backdate_days"],
        "lateness_allowance": options["lateness_allowance"],
        "overdue_after_periods": options["overdue_after_periods"],
    }
    given = {key: value for key, value in given.items() if value is not None}
    if options["schedule_cron"] is not None or options["schedule_interval"] is not None:
        given.update(
            schedule_cron=options["schedule_cron"], schedule_interval=options["schedule_interval"]
        )
    return given


def _said(result: dict[str, Any], as_json: bool) -> None:
    from ops.source_changes import said

    if as_json:
        echo_json(result)
    else:
        click.echo(said(result))


_reason_option = click.option("--reason", help="Why, for the source's history.")


@sources.command("add")
@click.argument("source_id")
@_source_settings_options
@_reason_option
@_json_option
@state_dir_option
def sources_add(
    source_id: str, reason: str | None, as_json: bool, state_dir: Path, **given: Any
) -> None:
    """Register SOURCE_ID (--type and --connection required), checked against its connection's
    schema, its connector's checks, the schedule's syntax and the flow rules before anything is
    stored. Recorded as your login, with --reason."""
    from ops.source_changes import add_source, source_access

    if given["source_type"] is None or given["connection"] is None:
        raise click.UsageError("a new source needs --type and --connection")
    given_settings = _given_settings(**given)
    entry = {"id": source_id, **{k: v for k, v in given_settings.items() if v is not None}}
    with _database(state_dir) as (config, db):
        added = add_source(
            db, entry, access=source_access(config), reason=reason or "sourceflow sources add"
        )
    _said(added, as_json)


@sources.command("edit")
@click.argument("source_id")
@_source_settings_options
@_reason_option
@_json_option
@state_dir_option
def sources_edit(
    source_id: str, reason: str | None, as_json: bool, state_dir: Path, **given: Any
) -> None:
    """Change the settings given of SOURCE_ID, keeping the others; checked whole, as `add`
    checks. Its type or connection does not change while a run holds it."""
    _edit(
        source_id, _given_settings(**given), reason or "sourceflow sources edit", as_json, state_dir
    )


@sources.command("schedule")
@click.argument("source_id")
@click.option("--cron", help="A five-field cron, in UTC, e.g. '*/15 * * * *'.")
@click.option("--interval", help="Every this long, e.g. 15m, 1h, 1d.")
@click.option("--none", "no_schedule", is_flag=True, help="No schedule: runs only when asked.")
@_reason_option
@_json_option
@state_dir_option
def sources_schedule(
    source_id: str,
    cron: str | None,
    interval: str | None,
    no_schedule: bool,
    reason: str | None,
    as_json: bool,
    state_dir: Path,
) -> None:
    """Set when the scheduler runs SOURCE_ID: --cron, --interval or --none."""
    from ops.source_changes import schedule_entry

    if [cron is not None, interval is not None, no_schedule].count(True) != 1:
        raise click.UsageError("give one of --cron, --interval or --none")
    schedule = schedule_entry(cron, interval)
    _edit(source_id, schedule, reason or "sourceflow sources schedule", as_json, state_dir)


def _edit(
    source_id: str, given: dict[str, Any], reason: str, as_json: bool, state_dir: Path
) -> None:
    from ops.source_changes import edit_source, source_access

    with _database(state_dir) as (config, db):
        edited = edit_source(
            db, source_id, given, access=source_access(config), reason=reason, now=datetime.now(UTC)
        )
    _said(edited, as_json)


class _UntilTime(click.ParamType):
    """A time (ISO-8601, UTC without a zone) or a duration from now (2h, 1d)."""

    name = "TIME|DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from shared.rules.source_settings import parse_duration

        try:
            return datetime.now(UTC) + parse_duration(value)
        except ValueError:
            pass
        try:
            return _as_utc(datetime.fromisoformat(value))
        except ValueError:
            self.fail(f"{value!r} is neither a time (2026-11-01T06:00:00Z) nor a duration (2h)")


@sources.command("disable")
@click.argument("source_id")
@click.option("--reason", required=True, help="Why (shown in `sources list`).")
@click.option("--until", type=_UntilTime(), help="Enable it again then: a time, or a duration.")
@_json_option
@state_dir_option
def sources_disable(
    source_id: str, reason: str, until: datetime | None, as_json: bool, state_dir: Path
) -> None:
    """Pause SOURCE_ID (a vendor outage): no scheduled run, backfill slice or asked-for run
    starts until `sources enable`, or --until (the scheduler's first tick after it). A run
    under way goes on."""
    from ops.source_changes import disable_source

    with _database(state_dir) as (_, db):
        disabled = disable_source(db, source_id, reason=reason, until=until, now=datetime.now(UTC))
    _said(disabled, as_json)


@sources.command("enable")
@click.argument("source_id")
@_reason_option
@_json_option
@state_dir_option
def sources_enable(source_id: str, reason: str | None, as_json: bool, state_dir: Path) -> None:
    """Resume SOURCE_ID: its schedule and backfills go on from its next slot."""
    from ops.source_changes import enable_source

    with _database(state_dir) as (_, db):
        enabled = enable_source(db, source_id, reason=reason or "sourceflow sources enable")
    _said(enabled, as_json)


@sources.command("delete")
@click.argument("source_id")
@click.option("--reason", required=True, help="Why, for the source's history.")
@_json_option
@state_dir_option
def sources_delete(source_id: str, reason: str, as_json: bool, state_dir: Path) -> None:
    """Delete SOURCE_ID: it never runs again and leaves the lists; its runs and histories are
    kept, and its id is not reused. Refused while a run holds it or a backfill of it is
    unfinished."""
    from ops.backfills import list_backfills
    from ops.source_changes import delete_source

    with _database(state_dir) as (_, db):
        deleted = delete_source(
            db,
            source_id,
            reason=reason,
            now=datetime.now(UTC),
            backfills=list_backfills(db, source_id=source_id, limit=1000),
        )
    _said(deleted, as_json)


@sources.command("test")
@click.argument("source_id")
@_json_option
@state_dir_option
def sources_test(source_id: str, as_json: bool, state_dir: Path) -> None:
    """Check SOURCE_ID's connection as validation does before a run (its settings, its secret,
    what its connector can prove without reading records), with your AWS credentials. Nothing
    is locked, counted or written. Exit 1 if it fails."""
    from ops.source_changes import source_access, try_connection

    with _database(state_dir) as (config, db):
        tested = try_connection(db, source_id, access=source_access(config, reading=True))
    if as_json:
        echo_json(tested)
    elif tested["ok"]:
        click.echo(f"{source_id}: ok: {tested['checked']}")
    else:
        click.echo(f"{source_id}: {tested['error']}: {tested['detail']}")
    if not tested["ok"]:
        sys.exit(1)


@sources.command("export")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here.")
@_json_option
@state_dir_option
def sources_export(output: Path | None, as_json: bool, state_dir: Path) -> None:
    """Write the registered sources as a sources file (YAML; --json: the same as JSON) that
    `sourceflow apply` reads back as no change."""
    import yaml

    from ops.sources_file import export_sources

    with _database(state_dir) as (_, db):
        document = export_sources(db)
    if as_json:
        document = to_json(yaml.safe_load(document)) + "\n"
    if output is None:
        click.echo(document, nl=False)
    else:
        output.write_text(document)
        click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@_reason_option
@_json_option
@state_dir_option
def apply(file: Path, dry_run: bool, reason: str | None, as_json: bool, state_dir: Path) -> None:
    """Make the registered sources match FILE's `sources:` list (as `sources export` writes):
    add, change, disable what it drops (never delete); and its workflows its `workflows:` list
    (a changed definition is a new version; README, "Workflows after ingestion"). A key the
    file leaves out leaves those as they are. Prints the plan; a file with any problem is
    refused whole. Applying it again changes nothing."""
    from ops.source_changes import source_access
    from ops.sources_file import (
        InvalidSourcesFile,
        apply_file,
        checked_entries,
        plan_as_json,
        plan_said,
        read_file,
    )
    from ops.workflows import (
        apply_workflows,
        changes_as_json,
        changes_said,
        file_workflows,
        machine_deployer,
    )

    origin = str(file)
    said: list[str] = []
    document: dict[str, Any] = {"file": origin, "dry_run": dry_run}
    with _database(state_dir) as (config, db):
        try:
            # Everything checked before anything is applied.
            read = read_file(file.read_text(), origin)
            wanted = None
            if read.sources is not None:
                wanted = checked_entries(read.sources, origin, source_access(config))
            workflows = None
            if read.workflows is not None:
                listed = [settings.source_id for settings in wanted or ()]
                workflows = file_workflows(read.workflows, origin, db, config, listed=listed)
            if wanted is not None:
                plan, who = apply_file(
                    db,
                    wanted,
                    origin=origin,
                    reason=reason or f"sourceflow apply {file.name}",
                    dry_run=dry_run,
                    now=datetime.now(UTC),
                )
                document = plan_as_json(plan, origin=origin, dry_run=dry_run, who=who)
                said.append(plan_said(plan, origin=origin, dry_run=dry_run, who=who))
            if workflows is not None:
                deploy = machine_deployer(config)
                changes, who = apply_workflows(
                    db, workflows, deploy=deploy, dry_run=dry_run, now=datetime.now(UTC)
                )
                document["workflows"] = changes_as_json(changes)
                said.append(changes_said(changes, origin=origin, dry_run=dry_run, who=who))
        except InvalidSourcesFile as exc:
            raise click.ClickException(
                f"{origin}: nothing applied; {len(exc.problems)} problem(s):\n  "
                + "\n  ".join(exc.problems)
            ) from None
    if as_json:
        echo_json(document)
    else:
        click.echo("\n".join(said))


# -- flows ------------------------------------------------------------------------------------


@main.group()
def flow() -> None:
    """Change a source's flow (what its next run does)."""


@flow.command("set")
@click.argument("source_id")
@click.argument("flow_type", type=click.Choice(["normal", "respecs", "full-load", "sold"]))
@click.option("--sql", help="Re-specs: the attribute-update query (one UPDATE … WHERE …).")
@click.option("--year", type=int, help="Sold: from 1 January of this year (default: this year).")
@click.option(
    "--reset-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    help="Go back to Normal at this time even without a successful run.",
)
@click.option(
    "--reason",
    default="set with `sourceflow flow set`",
    show_default=True,
    help="Why, for the flow history.",
)
@_json_option
@state_dir_option
def flow_set(
    source_id: str,
    flow_type: str,
    sql: str | None,
    year: int | None,
    reset_at: datetime | None,
    reason: str,
    as_json: bool,
    state_dir: Path,
) -> None:
    """Write SOURCE_ID's batch_execution_params in the canonical form, and record who and why.

    A Re-specs query validation would refuse is refused here, with the same message."""
    from ops.sources import allowed_respecs_tables, flow_set
    from shared.rules.flows import FlowParams, FlowType

    chosen = FlowType(flow_type.replace("-", "_"))
    if (sql is not None) != (chosen is FlowType.RESPECS):
        raise click.UsageError("--sql goes with respecs, and respecs needs --sql")
    if year is not None and chosen is not FlowType.SOLD:
        raise click.UsageError("--year goes with sold only")
    params = FlowParams(chosen, sql=sql, year=year, reset_at=_utc(reset_at))
    with _database(state_dir) as (config, db):
        changed = flow_set(
            db,
            source_id,
            params,
            reason=reason,
            respecs_tables=allowed_respecs_tables(config),
        )
    if as_json:
        echo_json(changed)
    else:
        click.echo(
            f"{source_id}: batch_execution_params = {json.dumps(changed['batch_execution_params'])}"
        )


# -- runs -------------------------------------------------------------------------------------

RUN_COLUMNS = [
    "execution_name",
    "source_id",
    "flow_type",
    # A backfill's slice run: which backfill, which slice (its window is [start, end))
    "backfill",
    "status",
    "window_field",
    "window_start",
    "window_end",
    "records",
    # What the overlap found: versions landed late, met again and skipped, stamped in the future
    "late_records",
    "duplicates_skipped",
    "future_records",
    "duration_seconds",
    "failed_step",
    "error",
]


class _IsoTime(click.ParamType):
    """An ISO-8601 date or time (`2026-11-01`, `2026-11-01T06:00:00.5Z`, `…+01:00`)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 date or time, e.g. 2026-11-01T06:00:00Z")


_since_option = click.option(
    "--since", type=_IsoTime(), help="Only runs started since (ISO-8601; UTC without a zone)."
)


class _RequestByDefault(click.Group):
    """A group whose first argument, when it names no subcommand, is its `request`'s:
    `sourceflow run SOURCE` asks for a run (`run request`), `sourceflow backfill SOURCE …` for
    a backfill (`backfill request`); their other subcommands follow and decide."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((arg for arg in args if not arg.startswith("-")), None)
        if first is not None and first not in self.commands:
            args = ["request", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_RequestByDefault)
def run() -> None:
    """Ask for a run now, `sourceflow run SOURCE [--wait]`, or follow one already going,
    `sourceflow run watch RUN` (a source named `watch` is `run request watch`)."""


@run.command("request")
@click.argument("source_id")
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the run live; exit 1 if it fails, 3 if it was skipped (README: Exit codes).",
)
@_json_option
@state_dir_option
def run_request(source_id: str, wait: bool, as_json: bool, state_dir: Path) -> None:
    """Ask for a run of SOURCE_ID now (a `Run Requested` event the scheduler acts on); print
    the execution it starts as, for `run watch` and `runs show`."""
    from ops.runs import find_requested_execution, request_run

    # --json: one document on stdout at the end; what is said while waiting goes to stderr
    say = functools.partial(click.echo, err=as_json)
    with _database(state_dir) as (config, db):
        requested = request_run(config, db, source_id)
        asked = {"source_id": source_id, **requested._asdict()}
        say(
            f"run requested for {source_id}: execution {requested.execution_name} "
            f"(event {requested.event_id})"
        )
        if not wait:
            if as_json:
                echo_json(asked)
            return
        arn = find_requested_execution(
            db,
            source_id,
            requested.event_id,
            waiting=lambda before: say(f"waiting for admission: {before} runs before it"),
        )
        _follow(config, db, arn, as_json=as_json, said=asked)


@run.command("watch")
@click.argument("run_name", metavar="RUN")
@_json_option
@state_dir_option
def run_watch(run_name: str, as_json: bool, state_dir: Path) -> None:
    """Follow RUN (its execution name or ARN), already going, as `run --wait` does: each step
    as it starts and ends, the download's progress, then the outcome, with the same exit code.
    Ctrl-C stops the watching, not the run (`sourceflow cancel RUN` stops the run)."""
    from ops.run_view import resolve_execution

    with _database(state_dir) as (config, db):
        arn = resolve_execution(db, run_name)
        try:
            _follow(config, db, arn, as_json=as_json, said={})
        except KeyboardInterrupt:
            click.echo(
                f"stopped watching; run {run_name} goes on (`sourceflow cancel {run_name}` "
                "stops it)",
                err=True,
            )
            sys.exit(130)


def _follow(config: Any, db: Any, arn: str, *, as_json: bool, said: dict[str, Any]) -> None:
    """Say the execution's steps and progress until it ends (on stderr with --json, then one
    document); exit as `run --wait` does (README: Exit codes)."""
    from dataclasses import asdict

    from ops.runs import follow_execution

    say = functools.partial(click.echo, err=as_json)
    execution_name = arn.rsplit(":", 1)[1]
    say(f"execution {execution_name}")
    followed = []
    for progress in follow_execution(config.client("stepfunctions"), db, arn):
        say(f"{_cell(progress.at)}  {progress.step:<20} {progress.detail}".rstrip())
        followed.append(progress)
    outcome = followed[-1].step if followed else None
    if as_json:
        echo_json(
            {
                **said,
                "execution_name": execution_name,
                "outcome": outcome,
                "progress": [asdict(progress) for progress in followed],
            }
        )
    sys.exit(run_exit_code(outcome))


@main.command()
@click.argument("run_name", metavar="RUN")
@click.option("--reason", required=True, help="Why, for the ledger and the Run Cancelled event.")
@_json_option
@state_dir_option
def cancel(run_name: str, reason: str, as_json: bool, state_dir: Path) -> None:
    """Stop RUN (its execution name or ARN) at whatever step it is in: the source is unlocked,
    the cursor unchanged, and the ledger says `cancelled` with who asked and why."""
    from ops.runs import cancel_run

    with _database(state_dir) as (config, db):
        asked = cancel_run(db, _callbacks(config), run_name, reason=reason)
    if as_json:
        echo_json(asked)
    else:
        click.echo(f"cancel requested for {asked['execution_name']} (source {asked['source_id']})")


@main.command()
@click.argument("run_name", metavar="RUN")
@_json_option
@state_dir_option
def redrive(run_name: str, as_json: bool, state_dir: Path) -> None:
    """Run the failed RUN (its execution name or ARN) again, once: Step Functions'
    RedriveExecution for an execution cut off in a step, where the engine has it; otherwise a
    new run over the failed run's window and flow. The ledger records which run redrove it,
    and who (`runs show`)."""
    from ops.redrives import redrive_run

    with _database(state_dir) as (config, db):
        done = redrive_run(
            db, config.client("stepfunctions"), config.require("STATE_MACHINE_ARN"), run_name
        )
    if as_json:
        echo_json(done)
    elif done["how"] == "new_run":
        click.echo(
            f"{done['failed_run']} redriven as a new run over its window: {done['redrive_run']} "
            f"(`sourceflow runs show {done['redrive_run']}` once validation has taken it)"
        )
    else:
        click.echo(f"{done['failed_run']} redriven: its execution continues from its failed step")


# -- backfills ---------------------------------------------------------------------------------

BACKFILL_COLUMNS = [
    "backfill_id",
    "source_id",
    "window_field",
    "range_start",
    "range_end",
    "slice_length",
    "slices",
    "state",
    "current_run",
    "current_run_status",
    "failures",
    "requested_by",
    "decided_by",
]
BACKFILL_SLICE_COLUMNS = [
    "slice",
    "window_start",
    "window_end",
    "attempts",
    "execution_name",
    "status",
    "records",
    "error",
]


@main.group(cls=_RequestByDefault)
def backfill() -> None:
    """Load a range of a source's past again, in slices, each its own run beside the Normal
    runs: `sourceflow backfill SOURCE --from T1 --to T2 [--slice 1d]`; the cursor never moves."""


@backfill.command("request")
@click.argument("source_id")
@click.option("--from", "range_from", type=_IsoTime(), required=True, help="Start (included).")
@click.option("--to", "range_to", type=_IsoTime(), required=True, help="End (excluded).")
@click.option(
    "--slice",
    "slice_length",
    default="1d",
    show_default=True,
    help="Each run loads this much: a whole number and m, h, d or w.",
)
@click.option(
    "--field",
    type=click.Choice(["last-modified", "sold-date"]),
    default="last-modified",
    show_default=True,
    help="The record date the range is of.",
)
@click.option(
    "--reason", default="asked with `sourceflow backfill`", show_default=True, help="Why."
)
@_json_option
@state_dir_option
def backfill_request(
    source_id: str,
    range_from: datetime,
    range_to: datetime,
    slice_length: str,
    field: str,
    reason: str,
    as_json: bool,
    state_dir: Path,
) -> None:
    """Ask for a backfill of SOURCE_ID's records whose date is in [--from, --to) (UTC without a
    zone). It waits for a second person when it spans more than the source's
    backfill_approval_days; the scheduler then runs one slice per tick."""
    from ops.backfills import request_backfill
    from shared.rules.backfills import BackfillRange, parse_slice_length
    from shared.rules.flows import WindowField

    wanted = BackfillRange(
        WindowField(field.replace("-", "_")),
        _as_utc(range_from),
        _as_utc(range_to),
        parse_slice_length(slice_length),
    )
    with _database(state_dir) as (_, db):
        asked = request_backfill(db, source_id, wanted, reason=reason, now=datetime.now(UTC))
    if as_json:
        echo_json(asked)
        return
    click.echo(
        f"backfill {asked['backfill_id']} of {source_id}: {field} in "
        f"[{_cell(asked['range_start'])}, {_cell(asked['range_end'])}), "
        f"{asked['slice_count']} slice(s) of {asked['slice_length']}, asked by "
        f"{asked['requested_by']}"
    )
    if asked["state"] == "awaiting_approval":
        click.echo(
            f"awaiting approval: it spans more than {source_id}'s {asked['approval_days']} days "
            f"(backfill_approval_days); a second person runs "
            f"`sourceflow backfill approve {asked['backfill_id']}`"
        )
    else:
        click.echo("active: the scheduler starts a slice each tick (`sourceflow backfill list`)")


@backfill.command("list")
@click.option("--source", "source_id", help="Only this source's backfills.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@_json_option
@state_dir_option
def backfill_list(source_id: str | None, limit: int, as_json: bool, state_dir: Path) -> None:
    """Backfills, newest first: range, slices done, state, the slice run under way."""
    from ops.backfills import list_backfills

    with _database(state_dir) as (_, db):
        rows = list_backfills(db, source_id=source_id, limit=limit)
    _print_rows(rows, as_json, "backfills", BACKFILL_COLUMNS)


@backfill.command("show")
@click.argument("backfill_id", type=int)
@_json_option
@state_dir_option
def backfill_show(backfill_id: int, as_json: bool, state_dir: Path) -> None:
    """One backfill and each of its slices: window, attempts, last run, records."""
    from ops.backfills import show_backfill

    with _database(state_dir) as (_, db):
        shown = show_backfill(db, backfill_id)
    if as_json:
        echo_json(shown)
        return
    _print_rows([shown["backfill"]], False, f"backfill {backfill_id}", BACKFILL_COLUMNS)
    _print_rows(shown["slices"], False, "slices", BACKFILL_SLICE_COLUMNS)


def _backfill_decision(name: str, decision: str, summary: str, *, needs_reason: bool) -> None:
    """`sourceflow backfill approve|reject|cancel|retry ID`: one decision, as your login."""

    @backfill.command(name, help=summary)
    @click.argument("backfill_id", type=int)
    @click.option("--reason", required=needs_reason, help="Why, for the backfill's record.")
    @_json_option
    @state_dir_option
    def decide(backfill_id: int, reason: str | None, as_json: bool, state_dir: Path) -> None:
        from ops.backfills import decide_backfill

        with _database(state_dir) as (_, db):
            decided = decide_backfill(db, backfill_id, decision, reason=reason)
        if as_json:
            echo_json(decided)
            return
        stopping = decided["stopping_run"]
        click.echo(
            f"backfill {backfill_id} of {decided['source_id']} {decision}: now "
            f"{decided['state']}" + (f"; its run {stopping} is asked to stop" if stopping else "")
        )


_backfill_decision(
    "approve",
    "approved",
    "Approve backfill ID as a second person: its slices start at the next tick. The person "
    "who asked for it cannot approve it.",
    needs_reason=False,
)
_backfill_decision(
    "reject", "rejected", "Reject backfill ID: nothing of it runs.", needs_reason=True
)
_backfill_decision(
    "cancel",
    "cancelled",
    "Cancel backfill ID: no slice starts any more, and the one under way stops (its run ends "
    "cancelled, the cursor unchanged); the slices done stay done.",
    needs_reason=True,
)
_backfill_decision(
    "retry",
    "retried",
    "Retry failed backfill ID: the slice that stopped it starts again at the next tick, and "
    "each slice may fail as often as at first.",
    needs_reason=False,
)


APPROVAL_COLUMNS = [
    "execution_name",
    "source_id",
    "query",
    "requested_by",
    "requested_at",
    "expires_at",
]


REMEMBERED_COLUMNS = ["query_hash", "query", "approved_by", "approved_at", "approved_in"]


@main.group(invoke_without_command=True)
@_json_option
@state_dir_option
@click.pass_context
def approvals(ctx: click.Context, as_json: bool, state_dir: Path) -> None:
    """Runs waiting for a person to approve their Re-specs query, oldest first; and the
    approvals remembered per source (`remembered`, `revoke`)."""
    if ctx.invoked_subcommand is not None:
        return
    from ops.approvals import list_waiting

    with _database(state_dir) as (_, db):
        rows = list_waiting(db)
    _print_rows(rows, as_json, "waiting for approval", APPROVAL_COLUMNS)


@approvals.command("remembered")
@click.argument("source_id")
@_json_option
@state_dir_option
def approvals_remembered(source_id: str, as_json: bool, state_dir: Path) -> None:
    """SOURCE_ID's remembered approvals: queries that run without asking again."""
    from ops.approvals import remembered

    with _database(state_dir) as (_, db):
        rows = remembered(db, source_id)
    _print_rows(rows, as_json, f"remembered approvals of {source_id}", REMEMBERED_COLUMNS)


@approvals.command("revoke")
@click.argument("source_id")
@click.argument("query_hash", metavar="HASH")
@click.option("--reason", required=True, help="Why, for the revocation record.")
@_json_option
@state_dir_option
def approvals_revoke(
    source_id: str, query_hash: str, reason: str, as_json: bool, state_dir: Path
) -> None:
    """Withdraw SOURCE_ID's remembered approval of the query with HASH (8 or more characters of
    it): its next run waits for a person again. Recorded with who revoked it and why."""
    from ops.approvals import revoke

    with _database(state_dir) as (_, db):
        revoked = revoke(db, source_id, query_hash, reason=reason)
    if as_json:
        echo_json(revoked)
        return
    click.echo(
        f"{revoked['revoked_by']} revoked {source_id}'s approval of query "
        f"{revoked['query_hash'][:12]} (approved by {revoked['approved_by']})"
    )


@main.command()
@_json_option
@state_dir_option
def whoami(as_json: bool, state_dir: Path) -> None:
    """The login `sourceflow` acts as: what your approvals, cancels and flow changes record."""
    from shared.store.db import session_login

    with _database(state_dir) as (_, db), db.transaction() as cur:
        login = session_login(cur)
    if as_json:
        echo_json({"login": login})
    else:
        click.echo(login)


@main.command()
@click.argument("run_name", metavar="RUN")
@_json_option
@state_dir_option
def approve(run_name: str, as_json: bool, state_dir: Path) -> None:
    """Approve RUN's Re-specs query: the run goes on to download, and the same query for the
    same source will not ask again. The person who asked for the query cannot approve it."""
    from ops.approvals import approve as approve_run

    with _database(state_dir) as (config, db):
        approval = approve_run(db, _callbacks(config), run_name)
    if as_json:
        echo_json(approval)
        return
    click.echo(
        f"{approval['decided_by']} approved the Re-specs query of {approval['execution_name']} "
        f"(source {approval['source_id']}); the run goes on"
    )


@main.command()
@click.argument("run_name", metavar="RUN")
@click.option("--reason", required=True, help="Why, for the ledger and the Run Failed event.")
@_json_option
@state_dir_option
def reject(run_name: str, reason: str, as_json: bool, state_dir: Path) -> None:
    """Reject RUN's Re-specs query: the run fails as ApprovalRejected, the source is unlocked
    and its cursor unchanged."""
    from ops.approvals import reject as reject_run

    with _database(state_dir) as (config, db):
        approval = reject_run(db, _callbacks(config), run_name, reason=reason)
    if as_json:
        echo_json(approval)
        return
    click.echo(
        f"{approval['decided_by']} rejected the Re-specs query of {approval['execution_name']} "
        f"(source {approval['source_id']})"
    )


@main.group(invoke_without_command=True)
@click.option("--source", "source_id", help="Only this source's runs.")
@click.option(
    "--status",
    type=click.Choice([status.value for status in RunStatus]),
    help="Only runs with this status.",
)
@_since_option
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@_json_option
@state_dir_option
@click.pass_context
def runs(
    ctx: click.Context,
    source_id: str | None,
    status: str | None,
    since: datetime | None,
    limit: int,
    as_json: bool,
    state_dir: Path,
) -> None:
    """The run ledger, newest first: window, records, duration, error; `runs show RUN` shows
    one run whole."""
    if ctx.invoked_subcommand is not None:
        return
    from ops.runs import runs_list

    with _database(state_dir) as (_, db):
        rows = runs_list(db, source_id=source_id, status=status, since=_utc(since), limit=limit)
    _print_rows(rows, as_json, "runs", RUN_COLUMNS)


STEP_COLUMNS = ["step", "status", "started_at", "ended_at", "error", "cause"]


@runs.command("show")
@click.argument("run_name", metavar="RUN")
@_json_option
@state_dir_option
def runs_show(run_name: str, as_json: bool, state_dir: Path) -> None:
    """RUN (its execution name, as `runs` lists it, or ARN) whole: its window, cursor before
    and after, counters, manifest, error, who asked for it, approved it and cancelled it; then
    each step of its execution with its status and times (without AWS, one line says why)."""
    from dataclasses import asdict

    from ops.run_view import show_run, table_fields

    with _database(state_dir) as (config, db):
        shown = show_run(config, db, run_name)
    if as_json:
        echo_json(shown.as_json())
        return
    fields = table_fields(shown.run, _cell)
    title = f"run {shown.run['execution_name']}"
    _print_rows(fields, False, title, ["field", "value"], counted=False)
    if shown.steps is not None:
        _print_rows([asdict(step) for step in shown.steps], False, "steps", STEP_COLUMNS)
    if shown.steps_unavailable:
        click.echo(f"step history unavailable: {shown.steps_unavailable}")


AUDIT_COLUMNS = [
    "execution_name",
    "flow_type",
    "window_start",
    "window_end",
    "lateness_allowance",
    "records",
    "late_records",
    "duplicates_skipped",
    "future_records",
    "status",
]


@main.command()
@click.argument("source_id")
@_since_option
@_json_option
@state_dir_option
def audit(source_id: str, since: datetime | None, as_json: bool, state_dir: Path) -> None:
    """Show from the ledger that SOURCE_ID's successful windows, each reaching back its
    lateness allowance, cover time from its first run (or --since) to its cursor; name each
    gap with the runs on either side and its cause. Exit 1 when there is a gap."""
    from dataclasses import asdict

    from ops.audit import audit_source
    from shared.timefmt import isoformat

    since = _utc(since)
    with _database(state_dir) as (_, db):
        audited = audit_source(db, source_id, since=since)
    if audited.backfills and not as_json:
        _print_rows(
            [asdict(run) for run in audited.backfills],
            False,
            "backfills (reloads beside the Normal timeline: no part of its coverage)",
            AUDIT_COLUMNS,
        )
    if as_json:
        echo_json(audited.as_json())
    elif not audited.runs:
        since_text = f" since {isoformat(since)}" if since else ""
        click.echo(f"{source_id} has no succeeded runs to audit{since_text}")
    else:
        _print_rows([asdict(run) for run in audited.runs], False, "runs", AUDIT_COLUMNS)
        if audited.gaps:
            gaps = [{**asdict(gap), "causes": "\n".join(gap.causes)} for gap in audited.gaps]
            _print_rows(gaps, False, "gaps", ["start", "end", "before", "after", "causes"])
        else:
            first, last = audited.runs[0], audited.runs[-1]
            cursor = isoformat(audited.cursor) if audited.cursor else "none"
            click.echo(
                f"no gap: the windows of {len(audited.runs)} runs cover "
                f"{isoformat(first.start)} to {isoformat(last.end)}; cursor {cursor}"
            )
    if audited.gaps:
        sys.exit(1)


@main.command()
@_json_option
@state_dir_option
def status(as_json: bool, state_dir: Path) -> None:
    """Queue and DLQ depths per service, running executions, runs waiting for admission, locks,
    the last scheduler tick, what waits for approval and the runs that failed in the last 24
    hours. Each part is asked on its own: one that is down is named (exit 1) beside what the
    others say."""
    from ops.status import status as status_report

    report = status_report(operator_config(state_dir))
    if as_json:
        echo_json(report)
    else:
        for title, key, columns in STATUS_SECTIONS:
            if report[key] is not None:
                _print_rows(report[key], False, title, columns)
        admission = report["waiting_for_admission"]
        if admission is not None:
            oldest = _cell(admission["oldest_queued_at"])
            since = f", the oldest since {oldest}" if admission["waiting"] else ""
            click.echo(f"runs waiting for admission: {admission['waiting']}{since}")
        for down in report["unreachable"]:
            click.echo(f"cannot reach {down['part']}: {down['error']}", err=True)
    if report["unreachable"]:
        sys.exit(1)


# What `status` prints, in order: each section's title, its key in the report, its columns.
STATUS_SECTIONS = [
    ("queues", "queues", ["service", "queued", "in_flight", "dead_letters"]),
    ("running executions", "running", ["execution_name", "started"]),
    ("locked sources", "locked", ["source_id", "locked_by", "lock_expires_at", "lease_expired"]),
    ("scheduler ticks", "scheduler_ticks", ["rule", "last_tick_at", "handled_at"]),
    (
        "waiting for approval",
        "pending_approvals",
        ["what", "id", "source_id", "requested_by", "requested_at", "decide_with"],
    ),
    (
        "failed in the last 24 hours",
        "recent_failures",
        ["execution_name", "source_id", "flow_type", "finished_at", "failed_step", "error"],
    ),
]


# -- vendors ----------------------------------------------------------------------------------

VENDOR_COLUMNS = [
    "host",
    "sources",
    "max_concurrent",
    "slots_in_use",
    "held_by",
    "set_by",
    "set_at",
]


@main.group()
def vendors() -> None:
    """The vendors sources reach (hosts of http_api base_url) and how many downloads of each
    may read at once, across all their sources and workers."""


@vendors.command("list")
@_json_option
@state_dir_option
def vendors_list(as_json: bool, state_dir: Path) -> None:
    """Each vendor: its sources, its limit (empty: not limited), the slots held now and by
    which sources, who set the limit."""
    from ops.vendors import vendors_list as listed

    with _database(state_dir) as (_, db):
        rows = listed(db)
    _print_rows(rows, as_json, "vendors", VENDOR_COLUMNS)


@vendors.command("set")
@click.argument("host")
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, 1000),
    required=True,
    help="At most this many downloads of the vendor read at once.",
)
@_json_option
@state_dir_option
def vendors_set(host: str, max_concurrent: int, as_json: bool, state_dir: Path) -> None:
    """Limit HOST (host[:port] as `vendors list` shows it, or a base_url) to --max-concurrent
    downloads at once; a download waits for a slot, heartbeating. Recorded as your login."""
    from ops.vendors import set_limit

    _check_vendor(host)
    with _database(state_dir) as (_, db):
        limit = set_limit(db, host, max_concurrent)
    if as_json:
        echo_json(limit)
        return
    click.echo(
        f"{limit['set_by']} set vendor {limit['host']} to at most {limit['max_concurrent']} "
        f"download(s) at once; {limit['sources']} http_api source(s) reach it"
    )
    if not limit["sources"]:
        click.echo(
            "no source reaches this host yet: check its spelling in `sourceflow vendors list`"
        )


@vendors.command("unset")
@click.argument("host")
@_json_option
@state_dir_option
def vendors_unset(host: str, as_json: bool, state_dir: Path) -> None:
    """Lift HOST's limit: its downloads no longer wait for a slot."""
    from ops.vendors import unset_limit

    _check_vendor(host)
    with _database(state_dir) as (_, db):
        unlimited = unset_limit(db, host)
    if as_json:
        echo_json({"host": unlimited, "max_concurrent": None})
    else:
        click.echo(f"vendor {unlimited} is no longer limited")


def _check_vendor(host: str) -> None:
    """HOST names a host (ops.vendors spells it as the limits table does), before any
    connection is made."""
    from shared.connectors.pacing import vendor_host

    try:
        vendor_host(host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST") from None


# -- dead letters -----------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Dead-lettered messages: list them, replay them, delete them."""


DLQ_COLUMNS = [
    "queue",
    "message_id",
    "age_seconds",
    "receive_count",
    "source_id",
    "execution_arn",
    "schema",
    "error",
]


@dlq.command("list")
@click.argument("queue", required=False)
@_json_option
@state_dir_option
def dlq_list(queue: str | None, as_json: bool, state_dir: Path) -> None:
    """Show each dead-lettered message: queue, age, receive count, source, execution, schema,
    and the error that sent it there. QUEUE: a service (download) or a queue name; all if
    omitted."""
    from ops.dlq import list_dead_letters

    services = (_service(queue),) if queue else SERVICES
    with _database(state_dir) as (config, db):
        rows = list_dead_letters(config.client("sqs"), db, config.names, services)
    _print_rows(rows, as_json, "dead letters", DLQ_COLUMNS)


@dlq.command("replay")
@click.argument("queue")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many messages.")
@_json_option
@state_dir_option
def dlq_replay(
    queue: str, dry_run: bool, limit: int | None, as_json: bool, state_dir: Path
) -> None:
    """Move QUEUE's dead letters back to its work queue, keeping body and attributes; park
    (keep aside, in public.parked_message) task messages whose task is over; leave in the DLQ
    bodies its consumer would refuse again (not JSON, an unknown schema or version, one its
    contract refuses), saying why. --dry-run says all that and changes nothing."""
    from ops.dlq import replay

    with _database(state_dir) as (config, db):
        rows = replay(
            config.client("sqs"),
            config.client("stepfunctions"),
            db,
            config.names,
            _service(queue),
            dry_run=dry_run,
            limit=limit,
        )
    _print_rows(
        rows, as_json, "replay", ["queue", "message_id", "source_id", "schema", "action", "reason"]
    )


_yes_option = click.option("--yes", is_flag=True, help="Do not ask for a confirmation.")


@dlq.command("purge")
@click.argument("queue")
@_yes_option
@_json_option
@state_dir_option
def dlq_purge(queue: str, yes: bool, as_json: bool, state_dir: Path) -> None:
    """Delete every dead letter of QUEUE (those listed when you confirm), each kept first in
    public.parked_message with who deleted it."""
    from ops.dlq import delete, list_dead_letters

    service = _service(queue)
    with _database(state_dir) as (config, db):
        sqs = config.client("sqs")
        listed = list_dead_letters(sqs, db, config.names, (service,))
        if listed:
            _confirm(yes, f"delete all {len(listed)} dead letters of {config.names.dlq(service)}?")
            ids = {row["message_id"] for row in listed}
            listed = delete(sqs, db, config.names, service, ids, how="`sourceflow dlq purge`")
    _print_rows(listed, as_json, f"deleted from {service}'s DLQ", DLQ_COLUMNS)


@dlq.command("delete")
@click.argument("queue")
@click.argument("message_id", metavar="ID")
@_yes_option
@_json_option
@state_dir_option
def dlq_delete(queue: str, message_id: str, yes: bool, as_json: bool, state_dir: Path) -> None:
    """Delete the dead letter ID (its message id, from `sourceflow dlq list`) of QUEUE, kept
    first in public.parked_message with who deleted it."""
    from ops.config import OperatorError
    from ops.dlq import delete, list_dead_letters

    service = _service(queue)
    with _database(state_dir) as (config, db):
        sqs, dlq_name = config.client("sqs"), config.names.dlq(service)
        listed = list_dead_letters(sqs, db, config.names, (service,))
        letter = next((row for row in listed if row["message_id"] == message_id), None)
        if letter is None:
            raise OperatorError(
                f"no dead letter {message_id!r} in {dlq_name}; `sourceflow dlq list {service}` "
                "lists its message ids"
            )
        _confirm(
            yes,
            f"delete dead letter {message_id} ({letter['schema']}, source "
            f"{letter['source_id'] or 'unknown'}) from {dlq_name}?",
        )
        how = "`sourceflow dlq delete`"
        deleted = delete(sqs, db, config.names, service, {message_id}, how=how)
        if not deleted:
            raise OperatorError(
                f"dead letter {message_id!r} left {dlq_name} before it could be deleted "
                "(replayed or deleted meanwhile)"
            )
    _print_rows(deleted, as_json, f"deleted from {service}'s DLQ", DLQ_COLUMNS)


def _confirm(yes: bool, question: str) -> None:
    """Ask on the terminal unless --yes; anything but yes aborts and changes nothing."""
    if not yes:
        click.confirm(question, abort=True, err=True)


# -- logs -------------------------------------------------------------------------------------


@main.command()
@click.option("--run", "run_name", metavar="RUN", help="Only the lines of this run (name or ARN).")
@click.option(
    "--service",
    "services",
    type=click.Choice(SERVICES),
    multiple=True,
    help="Only this service's lines (repeatable); every service's if omitted.",
)
@_since_option
@_json_option
@state_dir_option
def logs(
    run_name: str | None,
    services: tuple[str, ...],
    since: datetime | None,
    as_json: bool,
    state_dir: Path,
) -> None:
    """The services' log lines, oldest first, one readable line each: on the embedded stack
    from its workers' log files (SOURCEFLOW_LOGS_DIR, in local.env; a stopped stack's
    <state dir>/logs when no AWS region is set), else from CloudWatch Logs. A run's lines are
    those that mention its execution name."""
    from ops.logs import log_store, read_logs

    store = log_store(operator_config(state_dir), state_dir)
    lines = read_logs(store, services=services or SERVICES, since=_utc(since), run=run_name)
    if as_json:
        echo_json([line.as_json() for line in lines])
    elif not lines:
        click.echo("no log lines" + (f" mention run {run_name}" if run_name else ""))
    else:
        click.echo("\n".join(line.text() for line in lines))


# -- workflows --------------------------------------------------------------------------------


@main.group()
def workflow() -> None:
    """Workflows after ingestion: tasks that run after runs and after each other (README,
    "Workflows after ingestion"); `sourceflow apply` registers them."""


WORKFLOW_COLUMNS = [
    "name",
    "version",
    "enabled",
    "schedule_interval",
    "schedule_cron",
    "last_run",
    "last_status",
    "last_started_at",
]
WORKFLOW_RUN_COLUMNS = [
    "id",
    "workflow",
    "version",
    "status",
    "succeeded",
    "failed",
    "skipped",
    "requested_by",
    "started_at",
    "duration_seconds",
]
WORKFLOW_TASK_COLUMNS = ["task", "kind", "status", "variables_seen", "output", "error"]


@workflow.command("list")
@_json_option
@state_dir_option
def workflow_list(as_json: bool, state_dir: Path) -> None:
    """The registered workflows: current version, schedule, enabled, last run."""
    from shared.store.workflows import list_workflows

    with _database(state_dir) as (_, db), db.transaction() as cur:
        rows = list_workflows(cur)
    _print_rows(rows, as_json, "workflows", WORKFLOW_COLUMNS)


@workflow.command("export")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="Write here.")
@_json_option
@state_dir_option
def workflow_export(output: Path | None, as_json: bool, state_dir: Path) -> None:
    """Write the enabled workflows as a file's `workflows:` list (YAML; --json: the same as
    JSON) that `sourceflow apply` reads back as no change."""
    from ops.sources_file import dump_yaml
    from ops.workflows import export_workflows

    with _database(state_dir) as (_, db):
        document = {"workflows": export_workflows(db)}
    text = to_json(document) + "\n" if as_json else dump_yaml(document)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


@workflow.command("run")
@click.argument("name")
@click.option(
    "--var",
    "pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A variable's value for this run instead of its default (repeat for more).",
)
@_json_option
@state_dir_option
def workflow_run(name: str, pairs: tuple[str, ...], as_json: bool, state_dir: Path) -> None:
    """Start a run of workflow NAME's current version now; print its id, for `workflow
    show`."""
    import secrets

    from ops.workflows import given_variables, run_workflow

    given = given_variables(pairs)
    with _database(state_dir) as (config, db):
        started = run_workflow(
            db, config.client("stepfunctions"), name, given, nonce=secrets.token_hex(4)
        )
    if as_json:
        echo_json(started)
    else:
        click.echo(
            f"workflow {name} v{started['version']} started: run {started['run']} "
            f"(`sourceflow workflow show {started['run']}`)"
        )


@workflow.command("runs")
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@_json_option
@state_dir_option
def workflow_runs(name: str | None, limit: int, as_json: bool, state_dir: Path) -> None:
    """Workflow runs (of NAME), newest first: version, status, how many tasks ended how."""
    from shared.store.workflows import runs as workflow_runs_of

    with _database(state_dir) as (_, db), db.transaction() as cur:
        rows = workflow_runs_of(cur, name, limit)
    _print_rows(rows, as_json, "workflow runs", WORKFLOW_RUN_COLUMNS)


@workflow.command("show")
@click.argument("run_id", metavar="RUN")
@_json_option
@state_dir_option
def workflow_show(run_id: str, as_json: bool, state_dir: Path) -> None:
    """Workflow run RUN whole: its version, variables, status; then each task of its version
    with its status, the variables it saw, what it set and its error. Exit 1 if it failed."""
    from ops.workflows import show_run
    from shared.rules.workflows import WorkflowRunStatus

    with _database(state_dir) as (_, db):
        shown = show_run(db, run_id)
    if as_json:
        echo_json(shown)
    else:
        fields = [{"field": key, "value": _cell(value)} for key, value in shown["run"].items()]
        _print_rows(fields, False, f"workflow run {run_id}", ["field", "value"], counted=False)
        _print_rows(shown["tasks"], False, "tasks", WORKFLOW_TASK_COLUMNS)
    if shown["run"]["status"] == WorkflowRunStatus.FAILED:
        sys.exit(1)


# -- plumbing ---------------------------------------------------------------------------------


def _service(queue: str) -> str:
    from ops.dlq import resolve_service

    return resolve_service(queue)


def operator_config(state_dir: Path) -> Any:
    from ops.config import OperatorConfig

    return OperatorConfig.load(state_dir, os.environ)


def _callbacks(config: Any) -> Any:
    from shared.runtime.tasks import TaskCallbacks

    return TaskCallbacks(config.client("stepfunctions"))


@contextlib.contextmanager
def _database(state_dir: Path) -> Any:
    from ops.config import reach_database
    from shared.store.db import Database

    config = operator_config(state_dir)
    db = Database(config.database_url(), application_name="sourceflow-operator")
    try:
        reach_database(db, config)
        yield config, db
    finally:
        db.close()


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else _as_utc(moment)


def _as_utc(moment: datetime) -> datetime:
    """A time given without a zone is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _add_plugin_commands() -> None:
    """Commands that other packages add, found by their entry points: the embedded stack's
    `up`, `demo` and `tick` (local/commands.py), so that this command imports nothing of the
    embedded stack and runs against AWS without it."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="sourceflow.commands"):
        main.add_command(entry.load(), entry.name)


def sourceflow() -> None:
    """The `sourceflow` command: the operator's commands and those its plugins add."""
    _add_plugin_commands()
    main()


if __name__ == "__main__":
    sourceflow()
