"""Versioned SQL migrations: `infra/migrations/NNNN_name.sql`, applied once each, in order.

Applied versions are tracked in `public.schema_migration` with a checksum, so re-running is a
no-op and an edited, already-applied file is reported instead of silently diverging.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg2

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same for every process that migrates.
_ADVISORY_LOCK_KEY = 0x50F1


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    return [
        Migration(path.stem, path) for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    ]


def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; return the versions applied now. Raises MigrationError, naming
    the file, for an applied migration that was edited or one that fails."""
    applied_now: list[str] = []
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            # Serialise concurrent migrators (several workers starting at once).
            cur.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS public.schema_migration ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT version, checksum FROM public.schema_migration")
            done = dict(cur.fetchall())
        for migration in discover(directory):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.path.name} was changed after it was applied; "
                        "add a new migration file instead of editing an applied one"
                    )
                continue
            try:
                # The file and its record commit together: a failing statement leaves nothing
                # of the migration, and the next run applies it again from the start.
                with conn, conn.cursor() as cur:
                    cur.execute(migration.sql)
                    cur.execute(
                        "INSERT INTO public.schema_migration (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
            except psycopg2.DatabaseError as exc:
                raise MigrationError(
                    f"migration {migration.path.name} failed and was not applied "
                    f"({str(exc).strip()}); fix it (it was never applied, so it may be edited) "
                    "and run the migrations again"
                ) from exc
            applied_now.append(migration.version)
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
        conn.commit()
        conn.close()
    return applied_now
