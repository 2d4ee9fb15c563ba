"""The console: an ASGI application (Starlette) of two halves over the same functions of
console/api.py, a JSON API under /api and server-rendered pages (Jinja2, autoescaped) beside
it. Every route but sign-in needs an authenticated person (401 otherwise), and every POST the
session's CSRF token. Served locally by `sourceflow console` / `sourceflow up` (uvicorn), and
in the cloud behind API Gateway (console/handler.py, through Mangum)."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import botocore.exceptions
import jinja2
import psycopg2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import api
from console.auth import CSRF_FIELD, SESSION_SECONDS, NotAuthenticated, SignInRefused
from ops.output import cell, json_value
from ops.run_view import StepStatus
from shared.errors import SourceflowError

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "sourceflow_console"
MAX_BODY_BYTES = 64 * 1024  # a form or JSON body is a few fields


class Authentication(Protocol):
    """How requests are authenticated: console/auth.py's PeopleSignIn or IamPrincipals."""

    password_sign_in: bool

    def sign_in(self, login: str, password: str) -> str: ...
    def sign_out(self, session_id: str | None) -> None: ...
    def operator(self, session_id: str | None, request_context: Any) -> api.Operator: ...
    def csrf_token(self, session_id: str | None) -> str: ...
    def csrf_ok(self, session_id: str | None, given: str | None) -> bool: ...
    def done(self, op: api.Operator) -> None: ...
    def close(self) -> None: ...


# What an API answer's errors become: something the operator can fix (400), or a part that
# did not answer (503); each one line, never a traceback.
_UNAVAILABLE = (psycopg2.Error, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)

Call = Callable[[api.Operator, Request, dict[str, Any]], Any]


def when(value: Any) -> Any:
    """A moment or a duration as the operator's command shows it (`2026-11-28 12:00:05Z`,
    `10m`: ops.output.cell); anything else as it is."""
    if isinstance(value, datetime | timedelta):
        return cell(value)
    return value


def json_text(value: Any) -> str:
    """A JSON value as text to show (autoescaped like any text, so no HTML-safe JSON escapes
    in the way of reading it)."""
    return json.dumps(value, default=json_value, ensure_ascii=False)


def root(request: Request) -> str:
    """Where the console's paths start: "" locally, "/<stage>" behind API Gateway's stage."""
    return str(request.scope.get("root_path", ""))


def _templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is text: a source named <script> shows as that text
        undefined=jinja2.StrictUndefined,
    )
    environment.globals["STATUSES"] = [str(status) for status in StepStatus]
    environment.globals["root"] = root
    environment.filters["when"] = when
    environment.filters["json_text"] = json_text
    return Jinja2Templates(env=environment)


# Every answer says what a browser may do with it: nothing but this console's own styles,
# images and forms (the pages have no script at all), never framed, never sniffed as another
# type, and no address of it sent elsewhere. A script that escaped escaping would not run.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    auth: Authentication,
    *,
    secure_cookie: bool = False,
    allowed_hosts: tuple[str, ...] | None = None,
) -> Starlette:
    """The console over `auth`; `allowed_hosts`, when given, the only Host headers answered
    (on this machine: a page of another site rebinding its name to 127.0.0.1 is refused)."""
    templates = _templates()

    def session_id(request: Request) -> str | None:
        value = request.session.get("id")
        return value if isinstance(value, str) else None

    def _first_line(exc: BaseException) -> str:
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__

    async def acting(
        request: Request, call: Call, form: dict[str, Any]
    ) -> tuple[Any, api.Operator]:
        context = request.scope.get("aws.event", {}).get("requestContext", {})
        op = await run_in_threadpool(auth.operator, session_id(request), context)
        try:
            return await run_in_threadpool(call, op, request, form), op
        finally:
            auth.done(op)

    async def posted(request: Request) -> dict[str, Any]:
        """The form (or JSON body) of a POST, once its CSRF token is checked."""
        if request.headers.get("content-type", "").startswith("application/json"):
            form: dict[str, Any] = await request.json()
        else:
            form = dict(await request.form())
        given = request.headers.get("x-csrf-token") or form.pop(CSRF_FIELD, None)
        if not auth.csrf_ok(session_id(request), given):
            raise _Forbidden("this form is stale or not the console's own: reload the page")
        return form

    def api_route(path: str, call: Call, method: str = "GET") -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                form = await posted(request) if method == "POST" else {}
                result, _ = await acting(request, call, form)
            except NotAuthenticated as exc:
                return JSONResponse({"error": str(exc)}, status_code=401)
            except _Forbidden as exc:
                return JSONResponse({"error": str(exc)}, status_code=403)
            except SourceflowError as exc:
                return JSONResponse({"error": _first_line(exc)}, status_code=400)
            except _UNAVAILABLE as exc:
                return JSONResponse({"error": _first_line(exc)}, status_code=503)
            return JSONResponse(api.as_json(result))

        return Route(path, endpoint, methods=[method])

    async def page(
        request: Request, template: str, call: Call, *, error: str | None = None, status: int = 200
    ) -> Response:
        """The page showing what `call` returns (and `error`, of an action that failed)."""
        context: dict[str, Any] = {"request": request, "error": error, "data": None, "me": None}
        try:
            context["data"], op = await acting(request, call, {})
            context["me"] = op.login
        except NotAuthenticated as exc:
            return signin_page(request, str(exc), 401)
        except SourceflowError as exc:
            context["error"], status = error or _first_line(exc), max(status, 400)
        except _UNAVAILABLE as exc:
            context["error"], status = _first_line(exc), 503
        context["csrf_token"] = _csrf_or_empty(request)
        if context["me"] is None:
            context["me"] = await _login_or_none(request)
        return templates.TemplateResponse(request, template, context, status_code=status)

    def page_route(path: str, template: str, call: Call) -> Route:
        async def endpoint(request: Request) -> Response:
            return await page(request, template, call)

        return Route(path, endpoint, methods=["GET"])

    def action_route(
        path: str, call: Call, *, then: str, template: str, shows: Call, done: str | None = None
    ) -> Route:
        """A button's POST: done, the browser goes to `then` (or, with `done`, is shown that
        page of what the action did); refused, the page `template` of what `shows` returns says
        why."""

        async def endpoint(request: Request) -> Response:
            try:
                form = await posted(request)
                result, op = await acting(request, call, form)
            except NotAuthenticated as exc:
                return signin_page(request, str(exc), 401)
            except _Forbidden as exc:  # refused before anything is read or done
                context = {"request": request, "error": str(exc), "data": None, "me": None}
                context["csrf_token"] = _csrf_or_empty(request)
                return templates.TemplateResponse(request, template, context, status_code=403)
            except SourceflowError as exc:
                return await page(request, template, shows, error=_first_line(exc), status=400)
            except _UNAVAILABLE as exc:
                return await page(request, template, shows, error=_first_line(exc), status=503)
            if done is None:
                return RedirectResponse(
                    root(request) + then.format(**request.path_params), status_code=303
                )
            context = {
                "request": request,
                "error": None,
                "data": result,
                "me": op.login,
                "csrf_token": _csrf_or_empty(request),
                "then": then,
            }
            return templates.TemplateResponse(request, done, context)

        return Route(path, endpoint, methods=["POST"])

    async def _login_or_none(request: Request) -> str | None:
        try:
            op = await run_in_threadpool(auth.operator, session_id(request), {})
        except SourceflowError:
            return None
        auth.done(op)
        return op.login

    def _csrf_or_empty(request: Request) -> str:
        try:
            return auth.csrf_token(session_id(request))
        except NotAuthenticated:
            return ""

    def signin_page(request: Request, message: str | None, status: int) -> Response:
        context = {
            "request": request,
            "error": message,
            "me": None,
            "csrf_token": "",
            "password_sign_in": auth.password_sign_in,
        }
        return templates.TemplateResponse(request, "signin.html", context, status_code=status)

    async def signin_form(request: Request) -> Response:
        return signin_page(request, None, 200)

    async def signin(request: Request) -> Response:
        form = await request.form()
        login, password = str(form.get("login", "")), str(form.get("password", ""))
        try:
            new_session = await run_in_threadpool(auth.sign_in, login, password)
        except SignInRefused as exc:
            return signin_page(request, str(exc), 401)
        auth.sign_out(session_id(request))  # a person signing in ends the session before
        request.session["id"] = new_session
        return RedirectResponse(root(request) + "/sources", status_code=303)

    async def signout(request: Request) -> Response:
        auth.sign_out(session_id(request))
        request.session.clear()
        return RedirectResponse(root(request) + "/signin", status_code=303)

    async def home(request: Request) -> Response:
        return RedirectResponse(root(request) + "/sources", status_code=303)

    def arg(name: str) -> Callable[[Request], str]:
        return lambda request: str(request.path_params[name])

    source_id, run, queue = arg("source_id"), arg("run"), arg("queue")
    workflow_run = arg("workflow_run")
    calls: dict[str, Call] = {
        "whoami": lambda op, request, form: api.whoami(op),
        "sources": lambda op, request, form: api.sources_list(op),
        "source": lambda op, request, form: api.source_show(op, source_id(request)),
        "run_requested": lambda op, request, form: api.run_requested(op, source_id(request)),
        "runs": lambda op, request, form: api.runs_over_time(op, days=_days(request)),
        "run": lambda op, request, form: api.run_show(op, run(request)),
        "cancel": lambda op, request, form: api.cancel(
            op, run(request), reason=str(form.get("reason", ""))
        ),
        "approvals": lambda op, request, form: api.approvals_waiting(op),
        "approve": lambda op, request, form: api.approve(op, run(request)),
        "reject": lambda op, request, form: api.reject(
            op, run(request), reason=str(form.get("reason", ""))
        ),
        "dead_letters": lambda op, request, form: api.dead_letters(op),
        "replay": lambda op, request, form: api.dead_letters_replayed(op, queue(request)),
        "status": lambda op, request, form: api.status_report(op),
        "workflows": lambda op, request, form: api.workflows_list(op),
        "workflow_run": lambda op, request, form: api.workflow_run_show(op, workflow_run(request)),
    }
    routes = [
        api_route("/api/whoami", calls["whoami"]),
        api_route("/api/sources", calls["sources"]),
        api_route("/api/sources/{source_id}", calls["source"]),
        api_route("/api/sources/{source_id}/runs", calls["run_requested"], "POST"),
        api_route("/api/runs", calls["runs"]),
        api_route("/api/runs/{run}", calls["run"]),
        api_route("/api/runs/{run}/cancel", calls["cancel"], "POST"),
        api_route("/api/approvals", calls["approvals"]),
        api_route("/api/approvals/{run}/approve", calls["approve"], "POST"),
        api_route("/api/approvals/{run}/reject", calls["reject"], "POST"),
        api_route("/api/dead-letters", calls["dead_letters"]),
        api_route("/api/dead-letters/{queue}/replay", calls["replay"], "POST"),
        api_route("/api/status", calls["status"]),
        api_route("/api/workflows", calls["workflows"]),
        api_route("/api/workflows/runs/{workflow_run}", calls["workflow_run"]),
        Route("/", home),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        page_route("/sources", "sources.html", calls["sources"]),
        page_route("/sources/{source_id}", "source.html", calls["source"]),
        action_route(
            "/sources/{source_id}/run",
            calls["run_requested"],
            then="/sources/{source_id}?requested=1",
            template="source.html",
            shows=calls["source"],
        ),
        page_route("/runs", "runs.html", calls["runs"]),
        page_route("/runs/{run}", "run.html", calls["run"]),
        page_route("/runs/{run}/cancel", "cancel.html", calls["run"]),
        action_route(
            "/runs/{run}/cancel",
            calls["cancel"],
            then="/runs/{run}",
            template="cancel.html",
            shows=calls["run"],
        ),
        page_route("/approvals", "approvals.html", calls["approvals"]),
        action_route(
            "/approvals/{run}/approve",
            calls["approve"],
            then="/runs/{run}",
            template="approvals.html",
            shows=calls["approvals"],
        ),
        action_route(
            "/approvals/{run}/reject",
            calls["reject"],
            then="/runs/{run}",
            template="approvals.html",
            shows=calls["approvals"],
        ),
        page_route("/dead-letters", "dead_letters.html", calls["dead_letters"]),
        action_route(
            "/dead-letters/{queue}/replay",
            calls["replay"],
            then="/dead-letters",
            template="dead_letters.html",
            shows=calls["dead_letters"],
            done="replayed.html",
        ),
        page_route("/status", "status.html", calls["status"]),
        page_route("/workflows", "workflows.html", calls["workflows"]),
        page_route("/workflows/runs/{workflow_run}", "workflow_run.html", calls["workflow_run"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts or ["*"])),
        Middleware(
            SessionMiddleware,
            secret_key=secrets.token_urlsafe(32),  # sessions end with the process
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_SECONDS,
            same_site="strict",
            https_only=secure_cookie,
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        auth.close()

    return Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, max_body_size=MAX_BODY_BYTES
    )


class _Forbidden(SourceflowError):
    """A POST without the session's CSRF token."""


def _days(request: Request) -> int:
    given = request.query_params.get("days", str(api.DEFAULT_CHART_DAYS))
    if not given.isdigit():
        raise api.OperatorError(f"days={given!r}: give a whole number of days")
    return int(given)
