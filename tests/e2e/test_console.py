"""The web console in a real browser (Debian's chromium driven by Playwright) against the
embedded stack: people sign in with their own logins, a Re-specs run waits in Approve on the
drawn state machine until a second person approves it, a failing run shows its failed state in
red with the error, and hostile text is shown as text.

SOURCEFLOW_CONSOLE_SCREENSHOTS=docs/console keeps a screenshot of each page there (docs/console.md
shows them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from psycopg2.extensions import parse_dsn

from console.serve import LocalConsole, local_console, start_in_thread
from local.stack import LocalStack
from ops import dlq
from ops.config import OperatorConfig, read_env_file
from tests.e2e.harness import WAIT_SECONDS, Harness, wait_for
from tests.e2e.harness.workflow_runs import ALICE, a_file, ended

CHROMIUM = "/usr/bin/chromium"
# Debian's chromium, headless, with nothing that reaches out of this machine.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = WAIT_SECONDS * 1000
DAY = timedelta(days=1)
SCREENSHOTS = os.environ.get("SOURCEFLOW_CONSOLE_SCREENSHOTS")
# States an approved Re-specs run goes through (among others: all it enters go green).
APPROVED_RUN_PASSES = {"Validate", "Approve", "Download", "UnlockAfterSuccess", "Succeeded"}
SQM = "UPDATE public.listing_attributes SET value = 'sqm' WHERE source_id = '{source}'"
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


@pytest.fixture(scope="module", autouse=True)
def approval_gate(stack: LocalStack) -> Iterator[None]:
    """The validation service deployed with the gate on, for this module only."""
    stack.redeploy("validation", {"RESPECS_APPROVAL_REQUIRED": "true"})
    yield
    stack.redeploy("validation", {"RESPECS_APPROVAL_REQUIRED": "false"})


@pytest.fixture(scope="module")
def console(stack: LocalStack) -> Iterator[LocalConsole]:
    """The console `sourceflow up` serves, on a free port, against this stack."""
    config = OperatorConfig.load(stack.options.state_dir, {})
    served = start_in_thread(local_console(config, port=0))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    # Every expectation waits as long as the harness's waits do: a run ends when the machine
    # lets it, not within Playwright's default 5 s.
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def password_of(stack: LocalStack, person: str) -> str:
    """The person's password, from the credentials file `sourceflow up` wrote for them."""
    login = read_env_file(stack.people[person])["DATABASE_URL"]
    return str(parse_dsn(login)["password"])


def signed_in(browser: Browser, console: LocalConsole, stack: LocalStack, person: str) -> Page:
    """A browser of its own for the person, signed in to the console."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(WAIT_MS)
    page.goto(console.url + "signin")
    screenshot(page, "signin")
    page.fill("input[name=login]", person)
    page.fill("input[name=password]", password_of(stack, person))
    page.click("button[type=submit]")
    expect(page.locator("#me")).to_have_text(person)
    return page


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def state(page: Page, name: str) -> Locator:
    return page.locator(f'#state-machine g.state[data-state="{name}"]')


def field(page: Page, name: str) -> Locator:
    """The value of one of the run's fields beside its graph."""
    return page.locator(f'#counters tr:has(th:text-is("{name}")) td')


def reloaded_until(page: Page, selector: str) -> Locator:
    """The element once the page shows it, reloading the page until then, as a person would."""

    def shown() -> Locator | None:
        page.reload()
        found = page.locator(selector)
        return found.first if found.count() else None

    return wait_for(shown, f"{selector} on {page.url}")


def the_run_of(page: Page, source_id: str) -> str:
    """The run the source page lists once the scheduler started it."""
    return reloaded_until(page, "#runs a").inner_text()


def test_unauthenticated_calls_are_refused(console: LocalConsole) -> None:
    for path in ("api/sources", "api/runs", "api/status", "sources", "approvals"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(console.url + path, timeout=WAIT_SECONDS)
        assert refused.value.code == 401, path
    posted = urllib.request.Request(
        console.url + "api/approvals/x/approve", data=b"", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(posted, timeout=WAIT_SECONDS)
    assert refused.value.code == 401
    assert "sign in" in json.loads(refused.value.read())["error"]


def test_sourceflow_console_serves_it_against_a_running_stack(stack: LocalStack) -> None:
    # When `sourceflow console` starts against the stack's state directory
    command = [sys.executable, "-m", "ops.cli", "console", "--port", "0", "--json"]
    state_dir = ["--state-dir", str(stack.options.state_dir)]
    serving = subprocess.Popen([*command, *state_dir], stdout=subprocess.PIPE, text=True)
    try:
        # Then it says where it listens, and what it serves refuses whoever has not signed in
        assert serving.stdout is not None
        said = json.loads(serving.stdout.readline())
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(said["console"] + "api/whoami", timeout=WAIT_SECONDS)
        assert refused.value.code == 401
    finally:
        # and Ctrl-C stops it
        serving.send_signal(signal.SIGINT)
        assert serving.wait(timeout=WAIT_SECONDS) == 0


def test_a_respecs_run_waits_in_approve_until_a_second_person_approves_it_in_the_console(
    harness: Harness, stack: LocalStack, console: LocalConsole, browser: Browser
) -> None:
    # Given a source whose Re-specs query alice set
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(harness.new_dataset([DAY]), cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 2)
    query = SQM.format(source=source_id)
    flow = harness.sourceflow("flow", "set", source_id, "respecs", "--sql", query, person="alice")
    assert flow.returncode == 0, flow.stderr

    # When alice signs in and starts a run of it from its page
    alice = signed_in(browser, console, stack, "alice")
    screenshot(alice, "sources")
    alice.click(f'#sources a:text-is("{source_id}")')
    alice.click("#run-now")
    run = the_run_of(alice, source_id)
    screenshot(alice, "source")

    # Then its run page shows the state machine waiting in Approve, what it did before in green
    alice.click(f'#runs a:text-is("{run}")')
    expect(state(alice, "Approve")).to_have_attribute("data-status", "in progress")
    for done in ("Validate", "RunOrSkip"):
        expect(state(alice, done)).to_have_attribute("data-status", "succeeded")
    expect(state(alice, "Download")).to_have_attribute("data-status", "not reached")
    screenshot(alice, "run-waiting")

    # When alice, who asked for the query, tries to approve it herself
    alice.click('nav a:text-is("Approvals")')
    # (listed once the validation service recorded the wait, a moment after entering Approve)
    row = reloaded_until(alice, f'#approvals tr[data-run="{run}"]')
    expect(row).to_contain_text(query)
    screenshot(alice, "approvals")
    row.locator("button.approve").click()

    # Then the database refuses her, and the run still waits
    expect(alice.locator(".error")).to_contain_text("alice")
    expect(alice.locator(f'#approvals tr[data-run="{run}"]')).to_have_count(1)

    # When bob signs in and approves it
    bob = signed_in(browser, console, stack, "bob")
    bob.click('nav a:text-is("Approvals")')
    bob.locator(f'#approvals tr[data-run="{run}"] button.approve').click()

    # Then he sees the run go on, every state it passes through green
    expect(bob.locator("#execution-status")).to_have_text("SUCCEEDED")
    statuses = {
        box.get_attribute("data-state"): box.get_attribute("data-status")
        for box in bob.locator("#state-machine g.state").all()
    }
    entered = {name for name, status in statuses.items() if status != "not reached"}
    assert entered >= APPROVED_RUN_PASSES
    assert {statuses[name] for name in entered} == {"succeeded"}
    expect(bob.locator("#counters")).to_contain_text("respecs rows")
    expect(field(bob, "approved by")).to_contain_text("bob")
    screenshot(bob, "run-succeeded")
    # and the ledger says bob approved it, as it does when he approves with `sourceflow approve`
    with harness.db.transaction() as cur:
        cur.execute(
            "SELECT a.decided_by, a.status FROM public.run_approval a JOIN public.source_run r"
            " USING (execution_arn) WHERE r.execution_name = %s",
            (run,),
        )
        approval = cur.fetchone()
    assert (approval["decided_by"], approval["status"]) == ("bob", "approved")

    # and the runs over time show it in the chart
    bob.click('nav a:text-is("Runs")')
    expect(bob.locator(f'#runs-chart a[href="/runs/{run}"] rect.run-succeeded')).to_have_count(1)
    expect(bob.locator(f'#totals-chart g[data-source="{source_id}"]')).to_contain_text("1")


def test_a_failed_run_shows_its_failed_state_in_red_with_the_error_as_text(
    harness: Harness, stack: LocalStack, console: LocalConsole, browser: Browser
) -> None:
    # Given a source whose name and params carry HTML, so its run fails in Validate
    source_id = harness.new_source(
        harness.new_dataset([DAY]), runtime_count=2, params={"type": HOSTILE}
    )
    with harness.db.transaction() as cur:
        cur.execute("UPDATE public.source SET name = %s WHERE source_id = %s", (HOSTILE, source_id))
    result = harness.run(source_id)
    assert result.run["failed_step"] == "Validate"
    run = result.execution_arn.rsplit(":", 1)[1]

    # When alice looks at the run
    alice = signed_in(browser, console, stack, "alice")
    alice.goto(f"{console.url}runs/{run}")

    # Then Validate is red, the run's end too, and the error is shown, its HTML as text
    expect(alice.locator("#execution-status")).to_have_text("FAILED")
    expect(state(alice, "Validate")).to_have_attribute("data-status", "failed")
    expect(alice.locator("#run-error")).to_contain_text("InvalidFlowParams")
    expect(alice.locator("#run-error")).to_contain_text(HOSTILE)
    fill = state(alice, "Validate").locator("rect").evaluate("rect => getComputedStyle(rect).fill")
    assert fill == "rgb(209, 50, 18)"  # the failed colour of console.css
    screenshot(alice, "run-failed")
    # and on the source's page its name is text too; no script of it ran anywhere
    alice.goto(f"{console.url}sources/{source_id}")
    expect(alice.locator("table.fields")).to_contain_text(HOSTILE)
    assert alice.evaluate("window.pwned") is None


def test_dead_letters_are_listed_and_replayed_from_the_console(
    harness: Harness, stack: LocalStack, console: LocalConsole, browser: Browser
) -> None:
    # Given a dead letter in validation's DLQ that its consumer would refuse again, naming a
    # source with HTML in its id
    sqs, names = harness.aws("sqs"), OperatorConfig.load(stack.options.state_dir, {}).names
    dlq_url = sqs.get_queue_url(QueueName=names.dlq("validation"))["QueueUrl"]
    body = json.dumps({"schema": "no-such-message", "version": 1, "source_id": HOSTILE})
    message_id = sqs.send_message(QueueUrl=dlq_url, MessageBody=body)["MessageId"]
    try:
        # When alice looks at the dead letters
        alice = signed_in(browser, console, stack, "alice")
        alice.goto(f"{console.url}dead-letters")

        # Then it is listed, its source's id as text
        row = alice.locator("#dead-letters tr", has_text=message_id)
        expect(row).to_contain_text(HOSTILE)
        screenshot(alice, "dead-letters")

        # When she replays validation's queue, Then the letter is left where it is, saying why
        alice.click('form[action="/dead-letters/validation/replay"] button')
        replayed = alice.locator("#replayed tr", has_text=message_id)
        expect(replayed).to_contain_text("left: would fail again")
        assert alice.evaluate("window.pwned") is None
    finally:
        sqs_letters = dlq.list_dead_letters(sqs, harness.db, names, ("validation",))
        if any(letter["message_id"] == message_id for letter in sqs_letters):
            dlq.delete(sqs, harness.db, names, "validation", {message_id}, how="test cleanup")


def test_a_person_cancels_a_run_from_its_page_and_is_recorded_as_the_canceller(
    harness: Harness, stack: LocalStack, console: LocalConsole, browser: Browser
) -> None:
    # Given a Re-specs run waiting in Approve
    source_id = harness.new_source(harness.new_dataset([DAY]), runtime_count=3)
    harness.set_params(source_id, {"type": "Re-specs", "sql": SQM.format(source=source_id)})
    run = harness.start(source_id).rsplit(":", 1)[1]
    bob = signed_in(browser, console, stack, "bob")
    bob.goto(f"{console.url}runs/{run}")  # (in the ledger once validated: reloaded until then)
    reloaded_until(bob, '#state-machine g.state[data-state="Approve"][data-status="in progress"]')

    # When bob cancels it from its page, saying why (on a page of its own: the run's page
    # reloads while the run goes)
    bob.click("#cancel")
    bob.fill("#cancel-form input[name=reason]", "wrong query")
    bob.click("#cancel-form button")

    # Then the run ends cancelled, its Approve step shown cancelled, bob as the canceller
    expect(bob.locator("#run-status")).to_have_text("cancelled")
    expect(state(bob, "Approve")).to_have_attribute("data-status", "cancelled")
    expect(field(bob, "cancelled by")).to_have_text("bob: wrong query")
    assert harness.run_source_row(source_id)["locked_by"] is None

    # (the last test of the module: the other pages, with every run of the module in them)
    for name, link in (("runs", "Runs"), ("status", "Status")):
        bob.click(f'nav a:text-is("{link}")')
        expect(bob.locator("h1")).to_be_visible()
        screenshot(bob, name)


def test_a_workflow_run_is_drawn_each_task_coloured_by_how_it_ended(
    harness: Harness, stack: LocalStack, console: LocalConsole, browser: Browser, tmp_path: Path
) -> None:
    # Given a workflow whose sql task fails, so its recovery runs and the task after it is
    # skipped, run to its end
    name = f"console_{os.urandom(4).hex()}"
    applied = harness.sourceflow(
        "apply", str(a_file(tmp_path, name, query="SELECT 1/0")), person=ALICE
    )
    assert applied.returncode == 0, applied.stderr
    started = harness.sourceflow("workflow", "run", name, "--json", person=ALICE)
    run_id = json.loads(started.stdout)["run"]
    ended(harness, run_id)

    # When alice opens it from the workflows page
    alice = signed_in(browser, console, stack, "alice")
    alice.goto(f"{console.url}workflows")
    alice.click(f'#workflow-runs a:text-is("{run_id}")')

    # Then each task's box says how it ended, in its colour
    expect(alice.locator("#run-status")).to_have_text("failed")
    boxes = {
        task: alice.locator(f'#workflow g.state[data-state="{task}"]')
        for task in ("count", "say", "recover")
    }
    expect(boxes["count"]).to_have_attribute("data-status", "failed")
    expect(boxes["say"]).to_have_attribute("data-status", "skipped")
    expect(boxes["recover"]).to_have_attribute("data-status", "succeeded")
    fills = {
        task: box.locator("rect").evaluate("rect => getComputedStyle(rect).fill")
        for task, box in boxes.items()
    }
    assert fills == {
        "count": "rgb(209, 50, 18)",
        "say": "rgb(200, 204, 208)",
        "recover": "rgb(46, 160, 67)",
    }
    expect(alice.locator('#tasks tr[data-task="count"]')).to_contain_text("division by zero")
    screenshot(alice, "workflow-run")
