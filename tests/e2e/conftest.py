"""The e2e tier's fixtures: the embedded stack, started once for the session, and the parts of
the harness over it (tests/e2e/harness, one module per concern)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.stack import LocalStack, aws_client
from shared.store.db import Database
from tests.e2e.harness import Aws, Cli, Events, Harness, Runs, Sources, Ticks, Vendor
from tests.e2e.harness.stack import stack_options


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(stack_options(tmp_path_factory.mktemp("stack"))) as running:
        yield running


@pytest.fixture(scope="session")
def aws(stack: LocalStack) -> Aws:
    return lambda name: aws_client(stack.env, name)


@pytest.fixture(scope="session")
def db(stack: LocalStack) -> Iterator[Database]:
    database = Database(stack.env["DATABASE_URL"], application_name="sourceflow-tests")
    yield database
    database.close()


@pytest.fixture
def vendor(stack: LocalStack) -> Iterator[Vendor]:
    the_vendor = Vendor(stack.env["VENDOR_URL"])
    yield the_vendor
    the_vendor.clear_faults()
    the_vendor.clear_limits()


@pytest.fixture
def sources(stack: LocalStack, db: Database, vendor: Vendor) -> Sources:
    return Sources(stack, db, vendor)


@pytest.fixture
def runs(stack: LocalStack, db: Database, aws: Aws) -> Runs:
    return Runs(stack, db, aws)


@pytest.fixture
def events(stack: LocalStack, aws: Aws) -> Events:
    the_events = Events(stack, aws)
    the_events.drain_notifications()  # each test reads only the notifications it caused
    return the_events


@pytest.fixture
def ticks(stack: LocalStack, aws: Aws) -> Ticks:
    return Ticks(stack, aws)


@pytest.fixture
def cli(stack: LocalStack) -> Cli:
    return Cli(stack)


@pytest.fixture
def harness(stack: LocalStack, db: Database, aws: Aws, vendor: Vendor) -> Harness:
    harness = Harness(stack=stack, db=db, aws=aws, vendor=vendor)
    harness.drain_notifications()  # each test reads only the notifications it caused
    return harness


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)
