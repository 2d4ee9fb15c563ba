"""Who a console request acts as: never a name in a form, always what authenticated it.

- On the embedded stack (`PeopleSignIn`) a person signs in with their own database login and
  password (`<state dir>/people/NAME.env`); the console keeps, server side, a connection as
  that login for the session, and the browser holds only a signed session id in an HttpOnly,
  SameSite=Strict cookie. Every request of the session acts through that connection, so the
  database records `session_user` exactly as it does for `sourceflow` with the same person's
  credentials, and the second-person rule (public.respecs_decide) compares those logins.
- In the cloud (`IamPrincipals`) API Gateway authorizes each request with IAM (SigV4); the
  caller's principal, from the request context, names the database login, and the console
  connects as it with an RDS IAM token (SOURCEFLOW_DB_IAM_AUTH, ops/config.py).
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extensions import make_dsn

from console.api import Operator
from ops.config import OperatorConfig
from shared.errors import SourceflowError
from shared.store.db import Database, session_login

APPLICATION_NAME = "sourceflow-console"  # what pg_stat_activity shows for the console's sessions
SESSION_SECONDS = 8 * 3600  # a sign-in lasts a working day
CSRF_FIELD = "csrf_token"  # the form field (or X-CSRF-Token header) every POST carries


class NotAuthenticated(SourceflowError):
    """The request carries no valid authentication; the message says how to get one."""


class SignInRefused(SourceflowError):
    pass


@dataclass
class _Session:
    operator: Operator
    csrf_token: str
    expires_at: float


@dataclass
class PeopleSignIn:
    """Sessions of people signed in with their database login (the embedded stack)."""

    config: OperatorConfig
    clock: Any = time.monotonic
    password_sign_in = True  # the sign-in page's form
    _sessions: dict[str, _Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sign_in(self, login: str, password: str) -> str:
        """Open a connection as `login` with `password`; returns the new session's id. The
        database decides: a wrong password, an unknown login and a database that cannot be
        reached are refused alike, saying no more than that."""
        if not login or not password:
            raise SignInRefused("give your login and your password")
        dsn = make_dsn(self.config.require("DATABASE_URL"), user=login, password=password)
        db = Database(dsn, application_name=APPLICATION_NAME)
        try:
            with db.transaction() as cur:
                connected_as = session_login(cur)
        except SourceflowError:
            db.close()
            raise SignInRefused(
                "the database did not accept this login and password (or cannot be reached); "
                "yours are in <state dir>/people/<you>.env (DATABASE_URL=postgresql://LOGIN:"
                "PASSWORD@…)"
            ) from None
        config = OperatorConfig({**self.config.values, "DATABASE_URL": dsn}, self.config.origin)
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._end_expired()
            self._sessions[session_id] = _Session(
                Operator(connected_as, config, db),
                secrets.token_urlsafe(32),
                self.clock() + SESSION_SECONDS,
            )
        return session_id

    def _end_expired(self) -> None:
        """Close the connections of sessions past their time (under the lock)."""
        now = self.clock()
        for expired in [key for key, s in self._sessions.items() if s.expires_at < now]:
            self._sessions.pop(expired).operator.db.close()

    def sign_out(self, session_id: str | None) -> None:
        with self._lock:
            ended = self._sessions.pop(session_id or "", None)
        if ended is not None:
            ended.operator.db.close()

    def _session(self, session_id: str | None) -> _Session:
        with self._lock:
            session = self._sessions.get(session_id or "")
        if session is None or session.expires_at < self.clock():
            if session is not None:
                self.sign_out(session_id)
            raise NotAuthenticated("sign in first: POST /signin with your login and password")
        return session

    def operator(self, session_id: str | None, request_context: Mapping[str, Any]) -> Operator:
        return self._session(session_id).operator

    def csrf_token(self, session_id: str | None) -> str:
        return self._session(session_id).csrf_token

    def csrf_ok(self, session_id: str | None, given: str | None) -> bool:
        """A POST carries the session's token: a page of another site cannot read it."""
        expected = self._session(session_id).csrf_token
        return given is not None and hmac.compare_digest(expected, given)

    def done(self, op: Operator) -> None:
        """The session's connection stays open for its next request."""

    def close(self) -> None:
        for session_id in list(self._sessions):
            self.sign_out(session_id)


# A principal API Gateway's IAM authorization passes on: an IAM user, or an assumed role's
# session (a federated person's role session is named after them).
_PRINCIPAL = re.compile(
    r"arn:aws[\w-]*:(?:iam::\d{12}:user/(?:[\w+=,.@-]+/)*(?P<user>[\w+=,.@-]+)"
    r"|sts::\d{12}:assumed-role/[\w+=,.@-]+/(?P<session>[\w+=,.@-]+))"
)
# What a PostgreSQL login made from it may be (the people's logins of infra/grants.py).
_LOGIN = re.compile(r"[a-z_][a-z0-9_.@-]{0,62}")


def login_of_principal(principal_arn: str | None) -> str:
    """The database login of an IAM principal: the user's name, or the role session's name,
    lower-cased. Any other caller (the account's root, a service) has no login."""
    found = _PRINCIPAL.fullmatch(principal_arn or "")
    login = (found.group("user") or found.group("session")).lower() if found else ""
    if not _LOGIN.fullmatch(login):
        raise NotAuthenticated(
            f"the caller {principal_arn!r} is not an IAM user or a named role session with a "
            "database login; call the console as yourself (your IAM user, or your role session "
            "named after your login)"
        )
    return login


@dataclass
class IamPrincipals:
    """Each request acts as the IAM principal API Gateway authorized (the cloud)."""

    config: OperatorConfig
    password_sign_in = False  # each request is signed (SigV4) instead

    def sign_in(self, login: str, password: str) -> str:
        raise SignInRefused(
            "this console is signed in to by IAM: call it with your AWS credentials"
        )

    def sign_out(self, session_id: str | None) -> None:
        """No session to end: each request is authorized on its own."""

    def operator(self, session_id: str | None, request_context: Mapping[str, Any]) -> Operator:
        identity = request_context.get("identity") or {}
        login = login_of_principal(identity.get("userArn"))
        url = make_dsn(self.config.require("DATABASE_URL"), user=login)
        config = OperatorConfig(
            {**self.config.values, "DATABASE_URL": url, "SOURCEFLOW_DB_IAM_AUTH": "true"},
            f"the console's settings for {login}",
        )
        # An IAM token lives 15 minutes: a connection per request, closed by `done`.
        return Operator(
            login, config, Database(config.database_url(), application_name=APPLICATION_NAME)
        )

    def csrf_token(self, session_id: str | None) -> str:
        return ""

    def csrf_ok(self, session_id: str | None, given: str | None) -> bool:
        # Every request is signed (SigV4) by the caller's own credentials: no page of another
        # site can make one.
        return True

    def done(self, op: Operator) -> None:
        op.db.close()

    def close(self) -> None:
        """Nothing outlives a request."""
