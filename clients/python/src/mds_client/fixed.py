"""Exact conversions between the wire's fixed-point numbers and :class:`decimal.Decimal`.

The mds API (see ``protos/marketdata/v1/common.proto``) carries prices, sizes, rates and percents as
``sint64`` fixed point at scale 1e-9 (the wire value is ``value * 10**9``) and aggregates that may
exceed int64 at that scale as ``marketdata.v1.Decimal`` messages (``units`` plus ``nanos``, both with
the same sign). Every function here is exact: no value ever passes through a binary float, and none
depends on the active :mod:`decimal` context (precision, rounding, traps).

Decimals produced here have exponent -9 (``from_fixed(1_500_000_000) == Decimal("1.500000000")``);
they compare equal to any other spelling of the same number.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol, TypeAlias

from marketdata.v1 import common_pb2

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "NANOS_PER_UNIT",
    "SCALE",
    "DecimalLike",
    "from_decimal_pb",
    "from_fixed",
    "to_decimal_pb",
    "to_fixed",
]

SCALE = 9
"""Number of decimal places of the wire's fixed-point numbers (scale 1e-9)."""
NANOS_PER_UNIT = 10**SCALE
"""Wire units per whole unit: 1_000_000_000."""
INT64_MIN = -(2**63)
"""Smallest ``sint64`` / ``int64`` wire value."""
INT64_MAX = 2**63 - 1
"""Largest ``sint64`` / ``int64`` wire value."""

DecimalLike: TypeAlias = Decimal | str | int
"""What :func:`to_fixed` and :func:`to_decimal_pb` accept (never ``float``)."""


class _DecimalMessage(Protocol):
    """Structural type of ``marketdata.v1.Decimal`` (and of look-alikes such as Quotation)."""

    @property
    def units(self) -> int: ...

    @property
    def nanos(self) -> int: ...


def _scaled(value: int, exponent: int) -> Decimal:
    """``value * 10**exponent`` as a Decimal, built from digits (exact, context-free)."""
    sign, digits, _ = Decimal(value).as_tuple()
    return Decimal((sign, digits, exponent))


def from_fixed(value: int) -> Decimal:
    """Convert a wire fixed-point integer at scale 1e-9 to its exact Decimal value.

    >>> from_fixed(1_500_000_000)
    Decimal('1.500000000')
    >>> from_fixed(-1)
    Decimal('-1E-9')
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"from_fixed expects an int, got {type(value).__name__}")
    return _scaled(value, -SCALE)


def _to_decimal(value: DecimalLike) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        # Floats are refused on purpose: 0.1 has no exact binary representation.
        raise TypeError(f"expected Decimal, str or int (never float), got {type(value).__name__}")
    if isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except ArithmeticError:  # decimal.InvalidOperation, raised with the default traps
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        result = Decimal(value)
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def _to_nanos(value: DecimalLike) -> int:
    """The exact integer ``value * 10**9``; ValueError if value has more than 9 decimal places."""
    dec = _to_decimal(value)
    sign, digits, exponent = dec.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    if not any(digits):
        return 0
    shift = exponent + SCALE
    if shift < 0:  # more than 9 decimal places are written: the extra ones must all be zeros
        extra = -shift
        if extra >= len(digits) or any(digits[-extra:]):
            raise ValueError(f"{value!r} has more than {SCALE} decimal places; it is not representable at 1e-9")
        digits, shift = digits[:-extra], 0
    if len(digits) + shift > 40:  # far beyond any int64 / Decimal message; avoid building huge ints
        raise ValueError(f"{value!r} is out of range")
    multiplier: int = 10**shift  # shift >= 0 here
    magnitude = int("".join(map(str, digits))) * multiplier
    return -magnitude if sign else magnitude


def to_fixed(value: DecimalLike) -> int:
    """Convert a number to the wire's ``sint64`` fixed point at scale 1e-9, exactly.

    Raises :class:`ValueError` when the value has more than 9 decimal places (it would need
    rounding), is not finite, or falls outside the int64 range (about +-9.22e9), and
    :class:`TypeError` for a ``float`` or ``bool``.

    >>> to_fixed("1.5")
    1500000000
    >>> to_fixed(Decimal("-0.000000001"))
    -1
    """
    nanos = _to_nanos(value)
    if not INT64_MIN <= nanos <= INT64_MAX:
        raise ValueError(f"{value!r} is outside the sint64 range at scale 1e-9 (+-9223372036.854775807)")
    return nanos


def from_decimal_pb(message: _DecimalMessage) -> Decimal:
    """Convert a ``marketdata.v1.Decimal`` message (``units`` + ``nanos`` / 1e9) to its exact value.

    Raises :class:`ValueError` for a malformed message: ``nanos`` outside (-1e9, 1e9), or
    ``units`` and ``nanos`` of opposite signs.

    >>> from_decimal_pb(common_pb2.Decimal(units=-2, nanos=-750_000_000))
    Decimal('-2.750000000')
    """
    units, nanos = int(message.units), int(message.nanos)
    if not -NANOS_PER_UNIT < nanos < NANOS_PER_UNIT:
        raise ValueError(f"Decimal nanos {nanos} is outside (-1e9, 1e9)")
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise ValueError(f"Decimal units {units} and nanos {nanos} have opposite signs")
    return _scaled(units * NANOS_PER_UNIT + nanos, -SCALE)


def to_decimal_pb(value: DecimalLike) -> common_pb2.Decimal:
    """Convert a number to a ``marketdata.v1.Decimal`` message, exactly.

    ``units`` is truncated toward zero and ``nanos`` carries the same sign. Raises
    :class:`ValueError` for more than 9 decimal places or a value outside the int64 range of
    ``units``.
    """
    total = _to_nanos(value)
    magnitude_units, magnitude_nanos = divmod(abs(total), NANOS_PER_UNIT)
    units = -magnitude_units if total < 0 else magnitude_units
    nanos = -magnitude_nanos if total < 0 else magnitude_nanos
    if not INT64_MIN <= units <= INT64_MAX:
        raise ValueError(f"{value!r} is outside the range of a Decimal message (int64 units)")
    return common_pb2.Decimal(units=units, nanos=nanos)
