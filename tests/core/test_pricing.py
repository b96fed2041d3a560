"""Provider pricing strategies, the auto-bidder rule around them, and building them by name.

Every expected price is worked out by hand in the case's comment, in micro-units per block.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kova_core import (
    MICRO,
    PRICING_STRATEGIES,
    CostPlus,
    FixedPrice,
    PricingContext,
    PricingStrategy,
    RandomBand,
    Resources,
    StrategyConfigError,
    Undercut,
    UnknownStrategy,
    UtilisationPrice,
    auto_bid_price,
    lowest_ask,
    pricing_strategy,
)

Gi = 1024**3
Mi = 1024**2

CAPACITY = Resources(cpu=4000, memory=8 * Gi, storage=100 * Gi, gpu=2)


def context(
    *,
    resources: Resources = Resources(cpu=500, memory=Gi),  # noqa: B008 (frozen, so shared safely)
    max_price: int = 2 * MICRO,
    capacity: Resources = CAPACITY,
    free: Resources | None = None,
    best_price: int | None = None,
) -> PricingContext:
    return PricingContext(
        order_id=7,
        resources=resources,
        max_price=max_price,
        order_created_at=100,
        height=101,
        capacity=capacity,
        free=capacity if free is None else free,
        best_price=best_price,
    )


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def price(strategy: PricingStrategy, ctx: PricingContext | None = None) -> int | None:
    return strategy.price(ctx or context(), rng())


# --- FixedPrice -----------------------------------------------------------------------------


def test_fixed_price_defaults_to_one_unit_per_block() -> None:
    assert FixedPrice().price_per_block == 1_000_000
    assert price(FixedPrice()) == 1_000_000


@pytest.mark.parametrize("per_block", [1, 5, 750_000, 3 * MICRO])
def test_fixed_price_ignores_the_order(per_block: int) -> None:
    strategy = FixedPrice(price_per_block=per_block)
    assert price(strategy, context(resources=Resources(cpu=1))) == per_block
    assert price(strategy, context(resources=CAPACITY, best_price=1)) == per_block


# --- CostPlus -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "resources", "expected"),
    [
        # 0.5 core x 100_000 + 1 GiB x 20_000 = 70_000; x 1.2 = 84_000
        pytest.param(
            CostPlus(cpu_cost=100_000, memory_cost=20_000, margin_bps=2000),
            Resources(cpu=500, memory=Gi),
            84_000,
            id="half-core-one-gib-20pct",
        ),
        # margin defaults to 2000 bps
        pytest.param(
            CostPlus(cpu_cost=100_000, memory_cost=20_000),
            Resources(cpu=500, memory=Gi),
            84_000,
            id="default-margin",
        ),
        # the same cost at no margin
        pytest.param(
            CostPlus(cpu_cost=100_000, memory_cost=20_000, margin_bps=0),
            Resources(cpu=500, memory=Gi),
            70_000,
            id="no-margin",
        ),
        # 10 GiB x 5_000 = 50_000; x 1.2 = 60_000
        pytest.param(
            CostPlus(storage_cost=5_000), Resources(storage=10 * Gi), 60_000, id="storage-only"
        ),
        # 2 GPUs x 300_000 = 600_000; x 1.1 = 660_000
        pytest.param(
            CostPlus(gpu_cost=300_000, margin_bps=1000), Resources(gpu=2), 660_000, id="gpus-10pct"
        ),
        # all four: 2 x 10_000 + 4 x 1_000 + 50 x 100 + 1 x 100_000 = 129_000; x 1.5 = 193_500
        pytest.param(
            CostPlus(
                cpu_cost=10_000,
                memory_cost=1_000,
                storage_cost=100,
                gpu_cost=100_000,
                margin_bps=5000,
            ),
            Resources(cpu=2000, memory=4 * Gi, storage=50 * Gi, gpu=1),
            193_500,
            id="every-resource-50pct",
        ),
        # 0.001 core x 1_000_001 = 1000.001 -> rounds up to 1001
        pytest.param(
            CostPlus(cpu_cost=1_000_001, margin_bps=0), Resources(cpu=1), 1001, id="rounds-up-cost"
        ),
        # 1 core x 10_001 = 10_001; x 1.0001 = 10_002.0001 -> rounds up to 10_003
        pytest.param(
            CostPlus(cpu_cost=10_001, margin_bps=1),
            Resources(cpu=1000),
            10_003,
            id="rounds-up-margin",
        ),
        # 1 core x 10_000 x 1.0001 = 10_001 exactly: no rounding
        pytest.param(
            CostPlus(cpu_cost=10_000, margin_bps=1),
            Resources(cpu=1000),
            10_001,
            id="exact-no-rounding",
        ),
        # 512 MiB x 3 = 1.5 -> 2
        pytest.param(
            CostPlus(memory_cost=3, margin_bps=0),
            Resources(memory=512 * Mi),
            2,
            id="half-gib-rounds-up",
        ),
        # 0.001 core x 1 x 1.2 = 0.0012 -> 1
        pytest.param(CostPlus(cpu_cost=1), Resources(cpu=1), 1, id="tiny-cost-is-one-micro"),
        # one byte of memory costs a sliver of a micro, which still rounds up to 1
        pytest.param(CostPlus(memory_cost=1), Resources(memory=1), 1, id="one-byte"),
        # nothing asked for still prices at the minimum of one micro
        pytest.param(CostPlus(cpu_cost=100_000), Resources(), 1, id="empty-order-minimum"),
        # a cost for a resource the order does not use contributes nothing
        pytest.param(
            CostPlus(cpu_cost=100_000, gpu_cost=10**9, margin_bps=0),
            Resources(cpu=1000),
            100_000,
            id="unused-resource-costs-nothing",
        ),
    ],
)
def test_cost_plus(strategy: CostPlus, resources: Resources, expected: int) -> None:
    assert price(strategy, context(resources=resources)) == expected


def test_cost_plus_needs_a_unit_cost() -> None:
    with pytest.raises(StrategyConfigError) as raised:
        CostPlus()
    assert raised.value.field == "cpu_cost"
    assert "at least one unit cost" in str(raised.value)
    with pytest.raises(StrategyConfigError):
        CostPlus(margin_bps=5000)


@given(
    st.integers(0, 64_000),
    st.integers(0, 10**6),
    st.integers(1, 10**6),
    st.integers(0, 20_000),
)
def test_cost_plus_never_undercharges(cpu: int, cpu_cost: int, memory_cost: int, bps: int) -> None:
    # exact check in integers: price x 10^4 x 1000 >= cost x (10^4 + margin), and not by a micro
    strategy = CostPlus(cpu_cost=cpu_cost, memory_cost=memory_cost, margin_bps=bps)
    resources = Resources(cpu=cpu, memory=Gi)
    charged = price(strategy, context(resources=resources))
    assert charged is not None
    owed_scaled = (cpu * cpu_cost + 1000 * memory_cost) * (10_000 + bps)  # x 10^7
    assert charged * 10**7 >= owed_scaled
    assert charged == 1 or (charged - 1) * 10**7 < owed_scaled


# --- UtilisationPrice -----------------------------------------------------------------------

HALF_USED = Resources(cpu=2000, memory=4 * Gi, storage=50 * Gi, gpu=1)
CPU_ONLY = Resources(cpu=3000)


@pytest.mark.parametrize(
    ("strategy", "capacity", "used", "order", "expected"),
    [
        # idle and the order takes nothing: base
        pytest.param(UtilisationPrice(), CAPACITY, Resources(), Resources(), 500_000, id="idle"),
        # order takes half the cpu (and a quarter of the memory): 0.5M + 1.5M x 1/2
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            Resources(),
            Resources(cpu=2000, memory=2 * Gi),
            1_250_000,
            id="half",
        ),
        # order takes all of it: peak
        pytest.param(UtilisationPrice(), CAPACITY, Resources(), CAPACITY, 2_000_000, id="full"),
        # half used by others and the order adds nothing: 0.5M + 1.5M x 1/2
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            HALF_USED,
            Resources(),
            1_250_000,
            id="half-used-by-others",
        ),
        # half used; the order adds a quarter of the cpu -> 3/4: 0.5M + 1.5M x 3/4
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            HALF_USED,
            Resources(cpu=1000),
            1_625_000,
            id="half-used-plus-quarter",
        ),
        # half used; the order takes the rest -> full
        pytest.param(
            UtilisationPrice(), CAPACITY, HALF_USED, HALF_USED, 2_000_000, id="half-used-plus-half"
        ),
        # cpu 1/4, memory 3/4: the most used resource sets the price: 0.5M + 1.5M x 3/4
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            Resources(),
            Resources(cpu=1000, memory=6 * Gi),
            1_625_000,
            id="most-used-is-memory",
        ),
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            Resources(),
            Resources(cpu=3000, memory=2 * Gi),
            1_625_000,
            id="most-used-is-cpu",
        ),
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            Resources(),
            Resources(storage=75 * Gi),
            1_625_000,
            id="most-used-is-storage",
        ),
        # one GPU of two: 0.5M + 1.5M x 1/2
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            Resources(),
            Resources(cpu=100, gpu=1),
            1_250_000,
            id="most-used-is-gpu",
        ),
        # a resource used by others counts as much as the order's own
        pytest.param(
            UtilisationPrice(),
            CAPACITY,
            Resources(memory=6 * Gi),
            Resources(cpu=100),
            1_625_000,
            id="most-used-by-others",
        ),
        # a third of the cpu is 333_333 ppm; 1.5M x 333_333 / 10^6 = 499_999.5 -> 499_999
        pytest.param(
            UtilisationPrice(),
            CPU_ONLY,
            Resources(),
            Resources(cpu=1000),
            999_999,
            id="third-rounds-down",
        ),
        # resources the provider does not have (capacity 0) are ignored: 0.5M + 1.5M x 1/4
        pytest.param(
            UtilisationPrice(),
            Resources(cpu=4000),
            Resources(),
            Resources(cpu=1000),
            875_000,
            id="zero-capacity-ignored",
        ),
        # custom band: 100 + 900 x 1/2
        pytest.param(
            UtilisationPrice(base=100, peak=1000),
            CAPACITY,
            Resources(),
            Resources(cpu=2000),
            550,
            id="custom-band",
        ),
        pytest.param(
            UtilisationPrice(base=700, peak=700),
            CAPACITY,
            Resources(),
            CAPACITY,
            700,
            id="flat-band",
        ),
    ],
)
def test_utilisation_price(
    strategy: UtilisationPrice,
    capacity: Resources,
    used: Resources,
    order: Resources,
    expected: int,
) -> None:
    ctx = context(resources=order, capacity=capacity, free=capacity - used)
    assert price(strategy, ctx) == expected


def test_utilisation_peak_below_base_is_refused() -> None:
    with pytest.raises(StrategyConfigError) as raised:
        UtilisationPrice(base=2 * MICRO, peak=MICRO)
    assert raised.value.field == "peak"


@given(st.integers(0, 4000), st.integers(0, 4000))
def test_utilisation_price_stays_in_band_and_rises(used: int, more: int) -> None:
    strategy = UtilisationPrice()
    free = CAPACITY - Resources(cpu=used)
    low = price(strategy, context(resources=Resources(), free=free))
    high = price(strategy, context(resources=Resources(cpu=min(more, 4000 - used)), free=free))
    assert low is not None and high is not None
    assert strategy.base <= low <= high <= strategy.peak


# --- Undercut -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "max_price", "best_price", "expected"),
    [
        # nobody else has bid: start, or the order's maximum when start is unset
        pytest.param(Undercut(), 1_500_000, None, 1_500_000, id="no-bid-asks-max-price"),
        pytest.param(Undercut(start=800_000), 1_500_000, None, 800_000, id="no-bid-asks-start"),
        # one competing bid: best - step
        pytest.param(Undercut(), 1_500_000, 900_000, 890_000, id="best-minus-default-step"),
        pytest.param(Undercut(step=1), 1_500_000, 900_000, 899_999, id="best-minus-one"),
        pytest.param(
            Undercut(start=800_000), 1_500_000, 900_000, 890_000, id="start-ignored-once-bid"
        ),
        # never below the floor
        pytest.param(Undercut(), 1_500_000, 505_000, 500_000, id="hits-default-floor"),
        pytest.param(Undercut(), 1_500_000, 510_000, 500_000, id="exactly-at-floor"),
        pytest.param(Undercut(), 1_500_000, 400_000, 500_000, id="best-below-floor"),
        pytest.param(Undercut(floor=0, step=10_000), 1_500_000, 5_000, 0, id="zero-floor"),
    ],
)
def test_undercut(
    strategy: Undercut, max_price: int, best_price: int | None, expected: int
) -> None:
    assert price(strategy, context(max_price=max_price, best_price=best_price)) == expected


# --- RandomBand -----------------------------------------------------------------------------


def draws(strategy: PricingStrategy, seed: int, n: int = 20) -> list[int | None]:
    generator = rng(seed)
    return [strategy.price(context(), generator) for _ in range(n)]


def test_random_band_is_reproducible_from_the_seed() -> None:
    strategy = RandomBand()
    assert draws(strategy, seed=42) == draws(strategy, seed=42)
    assert draws(strategy, seed=42) != draws(strategy, seed=43)
    assert all(isinstance(p, int) for p in draws(strategy, seed=42))


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.integers(0, 2**32))
def test_random_band_draws_what_numpy_integers_draws(a: int, b: int, seed: int) -> None:
    # the documented draw, uniform on [low, high] with NumPy's default integer type: a faster
    # spelling must not change a single price, nor the generator's state after it
    low, high = min(a, b), max(a, b)
    ours, reference = rng(seed), rng(seed)
    prices = [RandomBand(low=low, high=high).price(context(), ours) for _ in range(5)]
    assert prices == [int(reference.integers(low, high, endpoint=True)) for _ in range(5)]
    assert ours.bit_generator.state == reference.bit_generator.state


def test_random_band_defaults() -> None:
    assert (RandomBand().low, RandomBand().high) == (500_000, 1_500_000)


def test_random_band_of_one_price() -> None:
    assert set(draws(RandomBand(low=700, high=700), seed=1)) == {700}


def test_random_band_reaches_both_ends() -> None:
    assert set(draws(RandomBand(low=10, high=11), seed=3, n=200)) == {10, 11}


def test_random_band_high_below_low_is_refused() -> None:
    with pytest.raises(StrategyConfigError) as raised:
        RandomBand(low=MICRO, high=MICRO - 1)
    assert raised.value.field == "high"


@given(st.integers(0, 2**62), st.integers(0, 2**62), st.integers(0, 2**32))
def test_random_band_stays_in_band(a: int, b: int, seed: int) -> None:
    low, high = min(a, b), max(a, b)
    strategy = RandomBand(low=low, high=high)
    for drawn in draws(strategy, seed, n=5):
        assert drawn is not None
        assert low <= drawn <= high


def test_money_parameters_beyond_int64_are_refused_when_built() -> None:
    with pytest.raises(StrategyConfigError, match="high"):
        pricing_strategy("random-band", low=MICRO, high=2**63)


def test_random_band_prices_up_to_the_largest_amount() -> None:
    strategy = pricing_strategy("random-band", low=2**63 - 2, high=2**63 - 1)
    drawn = strategy.price(context(), rng())
    assert drawn is not None and 2**63 - 2 <= drawn <= 2**63 - 1


# --- auto_bid_price -------------------------------------------------------------------------


class Declines:
    """A strategy that never bids."""

    name: ClassVar[str] = "declines"

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        return None


class MustNotBeAsked:
    """A strategy that fails the test if it is asked for a price."""

    name: ClassVar[str] = "must-not-be-asked"

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        raise AssertionError("the strategy was asked to price an order that does not fit")


ORDER = Resources(cpu=1000, memory=2 * Gi)


@pytest.mark.parametrize(
    ("strategy", "free", "max_price", "expected"),
    [
        pytest.param(FixedPrice(), CAPACITY, 2 * MICRO, 1_000_000, id="fits-and-within-max"),
        pytest.param(FixedPrice(), CAPACITY, MICRO, 1_000_000, id="exactly-max-price"),
        pytest.param(FixedPrice(), ORDER, 2 * MICRO, 1_000_000, id="exactly-fits-free"),
        pytest.param(FixedPrice(), CAPACITY, MICRO - 1, None, id="above-max-price"),
        pytest.param(FixedPrice(price_per_block=0), CAPACITY, MICRO, None, id="zero-price"),
        pytest.param(Declines(), CAPACITY, 2 * MICRO, None, id="strategy-declines"),
        pytest.param(
            MustNotBeAsked(),
            Resources(cpu=999, memory=8 * Gi),
            2 * MICRO,
            None,
            id="cpu-does-not-fit-free",
        ),
        pytest.param(
            MustNotBeAsked(),
            Resources(cpu=4000, memory=Gi),
            2 * MICRO,
            None,
            id="memory-does-not-fit-free",
        ),
        pytest.param(Undercut(), CAPACITY, 1_234_567, 1_234_567, id="undercut-asks-max"),
        pytest.param(
            Undercut(start=3 * MICRO), CAPACITY, 2 * MICRO, None, id="undercut-start-above-max"
        ),
    ],
)
def test_auto_bid_price(
    strategy: PricingStrategy, free: Resources, max_price: int, expected: int | None
) -> None:
    ctx = context(resources=ORDER, free=free, max_price=max_price)
    assert auto_bid_price(strategy, ctx, rng()) == expected


@given(st.integers(1, 3 * MICRO), st.integers(0, 2**32))
def test_auto_bid_never_exceeds_max_price(max_price: int, seed: int) -> None:
    for name in ("fixed", "undercut", "random-band", "utilisation"):
        bid = auto_bid_price(pricing_strategy(name), context(max_price=max_price), rng(seed))
        assert bid is None or 0 < bid <= max_price


# --- the registry ---------------------------------------------------------------------------


def test_registered_names() -> None:
    assert sorted(PRICING_STRATEGIES) == [
        "cost-plus",
        "fixed",
        "random-band",
        "undercut",
        "utilisation",
    ]


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        pytest.param("fixed", {"price_per_block": 5}, FixedPrice(price_per_block=5), id="fixed"),
        pytest.param("fixed", {}, FixedPrice(), id="fixed-default"),
        pytest.param(
            "cost-plus",
            {"cpu_cost": 100_000, "margin_bps": 0},
            CostPlus(cpu_cost=100_000, margin_bps=0),
            id="cost-plus",
        ),
        pytest.param(
            "utilisation",
            {"base": 1, "peak": 2},
            UtilisationPrice(base=1, peak=2),
            id="utilisation",
        ),
        pytest.param(
            "undercut",
            {"floor": 0, "step": 1, "start": 9},
            Undercut(floor=0, step=1, start=9),
            id="undercut",
        ),
        pytest.param("undercut", {"start": None}, Undercut(), id="undercut-start-none"),
        pytest.param(
            "random-band", {"low": 1, "high": 1}, RandomBand(low=1, high=1), id="random-band"
        ),
    ],
)
def test_pricing_strategy_builds_by_name(
    name: str, params: dict[str, object], expected: PricingStrategy
) -> None:
    assert pricing_strategy(name, **params) == expected


@pytest.mark.parametrize("name", sorted(PRICING_STRATEGIES))
def test_every_registered_strategy_builds_and_is_a_pricing_strategy(name: str) -> None:
    params: dict[str, object] = {"cpu_cost": 1} if name == "cost-plus" else {}
    strategy = pricing_strategy(name, **params)
    assert isinstance(strategy, PricingStrategy)
    assert strategy.name == name
    assert type(strategy) is PRICING_STRATEGIES[name]


def test_cost_plus_by_name_needs_a_cost() -> None:
    with pytest.raises(StrategyConfigError) as raised:
        pricing_strategy("cost-plus")
    assert raised.value.field == "cpu_cost"


@pytest.mark.parametrize("name", ["cheapest", "Fixed", "", "fixed-price"])
def test_unknown_strategy_lists_the_registered_names(name: str) -> None:
    with pytest.raises(UnknownStrategy) as raised:
        pricing_strategy(name)
    message = str(raised.value)
    assert message.startswith(f"unknown pricing strategy {name!r}; registered: ")
    assert message.endswith("cost-plus, fixed, random-band, undercut, utilisation")


@pytest.mark.parametrize(
    ("name", "params", "field", "message"),
    [
        # a parameter the strategy does not take
        pytest.param(
            "fixed",
            {"price": 5},
            "price",
            "pricing strategy 'fixed' has no parameter 'price' (takes: price_per_block)",
            id="unknown-parameter",
        ),
        pytest.param(
            "cost-plus",
            {"cpu_cost": 1, "margin": 5},
            "margin",
            "pricing strategy 'cost-plus' has no parameter 'margin' (takes: cpu_cost, "
            "memory_cost, storage_cost, gpu_cost, margin_bps)",
            id="lists-what-it-takes",
        ),
        # money must be a non-negative whole number of micro-units
        pytest.param(
            "fixed",
            {"price_per_block": 1.5},
            "price_per_block",
            "must be a whole number of micro-units, got 1.5",
            id="float",
        ),
        pytest.param(
            "fixed",
            {"price_per_block": 1.0},
            "price_per_block",
            "must be a whole number of micro-units, got 1.0",
            id="whole-float",
        ),
        pytest.param(
            "fixed",
            {"price_per_block": True},
            "price_per_block",
            "must be a whole number of micro-units, got True",
            id="bool",
        ),
        pytest.param(
            "fixed",
            {"price_per_block": "5"},
            "price_per_block",
            "must be a whole number of micro-units, got '5'",
            id="string",
        ),
        pytest.param(
            "fixed",
            {"price_per_block": None},
            "price_per_block",
            "must be a whole number of micro-units, got None",
            id="none",
        ),
        pytest.param(
            "fixed",
            {"price_per_block": -1},
            "price_per_block",
            "must be >= 0, got -1",
            id="negative",
        ),
        pytest.param(
            "cost-plus",
            {"cpu_cost": 0.5},
            "cpu_cost",
            "must be a whole number",
            id="cost-plus-float",
        ),
        pytest.param(
            "cost-plus",
            {"cpu_cost": 1, "margin_bps": -100},
            "margin_bps",
            "must be >= 0",
            id="negative-margin",
        ),
        pytest.param(
            "undercut", {"start": 1.5}, "start", "must be a whole number", id="optional-float"
        ),
        pytest.param("undercut", {"start": -1}, "start", "must be >= 0", id="optional-negative"),
        pytest.param(
            "undercut", {"floor": False}, "floor", "must be a whole number", id="floor-bool"
        ),
        # values each valid alone, but not together
        pytest.param(
            "random-band", {"low": 10, "high": 9}, "high", "must be >= low", id="band-inverted"
        ),
        pytest.param(
            "utilisation", {"base": 10, "peak": 9}, "peak", "must be >= base", id="peak-below-base"
        ),
    ],
)
def test_strategy_config_errors_name_the_parameter(
    name: str, params: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(StrategyConfigError) as raised:
        pricing_strategy(name, **params)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert message in str(raised.value)


# --------------------------------------------------------------------------- lowest asks


@pytest.mark.parametrize(
    ("strategy", "ctx", "expected"),
    [
        # fixed and cost-plus never draw: the lowest ask is the price
        (FixedPrice(price_per_block=700_000), context(), 700_000),
        # 0.5 core at 1 unit/core/block, 20% margin: 600,000
        (CostPlus(cpu_cost=MICRO, margin_bps=2_000), context(), 600_000),
        # a random band may draw its low end
        (RandomBand(low=300_000, high=900_000), context(), 300_000),
        # undercut, nobody else bid: it asks the order's maximum now, its floor later
        (Undercut(floor=400_000), context(max_price=2 * MICRO), 400_000),
        (Undercut(floor=400_000), context(max_price=300_000), 300_000),
        (Undercut(floor=400_000, start=350_000), context(max_price=2 * MICRO), 350_000),
        # another bid: never below the floor
        (Undercut(floor=400_000), context(best_price=410_000), 400_000),
    ],
)
def test_lowest_ask(strategy: PricingStrategy, ctx: PricingContext, expected: int) -> None:
    assert lowest_ask(strategy, ctx) == expected


class _Opaque:
    """A plug-in that does not say what it reads: its lowest ask cannot be known."""

    name: ClassVar[str] = "opaque"

    def price(self, ctx: PricingContext, rng: np.random.Generator) -> int | None:
        return int(rng.integers(1, 10))


def test_lowest_ask_of_a_strategy_that_may_draw_is_unknown() -> None:
    assert lowest_ask(_Opaque(), context()) is None


@given(
    low=st.integers(1, 10 * MICRO), width=st.integers(0, MICRO), seed=st.integers(0, 2**32),
    floor=st.integers(1, MICRO), best=st.none() | st.integers(1, 3 * MICRO),
)  # fmt: skip
def test_no_strategy_asks_below_its_lowest_ask(
    low: int, width: int, seed: int, floor: int, best: int | None
) -> None:
    rng = np.random.default_rng(seed)
    ctx = context(best_price=best, max_price=2 * MICRO)
    for strategy in (RandomBand(low=low, high=low + width), Undercut(floor=floor),
                     UtilisationPrice(), FixedPrice(), CostPlus(cpu_cost=3)):  # fmt: skip
        lowest = lowest_ask(strategy, ctx)
        assert lowest is not None
        for _ in range(3):
            price = strategy.price(ctx, rng)
            assert price is None or price >= lowest
