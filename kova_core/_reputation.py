"""Provider reputation: completed versus failed leases, as a score with a prior.

The score is the mean of a Beta posterior, ``(completed + a) / (completed + failed + a + b)``,
with the prior ``a = b = 1``: a new provider scores 1/2, neither perfect nor worthless, and each
outcome moves it less as its record grows. Scores are exact fractions, so comparisons and ties
never depend on float rounding.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

__all__ = ["PRIOR_COMPLETED", "PRIOR_FAILED", "reputation_score"]

PRIOR_COMPLETED = 1
"""Pseudo-count of completed leases every provider starts with."""
PRIOR_FAILED = 1
"""Pseudo-count of failed leases every provider starts with."""


@lru_cache(maxsize=65_536)  # every bid a tenant looks at asks for one; records repeat
def reputation_score(completed: int, failed: int) -> Fraction:
    """The reputation score in (0, 1) of a provider with this record.

    Raises ``ValueError`` if either count is negative.
    """
    if completed < 0 or failed < 0:
        raise ValueError("reputation counts must be >= 0")
    return Fraction(
        completed + PRIOR_COMPLETED, completed + failed + PRIOR_COMPLETED + PRIOR_FAILED
    )
