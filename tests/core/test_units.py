"""Parsing quantities people write (CPU, sizes, durations) into exact integers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kova_core._units import parse_cpu, parse_duration, parse_size

Ki, Mi, Gi, Ti = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("value", "millicores"),
    [
        (0.5, 500),
        (1, 1000),
        (2, 2000),
        (0.1, 100),
        (0.25, 250),
        (1.0, 1000),
        ("0.5", 500),
        ("2", 2000),
        (" 1.5 ", 1500),
        ("0.001", 1),
        ("500m", 500),
        ("1m", 1),
        ("2000m", 2000),
        ("1e1", 10_000),
    ],
)
def test_cpu(value: object, millicores: int) -> None:
    assert parse_cpu(value) == millicores


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be greater than 0"),
        ("0", "must be greater than 0"),
        ("0m", "must be greater than 0"),
        (-1, "must be greater than 0"),
        ("-0.5", "must be greater than 0"),
        ("abc", "not a CPU amount: 'abc'"),
        ("", "not a CPU amount"),
        ("1Gi", "not a CPU amount"),
        ("0.5 cores", "not a CPU amount"),
        (True, "not a CPU amount"),
        (None, "not a CPU amount"),
        ([1], "not a CPU amount"),
        (float("nan"), "not a CPU amount"),
        (float("inf"), "not a CPU amount"),
        ("0.0001", "finer than one millicore"),
        ("0.5m", "finer than one millicore"),
        ("1e40", "out of range"),
    ],
)
def test_cpu_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_cpu(value)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        (1e9, 10**9),
        ("1k", 1000),
        ("1K", 1000),
        ("1Ki", Ki),
        ("0.5Ki", 512),
        ("512Mi", 512 * Mi),
        ("100Mi", 100 * Mi),
        ("512mi", 512 * Mi),
        ("512M", 512 * 10**6),
        ("1Gi", Gi),
        ("1gi", Gi),
        ("1.5Gi", 3 * Gi // 2),
        ("10G", 10 * 10**9),
        ("10GB", 10 * 10**9),
        ("1GiB", Gi),
        ("1 Gi", Gi),
        ("1Ti", Ti),
        ("2T", 2 * 10**12),
        ("1P", 10**15),
        ("1Pi", 1024**5),
        ("2E", 2 * 10**18),
        ("1Ei", 1024**6),
        ("1e3", 1000),
        ("100B", 100),
    ],
)
def test_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12Qi", "not a size: '12Qi' (use bytes or a unit such as 512Mi, 1Gi, 10G)"),
        ("Gi", "not a size"),
        ("", "not a size"),
        ("1 G i", "not a size"),
        (True, "not a size"),
        (None, "not a size"),
        ({"size": 1}, "not a size"),
        (0, "must be greater than 0"),
        ("0Gi", "must be greater than 0"),
        (-5, "must be greater than 0"),
        ("-1Mi", "must be greater than 0"),
        ("1.5", "not a whole number of bytes"),
        ("0.0001k", "not a whole number of bytes"),
        ("1e999999999", "out of range"),
    ],
)
def test_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_size(value)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("value", "blocks"),
    [
        (90, 90),
        (60.0, 60),
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("2H", 7200),
        ("1d", 86_400),
        ("7d", 604_800),
        ("1w", 604_800),
        ("36h", 129_600),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1d2h3m4s", 86_400 + 7200 + 180 + 4),
        ("1.5h", 5400),
    ],
)
def test_duration(value: object, blocks: int) -> None:
    assert parse_duration(value) == blocks


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be greater than 0"),
        ("0s", "must be greater than 0"),
        (-5, "must be greater than 0"),
        ("soon", "not a duration: 'soon'"),
        ("5x", "not a duration"),
        ("h", "not a duration"),
        ("", "not a duration"),
        ("1h-30m", "not a duration"),
        (True, "not a duration"),
        (None, "not a duration"),
        ("0.5s", "not a whole number of seconds"),
        (1.5, "not a whole number of seconds"),
    ],
)
def test_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(value)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("parse", [parse_cpu, parse_size, parse_duration])
def test_allow_zero(parse: Callable[..., int]) -> None:
    assert parse(0, allow_zero=True) == 0
    with pytest.raises(ValueError, match="must be at least 0"):
        parse(-1, allow_zero=True)


@given(st.integers(min_value=1, max_value=10**9))
def test_cpu_cores_and_millicores_agree(millicores: int) -> None:
    cores = f"{millicores // 1000}.{millicores % 1000:03d}"
    assert parse_cpu(cores) == parse_cpu(f"{millicores}m") == millicores
    assert parse_cpu(millicores / 1000) == millicores


@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from([("", 1), ("Ki", Ki), ("Mi", Mi), ("Gi", Gi), ("k", 1000), ("G", 10**9)]),
)
def test_size_units_multiply(number: int, unit: tuple[str, int]) -> None:
    suffix, multiplier = unit
    assert parse_size(f"{number}{suffix}") == number * multiplier


@given(st.integers(0, 30), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_duration_parts_add_up(days: int, hours: int, minutes: int, seconds: int) -> None:
    total = days * 86_400 + hours * 3600 + minutes * 60 + seconds
    text = "".join(f"{n}{u}" for n, u in zip((days, hours, minutes, seconds), "dhms", strict=True))
    if total == 0:
        with pytest.raises(ValueError, match="greater than 0"):
            parse_duration(text)
    else:
        assert parse_duration(text) == total
