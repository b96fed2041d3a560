"""Compute resources as exact integers: CPU in millicores, memory and storage in bytes."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Resources"]


_tuple_new = tuple.__new__


class Resources(NamedTuple):
    """An amount of compute. ``cpu`` is millicores (1000 = one core); sizes are bytes.

    Arithmetic is component-wise. ``fits_in`` says whether every component is within another's.
    (A named tuple rather than a frozen dataclass because markets make millions of these: it is
    built about three times faster. Tuple arithmetic that would make no sense, concatenation
    and repetition, is replaced or refused.)
    """

    cpu: int = 0
    memory: int = 0
    storage: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:  # type: ignore[override]
        return _tuple_new(
            Resources,
            (
                self[0] + other[0],
                self[1] + other[1],
                self[2] + other[2],
                self[3] + other[3],
            ),
        )

    def __sub__(self, other: Resources) -> Resources:
        return _tuple_new(
            Resources,
            (
                self[0] - other[0],
                self[1] - other[1],
                self[2] - other[2],
                self[3] - other[3],
            ),
        )

    def __mul__(self, other: object) -> Resources:  # type: ignore[override]
        raise TypeError("Resources cannot be multiplied")

    __rmul__ = __mul__

    def fits_in(self, other: Resources) -> bool:
        """True if every component of ``self`` is at most the same component of ``other``."""
        return (
            self[0] <= other[0]
            and self[1] <= other[1]
            and self[2] <= other[2]
            and self[3] <= other[3]
        )

    def is_nonnegative(self) -> bool:
        """True if no component is negative."""
        return min(self.cpu, self.memory, self.storage, self.gpu) >= 0

    def __str__(self) -> str:
        gib = 1024**3
        text = (
            f"cpu={self.cpu / 1000:g} memory={self.memory / gib:g}Gi "
            f"storage={self.storage / gib:g}Gi"
        )
        return text + (f" gpu={self.gpu}" if self.gpu else "")
