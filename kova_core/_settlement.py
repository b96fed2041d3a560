"""Settlement arithmetic: pure functions on integers, shared by every driver.

These functions decide *what* is paid; :class:`~kova_core.Market` applies their plans to its
state, and a driver that keeps its state elsewhere (a SQL database) can apply them to its own.

The reference semantics (DESIGN section 1):

- A lease owes ``(height - last_settled) * price`` for the blocks since it was last settled.
- A round is all-or-nothing per deployment: if the escrow covers what all its active leases owe,
  each is paid; if not, nothing is paid and each owed amount becomes that lease's debt.
- At a close, escrow pays what it can: in full if it covers every claim, otherwise pro rata
  (largest remainder, ties by lease id), and what is left unpaid is written off.
- The network's fee is taken from each payment so that it depends only on a lease's running
  total: ``fee = floor(total_after * bps / 10^4) - floor(total_before * bps / 10^4)``. So paying
  ``[a, c]`` at once takes exactly the fee of paying ``[a, b]`` then ``[b, c]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BPS",
    "Claim",
    "Payment",
    "fee_share",
    "job_deadline",
    "job_next_deadline",
    "job_out_of_funds",
    "owed",
    "plan_close",
    "plan_round",
]

BPS = 10_000
"""Basis points in a whole: a fee rate of 250 bps is 2.5%."""


def owed(price: int, last_settled: int, height: int) -> int:
    """What a lease at ``price`` per block owes for blocks ``[last_settled, height)``."""
    return (height - last_settled) * price


def fee_share(paid_before: int, amount: int, fee_bps: int) -> int:
    """The network's share of a payment of ``amount`` on a lease already paid ``paid_before``."""
    return (paid_before + amount) * fee_bps // BPS - paid_before * fee_bps // BPS


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """What one lease is owed: ``amount`` for blocks ``[start, end)``; ``paid_before`` is its
    running total, for the fee."""

    lease_id: int
    provider_id: int
    amount: int
    start: int
    end: int
    paid_before: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Payment:
    """One lease's payment: ``gross`` leaves the escrow, of which ``fee`` goes to the network and
    ``gross - fee`` to the provider; ``written_off`` is what the claim could not get."""

    claim: Claim
    gross: int
    fee: int
    written_off: int = 0

    @property
    def net(self) -> int:
        """What the provider receives."""
        return self.gross - self.fee

    def blocks_paid(self, price: int) -> int:
        """Whole blocks this payment pays for at ``price``: the claim's range if paid in full,
        else as many blocks as the partial amount covers."""
        if self.written_off == 0:
            return self.claim.end - self.claim.start
        return self.gross // price if price else 0


def _pay(claim: Claim, gross: int, fee_bps: int) -> Payment:
    return Payment(
        claim=claim,
        gross=gross,
        fee=fee_share(claim.paid_before, gross, fee_bps),
        written_off=claim.amount - gross,
    )


def plan_round(
    escrow: int, claims: Sequence[Claim], fee_bps: int = 0
) -> tuple[Payment, ...] | None:
    """Plan one deployment's settlement: every claim paid in full, or ``None`` if escrow is short.

    ``None`` means nothing is paid and each claim becomes its lease's debt.
    """
    if escrow < sum(c.amount for c in claims):
        return None
    return tuple(_pay(c, c.amount, fee_bps) for c in claims)


def plan_close(escrow: int, claims: Sequence[Claim], fee_bps: int = 0) -> tuple[Payment, ...]:
    """Plan a final settlement: pay every claim if escrow covers them all, else share it pro rata.

    The pro-rata share of claim ``i`` is ``floor(escrow * amount_i / total)``; the micro-units
    that flooring leaves go one each to the claims with the largest remainders (ties by lease
    id). What a claim does not get is its ``written_off``.
    """
    total = sum(c.amount for c in claims)
    if escrow >= total:
        return tuple(_pay(c, c.amount, fee_bps) for c in claims)
    shares = [divmod(escrow * c.amount, total) for c in claims]
    gross = [q for q, _ in shares]
    left = escrow - sum(gross)
    by_remainder = sorted(range(len(claims)), key=lambda i: (-shares[i][1], claims[i].lease_id))
    for i in by_remainder[:left]:
        gross[i] += 1
    return tuple(_pay(c, g, fee_bps) for c, g in zip(claims, gross, strict=True))


def job_deadline(escrow: int, running: Sequence[tuple[int, int]]) -> int | None:
    """The last block a job's escrow pays for, given its running leases as ``(since, price)``.

    The job accrues ``sum((h - since) * price)`` by height ``h``; the deadline is the largest
    ``h`` at which that is still within ``escrow``. ``None`` if nothing runs.
    """
    rate = sum(price for _, price in running)
    if rate == 0:
        return None
    base = sum(since * price for since, price in running)
    return (escrow + base) // rate


def job_next_deadline(
    escrow: int, running: Sequence[tuple[int, int, int]], max_runtime: int | None
) -> int | None:
    """A job's next deadline, given its running leases as ``(created_at, last_settled,
    price)``: the earlier of the last block its escrow pays for (:func:`job_deadline`) and the
    first lease reaching ``max_runtime``. ``None`` if nothing runs."""
    deadline = job_deadline(escrow, [(since, price) for _, since, price in running])
    if running and max_runtime is not None:
        timeout = min(created for created, _, _ in running) + max_runtime
        deadline = timeout if deadline is None else min(deadline, timeout)
    return deadline


def job_out_of_funds(escrow: int, running: Sequence[tuple[int, int]], height: int) -> bool:
    """At a job's deadline ``height``, whether its escrow pays for no block beyond this one
    (running leases as ``(last_settled, price)``): then the whole job stops; otherwise the
    deadline is a lease's max runtime."""
    accrued = sum(owed(price, since, height) for since, price in running)
    return accrued + sum(price for _, price in running) > escrow
