"""Compute resources as exact integers: CPU in millicores, memory and storage in bytes."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Resources"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """An amount of compute. ``cpu`` is millicores (1000 = one core); sizes are bytes.

    Arithmetic is component-wise. ``fits_in`` says whether every component is within another's.
    """

    cpu: int = 0
    memory: int = 0
    storage: int = 0
    gpu: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            cpu=self.cpu + other.cpu,
            memory=self.memory + other.memory,
            storage=self.storage + other.storage,
            gpu=self.gpu + other.gpu,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            cpu=self.cpu - other.cpu,
            memory=self.memory - other.memory,
            storage=self.storage - other.storage,
            gpu=self.gpu - other.gpu,
        )

    def fits_in(self, other: Resources) -> bool:
        """True if every component of ``self`` is at most the same component of ``other``."""
        return (
            self.cpu <= other.cpu
            and self.memory <= other.memory
            and self.storage <= other.storage
            and self.gpu <= other.gpu
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
