"""The failure path tells people even when the run's failure cannot be announced."""

from __future__ import annotations

import json

from shared.runtime.executions import start_run
from tests.e2e.harness import Harness, wait_for

PUT_EVENTS = "arn:aws:states:::events:putEvents"


def state_machine_announcing_failures_to_a_bus_that_is_gone(harness: Harness) -> str:
    """The stack's own definition registered again (its ARN returned), with its Run Failed
    event put on a bus that does not exist: that event's every put fails as an EventBridge
    outage or a lost permission would, while the rest of the run is as on the stack."""
    sfn = harness.aws("stepfunctions")
    stack_arn = harness.stack.env["STATE_MACHINE_ARN"]
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=stack_arn)["definition"])
    publish = definition["States"]["PublishRunFailed"]
    assert publish["Resource"] == PUT_EVENTS
    for entry in publish["Parameters"]["Entries"]:
        entry["EventBusName"] = f"{harness.stack.env['EVENT_BUS_NAME']}-gone"
    return sfn.create_state_machine(
        name=stack_arn.rsplit(":", 1)[1] + "-bus-gone",
        definition=json.dumps(definition),
        roleArn=sfn.describe_state_machine(stateMachineArn=stack_arn)["roleArn"],
    )["stateMachineArn"]


def test_a_failed_run_whose_event_cannot_be_put_still_alerts_people(harness: Harness) -> None:
    # Given runs whose Run Failed event cannot be put
    state_machine_arn = state_machine_announcing_failures_to_a_bus_that_is_gone(harness)
    source_id = "src-alert-without-bus"
    harness.alerts_about(source_id)  # nothing from before

    # When a run fails (its source does not exist)
    execution_arn = start_run(harness.aws("stepfunctions"), state_machine_arn, source_id)
    result = harness.finish(execution_arn, source_id)

    # Then, its event's retries spent, people are alerted all the same, and the run ends
    # failed with its step's error
    alerts = wait_for(lambda: harness.alerts_about(source_id), "the alert")
    assert any("SourceNotFound" in line and "Validate" in line for line in alerts), alerts
    assert (result.status, result.error) == ("FAILED", "SourceNotFound")
    assert result.run["failed_step"] == "Validate"
