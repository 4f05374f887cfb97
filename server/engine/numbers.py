"""Exact fixed-point numbers: every price and size in the engine is a Python int in units of 1e-9.

The choice follows Databento (``i64`` prices at a fixed scale of 1e-9): a value is stored as
``round(value * 10**9)`` and never passes through a binary float. Python ints do not overflow, so sums
(volumes) stay exact however large they grow; products of a price and a size are kept at scale 1e-18
(``QUOTE_SCALE``) so quote volumes are exact too. Strings from venues are converted digit by digit.

On the wire (protos/marketdata/v1) a per-event price or size is an ``sint64`` at the same 1e-9 scale,
and aggregates that may exceed int64 at that scale (volumes, quote volumes) are ``Decimal`` messages
(units + nanos, as in invest-api's Quotation).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

SCALE_DIGITS: Final = 9
SCALE: Final = 10**SCALE_DIGITS
"""One unit of a price or size: value 1.0 is ``SCALE``."""
QUOTE_SCALE: Final = SCALE * SCALE
"""Scale of a price x size product (quote volume) kept exact."""

_PAD: Final = "0" * SCALE_DIGITS
_MAX_TEXT: Final = 100
_MAX_EXPONENT: Final = 40


class DecimalFormatError(ValueError):
    """A text that is not a plain decimal number, or one with more than 9 decimal places."""


def parse_fixed(text: str) -> int:
    """Exact parse of a decimal string ('123.45', '-0.5', '1e-3', '7') to scale 1e-9.

    Raises DecimalFormatError for a non-number (only ASCII digits count; at most 100 characters and an
    exponent within +-40) or a value needing more than 9 decimals. Python ints do not overflow; whether a
    value fits the wire (a per-event price or size is a ``sint64``) is the caller's check.
    """
    s = text.strip()
    if len(s) > _MAX_TEXT or not s.isascii():
        raise DecimalFormatError(f"not a decimal number: {text[:_MAX_TEXT]!r}")
    if "e" in s or "E" in s:
        value = _parse_via_decimal(s)
    else:
        neg = s.startswith("-")
        if neg or s.startswith("+"):
            s = s[1:]
        whole, _, frac = s.partition(".")
        if not (whole or frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
            raise DecimalFormatError(f"not a decimal number: {text!r}")
        if len(frac) > SCALE_DIGITS:
            extra = frac[SCALE_DIGITS:]
            if extra.strip("0"):
                raise DecimalFormatError(f"more than {SCALE_DIGITS} decimal places: {text!r}")
            frac = frac[:SCALE_DIGITS]
        value = int(whole or "0") * SCALE + (int((frac + _PAD)[:SCALE_DIGITS]) if frac else 0)
        value = -value if neg else value
    return value


def _parse_via_decimal(s: str) -> int:
    try:
        d = Decimal(s)
    except ArithmeticError as exc:  # decimal.InvalidOperation
        raise DecimalFormatError(f"not a decimal number: {s!r}") from exc
    if not d.is_finite():
        raise DecimalFormatError(f"not a finite number: {s!r}")
    exponent = d.as_tuple().exponent
    if not isinstance(exponent, int) or abs(exponent) > _MAX_EXPONENT:  # '1e999990': a million digits
        raise DecimalFormatError(f"exponent out of range: {s!r}")
    scaled = d.scaleb(SCALE_DIGITS)
    if scaled != scaled.to_integral_value():
        raise DecimalFormatError(f"more than {SCALE_DIGITS} decimal places: {s!r}")
    return int(scaled)


def from_int(units: int) -> int:
    """A whole number of units (e.g. 5 contracts) at scale 1e-9."""
    return units * SCALE


def from_scaled(value: int, decimals: int) -> int:
    """An integer carrying ``decimals`` implied decimal places (LOBSTER price x 10000, DBN 1e-9) to 1e-9."""
    if decimals <= SCALE_DIGITS:
        factor: int = 10 ** (SCALE_DIGITS - decimals)
        return value * factor
    divisor: int = 10 ** (decimals - SCALE_DIGITS)
    q, r = divmod(value, divisor)
    if r:
        raise DecimalFormatError(f"{value}e-{decimals} has more than {SCALE_DIGITS} decimal places")
    return q


def to_decimal(value: int, scale: int = SCALE) -> Decimal:
    """Exact ``decimal.Decimal`` of a fixed-point value at a power-of-ten scale (no context rounding)."""
    places = len(str(scale)) - 1
    if scale != 10**places:
        raise ValueError(f"scale must be a power of ten, not {scale}")
    digits = tuple(int(c) for c in str(abs(value)))
    return Decimal((1 if value < 0 else 0, digits, -places))


def format_fixed(value: int, decimals: int = SCALE_DIGITS) -> str:
    """Render a 1e-9 value with exactly ``decimals`` places; raises if that would drop nonzero digits."""
    neg = value < 0
    v = -value if neg else value
    whole, frac = divmod(v, SCALE)
    digits = f"{frac:0{SCALE_DIGITS}d}"
    if decimals < SCALE_DIGITS:
        if digits[decimals:].strip("0"):
            raise DecimalFormatError(f"{value}e-9 does not fit {decimals} decimals")
        digits = digits[:decimals]
    else:
        digits = digits + "0" * (decimals - SCALE_DIGITS)
    text = f"{whole}.{digits}" if decimals else str(whole)
    return "-" + text if neg else text


def decimals_of(text: str) -> int:
    """Number of decimal places written in a venue's string ('0.05000' -> 5)."""
    _, _, frac = text.partition(".")
    return len(frac)


def div_round(numerator: int, denominator: int) -> int:
    """Integer division rounded half to even (banker's rounding), exact for any sign."""
    if denominator == 0:
        raise ZeroDivisionError("div_round by zero")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q & 1):
        q += 1
    return q


def mul(a: int, b: int) -> int:
    """Product of two 1e-9 values, rounded half-even back to 1e-9."""
    return div_round(a * b, SCALE)


def div(a: int, b: int) -> int:
    """Quotient of two 1e-9 values as a 1e-9 value, rounded half-even."""
    return div_round(a * SCALE, b)


def to_units_nanos(value: int) -> tuple[int, int]:
    """Split a 1e-9 value into (units, nanos) with the same sign, as google.type.Money / Quotation."""
    units, nanos = divmod(abs(value), SCALE)
    return (-units, -nanos) if value < 0 else (units, nanos)


def from_units_nanos(units: int, nanos: int) -> int:
    """Inverse of ``to_units_nanos``."""
    return units * SCALE + nanos
