"""Money: an exact integer count of micro-units (1 unit = 1,000,000 micro). No float touches it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ._errors import InvalidAmount

__all__ = ["MAX_AMOUNT", "MICRO", "format_micro", "parse_amount", "require_amount"]

MICRO = 1_000_000
"""Micro-units in one unit of money."""

MAX_AMOUNT = 2**63 - 1
"""The largest amount a single value may hold: money columns and arrays are int64."""


def require_amount(value: object, what: str = "amount", *, positive: bool = False) -> int:
    """Return ``value`` if it is an ``int`` number of micro-units (not a bool, not a float).

    Raises :class:`InvalidAmount` if it is not an int, is negative, is zero when ``positive``
    is set, or exceeds :data:`MAX_AMOUNT`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{what} must be an integer number of micro-units, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InvalidAmount(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"{what} must be at most {MAX_AMOUNT} micro-units, got {value}")
    return value


def parse_amount(text: str | int) -> int:
    """Parse a decimal amount of units (``"1.5"``, ``"0.000001"``, ``3``) into micro-units.

    Exact at any length (integer arithmetic on the digits, no decimal rounding). Raises
    :class:`InvalidAmount` if it is not a number, is negative, has finer precision than one
    micro-unit, or is more than :data:`MAX_AMOUNT` micro-units.
    """
    if isinstance(text, bool):
        raise InvalidAmount(f"not an amount: {text!r}")
    try:
        units = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidAmount(f"not an amount: {text!r}") from None
    if not units.is_finite():
        raise InvalidAmount(f"not an amount: {text!r}")
    sign, digit_tuple, exponent = units.as_tuple()
    assert isinstance(exponent, int)  # finite
    digits = list(digit_tuple)
    while digits and digits[-1] == 0:  # 1.500 -> 15e-1: the last digit left is significant
        digits.pop()
        exponent += 1
    if not digits:
        return 0
    if sign:
        raise InvalidAmount(f"amount must be >= 0, got {text!r}")
    if exponent < -6:
        raise InvalidAmount(f"{text!r} is finer than one micro-unit (0.000001)")
    if len(digits) + exponent + 6 > len(str(MAX_AMOUNT)):
        raise InvalidAmount(f"{text!r} is too large (at most {MAX_AMOUNT} micro-units)")
    micro: int = int("".join(map(str, digits))) * 10 ** (exponent + 6)
    if micro > MAX_AMOUNT:
        raise InvalidAmount(f"{text!r} is too large (at most {MAX_AMOUNT} micro-units)")
    return micro


def format_micro(micro: int) -> str:
    """Format micro-units as units with six decimals: ``1500000`` -> ``"1.500000"``."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"
