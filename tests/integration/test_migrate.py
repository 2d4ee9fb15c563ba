"""infra.migrate against a real PostgreSQL: each migration once, edits reported, workers
racing to migrate serialised.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from infra.migrate import MigrationError, apply_migrations, discover

ALL_VERSIONS = [migration.version for migration in discover()]
FIRST = discover()[0]


def test_migrations_apply_once(empty_database_url: str) -> None:
    # Given an empty database
    # When the migrations are applied twice
    first = apply_migrations(empty_database_url)
    second = apply_migrations(empty_database_url)

    # Then the first applied every migration and the second nothing
    assert first == ALL_VERSIONS
    assert second == []
    conn = psycopg2.connect(empty_database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM public.schema_migration ORDER BY version")
            assert cur.fetchall() == [(version,) for version in ALL_VERSIONS]
            cur.execute("SELECT to_regclass('public.source_run') IS NOT NULL")
            assert cur.fetchone() == (True,)
    finally:
        conn.close()


def test_an_edited_applied_migration_is_reported_by_name(
    empty_database_url: str, migrations_copy: Path
) -> None:
    # Given the migrations were applied from a directory
    assert apply_migrations(empty_database_url, migrations_copy) == ALL_VERSIONS
    edited = migrations_copy / FIRST.path.name
    original = edited.read_bytes()

    # When an applied file is edited, a new one is added, and the migrations are applied again
    edited.write_bytes(original + b"\n-- an innocent-looking comment\n")
    (migrations_copy / "0999_it_probe.sql").write_text("CREATE TABLE public.it_probe (id int);")
    with pytest.raises(MigrationError, match=re.escape(FIRST.path.name)):
        apply_migrations(empty_database_url, migrations_copy)

    # Then the new migration was not applied either
    conn = psycopg2.connect(empty_database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.it_probe')")
            assert cur.fetchone() == (None,)
    finally:
        conn.close()
    # And once the edit is undone, the new migration applies
    edited.write_bytes(original)
    assert apply_migrations(empty_database_url, migrations_copy) == ["0999_it_probe"]


def test_a_new_migration_is_applied_after_the_existing_ones(
    empty_database_url: str, migrations_copy: Path
) -> None:
    # Given the migrations were applied
    apply_migrations(empty_database_url, migrations_copy)

    # When a new migration file is added
    (migrations_copy / "0999_it_probe.sql").write_text(
        "CREATE TABLE public.it_probe (id integer PRIMARY KEY);"
    )

    # Then only the new one is applied, once
    assert apply_migrations(empty_database_url, migrations_copy) == ["0999_it_probe"]
    assert apply_migrations(empty_database_url, migrations_copy) == []


def test_concurrent_migrators_apply_each_migration_once(empty_database_url: str) -> None:
    # Given several workers starting at once against an empty database
    results: list[Any] = [None, None, None]

    def migrate(index: int) -> None:
        try:
            results[index] = apply_migrations(empty_database_url)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=migrate, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # Then one applied the migrations, the others found nothing to do
    assert all(isinstance(result, list) for result in results), results
    assert sorted(results, key=len) == [[], [], ALL_VERSIONS], results
