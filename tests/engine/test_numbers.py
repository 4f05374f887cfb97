"""Property tests: fixed-point parsing, formatting and rounding against Python's exact Decimal."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.engine.numbers import (
    SCALE,
    DecimalFormatError,
    decimals_of,
    div_round,
    format_fixed,
    from_scaled,
    from_units_nanos,
    parse_fixed,
    to_decimal,
    to_units_nanos,
)

values = st.integers(min_value=-(10**30), max_value=10**30)


@given(values)
def test_format_then_parse_is_exact(v: int) -> None:
    text = format_fixed(v)
    assert parse_fixed(text) == v
    assert Decimal(text) == to_decimal(v)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=9,
                   min_value=Decimal("-1e15"), max_value=Decimal("1e15")))
def test_parse_matches_decimal(d: Decimal) -> None:
    for text in (str(d), f"{d:f}", format(d, "e")):
        assert parse_fixed(text) == int(d.scaleb(9)), text


@given(st.integers(1, 20).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, 10**n))))
def test_more_than_nine_places_is_refused_unless_zeros(case: tuple[int, int]) -> None:
    places, digits = case
    text = f"0.{digits:0{places}d}"
    exact = Decimal(text).scaleb(9)
    if exact == exact.to_integral_value():
        assert parse_fixed(text) == int(exact)
    else:
        with pytest.raises(DecimalFormatError):
            parse_fixed(text)


@pytest.mark.parametrize("bad", ["", "-", ".", "1.2.3", "abc", "1,5", "nan", "inf", "--1", "1e"])
def test_malformed_text_is_refused(bad: str) -> None:
    with pytest.raises(DecimalFormatError):
        parse_fixed(bad)


@given(values, st.integers(min_value=-(10**12), max_value=10**12).filter(bool))
def test_div_round_is_half_even(n: int, d: int) -> None:
    if abs(n) < 10**27:  # within Decimal's default 28-digit precision
        want = (Decimal(n) / Decimal(d)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
        assert div_round(n, d) == int(want)
    q = div_round(n, d)
    assert abs(n - q * d) * 2 <= abs(d)


@given(values)
def test_units_nanos_round_trip(v: int) -> None:
    units, nanos = to_units_nanos(v)
    assert from_units_nanos(units, nanos) == v
    assert -SCALE < nanos < SCALE
    assert units == 0 or nanos == 0 or (units > 0) == (nanos > 0)


def test_scaled_and_decimals() -> None:
    assert from_scaled(5855000, 4) == parse_fixed("585.5")  # LOBSTER price x 10000
    assert from_scaled(1_000_000_000_000, 12) == SCALE
    with pytest.raises(DecimalFormatError):
        from_scaled(1, 12)
    assert decimals_of("0.05000") == 5 and decimals_of("7") == 0
    assert format_fixed(parse_fixed("0.05"), 5) == "0.05000"
    with pytest.raises(DecimalFormatError):
        format_fixed(parse_fixed("0.123"), 2)


@pytest.mark.parametrize("text", ["²", "1e999990", "1" * 101, "١٢٣", "1e-999999"])
def test_untrusted_text_is_refused_before_it_costs_anything(text: str) -> None:
    """Non-ASCII digits, huge exponents and over-long texts are not numbers (never expanded)."""
    with pytest.raises(DecimalFormatError):
        parse_fixed(text)
