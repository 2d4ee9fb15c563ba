"""shared.runtime.redaction, and the choke points it guards: every error text that leaves a
service (the task's cause and the ledger's detail, a failed delivery's record, the log) is
redacted of the secret values the process read, on one line, and bounded."""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest

from shared.errors import PermanentError
from shared.runtime import redaction
from shared.runtime.deliveries import FailureLog
from shared.runtime.observability import RedactingFormatter, logger
from shared.runtime.redaction import (
    ERROR_TEXT_LIMIT,
    error_text,
    redacted,
    remember_secret,
    untrusted_excerpt,
)
from tests.builders import sqs_record
from tests.unit.task_harness import Harness, raising, token_of

SECRET = 'Zx9-secret-value-with-"quote"-and-&'


@pytest.fixture(autouse=True)
def remembered() -> Any:
    """The process's secrets as a run would leave them: SECRET was read."""
    saved = set(redaction._secret_values)
    remember_secret(SECRET)
    yield
    redaction._secret_values.clear()
    redaction._secret_values.update(saved)


def test_a_secret_is_redacted_however_it_is_escaped() -> None:
    escaped = json.dumps({"header": SECRET})
    text = f"raw {SECRET} json {escaped} url {quote(SECRET, safe='')}"
    assert SECRET not in redacted(text)
    assert json.dumps(SECRET)[1:-1] not in redacted(text)
    assert redacted(text).count("[redacted]") == 3


def test_an_error_text_is_one_line_without_invisible_characters_and_bounded() -> None:
    text = error_text("line one\r\nline two\x00\x1b[2J\u202eevil\u200b" + "y" * 5000)
    assert text.startswith("line one line two [2Jevilyyy")
    assert len(text) == ERROR_TEXT_LIMIT and text.endswith("…")


def test_a_secret_split_by_zero_width_characters_is_still_redacted() -> None:
    hidden = "\u200b".join(SECRET)
    assert SECRET not in error_text(f"echo: {hidden}")
    assert "[redacted]" in error_text(f"echo: {hidden}")


def test_a_cut_never_leaves_part_of_a_secret() -> None:
    text = error_text("x" * (ERROR_TEXT_LIMIT - 5) + SECRET)
    assert SECRET[:4] not in text


def test_an_untrusted_excerpt_has_no_links_and_is_short() -> None:
    said = "Please click http://evil.example/reset or HTTPS://x.example, www.evil.example; " * 9
    excerpt = untrusted_excerpt(said)
    assert "evil" not in excerpt and "x.example" not in excerpt
    assert excerpt.startswith("Please click [link removed] or [link removed] [link removed]")
    assert len(excerpt) == redaction.EXCERPT_LIMIT


def test_short_values_are_never_redacted_from_ordinary_text() -> None:
    remember_secret("id")
    assert redacted("the id field") == "the id field"


# --- the choke points ----------------------------------------------------------------------------


def test_a_failed_tasks_cause_and_ledger_detail_are_redacted_one_line_and_bounded() -> None:
    # Given work that fails with an error quoting the secret, on many lines, at length
    harness, record = Harness(), sqs_record()
    error = PermanentError(f"vendor said:\n{SECRET}\n" + "z" * 5000, error_name="X")
    # When the record is processed
    harness.process(record, raising(error))
    # Then what the ledger keeps and what the task's cause carries (to the Run Failed event and
    # the alert) are the same cleaned text
    [(_, name, detail)] = harness.failures.entries
    assert harness.callbacks.failed == [(token_of(record), name, detail)]
    assert SECRET not in detail and "\n" not in detail
    assert detail.startswith("vendor said: [redacted] zzz") and len(detail) == ERROR_TEXT_LIMIT


def test_a_failed_deliverys_record_is_redacted() -> None:
    written: list[tuple[Any, ...]] = []

    class Cursor:
        def execute(self, _: str, params: tuple[Any, ...]) -> None:
            written.append(params)

    class Db:
        @contextmanager
        def transaction(self) -> Any:
            yield Cursor()

    FailureLog(lambda: Db())(sqs_record(), RuntimeError(f"boom {SECRET}\nsecond line"))  # type: ignore[arg-type,return-value]
    [(_, _, _, text)] = written
    assert text == "RuntimeError: boom [redacted] second line"


def test_log_lines_are_redacted_messages_extras_and_tracebacks_alike() -> None:
    # Given the service logger's own formatter writing to a stream of the test's
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)  # type: ignore[attr-defined]
    try:
        # When a message, an extra and a traceback each hold the secret
        logger.warning(f"message {SECRET}", extra={"error": f"extra {SECRET}"})
        try:
            raise ValueError(f"raised {SECRET}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)  # type: ignore[attr-defined]
    # Then no line holds it, raw or JSON-escaped
    out = stream.getvalue()
    assert SECRET not in out and json.dumps(SECRET)[1:-1] not in out
    assert isinstance(logger.registered_formatter, RedactingFormatter)
    assert out.count("[redacted]") >= 4
