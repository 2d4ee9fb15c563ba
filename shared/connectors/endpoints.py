"""Where a connection may point: its `base_url` and DSN parsed (never pattern-matched), and the
hosts a source may reach checked when the name is resolved, not only when the row is read.

A connection row is untrusted (docs/security.md). The rules:

- `base_url` (http_api) is `http(s)://host[:port][/path]`: no user or password, no query, no
  fragment, and a path of plain segments (letters, digits, `-._~`) under which the records
  endpoint is added. An API key goes only over https, or to the embedded stack's loopback.
- A postgres connection's libpq settings are read by libpq's own parser (`parse_dsn`), and may
  only be host, port, dbname, user, sslmode and sslrootcert: never a password or a passfile
  (the password is only referenced), nor options, services or files that would change where
  the connection goes or what it proves. One host.
- No source reaches a link-local address (169.254.0.0/16, fe80::/10: cloud metadata lives
  there), an unspecified address, or the cloud's metadata address; loopback (127.0.0.0/8, ::1,
  localhost, a Unix socket) only on the embedded stack (ALLOW_LOOPBACK_SOURCES, which only
  local/stack.py sets). A name is checked when it is resolved: an HTTP connection checks the
  address it connected to before anything is sent, and a postgres connection is pinned to the
  address that was checked (libpq's hostaddr).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import psycopg2
from psycopg2.extensions import parse_dsn
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from shared.connectors.base import InvalidConnection
from shared.errors import PermanentError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# The libpq settings a postgres connection may make; everything else (password, passfile,
# service, options, hostaddr, ssl key files, require_auth, …) is refused by name.
DSN_KEYS = frozenset({"host", "port", "dbname", "user", "sslmode", "sslrootcert"})
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")
# EC2's instance metadata service on IPv6 (on IPv4 it is link-local, 169.254.169.254).
_METADATA_V6 = ipaddress.IPv6Address("fd00:ec2::254")
_THIS_HOST_V4 = ipaddress.IPv4Network("0.0.0.0/8")


class SourceHostNotAllowed(PermanentError):
    """A connection points at an address no source may reach from here."""

    error_name = "SourceHostNotAllowed"


@dataclass(frozen=True)
class HostRule:
    """Which addresses a source may reach: loopback only on the embedded stack."""

    allow_loopback: bool

    def refusal(self, address: IpAddress) -> str | None:
        """Why no source may reach `address` from here, or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address == _METADATA_V6:
            return "the cloud's instance metadata address"
        if address.is_link_local:
            return "link-local (where cloud metadata services live)"
        if address.is_unspecified or address in _THIS_HOST_V4:
            return "this machine's unspecified address"
        if address.is_loopback and not self.allow_loopback:
            return "loopback, which only the embedded stack's sources may reach"
        return None

    def check(self, address: IpAddress, *, source_id: str, what: str) -> None:
        reason = self.refusal(address)
        if reason is not None:
            raise SourceHostNotAllowed(
                f"source {source_id!r}: {what} is {address}, {reason}; point the connection at "
                "the source's own host"
            )

    def check_local(self, *, source_id: str, what: str) -> None:
        """A host that is this machine by name (localhost, a Unix socket)."""
        if not self.allow_loopback:
            raise SourceHostNotAllowed(
                f"source {source_id!r}: {what} is this machine, which only the embedded stack's "
                "sources may reach; point the connection at the source's own host"
            )


def ip_literal(host: str) -> IpAddress | None:
    """The address `host` spells, in any form a resolver takes (127.1 and 0x7f.0.0.1 too)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _is_local_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


def check_host(host: str, rule: HostRule, *, source_id: str, what: str) -> None:
    """Refuse a host that is, by its spelling alone, an address no source may reach."""
    address = ip_literal(host)
    if address is not None:
        rule.check(address, source_id=source_id, what=what)
    elif _is_local_name(host):
        rule.check_local(source_id=source_id, what=what)


# -- http_api: base_url ---------------------------------------------------------------------


def parse_base_url(source_id: str, text: str, rule: HostRule, *, carries_key: bool) -> str:
    """The connection's `base_url`, checked, without a trailing slash."""
    where = f"source {source_id!r}: connection.base_url"
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise InvalidConnection(f"{where} is not a URL; write http(s)://host[:port]") from None
    problem = _base_url_problem(text, url)
    if problem:
        raise InvalidConnection(f"{where} {problem}")
    host = url.hostname or ""
    check_host(host, rule, source_id=source_id, what="connection.base_url's host")
    if carries_key and url.scheme == "http" and not _is_loopback_host(host):
        raise InvalidConnection(
            f"{where} is http://: the API key would cross the network in clear text; use https://"
        )
    # Rebuilt from what was checked, so that nothing the parser set aside is sent.
    return urlunsplit((url.scheme, url.netloc, url.path.rstrip("/"), "", ""))


def _base_url_problem(text: str, url: SplitResult) -> str | None:
    if any(char.isspace() or not char.isprintable() for char in text):
        return "has spaces or control characters; write http(s)://host[:port][/path]"
    if url.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if "@" in url.netloc:
        return "carries a user or password; name the API key's secret in api_key_secret instead"
    if "?" in text or "#" in text:
        return "has a query or a fragment; give the API's root only, e.g. https://api.example.com"
    if not url.hostname or not (ip_literal(url.hostname) or _HOST_NAME.fullmatch(url.hostname)):
        return "has no host name sourceflow accepts; write http(s)://host[:port]"
    segments = [segment for segment in url.path.split("/") if segment]
    if any(not _PATH_SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        return (
            "has a path with characters other than letters, digits and -._~ in its segments "
            "(or a . or .. segment); give the API's root path as plain segments"
        )
    return None


def _is_loopback_host(host: str) -> bool:
    address = ip_literal(host)
    return _is_local_name(host) if address is None else address.is_loopback


def _peer_checked_pools(rule: HostRule, source_id: str) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 connection pools whose connections check the address they reached before a byte
    is sent: a name that resolves (or rebinds) to an address no source may reach is refused."""

    def checked(connection_class: type[HTTPConnection]) -> type[HTTPConnection]:
        class PeerChecked(connection_class):  # type: ignore[valid-type,misc]
            def _new_conn(self) -> socket.socket:
                sock: socket.socket = super()._new_conn()
                try:
                    peer = ip_literal(str(sock.getpeername()[0]))
                    if peer is not None:
                        rule.check(peer, source_id=source_id, what=f"{self.host}'s address")
                except BaseException:
                    sock.close()
                    raise
                return sock

        return PeerChecked

    class Pool(HTTPConnectionPool):
        ConnectionCls = checked(HTTPConnection)

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = checked(HTTPSConnection)  # type: ignore[assignment]

    return {"http": Pool, "https": TlsPool}


class PeerCheckedAdapter(HTTPAdapter):
    """A requests adapter whose connections reach only addresses `rule` allows."""

    def __init__(self, rule: HostRule, source_id: str, **kwargs: Any) -> None:
        self.rule, self.source_id = rule, source_id
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _peer_checked_pools(self.rule, self.source_id)


# -- postgres: libpq settings ---------------------------------------------------------------


def parse_libpq_settings(
    source_id: str, connection: Mapping[str, Any], rule: HostRule
) -> dict[str, str]:
    """The libpq settings of a postgres connection (its `dsn` read by libpq's own parser, or
    host, port, dbname and user), checked: no password or passfile, nothing outside DSN_KEYS,
    one host that a source may reach."""
    if "dsn" in connection:
        settings = _parsed_dsn(source_id, connection["dsn"])
    else:
        settings = {key: str(connection[key]) for key in DSN_KEYS if key in connection}
    host = settings.get("host", "")
    what = "the connection's host"
    if "," in host or "," in settings.get("port", ""):
        raise InvalidConnection(
            f"source {source_id!r}: the connection names several hosts; name one"
        )
    if host == "" or host.startswith(("/", "@")):
        # No host is libpq's default Unix socket: a socket is always this machine.
        rule.check_local(source_id=source_id, what=what)
    else:
        check_host(host, rule, source_id=source_id, what=what)
    return settings


def _parsed_dsn(source_id: str, dsn: str) -> dict[str, str]:
    where = f"source {source_id!r}: connection.dsn"
    try:
        settings: dict[str, str] = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        # libpq's complaint quotes the text, which may hold what was pasted by mistake.
        raise InvalidConnection(
            f"{where} is not a connection string or URI libpq can read; write "
            "postgresql://user@host:port/dbname"
        ) from None
    for key in sorted(settings):
        if key in ("password", "passfile"):
            raise InvalidConnection(
                f"{where} sets {key}: the password is only ever referenced; remove it from the "
                "DSN and name its secret in connection.password_secret"
            )
        if key not in DSN_KEYS:
            raise InvalidConnection(
                f"{where} sets {key}, which a source may not set; it may set only "
                f"{', '.join(sorted(DSN_KEYS))}"
            )
    return settings


Resolver = Callable[..., list[tuple[Any, ...]]]


def pinned_address(
    source_id: str, settings: Mapping[str, str], rule: HostRule, resolve: Resolver
) -> str | None:
    """The address to connect to (libpq's hostaddr) for a host name, every one of its
    addresses checked; None for a Unix socket or an address written as such (already checked).

    Raises OSError when the name does not resolve (the caller's: the source is unreachable)."""
    host = settings.get("host", "")
    if host == "" or host.startswith(("/", "@")) or ip_literal(host) is not None:
        return None
    port = settings.get("port") or "5432"
    addresses = [
        ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        for info in resolve(host, port, type=socket.SOCK_STREAM)
    ]
    for address in addresses:
        rule.check(address, source_id=source_id, what=f"the connection's host {host}")
    return str(addresses[0])
