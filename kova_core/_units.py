"""Quantities written by people: CPU, sizes and durations, parsed into exact integers.

Manifests and simulator scenarios write ``cpu: 0.5``, ``size: 512Mi`` and ``max_runtime: 2h``;
the core counts millicores, bytes and blocks (1 block = 1 second). Every parser here takes an
``int``, a ``float`` or a ``str`` and returns an ``int``, computing with exact fractions so that
no rounding ever reaches a quantity. A value that is not a quantity, is not positive, or is
finer than the unit it is counted in raises :class:`ValueError` with a short message meant to
be shown next to the field's name.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

__all__ = ["parse_cpu", "parse_duration", "parse_size"]

# A decimal number (optionally with an exponent) followed by an optional unit.
_QUANTITY = re.compile(
    r"\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[A-Za-z]*)\s*"
)

_CPU_HINT = "use cores such as 0.5 or 2, or millicores such as 500m"
_SIZE_HINT = "use bytes or a unit such as 512Mi, 1Gi, 10G"
_DURATION_HINT = "use seconds or a duration such as 90s, 30m, 2h, 1d, 1h30m"

# Size units, looked up in lower case: Kubernetes quantity suffixes (k/M/G/... powers of 1000,
# Ki/Mi/Gi/... powers of 1024). Matching ignores case and a trailing "b", so "512mi", "10GB" and
# "1GiB" are read the way their authors meant. Kubernetes' "m" (milli) would be a fraction of a
# byte, which is never meant for a size, so "m" is mega here.
_SIZE_UNITS: dict[str, int] = {"": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    _SIZE_UNITS[_letter] = 1000**_power
    _SIZE_UNITS[_letter + "i"] = 1024**_power

_MAX_EXPONENT = 30

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([a-z])")


def _number(value: object, what: str, hint: str) -> tuple[Fraction, str]:
    """Split ``value`` into an exact number and a unit (``""`` for a bare number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"not {what}: {value!r} ({hint})")
    if isinstance(value, str):
        match = _QUANTITY.fullmatch(value)
        if match is None:
            raise ValueError(f"not {what}: {value!r} ({hint})")
        number, unit = Decimal(match["number"]), match["unit"]
    else:
        # repr() of a float is its shortest round-tripping decimal: 0.1 -> Decimal("0.1").
        number, unit = Decimal(repr(value) if isinstance(value, float) else value), ""
    if not number.is_finite():
        raise ValueError(f"not {what}: {value!r} ({hint})")
    # Bound the magnitude and precision so that "1e999999999" cannot exhaust memory.
    if number and not -_MAX_EXPONENT <= number.adjusted() <= _MAX_EXPONENT:
        raise ValueError(f"out of range: {value!r}")
    return Fraction(number), unit


def _whole(amount: Fraction, allow_zero: bool, finer: str) -> int:
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValueError("must be at least 0" if allow_zero else "must be greater than 0")
    if amount.denominator != 1:
        raise ValueError(finer)
    return int(amount)


def parse_cpu(value: object, *, allow_zero: bool = False) -> int:
    """Parse an amount of CPU into integer millicores (1000 = one core).

    Accepts a number of cores (``0.5``, ``2``, ``"1.5"``) or millicores with an ``m`` suffix
    (``"500m"``). Raises :class:`ValueError` if it is not such an amount, is not greater than 0
    (at least 0 with ``allow_zero``), or is finer than one millicore.
    """
    number, unit = _number(value, "a CPU amount", _CPU_HINT)
    if unit not in ("", "m"):
        raise ValueError(f"not a CPU amount: {value!r} ({_CPU_HINT})")
    millicores = number if unit == "m" else number * 1000
    return _whole(millicores, allow_zero, "finer than one millicore (0.001 of a core)")


def parse_size(value: object, *, allow_zero: bool = False) -> int:
    """Parse a memory or storage size into integer bytes.

    Accepts bytes (``1048576``) or a number with a unit: ``k M G T P E`` (powers of 1000) or
    ``Ki Mi Gi Ti Pi Ei`` (powers of 1024), e.g. ``"512Mi"``, ``"1.5Gi"``, ``"10G"``. Units
    ignore case and a trailing ``B`` (``"512mi"``, ``"10GB"``). Raises :class:`ValueError` if it
    is not a size, is not greater than 0 (at least 0 with ``allow_zero``), or is a fraction of
    a byte.
    """
    number, unit = _number(value, "a size", _SIZE_HINT)
    key = unit.lower()
    if key.endswith("b"):
        key = key[:-1]
    multiplier = _SIZE_UNITS.get(key)
    if multiplier is None:
        raise ValueError(f"not a size: {value!r} ({_SIZE_HINT})")
    return _whole(number * multiplier, allow_zero, "not a whole number of bytes")


def parse_duration(value: object, *, allow_zero: bool = False) -> int:
    """Parse a duration into integer blocks (1 block = 1 second).

    Accepts a number of seconds (``90``, ``"90"``) or a string of numbers with units ``s m h d
    w``: ``"90s"``, ``"30m"``, ``"2h"``, ``"7d"``, ``"1h30m"``, ``"1.5h"``. Raises
    :class:`ValueError` if it is not a duration, is not greater than 0 (at least 0 with
    ``allow_zero``), or is a fraction of a second.
    """
    bare = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if isinstance(value, str) and (bare is None or bare["unit"]):
        text = "".join(value.split()).lower()
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {value!r} ({_DURATION_HINT})")
        seconds = Fraction(0)
        for number, unit in parts:
            if unit not in _DURATION_UNITS or len(number) > _MAX_EXPONENT:
                raise ValueError(f"not a duration: {value!r} ({_DURATION_HINT})")
            seconds += Fraction(number) * _DURATION_UNITS[unit]
    else:
        seconds, unit = _number(value, "a duration", _DURATION_HINT)
        if unit:
            raise ValueError(f"not a duration: {value!r} ({_DURATION_HINT})")
    return _whole(seconds, allow_zero, "not a whole number of seconds (blocks)")
