"""shared.errors.bounded_line: outside text made fit to leave in an error."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.errors import bounded_line


def test_line_breaks_escapes_and_direction_overrides_become_single_spaces() -> None:
    text = 'invalid input: "zz\x1b[31m\r\nFAKE LOG LINE\u2028\u202eevil\t\x00"'
    assert bounded_line(text, 300) == 'invalid input: "zz [31m FAKE LOG LINE evil "'


def test_a_long_text_is_cut_with_an_ellipsis_to_the_limit() -> None:
    assert bounded_line("x" * 1000, 300) == "x" * 299 + "…"
    assert bounded_line("short", 300) == "short"


@given(text=st.text(), limit=st.integers(min_value=1, max_value=500))
def test_any_text_fits_in_one_printable_line_of_the_limit(text: str, limit: int) -> None:
    line = bounded_line(text, limit)
    assert len(line) <= limit
    assert line == line.strip()
    assert all(c == " " or c.isprintable() for c in line), repr(line)
