"""Money: an exact integer count of micro-units (1 unit = 1,000,000 micro). No float touches it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ._errors import InvalidAmount

__all__ = ["MICRO", "format_micro", "parse_amount", "require_amount"]

MICRO = 1_000_000
"""Micro-units in one unit of money."""


def require_amount(value: object, what: str = "amount", *, positive: bool = False) -> int:
    """Return ``value`` if it is an ``int`` number of micro-units (not a bool, not a float).

    Raises :class:`InvalidAmount` if it is not an int, is negative, or is zero when
    ``positive`` is set.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{what} must be an integer number of micro-units, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise InvalidAmount(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")
    return value


def parse_amount(text: str | int) -> int:
    """Parse a decimal amount of units (``"1.5"``, ``"0.000001"``, ``3``) into micro-units.

    Raises :class:`InvalidAmount` if it is not a number, is negative, or has finer precision
    than one micro-unit.
    """
    if isinstance(text, bool):
        raise InvalidAmount(f"not an amount: {text!r}")
    try:
        units = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidAmount(f"not an amount: {text!r}") from None
    if not units.is_finite():
        raise InvalidAmount(f"not an amount: {text!r}")
    micro = units * MICRO
    if micro != micro.to_integral_value():
        raise InvalidAmount(f"{text!r} is finer than one micro-unit (0.000001)")
    return require_amount(int(micro), "amount")


def format_micro(micro: int) -> str:
    """Format micro-units as units with six decimals: ``1500000`` -> ``"1.500000"``."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"
