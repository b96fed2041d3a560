"""Lifecycles of Kova's entities, as tables. Nothing else in the package decides a transition.

Theory of operation
-------------------
Each entity kind (order, bid, lease, deployment, provider) has a table mapping
``(state, command) -> new state``. The market calls :func:`transition` for every state change;
a pair missing from the table is an :class:`~kova_core.IllegalTransition` naming the entity, its
id, its state and the command, never a silent no-op. The state diagrams in ``docs/lifecycles.md``
are generated from these tables by :func:`lifecycle_diagrams`, and a test keeps them in sync.

Who issues which command:

- an order is ``open`` when created; accepting one of its bids ``match``-es it; closing its
  deployment or giving up on it (``expire``) closes it; a lease failing through the provider's
  fault (``reopen``) puts it back up for bidding.
- a bid is ``open`` until the tenant accepts it, another bid on its order is accepted or the
  order closes (``lose``), or its provider takes it back (``withdraw``).
- a lease is ``active`` until a settlement round finds its deployment's escrow short
  (``pause`` -> ``insufficient_funds``); a deposit covering the debt ``resume``-s it;
  ``close`` ends it from either state and records a reason.
- a deployment mirrors its leases: ``active`` <-> ``insufficient_funds`` -> ``closed``.
- a provider is ``online`` until it fails (``fail`` -> ``lost``), and ``recover``-s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

from ._errors import IllegalTransition

__all__ = [
    "TRANSITIONS",
    "BidState",
    "CloseReason",
    "DeploymentState",
    "LeaseState",
    "OrderState",
    "ProviderState",
    "job_outcome",
    "lifecycle_diagrams",
    "transition",
]


class OrderState(StrEnum):
    """Lifecycle of an order."""

    OPEN = "open"
    MATCHED = "matched"
    CLOSED = "closed"


class BidState(StrEnum):
    """Lifecycle of a bid."""

    OPEN = "open"
    ACCEPTED = "accepted"
    LOST = "lost"
    WITHDRAWN = "withdrawn"


class LeaseState(StrEnum):
    """Lifecycle of a lease."""

    ACTIVE = "active"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CLOSED = "closed"


class DeploymentState(StrEnum):
    """Lifecycle of a deployment or job."""

    ACTIVE = "active"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    CLOSED = "closed"


class ProviderState(StrEnum):
    """Lifecycle of a provider."""

    ONLINE = "online"
    LOST = "lost"


class CloseReason(StrEnum):
    """Why a lease, order or deployment was closed. Closed is final; the reason is recorded."""

    TENANT_CLOSED = "tenant_closed"
    JOB_COMPLETED = "job_completed"
    JOB_FAILED = "job_failed"
    JOB_OUT_OF_FUNDS = "job_out_of_funds"
    JOB_TIMED_OUT = "job_timed_out"
    PROVIDER_LOST = "provider_lost"
    CONTAINER_FAILED = "container_failed"
    EXPIRED = "expired"

    @property
    def provider_at_fault(self) -> bool:
        """True if a lease closed for this reason counts as a failure against its provider."""
        return self in _FAILURES

    @property
    def counts_as_completed(self) -> bool:
        """True if a lease closed for this reason counts as completed for its provider."""
        return self in _COMPLETIONS


# Reputation: the provider is credited for a lease that ran until the tenant or the job ended it,
# and blamed for one that ended through its machine, its container, or the job failing on it.
# Running out of funds or time is the tenant's doing and counts neither way.
_COMPLETIONS = frozenset({CloseReason.TENANT_CLOSED, CloseReason.JOB_COMPLETED})
_FAILURES = frozenset(
    {CloseReason.PROVIDER_LOST, CloseReason.CONTAINER_FAILED, CloseReason.JOB_FAILED}
)

_WORST_JOB_OUTCOMES = (CloseReason.JOB_FAILED, CloseReason.JOB_TIMED_OUT)


def job_outcome(lease_reasons: Iterable[CloseReason | None]) -> CloseReason:
    """Why a job closes once none of its orders is open or running, from why its leases
    closed: failed if one failed, else timed out if one timed out, else completed."""
    reasons = set(lease_reasons)
    return next((r for r in _WORST_JOB_OUTCOMES if r in reasons), CloseReason.JOB_COMPLETED)


_O, _B, _L, _D, _P = OrderState, BidState, LeaseState, DeploymentState, ProviderState

TRANSITIONS: Mapping[str, Mapping[tuple[StrEnum, str], StrEnum]] = {
    "order": {
        (_O.OPEN, "match"): _O.MATCHED,
        (_O.OPEN, "expire"): _O.CLOSED,
        (_O.OPEN, "close"): _O.CLOSED,
        (_O.MATCHED, "reopen"): _O.OPEN,
        (_O.MATCHED, "close"): _O.CLOSED,
    },
    "bid": {
        (_B.OPEN, "accept"): _B.ACCEPTED,
        (_B.OPEN, "lose"): _B.LOST,
        (_B.OPEN, "withdraw"): _B.WITHDRAWN,
    },
    "lease": {
        (_L.ACTIVE, "pause"): _L.INSUFFICIENT_FUNDS,
        (_L.INSUFFICIENT_FUNDS, "resume"): _L.ACTIVE,
        (_L.ACTIVE, "close"): _L.CLOSED,
        (_L.INSUFFICIENT_FUNDS, "close"): _L.CLOSED,
    },
    "deployment": {
        (_D.ACTIVE, "pause"): _D.INSUFFICIENT_FUNDS,
        (_D.INSUFFICIENT_FUNDS, "resume"): _D.ACTIVE,
        (_D.ACTIVE, "close"): _D.CLOSED,
        (_D.INSUFFICIENT_FUNDS, "close"): _D.CLOSED,
    },
    "provider": {
        (_P.ONLINE, "fail"): _P.LOST,
        (_P.LOST, "recover"): _P.ONLINE,
    },
}
"""``entity kind -> {(state, command): new state}``: every legal transition, and only those."""


S = TypeVar("S", bound=StrEnum)


def transition(entity: str, entity_id: object, state: S, command: str) -> S:
    """Return the state ``entity`` moves to from ``state`` under ``command``.

    Raises :class:`IllegalTransition` if the table has no such transition.
    """
    new = TRANSITIONS[entity].get((state, command))
    if new is None:
        raise IllegalTransition(entity, entity_id, str(state), command)
    return new  # type: ignore[return-value]


def lifecycle_diagrams() -> str:
    """Mermaid state diagrams of every lifecycle, generated from :data:`TRANSITIONS`."""
    parts = [
        "# Lifecycles",
        "",
        "Generated from `kova_core/_state.py` by `scripts/gen-lifecycles`;"
        " a test keeps this file in sync with the tables. Any transition not drawn here"
        " raises `IllegalTransition`.",
    ]
    for entity, table in TRANSITIONS.items():
        first = next(iter(table))[0]
        parts += ["", f"## {entity}", "", "```mermaid", "stateDiagram-v2", f"    [*] --> {first}"]
        for (src, command), dst in table.items():
            parts.append(f"    {src} --> {dst}: {command}")
        parts.append("```")
    return "\n".join(parts) + "\n"
