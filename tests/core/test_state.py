"""Lifecycle tables: every (state, command) pair of every entity is either listed or illegal."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import pytest

from kova_core import (
    TRANSITIONS,
    BidState,
    CloseReason,
    DeploymentState,
    IllegalTransition,
    KovaError,
    LeaseState,
    OrderState,
    ProviderState,
    lifecycle_diagrams,
    transition,
)

LIFECYCLES_MD = Path(__file__).resolve().parents[2] / "docs" / "lifecycles.md"

STATES: dict[str, type[StrEnum]] = {
    "order": OrderState,
    "bid": BidState,
    "lease": LeaseState,
    "deployment": DeploymentState,
    "provider": ProviderState,
}

# The lifecycles in words, as DESIGN and _state's theory of operation describe them.
EXPECTED = {
    "order": {
        ("open", "match"): "matched",
        ("open", "expire"): "closed",
        ("open", "close"): "closed",
        ("matched", "reopen"): "open",
        ("matched", "close"): "closed",
    },
    "bid": {
        ("open", "accept"): "accepted",
        ("open", "lose"): "lost",
        ("open", "withdraw"): "withdrawn",
    },
    "lease": {
        ("active", "pause"): "insufficient_funds",
        ("insufficient_funds", "resume"): "active",
        ("active", "close"): "closed",
        ("insufficient_funds", "close"): "closed",
    },
    "deployment": {
        ("active", "pause"): "insufficient_funds",
        ("insufficient_funds", "resume"): "active",
        ("active", "close"): "closed",
        ("insufficient_funds", "close"): "closed",
    },
    "provider": {
        ("online", "fail"): "lost",
        ("lost", "recover"): "online",
    },
}


def test_every_entity_has_a_table_and_a_state_enum() -> None:
    assert list(TRANSITIONS) == list(STATES)


@pytest.mark.parametrize("entity", list(STATES))
def test_tables_are_the_documented_lifecycles(entity: str) -> None:
    table = {(str(src), cmd): str(dst) for (src, cmd), dst in TRANSITIONS[entity].items()}
    assert table == EXPECTED[entity]


@pytest.mark.parametrize("entity", list(STATES))
def test_tables_use_only_their_own_states(entity: str) -> None:
    enum = STATES[entity]
    for (src, _command), dst in TRANSITIONS[entity].items():
        assert type(src) is enum and type(dst) is enum


def _commands(entity: str) -> list[str]:
    return sorted({command for (_state, command) in TRANSITIONS[entity]})


ALL_PAIRS = [
    pytest.param(entity, state, command, id=f"{entity}-{state}-{command}")
    for entity, enum in STATES.items()
    for state in enum
    for command in _commands(entity)
]


@pytest.mark.parametrize(("entity", "state", "command"), ALL_PAIRS)
def test_transition_follows_the_table(entity: str, state: StrEnum, command: str) -> None:
    expected = TRANSITIONS[entity].get((state, command))
    if expected is not None:
        new = transition(entity, 42, state, command)
        assert new is expected
        assert type(new) is STATES[entity]
        return
    with pytest.raises(IllegalTransition) as raised:
        transition(entity, 42, state, command)
    error = raised.value
    assert isinstance(error, KovaError)
    assert (error.entity, error.entity_id, error.state, error.command) == (
        entity,
        42,
        str(state),
        command,
    )
    assert str(error) == f"{entity} 42 is {state}: cannot {command}"


def test_illegal_transition_names_everything() -> None:
    with pytest.raises(IllegalTransition) as raised:
        transition("bid", 17, BidState.LOST, "accept")
    assert str(raised.value) == "bid 17 is lost: cannot accept"
    assert raised.value.entity == "bid"
    assert raised.value.entity_id == 17
    assert raised.value.state == "lost"
    assert raised.value.command == "accept"


@pytest.mark.parametrize(
    ("entity", "command"),
    [
        pytest.param("order", "cancel", id="order-unknown-command"),
        pytest.param("lease", "match", id="lease-order-command"),
        pytest.param("provider", "close", id="provider-close"),
    ],
)
def test_commands_from_outside_the_table_are_illegal(entity: str, command: str) -> None:
    for state in STATES[entity]:
        with pytest.raises(IllegalTransition, match=f"cannot {command}$"):
            transition(entity, "x-1", state, command)


@pytest.mark.parametrize(
    ("entity", "state"),
    [
        pytest.param("order", OrderState.CLOSED, id="order-closed"),
        pytest.param("bid", BidState.ACCEPTED, id="bid-accepted"),
        pytest.param("bid", BidState.LOST, id="bid-lost"),
        pytest.param("bid", BidState.WITHDRAWN, id="bid-withdrawn"),
        pytest.param("lease", LeaseState.CLOSED, id="lease-closed"),
        pytest.param("deployment", DeploymentState.CLOSED, id="deployment-closed"),
    ],
)
def test_final_states_have_no_way_out(entity: str, state: StrEnum) -> None:
    assert [cmd for (src, cmd) in TRANSITIONS[entity] if src is state] == []
    every_command = {cmd for table in TRANSITIONS.values() for (_src, cmd) in table}
    for command in sorted(every_command):
        with pytest.raises(IllegalTransition):
            transition(entity, 1, state, command)


@pytest.mark.parametrize("entity", list(STATES))
def test_every_state_is_reachable_from_the_first(entity: str) -> None:
    table = TRANSITIONS[entity]
    first = next(iter(table))[0]
    reached, frontier = {first}, [first]
    while frontier:
        state = frontier.pop()
        for (src, _command), dst in table.items():
            if src is state and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(STATES[entity])


def test_a_lease_round_trip() -> None:
    trace = [LeaseState.ACTIVE]
    for command in ("pause", "resume", "pause", "close"):
        trace.append(transition("lease", 3, trace[-1], command))
    assert trace == [
        LeaseState.ACTIVE,
        LeaseState.INSUFFICIENT_FUNDS,
        LeaseState.ACTIVE,
        LeaseState.INSUFFICIENT_FUNDS,
        LeaseState.CLOSED,
    ]


def test_docs_lifecycles_is_generated_from_the_tables() -> None:
    assert LIFECYCLES_MD.read_text() == lifecycle_diagrams(), (
        "docs/lifecycles.md is out of date with kova_core/_state.py: run scripts/gen-lifecycles"
    )


def test_lifecycle_diagrams_draw_every_transition() -> None:
    text = lifecycle_diagrams()
    for entity, table in TRANSITIONS.items():
        assert f"## {entity}\n" in text
        for (src, command), dst in table.items():
            assert f"    {src} --> {dst}: {command}\n" in text
    assert text.count("```mermaid") == len(TRANSITIONS)


@pytest.mark.parametrize(
    ("reason", "provider_at_fault", "counts_as_completed"),
    [
        pytest.param(CloseReason.TENANT_CLOSED, False, True, id="tenant-closed"),
        pytest.param(CloseReason.JOB_COMPLETED, False, True, id="job-completed"),
        pytest.param(CloseReason.JOB_FAILED, True, False, id="job-failed"),
        pytest.param(CloseReason.JOB_OUT_OF_FUNDS, False, False, id="job-out-of-funds"),
        pytest.param(CloseReason.JOB_TIMED_OUT, False, False, id="job-timed-out"),
        pytest.param(CloseReason.PROVIDER_LOST, True, False, id="provider-lost"),
        pytest.param(CloseReason.CONTAINER_FAILED, True, False, id="container-failed"),
        pytest.param(CloseReason.EXPIRED, False, False, id="expired"),
    ],
)
def test_close_reason_reputation(
    reason: CloseReason, provider_at_fault: bool, counts_as_completed: bool
) -> None:
    assert reason.provider_at_fault is provider_at_fault
    assert reason.counts_as_completed is counts_as_completed


def test_every_close_reason_is_in_the_table() -> None:
    listed = {
        "tenant_closed",
        "job_completed",
        "job_failed",
        "job_out_of_funds",
        "job_timed_out",
        "provider_lost",
        "container_failed",
        "expired",
    }
    assert {str(r) for r in CloseReason} == listed


def test_no_close_reason_is_both_a_failure_and_a_completion() -> None:
    assert not [r for r in CloseReason if r.provider_at_fault and r.counts_as_completed]
