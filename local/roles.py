"""One PostgreSQL role per service on the embedded stack.

Each service connects as itself (`sourceflow_<service>`), as it would on AWS: what a service
may do is granted to its role, and an operator — or a fault test — can cut one service off the
database without touching the others.
"""

from __future__ import annotations

from psycopg2 import sql
from psycopg2.extensions import make_dsn

from infra.resources import SERVICES
from local.pg import transaction, upsert_login_role


def role_name(service: str) -> str:
    return f"sourceflow_{service}"


def create_service_roles(admin_url: str) -> dict[str, str]:
    """Create (or re-enable) each service's role; returns each service's DATABASE_URL.

    The password equals the role name: these roles exist only on a local database.
    """
    urls = {}
    with transaction(admin_url) as cur:
        for service in SERVICES:
            role = role_name(service)
            upsert_login_role(cur, role, role)
            for grant in (
                "GRANT USAGE ON SCHEMA public TO {}",
                "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {}",
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}",
            ):
                cur.execute(sql.SQL(grant).format(sql.Identifier(role)))
            if service == "unlocking":
                # Unlocking drops the landed versions no later window reads again.
                cur.execute(
                    sql.SQL("GRANT DELETE ON public.landed_version TO {}").format(
                        sql.Identifier(role)
                    )
                )
            urls[service] = make_dsn(admin_url, user=role, password=role)
    return urls


def cut_off(admin_url: str, service: str) -> None:
    """The database becomes unavailable to one service: no new logins, sessions ended."""
    with transaction(admin_url) as cur:
        cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role_name(service))))
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (role_name(service),),
        )


def restore(admin_url: str, service: str) -> None:
    with transaction(admin_url) as cur:
        cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role_name(service))))
