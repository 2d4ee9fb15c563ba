"""The partner side of the embedded stack: what `postgres` and `s3_files` sources read.

A second database, `partner`, on the same PostgreSQL, with a read-only role (its password made
once and kept in the state directory), and an S3 bucket of file drops. The demo and the tests
create their own tables and objects there, with the helpers below. A postgres source reads the
reader's password from a secret of its own, `<connection secrets prefix><source_id>/partner-db`,
which `bind_reader_password` creates: a source may only use the secrets under its own name
(shared.runtime.secrets.SecretBinding), so no secret is shared between sources.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn
from psycopg2.extras import execute_values

from infra.grants import set_login
from infra.resources import Names
from local.pg import transaction
from shared.runtime.secrets import SecretBinding, connection_secrets_prefix

PARTNER_DATABASE = "partner"
PARTNER_READER = "partner_reader"
# The name of a postgres source's own secret holding the reader's password.
PARTNER_SECRET = "partner-db"
# The columns of a partner's listings table: other names than the vendor's, as in real life.
LISTING_COLUMNS = {
    "listing_id": "text PRIMARY KEY",
    "updated_at": "timestamptz NOT NULL",
    "sold_at": "timestamptz",
    "status": "text",
    "price": "numeric(12, 2)",
    "city": "text",
}


@dataclass(frozen=True)
class PartnerSources:
    owner_url: str  # the partner database as its owner: to create and fill tables
    reader_dsn: str  # how a postgres source reaches it: without the password
    # Kept beside the owner's URL (local.env), to give each postgres source a secret of its own.
    reader_password: str
    drops_bucket: str
    secrets: SecretBinding  # where each source's secrets go

    def env(self) -> dict[str, str]:
        return {
            "PARTNER_DATABASE_URL": self.owner_url,
            "PARTNER_DB_DSN": self.reader_dsn,
            "PARTNER_DB_PASSWORD": self.reader_password,
            "DROPS_BUCKET": self.drops_bucket,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PartnerSources:
        """From a running stack's environment (local.env), whose CONNECTION_SECRETS_PREFIX the
        services read too."""
        return cls(
            env["PARTNER_DATABASE_URL"],
            env["PARTNER_DB_DSN"],
            env["PARTNER_DB_PASSWORD"],
            env["DROPS_BUCKET"],
            SecretBinding(env["CONNECTION_SECRETS_PREFIX"]),
        )

    def bind_reader_password(self, secretsmanager: Any, source_id: str) -> str:
        """The source's own secret holding the reader's password, created (or brought up to
        date); returns its name, for the connection's password_secret."""
        return put_source_secret(
            secretsmanager, self.secrets.secret_for(source_id, PARTNER_SECRET), self.reader_password
        )

    def table_connection(self, table: str, password_secret: str) -> dict[str, Any]:
        """The connection of a postgres source reading one listings table, with the password
        in `password_secret` (the source's own: `bind_reader_password`)."""
        return {
            "dsn": self.reader_dsn,
            "password_secret": password_secret,
            "table": table,
            "last_modified_column": "updated_at",
            "sold_date_column": "sold_at",
            "key_column": "listing_id",
        }

    def drops_connection(self, prefix: str, drop_format: str, **field_names: str) -> dict[str, Any]:
        """The connection of an s3_files source reading the drops under `prefix`."""
        return {"bucket": self.drops_bucket, "prefix": prefix, "format": drop_format, **field_names}


def put_source_secret(secretsmanager: Any, name: str, value: str) -> str:
    """Create the secret `name` holding `value`, or give an existing one that value; returns
    the name."""
    try:
        secretsmanager.create_secret(Name=name, SecretString=value)
    except secretsmanager.exceptions.ResourceExistsException:
        secretsmanager.put_secret_value(SecretId=name, SecretString=value)
    return name


def create_partner_sources(
    admin_url: str, clients: Any, names: Names, reader_password: str
) -> PartnerSources:
    """Create (or reuse) the partner database and its reader, with this password (kept across
    restarts, as the postgres sources' secrets hold it), and the drops bucket."""
    owner_url = make_dsn(admin_url, dbname=PARTNER_DATABASE)
    with closing(psycopg2.connect(admin_url)) as conn, conn.cursor() as cur:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PARTNER_DATABASE,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PARTNER_DATABASE)))
        set_login(cur, PARTNER_READER, reader_password)
    with transaction(owner_url) as cur:
        # Every table the demo or a test creates later is readable by the reader, and only that.
        for grant in (
            "GRANT USAGE ON SCHEMA public TO {}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}",
        ):
            cur.execute(sql.SQL(grant).format(sql.Identifier(PARTNER_READER)))

    drops_bucket = f"{names.prefix}-partner-drops"
    clients.s3.create_bucket(Bucket=drops_bucket)
    admin = parse_dsn(admin_url)
    location = {key: admin[key] for key in ("host", "port") if key in admin}
    reader_dsn = make_dsn(**location, dbname=PARTNER_DATABASE, user=PARTNER_READER)
    binding = SecretBinding(connection_secrets_prefix(names.stage))
    return PartnerSources(owner_url, reader_dsn, reader_password, drops_bucket, binding)


def create_listings_table(owner_url: str, table: str) -> None:
    """A fresh listings table (dropped first if it is there)."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))
        for name, kind in LISTING_COLUMNS.items()
    )
    with transaction(owner_url) as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), columns))


def upsert_listings(owner_url: str, table: str, listings: Iterable[Mapping[str, Any]]) -> None:
    """Insert or update listings given with the vendor's field names (id, last_modified, …)."""
    rows = [
        (
            listing["id"],
            listing["last_modified"],
            listing.get("sold_date"),
            listing.get("status"),
            listing.get("price"),
            listing.get("city"),
        )
        for listing in listings
    ]
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
        for name in list(LISTING_COLUMNS)[1:]
    )
    query = sql.SQL("INSERT INTO {} VALUES %s ON CONFLICT (listing_id) DO UPDATE SET {}").format(
        sql.Identifier(table), updates
    )
    with transaction(owner_url) as cur:
        execute_values(cur, query.as_string(cur), rows)


def put_drop(
    s3: Any, bucket: str, key: str, rows: Iterable[Mapping[str, Any]], drop_format: str
) -> None:
    """Drop one object of `rows` as the partner would: CSV with a header row, or JSON lines."""
    rows = list(rows)
    if drop_format == "jsonl":
        body = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        text = io.StringIO()
        fields = list(dict.fromkeys(name for row in rows for name in row))
        writer = csv.DictWriter(text, fieldnames=fields, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        body = text.getvalue()
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
