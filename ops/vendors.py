"""`sourceflow vendors`: the vendors sources reach (the hosts of http_api sources' base_url),
how many downloads of each may read at once, and who holds their slots now.

A limit is a person's to set (their login is recorded by the database, migration 0017); the
download service holds the slots (shared/store/vendor_limits.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from shared.connectors.pacing import vendor_host
from shared.errors import PermanentError
from shared.store import vendor_limits
from shared.store.db import Database


class NotLimited(PermanentError):
    error_name = "NotLimited"


def vendors_list(db: Database) -> list[dict[str, Any]]:
    """Every vendor that has a limit or a source, by host: its sources, its limit (None: not
    limited), the slots held now and by which sources, who set the limit and when."""
    with db.transaction() as cur:
        limits = {row["host"]: row for row in vendor_limits.vendor_limits(cur)}
        sources = _sources_by_host(cur)
    rows = []
    for host in sorted(set(limits) | set(sources)):
        limit = limits.get(host, {})
        rows.append(
            {
                "host": host,
                "sources": sources[host],
                "max_concurrent": limit.get("max_concurrent"),
                "slots_in_use": limit.get("slots_in_use", 0),
                "held_by": ", ".join(limit.get("held_by", [])),
                "set_by": limit.get("set_by"),
                "set_at": limit.get("set_at"),
            }
        )
    return rows


def set_limit(db: Database, host_or_url: str, max_concurrent: int) -> dict[str, Any]:
    """At most `max_concurrent` downloads of the vendor at once, from now on (downloads already
    reading keep their slots); returns the limit with who set it and the vendor's sources."""
    host = vendor_host(host_or_url)
    with db.transaction() as cur:
        row = vendor_limits.set_vendor_limit(cur, host, max_concurrent)
        return {**row, "sources": _sources_by_host(cur)[host]}


def unset_limit(db: Database, host_or_url: str) -> str:
    """The vendor is no longer limited; returns its host."""
    host = vendor_host(host_or_url)
    with db.transaction() as cur:
        if not vendor_limits.remove_vendor_limit(cur, host):
            raise NotLimited(f"vendor {host} has no limit; `sourceflow vendors list` shows them")
    return host


def _sources_by_host(cur: Any) -> Counter[str]:
    """How many http_api sources reach each host (a base_url that names none is left out: the
    source fails validation by name; a deleted source reaches nothing)."""
    cur.execute(
        "SELECT connection ->> 'base_url' AS base_url FROM public.source"
        " WHERE source_type = 'http_api' AND deleted_at IS NULL"
    )
    hosts: Counter[str] = Counter()
    for row in cur.fetchall():
        try:
            hosts[vendor_host(row["base_url"] or "")] += 1
        except ValueError:
            continue
    return hosts
