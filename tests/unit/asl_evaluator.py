"""A small evaluator of the ASL subset the workflow compiler writes (infra/workflow_machine.py):
Pass (Result/ResultPath, Parameters with paths and States.JsonMerge / States.ArrayGetItem),
Choice (And, Or, StringEquals, IsPresent, IsNull), Task (answered by the test), Parallel,
Succeed and Fail. Anything else fails loudly, so a compiler change that writes more is seen.

It exists to check the compiled Choice logic over many random workflows quickly; the moto
server runs the same machines for real (tests/integration/test_workflow_machine.py).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

# A task's answer: ("succeeded", variables) or ("failed", None).
Answer = Callable[[Mapping[str, Any]], tuple[str, Mapping[str, Any] | None]]
_MERGE = re.compile(r"^States\.JsonMerge\((\$[\w.]*), (\$[\w.]*), false\)$")
_ITEM = re.compile(r"^States\.ArrayGetItem\(\$, (\d+)\)$")


class Ended(Exception):
    def __init__(self, status: str, error: str | None = None) -> None:
        super().__init__(status)
        self.status, self.error = status, error


def run(definition: Mapping[str, Any], state: Any, answer: Answer) -> tuple[str, Any]:
    """Run the machine on `state`; returns (SUCCEEDED|FAILED, the last state)."""
    try:
        return "SUCCEEDED", _run(definition, state, answer)
    except Ended as ended:
        return ended.status, ended.error


def _run(machine: Mapping[str, Any], state: Any, answer: Answer) -> Any:
    name = machine["StartAt"]
    states = machine["States"]
    while True:
        definition = states[name]
        kind = definition["Type"]
        if kind == "Pass":
            state = _pass(definition, state)
        elif kind == "Choice":
            name = next(
                (rule["Next"] for rule in definition["Choices"] if _holds(rule, state)),
                definition["Default"],
            )
            continue
        elif kind == "Task":
            status, variables = answer(_body(definition["Parameters"]["MessageBody"], state))
            if status != "succeeded":
                catch = definition["Catch"][0]
                state = _put(state, catch["ResultPath"], {"Error": catch["ErrorEquals"][0]})
                name = catch["Next"]
                continue
            result = {"status": status, "variables": variables, "detail": {}}
            state = _put(state, definition["ResultPath"], result)
        elif kind == "Parallel":
            results = [
                _run(branch, copy.deepcopy(state), answer) for branch in definition["Branches"]
            ]
            selected = {
                key.removesuffix(".$"): results[int(_ITEM.match(path)[1])]  # type: ignore[index]
                for key, path in definition["ResultSelector"].items()
            }
            state = _put(state, definition["ResultPath"], selected)
        elif kind == "Succeed":
            raise Ended("SUCCEEDED")
        elif kind == "Fail":
            raise Ended("FAILED", definition["Error"])
        else:
            raise AssertionError(f"the evaluator does not know {kind} states")
        if definition.get("End"):
            return state
        name = definition["Next"]


def _pass(definition: Mapping[str, Any], state: Any) -> Any:
    if "Parameters" in definition:
        return _body(definition["Parameters"], state)
    return _put(state, definition["ResultPath"], definition["Result"])


def _body(template: Mapping[str, Any], state: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in template.items():
        if not key.endswith(".$"):
            body[key] = value
            continue
        key = key.removesuffix(".$")
        if value.startswith("$$."):
            body[key] = f"<{value}>"
        elif (merge := _MERGE.match(value)) is not None:
            body[key] = {**_get(state, merge[1]), **_get(state, merge[2])}
        else:
            body[key] = _get(state, value)
    return body


def _get(state: Any, path: str) -> Any:
    assert re.fullmatch(r"\$(\.\w+)*", path), f"the evaluator reads only dotted paths: {path}"
    for part in path.split(".")[1:]:
        state = state[part]
    return state


def _present(state: Any, path: str) -> bool:
    try:
        _get(state, path)
    except KeyError:
        return False
    return True


def _put(state: Any, path: str | None, value: Any) -> Any:
    if path is None:
        return state
    if path == "$":
        return value
    state = copy.deepcopy(state)
    *parents, last = path.split(".")[1:]
    node = state
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return state


def _holds(rule: Mapping[str, Any], state: Any) -> bool:
    if "And" in rule:
        return all(_holds(part, state) for part in rule["And"])
    if "Or" in rule:
        return any(_holds(part, state) for part in rule["Or"])
    path = rule["Variable"]
    if "IsPresent" in rule:
        return _present(state, path) == rule["IsPresent"]
    if "IsNull" in rule:
        return (_get(state, path) is None) == rule["IsNull"]
    if "StringEquals" in rule:
        return bool(_get(state, path) == rule["StringEquals"])
    raise AssertionError(f"the evaluator does not know the rule {rule}")
