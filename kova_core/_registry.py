"""Build strategies and policies by registered name from plain parameters, with clear errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, TypeVar

from ._errors import StrategyConfigError, UnknownStrategy
from ._money import MAX_AMOUNT

__all__ = ["build"]

T = TypeVar("T")


def _coerce(name: str, kind: Any, value: object) -> object:
    if kind in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise StrategyConfigError(name, f"must be a whole number of micro-units, got {value!r}")
        if value < 0:
            raise StrategyConfigError(name, f"must be >= 0, got {value}")
        if value > MAX_AMOUNT:
            raise StrategyConfigError(name, f"must be at most {MAX_AMOUNT}, got {value}")
        return value
    if kind in (Fraction, "Fraction"):
        if isinstance(value, bool):
            raise StrategyConfigError(name, f"must be a number, got {value!r}")
        try:
            number = Fraction(str(value) if isinstance(value, float) else value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise StrategyConfigError(name, f"must be a number, got {value!r}") from None
        if number < 0:
            raise StrategyConfigError(name, f"must be >= 0, got {value}")
        return number
    if kind in ("int | None", "None | int"):
        return None if value is None else _coerce(name, int, value)
    raise TypeError(f"unsupported parameter type {kind!r}")  # a programming error in a strategy


def build(registry: Mapping[str, type[T]], what: str, name: str, params: Mapping[str, object]) -> T:
    """Instantiate ``registry[name]`` with ``params``, checking each against the class's fields.

    Raises :class:`UnknownStrategy` for an unregistered name and :class:`StrategyConfigError`
    (naming the parameter) for an unknown parameter or a bad value.
    """
    cls = registry.get(name)
    if cls is None:
        known = ", ".join(sorted(registry))
        raise UnknownStrategy(f"unknown {what} {name!r}; registered: {known}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, object] = {}
    for key, value in params.items():
        field = fields.get(key)
        if field is None:
            takes = ", ".join(fields) or "no parameters"
            raise StrategyConfigError(
                key, f"{what} {name!r} has no parameter {key!r} (takes: {takes})"
            )
        values[key] = _coerce(key, field.type, value)
    try:
        return cls(**values)
    except TypeError as exc:  # a required parameter is missing
        raise StrategyConfigError(name, str(exc)) from None
