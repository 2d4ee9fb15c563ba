"""A tick's items, each done on its own (services/scheduler/service.py `EachOnItsOwn`)."""

from __future__ import annotations

import pytest

from services.scheduler.service import EachOnItsOwn
from shared.errors import PermanentError, TransientError


def test_an_item_that_fails_for_now_does_not_keep_the_others_and_the_delivery_is_retried() -> None:
    # Given three items, the second failing for now
    each, done = EachOnItsOwn("queue every due run"), []
    for name in ("a", "b", "c"):
        with each.item(name):
            if name == "b":
                raise TransientError("database restarting")
            done.append(name)

    # Then the others were done, and the end asks for the delivery again, naming what failed
    assert done == ["a", "c"]
    with pytest.raises(TransientError, match=r"could not queue every due run: b: database"):
        each.raise_if_any()


def test_nothing_failed_nothing_raised_and_a_permanent_error_is_not_swallowed() -> None:
    each = EachOnItsOwn("start every due workflow")
    with each.item("a"):
        pass
    each.raise_if_any()
    with pytest.raises(PermanentError), each.item("b"):
        raise PermanentError("bad row")
    assert each.failed == []
