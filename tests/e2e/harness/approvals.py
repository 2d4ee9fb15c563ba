"""Re-specs runs at the approval gate: a source with a Re-specs query set, and a run's place in
`sourceflow approvals`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.harness import Harness, wait_for

DAY = timedelta(days=1)


def respecs_source(harness: Harness, query_template: str) -> tuple[str, datetime, str]:
    """A source with two attribute rows and a Re-specs query set by hand; its id, cursor and
    query (`{source}` in the template is the source id)."""
    cursor = datetime.now(UTC) - 2 * DAY
    source_id = harness.new_source(harness.new_dataset([DAY]), cursor=cursor, runtime_count=3)
    harness.seed_attributes(source_id, 2)
    query = query_template.format(source=source_id)
    harness.set_params(source_id, {"type": "Re-specs", "sql": query})
    return source_id, cursor, query


SQM = "UPDATE public.listing_attributes SET value = 'sqm' WHERE source_id = '{source}'"


def waiting_for_approval(harness: Harness, execution_arn: str) -> dict[str, Any]:
    """The run's entry in `sourceflow approvals --json`, once it is there."""
    name = execution_arn.rsplit(":", 1)[1]

    def mine() -> list[dict[str, Any]]:
        listed = harness.sourceflow("approvals", "--json")
        assert listed.returncode == 0, listed.stderr
        return [row for row in json.loads(listed.stdout) if row["execution_name"] == name]

    return wait_for(mine, f"{name} to wait for approval")[0]
