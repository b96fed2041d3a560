"""Money, resources, reputation and placement matching: exact integers and fractions throughout."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kova_core import (
    MICRO,
    GpuModel,
    InvalidAmount,
    KovaError,
    OrderSpec,
    Resources,
    format_micro,
    parse_amount,
    provider_matches,
    reputation_score,
)
from kova_core._money import require_amount  # not re-exported: drivers go through parse_amount

Gi = 1024**3

# --- parse_amount ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        pytest.param("1", 1_000_000, id="one-unit"),
        pytest.param("0.000001", 1, id="one-micro"),
        pytest.param("1.5", 1_500_000, id="one-and-a-half"),
        pytest.param(3, 3_000_000, id="int-units"),
        pytest.param("0", 0, id="zero"),
        pytest.param("-0", 0, id="negative-zero"),
        pytest.param(" 2.25 ", 2_250_000, id="surrounding-space"),
        pytest.param("1.500000", 1_500_000, id="trailing-zeros"),
        pytest.param("1.5000000", 1_500_000, id="trailing-zeros-past-micro"),
        pytest.param("1e-6", 1, id="exponent-one-micro"),
        pytest.param("2E3", 2_000_000_000, id="exponent-thousands"),
        pytest.param("123456.789012", 123_456_789_012, id="all-six-decimals"),
        # the largest amount int64 holds, to the micro: exact arithmetic must not round it
        pytest.param("9223372036854.775807", 2**63 - 1, id="int64-max-exact"),
        pytest.param("9223372036854.7758070000", 2**63 - 1, id="int64-max-trailing-zeros"),
    ],
)
def test_parse_amount(text: str | int, micro: int) -> None:
    assert parse_amount(text) == micro


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("1e-7", "'1e-7' is finer than one micro-unit", id="tenth-of-a-micro"),
        pytest.param("0.0000015", "'0.0000015' is finer than one micro-unit", id="seven-decimals"),
        # the seventh decimal must be seen even behind a large whole part
        pytest.param(
            "1000000000000.0000001",
            "'1000000000000.0000001' is finer than one micro-unit",
            id="large-amount-finer-than-micro",
        ),
        pytest.param(
            "9223372036854.775808", "'9223372036854.775808' is too large", id="int64-max+1"
        ),
        pytest.param(
            "12345678901234567890123.456789",
            "'12345678901234567890123.456789' is too large",
            id="29-digit-amount",
        ),
        pytest.param("abc", "not an amount: 'abc'", id="not-a-number"),
        pytest.param("", "not an amount: ''", id="empty"),
        pytest.param("1.5 units", "not an amount", id="trailing-words"),
        pytest.param("-1", "amount must be >= 0, got '-1'", id="negative"),
        pytest.param("-0.000001", "amount must be >= 0, got '-0.000001'", id="negative-micro"),
        pytest.param("NaN", "not an amount: 'NaN'", id="nan"),
        pytest.param("sNaN", "not an amount", id="signalling-nan"),
        pytest.param("Infinity", "not an amount: 'Infinity'", id="infinity"),
        pytest.param("-inf", "not an amount", id="negative-infinity"),
        pytest.param(True, "not an amount: True", id="bool-true"),
        pytest.param(False, "not an amount: False", id="bool-false"),
        pytest.param(None, "not an amount: None", id="none"),
        # a finite number too large for any context: still an InvalidAmount, found without
        # computing it
        pytest.param("1e999999", "'1e999999' is too large", id="exponent-overflow"),
        pytest.param("1e-999999", "'1e-999999' is finer than one micro-unit", id="tiny-exponent"),
    ],
)
def test_parse_amount_rejects(text: object, message: str) -> None:
    with pytest.raises(InvalidAmount) as raised:
        parse_amount(text)  # type: ignore[arg-type]
    assert str(raised.value).startswith(message)


# every int64 amount, to the micro: money is exact, not to some float-like precision
@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_format_then_parse_round_trips(micro: int) -> None:
    assert parse_amount(format_micro(micro)) == micro


@given(st.integers(min_value=0, max_value=10**15))
def test_format_then_parse_round_trips_realistic_amounts(micro: int) -> None:
    assert parse_amount(format_micro(micro)) == micro


# --- format_micro ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        pytest.param(0, "0.000000", id="zero"),
        pytest.param(1, "0.000001", id="one-micro"),
        pytest.param(MICRO, "1.000000", id="one-unit"),
        pytest.param(1_500_000, "1.500000", id="one-and-a-half"),
        pytest.param(123_456_789_012, "123456.789012", id="all-digits"),
        pytest.param(-1, "-0.000001", id="negative-micro"),
        pytest.param(-2_500_000, "-2.500000", id="negative-units"),
    ],
)
def test_format_micro(micro: int, text: str) -> None:
    assert format_micro(micro) == text


# --- require_amount -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "positive"),
    [
        pytest.param(0, False, id="zero"),
        pytest.param(1, False, id="one"),
        pytest.param(1, True, id="one-positive"),
        pytest.param(2**63 - 1, True, id="int64-max"),
    ],
)
def test_require_amount_accepts(value: int, positive: bool) -> None:
    assert require_amount(value, positive=positive) == value


@pytest.mark.parametrize(
    ("value", "positive", "message"),
    [
        pytest.param(1.0, False, "price must be an integer number of micro-units", id="float"),
        pytest.param(2**63, False, "price must be at most 9223372036854775807", id="past-int64"),
        pytest.param(0.5, False, "price must be an integer number of micro-units", id="fraction"),
        pytest.param(True, False, "price must be an integer number of micro-units", id="bool"),
        pytest.param(False, False, "price must be an integer number of micro-units", id="false"),
        pytest.param("5", False, "price must be an integer number of micro-units", id="string"),
        pytest.param(None, False, "price must be an integer number of micro-units", id="none"),
        pytest.param(-1, False, "price must be >= 0, got -1", id="negative"),
        pytest.param(-1, True, "price must be > 0, got -1", id="negative-positive"),
        pytest.param(0, True, "price must be > 0, got 0", id="zero-positive"),
    ],
)
def test_require_amount_rejects(value: object, positive: bool, message: str) -> None:
    with pytest.raises(InvalidAmount) as raised:
        require_amount(value, "price", positive=positive)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, KovaError)


# --- Resources ------------------------------------------------------------------------------

SMALL = Resources(cpu=500, memory=Gi, storage=2 * Gi)
LARGE = Resources(cpu=4000, memory=8 * Gi, storage=100 * Gi, gpu=1)


def test_resources_default_to_nothing() -> None:
    assert Resources() == Resources(cpu=0, memory=0, storage=0, gpu=0)


def test_resources_add_and_subtract_component_wise() -> None:
    total, rest, overdrawn = SMALL + LARGE, LARGE - SMALL, SMALL - LARGE
    assert total == Resources(cpu=4500, memory=9 * Gi, storage=102 * Gi, gpu=1)
    assert rest == Resources(cpu=3500, memory=7 * Gi, storage=98 * Gi, gpu=1)
    assert overdrawn == Resources(cpu=-3500, memory=-7 * Gi, storage=-98 * Gi, gpu=-1)
    assert type(total) is Resources and total.cpu == 4500 and len(total) == 4


@pytest.mark.parametrize("multiply", [lambda r: r * 2, lambda r: 2 * r])
def test_resources_cannot_be_multiplied_like_a_tuple(multiply) -> None:
    with pytest.raises(TypeError, match="cannot be multiplied"):
        multiply(SMALL)


@pytest.mark.parametrize(
    ("need", "have", "fits"),
    [
        pytest.param(SMALL, LARGE, True, id="small-in-large"),
        pytest.param(LARGE, SMALL, False, id="large-in-small"),
        pytest.param(SMALL, SMALL, True, id="exactly-equal"),
        pytest.param(Resources(), Resources(), True, id="nothing-in-nothing"),
        pytest.param(Resources(cpu=1), Resources(), False, id="one-millicore-too-many"),
        pytest.param(
            Resources(cpu=1000, memory=Gi + 1),
            Resources(cpu=1000, memory=Gi),
            False,
            id="one-byte-too-many",
        ),
        pytest.param(
            Resources(storage=2),
            Resources(cpu=9, memory=9, storage=1, gpu=9),
            False,
            id="storage-short",
        ),
        pytest.param(
            Resources(gpu=1), Resources(cpu=9, memory=9, storage=9), False, id="gpu-short"
        ),
    ],
)
def test_fits_in(need: Resources, have: Resources, fits: bool) -> None:
    assert need.fits_in(have) is fits


@pytest.mark.parametrize(
    ("resources", "nonnegative"),
    [
        pytest.param(Resources(), True, id="nothing"),
        pytest.param(LARGE, True, id="large"),
        pytest.param(LARGE - SMALL, True, id="difference"),
        pytest.param(SMALL - LARGE, False, id="overdrawn"),
        pytest.param(Resources(gpu=-1), False, id="negative-gpu"),
    ],
)
def test_is_nonnegative(resources: Resources, nonnegative: bool) -> None:
    assert resources.is_nonnegative() is nonnegative


@pytest.mark.parametrize(
    ("resources", "text"),
    [
        pytest.param(SMALL, "cpu=0.5 memory=1Gi storage=2Gi", id="no-gpu"),
        pytest.param(LARGE, "cpu=4 memory=8Gi storage=100Gi gpu=1", id="gpu"),
    ],
)
def test_resources_str(resources: Resources, text: str) -> None:
    assert str(resources) == text


resources_st = st.builds(
    Resources,
    cpu=st.integers(0, 10**6),
    memory=st.integers(0, 10**13),
    storage=st.integers(0, 10**13),
    gpu=st.integers(0, 64),
)


@given(resources_st, resources_st)
def test_adding_then_subtracting_gives_back(a: Resources, b: Resources) -> None:
    assert a + b - b == a
    assert a.fits_in(a + b)
    assert (a + b - a).is_nonnegative()


# --- reputation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completed", "failed", "score"),
    [
        pytest.param(0, 0, Fraction(1, 2), id="new-provider"),
        pytest.param(1, 0, Fraction(2, 3), id="one-completed"),
        pytest.param(0, 1, Fraction(1, 3), id="one-failed"),
        pytest.param(1, 1, Fraction(1, 2), id="one-each"),
        pytest.param(8, 0, Fraction(9, 10), id="eight-completed"),
        pytest.param(98, 0, Fraction(99, 100), id="ninety-eight-completed"),
        pytest.param(3, 5, Fraction(4, 10), id="more-failures"),
    ],
)
def test_reputation_score(completed: int, failed: int, score: Fraction) -> None:
    assert reputation_score(completed, failed) == score


@pytest.mark.parametrize(("completed", "failed"), [(-1, 0), (0, -1), (-3, -3)])
def test_reputation_rejects_negative_counts(completed: int, failed: int) -> None:
    with pytest.raises(ValueError, match="reputation counts must be >= 0"):
        reputation_score(completed, failed)


counts = st.integers(min_value=0, max_value=10**9)


@given(counts, counts)
def test_reputation_is_strictly_between_zero_and_one(completed: int, failed: int) -> None:
    assert 0 < reputation_score(completed, failed) < 1


@given(counts, counts)
def test_completions_raise_and_failures_lower_reputation(completed: int, failed: int) -> None:
    score = reputation_score(completed, failed)
    assert reputation_score(completed + 1, failed) > score
    assert reputation_score(completed, failed + 1) < score


# --- provider_matches -----------------------------------------------------------------------


def order_spec(
    *,
    gpu: int = 0,
    attributes: dict[str, str] | None = None,
    any_of: tuple[str, ...] = (),
    all_of: tuple[str, ...] = (),
    gpu_models: tuple[GpuModel, ...] = (),
) -> OrderSpec:
    return OrderSpec(
        service="web",
        placement="dcloud",
        profile="web",
        replica=0,
        resources=Resources(cpu=500, memory=Gi, storage=Gi, gpu=gpu),
        max_price=MICRO,
        denom="uakt",
        attributes=attributes or {},
        signed_by_any_of=any_of,
        signed_by_all_of=all_of,
        gpu_models=gpu_models,
    )


NVIDIA_ANY = GpuModel(vendor="nvidia")
NVIDIA_A100 = GpuModel(vendor="nvidia", model="a100")
AMD_MI250 = GpuModel(vendor="amd", model="mi250")


@pytest.mark.parametrize(
    ("spec", "attributes", "auditors", "gpus", "reason"),
    [
        pytest.param(order_spec(), {}, set(), set(), None, id="no-requirements"),
        pytest.param(
            order_spec(),
            {"region": "eu"},
            {"a1"},
            {"nvidia/a100"},
            None,
            id="no-requirements-rich-provider",
        ),
        # attributes: every one present with an equal value
        pytest.param(
            order_spec(attributes={"region": "us-west"}),
            {"region": "us-west", "tier": "1"},
            set(),
            set(),
            None,
            id="attribute-matches",
        ),
        pytest.param(
            order_spec(attributes={"region": "us-west"}),
            {"region": "eu"},
            set(),
            set(),
            "attribute region=us-west required, provider has region=eu",
            id="attribute-differs",
        ),
        pytest.param(
            order_spec(attributes={"region": "us-west"}),
            {},
            set(),
            set(),
            "attribute region=us-west required, provider has region=None",
            id="attribute-missing",
        ),
        pytest.param(
            order_spec(attributes={"region": "us-west"}),
            {"region": "US-West"},
            set(),
            set(),
            "attribute region=us-west required, provider has region=US-West",
            id="attribute-case-differs",
        ),
        pytest.param(
            order_spec(attributes={"region": "eu", "tier": "1"}),
            {"region": "eu", "tier": "2"},
            set(),
            set(),
            "attribute tier=1 required, provider has tier=2",
            id="second-attribute-differs",
        ),
        # signedBy.allOf: every auditor
        pytest.param(
            order_spec(all_of=("a1", "a2")), {}, {"a1", "a2", "a3"}, set(), None, id="all-of-signed"
        ),
        pytest.param(
            order_spec(all_of=("a1", "a2")),
            {},
            {"a1"},
            set(),
            "not signed by a2",
            id="all-of-missing-one",
        ),
        pytest.param(
            order_spec(all_of=("a1", "a2")),
            {},
            set(),
            set(),
            "not signed by a1, a2",
            id="all-of-missing-both",
        ),
        # signedBy.anyOf: at least one auditor
        pytest.param(
            order_spec(any_of=("a1", "a2")), {}, {"a2"}, set(), None, id="any-of-one-signed"
        ),
        pytest.param(
            order_spec(any_of=("a1", "a2")),
            {},
            {"a3"},
            set(),
            "not signed by any of a1, a2",
            id="any-of-none-signed",
        ),
        pytest.param(
            order_spec(all_of=("a1",), any_of=("a2", "a3")),
            {},
            {"a1", "a3"},
            set(),
            None,
            id="all-of-and-any-of",
        ),
        pytest.param(
            order_spec(all_of=("a1",), any_of=("a2", "a3")),
            {},
            {"a1"},
            set(),
            "not signed by any of a2, a3",
            id="all-of-but-not-any-of",
        ),
        # GPUs: a vendor with any model, or one vendor/model
        pytest.param(
            order_spec(gpu=1, gpu_models=(NVIDIA_ANY,)),
            {},
            set(),
            {"nvidia/h100"},
            None,
            id="gpu-any-model-of-vendor",
        ),
        pytest.param(
            order_spec(gpu=1, gpu_models=(NVIDIA_ANY,)),
            {},
            set(),
            {"amd/mi250"},
            "no GPU of the required vendor/model",
            id="gpu-other-vendor",
        ),
        pytest.param(
            order_spec(gpu=1, gpu_models=(NVIDIA_A100,)),
            {},
            set(),
            {"nvidia/a100"},
            None,
            id="gpu-specific-model",
        ),
        pytest.param(
            order_spec(gpu=1, gpu_models=(NVIDIA_A100,)),
            {},
            set(),
            {"nvidia/h100"},
            "no GPU of the required vendor/model",
            id="gpu-other-model",
        ),
        pytest.param(
            order_spec(gpu=1, gpu_models=(NVIDIA_A100, AMD_MI250)),
            {},
            set(),
            {"intel/arc", "amd/mi250"},
            None,
            id="gpu-second-choice",
        ),
        pytest.param(
            order_spec(gpu=1, gpu_models=(NVIDIA_A100,)),
            {},
            set(),
            set(),
            "no GPU of the required vendor/model",
            id="gpu-provider-has-none",
        ),
        pytest.param(
            order_spec(gpu=1), {}, set(), {"amd/mi250"}, None, id="gpu-no-model-constraint"
        ),
        pytest.param(
            order_spec(gpu=0, gpu_models=(NVIDIA_A100,)),
            {},
            set(),
            set(),
            None,
            id="no-gpu-asked-models-ignored",
        ),
        # the first problem found is the one reported
        pytest.param(
            order_spec(attributes={"region": "eu"}, all_of=("a1",)),
            {},
            set(),
            set(),
            "attribute region=eu required, provider has region=None",
            id="attributes-checked-first",
        ),
    ],
)
def test_provider_matches(
    spec: OrderSpec,
    attributes: dict[str, str],
    auditors: set[str],
    gpus: set[str],
    reason: str | None,
) -> None:
    assert provider_matches(spec, attributes, frozenset(auditors), frozenset(gpus)) == reason


def test_gpu_model_key() -> None:
    assert NVIDIA_ANY.key() == "nvidia/*"
    assert NVIDIA_A100.key() == "nvidia/a100"
