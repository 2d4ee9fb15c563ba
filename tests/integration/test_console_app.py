"""The console refuses what is not authenticated (401) and a POST without the session's CSRF
token (403), and its pages show hostile text as text. No database: nothing is authenticated,
or the refusal comes first; the templates render data given to them."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.routing import Route

from console import charts
from console.api import DRAWN_DEFINITION, Operator
from console.app import _templates, create_app
from console.auth import NotAuthenticated, PeopleSignIn
from console.graph import draw, task_edges, workflow_graph
from ops.config import OperatorConfig

with warnings.catch_warnings():
    # starlette asks for httpx's successor; httpx is the client the project pins
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

CONFIG = OperatorConfig({"DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}, "the test")
ACCOUNT = "123456789012"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def every_route(method: str) -> list[str]:
    app = create_app(PeopleSignIn(CONFIG))
    return [
        route.path.replace("{source_id}", "s1")
        .replace("{run}", "r1")
        .replace("{queue}", "download")
        for route in app.routes
        if isinstance(route, Route)
        and method in (route.methods or ())
        and route.path not in {"/", "/signin", "/signout"}
    ]


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(PeopleSignIn(CONFIG)), follow_redirects=False)


@pytest.mark.parametrize("path", every_route("GET"))
def test_every_page_and_api_call_is_refused_without_a_sign_in(
    client: TestClient, path: str
) -> None:
    answered = client.get(path)
    assert answered.status_code == 401, path
    if path.startswith("/api/"):
        assert "sign in first" in answered.json()["error"]
    else:
        assert 'action="/signin"' in answered.text


@pytest.mark.parametrize("path", every_route("POST"))
def test_every_action_is_refused_without_a_sign_in(client: TestClient, path: str) -> None:
    assert client.post(path, data={"csrf_token": "guess"}).status_code == 401, path


class SignedIn(PeopleSignIn):
    """Signed in as `who` (the calls themselves are never reached in these tests)."""

    def operator(self, session_id: str | None, request_context: Any) -> Operator:
        return Operator("alice", CONFIG, db=None)  # type: ignore[arg-type]

    def csrf_ok(self, session_id: str | None, given: str | None) -> bool:
        return given == "the-session-token"

    def csrf_token(self, session_id: str | None) -> str:
        return "the-session-token"


@pytest.mark.parametrize("path", ["/api/approvals/r1/approve", "/approvals/r1/approve"])
def test_a_post_without_the_session_s_csrf_token_is_refused(path: str) -> None:
    client = TestClient(create_app(SignedIn(CONFIG)), follow_redirects=False)
    for token in (None, "another-token"):
        data = {"csrf_token": token} if token else {}
        answered = client.post(path, data=data)
        assert answered.status_code == 403, (path, token)


def test_every_answer_forbids_scripts_framing_and_sniffing(client: TestClient) -> None:
    for answered in (client.get("/sources"), client.get("/api/sources"), client.get("/signin")):
        csp = answered.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src" not in csp  # no script is allowed from anywhere
        assert answered.headers["x-content-type-options"] == "nosniff"


def test_on_this_machine_only_its_own_names_are_answered() -> None:
    app = create_app(PeopleSignIn(CONFIG), allowed_hosts=("127.0.0.1", "localhost"))
    rebound = TestClient(app, base_url="http://attacker.example")
    assert rebound.get("/signin").status_code == 400
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/signin").status_code == 200


def test_a_wrong_password_is_refused_saying_no_more() -> None:
    client = TestClient(create_app(PeopleSignIn(CONFIG)), follow_redirects=False)
    answered = client.post("/signin", data={"login": "alice", "password": "wrong"})
    assert answered.status_code == 401
    assert "did not accept this login and password" in answered.text
    assert "sourceflow_console" not in answered.cookies


def test_a_session_expires() -> None:
    now = [0.0]
    sessions = PeopleSignIn(CONFIG, clock=lambda: now[0])
    with pytest.raises(NotAuthenticated):
        sessions.operator("no-such-session", {})


def render(template: str, data: Any, **request: Any) -> str:
    fake_request = SimpleNamespace(path_params=request, query_params={}, scope={})
    context = {"request": fake_request, "data": data, "me": HOSTILE, "error": HOSTILE}
    return _templates().env.get_template(template).render(**context, csrf_token="t")


def assert_shown_as_text(html: str) -> None:
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_the_sources_page_shows_a_hostile_name_as_text() -> None:
    source = {
        "source_id": HOSTILE,
        "source_type": HOSTILE,
        "flow": "Normal",
        "last_modified_date": None,
        "runtime_count": 1,
        "disabled": HOSTILE,
        "last_run_status": None,
        "last_run_at": None,
        "last_success_age": None,
        "next_due_at": None,
        "overdue": None,
        "locked_by": None,
        "lock_expires_at": None,
    }
    assert_shown_as_text(render("sources.html", [source]))


def test_the_run_page_shows_a_hostile_error_as_text() -> None:
    run = {
        "execution_name": HOSTILE,
        "source_id": HOSTILE,
        "status": "failed",
        "flow_type": HOSTILE,
        "asked_by": HOSTILE,
        "error": HOSTILE,
        "failed_step": HOSTILE,
        "error_detail": HOSTILE,
        "started_at": datetime.now(UTC),
        "execution_arn": None,
    }
    data = {
        "run": run,
        "execution_status": "FAILED",
        "steps": dict.fromkeys(DRAWN_DEFINITION["States"], "failed"),
        "steps_unavailable": HOSTILE,
        "drawing": draw(DRAWN_DEFINITION),
    }
    assert_shown_as_text(render("run.html", data, run=HOSTILE))


def test_the_source_page_shows_hostile_params_and_history_as_text() -> None:
    data = {
        "source": {"source_id": "s1", "batch_execution_params": {"type": HOSTILE}},
        "freshness": None,
        "runs": [],
        "flow_history": [
            {
                "changed_at": datetime.now(UTC),
                "changed_by": HOSTILE,
                "reason": HOSTILE,
                "from_params": None,
                "to_params": {"sql": HOSTILE},
            }
        ],
        "changes": [],
    }
    html = render("source.html", data, source_id=HOSTILE)
    assert_shown_as_text(html)
    # a JSON value reads as JSON: its quotes are quotes, not escapes of HTML-safe JSON
    assert "&#34;type&#34;: &#34;&lt;script&gt;" in html and "\\u003c" not in html


def test_the_runs_page_shows_a_hostile_source_and_error_as_text() -> None:
    now = datetime.now(UTC)
    run = {
        "execution_name": HOSTILE,
        "source_id": HOSTILE,
        "flow_type": "normal",
        "status": "failed",
        "started_at": now - timedelta(hours=1),
        "finished_at": now,
        "records": 3,
        "duration_seconds": 3600.0,
        "error": HOSTILE,
        "failed_step": "Download",
    }
    per_source = charts.per_source([run])
    data = {
        "days": 1,
        "runs": [run],
        "per_source": per_source,
        "chart": charts.timeline([run], since=now - timedelta(days=1), until=now),
        "totals": charts.totals(per_source),
    }
    assert_shown_as_text(render("runs.html", data))


def api_gateway_event(path: str, user_arn: str | None) -> dict[str, Any]:
    """What API Gateway's REST API (IAM authorization) hands the console's function."""
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": {"host": "abc.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "requestContext": {
            "stage": "dev",
            "path": f"/dev{path}",
            "identity": {"userArn": user_arn, "sourceIp": "192.0.2.1"},
            "requestId": "r-1",
        },
        "body": None,
        "isBase64Encoded": False,
    }


def test_the_function_refuses_a_caller_who_is_not_a_person(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the console's function as console.yaml configures it
    for key, value in {
        "DATABASE_URL": "postgresql://db.example:5432/sourceflow",
        "SOURCEFLOW_DB_IAM_AUTH": "true",
        "SOURCEFLOW_STAGE": "dev",
        "STATE_MACHINE_ARN": f"arn:aws:states:eu-west-1:{ACCOUNT}:stateMachine:sourceflow-dev-run",
        "EVENT_BUS_NAME": "sourceflow-dev",
    }.items():
        monkeypatch.setenv(key, value)
    from console.handler import lambda_handler

    context: Any = None  # the function reads nothing of Lambda's context

    # When the account's root calls it (IAM let it through: root may do anything)
    answered = lambda_handler(
        api_gateway_event("/api/sources", f"arn:aws:iam::{ACCOUNT}:root"), context
    )

    # Then it is refused, saying why, before any database is reached
    assert answered["statusCode"] == 401
    assert "not an IAM user or a named role session" in answered["body"]
    # and a page's refusal says how to call it, its links under the API's stage
    page = lambda_handler(api_gateway_event("/sources", None), context)
    assert page["statusCode"] == 401
    assert 'href="/dev/sources"' in page["body"]
    assert "signed (SigV4)" in page["body"] and 'name="password"' not in page["body"]


def test_the_workflow_run_page_colours_each_task_and_shows_hostile_text_as_text() -> None:
    tasks: list[dict[str, Any]] = [
        {"name": "check", "kind": "sql"},
        {"name": "load", "kind": "ingest", "after": ["check"]},
        {"name": "recover", "kind": "sql", "after": [{"task": "load", "on": "failure"}]},
    ]
    run = {
        "id": "r1",
        "workflow": "campaign",
        "version": 2,
        "status": "failed",
        "requested_by": HOSTILE,
        "variables": {"channel": HOSTILE},
    }
    shown = [
        {
            "task": "check",
            "kind": "sql",
            "status": "succeeded",
            "variables_seen": {},
            "output": {"campaign_id": HOSTILE},
            "error": None,
            "child_run_id": None,
        },
        {
            "task": "load",
            "kind": "ingest",
            "status": "failed",
            "variables_seen": {},
            "output": None,
            "error": HOSTILE,
            "child_run_id": "orders-20261128T120000Z-req1",
        },
        {
            "task": "recover",
            "kind": "sql",
            "status": None,
            "variables_seen": None,
            "output": None,
            "error": None,
            "child_run_id": None,
        },
    ]
    data = {
        "run": run,
        "tasks": shown,
        "statuses": {"check": "succeeded", "load": "failed", "recover": "not reached"},
        "drawing": draw(workflow_graph(tasks), task_edges),
    }

    html = render("workflow_run.html", data, workflow_run="r1")

    assert_shown_as_text(html)
    assert 'data-state="load" data-status="failed"' in html
    assert 'data-state="recover" data-status="not reached"' in html
    assert 'class="edge edge-failure"' in html
    assert "/runs/orders-20261128T120000Z-req1" in html
