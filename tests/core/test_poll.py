"""The provider poll both drivers call (``plan_poll``), and the order spec records a driver
stores and shows polling providers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kova_core import (
    FixedPrice,
    PollOrder,
    ProviderView,
    Resources,
    Undercut,
    parse_manifest,
    plan_poll,
    spec_from_record,
    spec_record,
)

from .helpers import GIB, manifest

SDL = Path(__file__).parent / "sdl"
NOTHING = Resources()
BIG = Resources(cpu=4000, memory=8 * GIB, storage=100 * GIB)


def _order(order_id: int, best: int | None = None, **kwargs: object) -> PollOrder:
    spec = manifest(**kwargs).order_specs()[0]  # type: ignore[arg-type]
    return PollOrder(order_id, spec, created_at=0, best_price=best)


def _view(
    capacity: Resources = BIG, used: Resources = NOTHING, **kwargs: object
) -> ProviderView:
    return ProviderView(
        capacity, used, kwargs.pop("bids", {}), kwargs.pop("attributes", {}), **kwargs
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("path", sorted(SDL.glob("*.yaml")), ids=lambda p: p.stem)
def test_spec_records_round_trip(path: Path) -> None:
    for spec in parse_manifest(path.read_text()).order_specs():
        record = json.loads(json.dumps(spec_record(spec)))
        assert spec_from_record(record) == spec


def test_spec_from_record_refuses_what_it_did_not_make() -> None:
    record = spec_record(manifest().order_specs()[0])
    with pytest.raises(TypeError):
        spec_from_record({**record, "resources": {"cpu": "1"}})
    with pytest.raises(KeyError):
        spec_from_record({k: v for k, v in record.items() if k != "max_price"})


def test_undercut_sees_the_best_competing_price() -> None:
    rng = np.random.default_rng(0)
    strategy = Undercut(step=10_000, floor=100_000)
    plan = plan_poll(_view(), [_order(1, best=900_000), _order(2)], strategy, rng, height=5)
    assert plan.bids == ((1, 890_000), (2, 1_000_000))
    assert plan.withdraw == ()


def test_each_bid_reserves_capacity_for_the_orders_after_it() -> None:
    rng = np.random.default_rng(0)
    small = Resources(cpu=1000, memory=GIB, storage=2 * GIB)
    orders = [_order(i, cpu="0.5", memory="512Mi", storage="1Gi") for i in (1, 2, 3)]
    plan = plan_poll(_view(small), orders, FixedPrice(price_per_block=1), rng, height=0)
    assert [order_id for order_id, _ in plan.bids] == [1, 2]


def test_placement_and_own_bids_are_passed_over() -> None:
    rng = np.random.default_rng(0)
    orders = [_order(1, attributes={"region": "eu"}), _order(2), _order(3)]
    needs = orders[1].spec.resources
    view = _view(bids={2: (7, needs)}, attributes={"region": "us"})
    plan = plan_poll(view, orders, FixedPrice(price_per_block=1), rng, height=0)
    assert plan.bids == ((3, 1),)


def test_bids_it_cannot_honour_are_withdrawn_newest_first() -> None:
    rng = np.random.default_rng(0)
    needs = Resources(cpu=1000, memory=GIB, storage=GIB)
    bids = {10: (3, needs), 11: (5, needs), 12: (4, needs)}
    # three bids reserve 3 cores; the machine now has 2 cores, 1 of them held by a lease
    view = _view(Resources(cpu=2000, memory=8 * GIB, storage=8 * GIB), needs, bids=bids)
    plan = plan_poll(view, [], FixedPrice(price_per_block=1), rng, height=0)
    assert plan.withdraw == (5, 4)


def test_an_audit_stands_while_nothing_it_signed_changed() -> None:
    from kova_core import audit_voided_by

    assert audit_voided_by({"region": "eu"}, {"region": "eu", "tier": "1"}) == []
    assert audit_voided_by({"region": "eu", "tier": "1"}, {"region": "us"}) == ["region", "tier"]
    assert audit_voided_by({}, {}) == []  # signed nothing: always stands
