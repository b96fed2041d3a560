"""A run's standard plots: ``plots/*.png`` in its run folder (:func:`write_plots`).

Each plot is drawn on its own :class:`matplotlib.figure.Figure` with the Agg canvas, so nothing
touches ``pyplot``'s global state and plotting works without a display. Time is in hours
(blocks / 3600), money in units ($; micro-units / 10⁶). A plot with nothing to show (a run in
which no lease started) is still written, with a "no data" note.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from kova_core import MICRO

from .analysis import lorenz
from .outputs import gini

__all__ = ["PLOTS", "write_plots"]

PLOTS = ("price", "utilisation", "revenue_lorenz", "time_to_lease", "escrow_paused")
"""The plots :func:`write_plots` writes, each ``plots/<name>.png``."""

_SIZE = (8.0, 4.5)  # inches
_DPI = 100
_NO_DATA = {"ha": "center", "va": "center", "fontsize": 12, "color": "0.4"}

Columns = dict[str, np.ndarray]


def write_plots(run_dir: Path) -> list[Path]:
    """Draw a run folder's plots into ``run_dir/plots/``; return the files written, in
    :data:`PLOTS` order.

    Reads the folder's timeseries, orders and providers tables and ``summary.json`` (for the
    scenario's name). Raises ``FileNotFoundError`` naming a missing table.
    """
    run_dir = Path(run_dir)
    ts = _read(run_dir, "timeseries", ["block", "accepted_mean_price", "accepted_median_price",
                                        "active_mean_price", "utilisation", "escrow_held",
                                        "paused_leases"])  # fmt: skip
    orders = _read(run_dir, "orders", ["time_to_lease"])
    providers = _read(run_dir, "providers", ["revenue"])
    title = _scenario_title(run_dir)
    out = run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    drawers: dict[str, Callable[[Axes], None]] = {
        "price": lambda ax: _price(ax, ts),
        "utilisation": lambda ax: _utilisation(ax, ts),
        "revenue_lorenz": lambda ax: _revenue_lorenz(ax, providers),
        "time_to_lease": lambda ax: _time_to_lease(ax, orders),
        "escrow_paused": lambda ax: _escrow_paused(ax, ts),
    }
    written = []
    for name in PLOTS:
        fig = Figure(figsize=_SIZE, dpi=_DPI)
        FigureCanvasAgg(fig)
        # fixed margins (room for a right-hand axis): tight_layout would double the time taken
        fig.subplots_adjust(left=0.11, right=0.89, bottom=0.12, top=0.9)
        ax = fig.add_subplot()
        drawers[name](ax)
        ax.set_title(f"{title}: {ax.get_title()}" if ax.get_title() else title)
        path = out / f"{name}.png"
        fig.savefig(
            path, format="png", metadata={"Software": None}, pil_kwargs={"compress_level": 1}
        )
        written.append(path)
    return written


# --------------------------------------------------------------------------- reading


def _read(run_dir: Path, table: str, columns: list[str]) -> Columns:
    path = run_dir / f"{table}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"cannot plot {str(run_dir)!r}: no {table}.parquet")
    data = pq.read_table(path, columns=columns)
    # nulls become NaN: the columns are float64 or int64 without nulls (time_to_lease has
    # nulls, for orders never leased, and is dropped below)
    return {
        name: data.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        for name in columns
    }


def _scenario_title(run_dir: Path) -> str:
    try:
        summary: Any = json.loads((run_dir / "summary.json").read_text())
        name = summary["scenario"]
        seed = summary.get("seed")
    except (OSError, ValueError, KeyError, TypeError):
        return run_dir.name
    return f"{name} (seed {seed})" if seed is not None else str(name)


# --------------------------------------------------------------------------- the plots


def _no_data(ax: Axes, note: str = "no data") -> None:
    ax.text(0.5, 0.5, note, transform=ax.transAxes, **_NO_DATA)


def _hours(ax: Axes, ts: Columns) -> np.ndarray:
    ax.set_xlabel("time (hours)")
    ax.grid(True, alpha=0.3)
    hours = ts["block"] / 3600
    if hours.size:
        ax.set_xlim(0, max(hours[-1], 1 / 60))
    return hours


def _price(ax: Axes, ts: Columns) -> None:
    ax.set_title("prices per block")
    hours = _hours(ax, ts)
    ax.set_ylabel("price per block ($)")
    mean = ts["accepted_mean_price"] / MICRO
    median = ts["accepted_median_price"] / MICRO
    active = ts["active_mean_price"] / MICRO
    drawn = False
    # a round's accepted prices are points (most rounds accept none or one lease); the mean
    # price of the leases active at each round is a line
    if np.isfinite(mean).any():
        ax.plot(hours, mean, ls="none", marker="o", markersize=3, alpha=0.6,
                label="accepted in the round: mean")  # fmt: skip
        ax.plot(hours, median, ls="none", marker="_", markersize=7, color="tab:orange",
                label="accepted in the round: median")  # fmt: skip
        drawn = True
    if np.isfinite(active).any():
        ax.plot(hours, active, lw=1.8, color="black", label="active leases: mean")
        drawn = True
    if drawn:
        ax.legend(loc="best", fontsize=8)
    else:
        _no_data(ax, "no data: no lease was accepted")


def _utilisation(ax: Axes, ts: Columns) -> None:
    ax.set_title("CPU capacity utilisation")
    hours = _hours(ax, ts)
    ax.set_ylabel("CPU held by leases (% of capacity)")
    ax.set_ylim(0, 105)
    if hours.size == 0:
        _no_data(ax, "no data: no settlement round")
        return
    share = ts["utilisation"] * 100
    ax.fill_between(hours, share, step="post", alpha=0.25)
    ax.step(hours, share, where="post", lw=1)
    mean = float(np.mean(share))
    ax.axhline(mean, color="black", ls="--", lw=1, label=f"mean over rounds {mean:.1f}%")
    ax.legend(loc="lower right", fontsize=8)
    if not share.any():
        _no_data(ax, "no CPU was ever held by a lease")


def _revenue_lorenz(ax: Axes, providers: Columns) -> None:
    revenue = providers["revenue"]
    g = gini(revenue)
    ax.set_title(f"revenue per provider: Lorenz curve (Gini {g:.3f})")
    ax.set_xlabel(f"share of providers, poorest first ({revenue.size} providers)")
    ax.set_ylabel("share of provider revenue")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True, alpha=0.3)
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="equality")
    if revenue.size == 0 or not revenue.sum() > 0:
        _no_data(ax, "no data: no provider earned anything")
        ax.legend(loc="upper left", fontsize=8)
        return
    x, y = lorenz(revenue)
    ax.plot(x, y, marker="o" if revenue.size <= 30 else None, markersize=3, lw=1.8,
            label=f"revenue (Gini {g:.3f})")  # fmt: skip
    ax.fill_between(x, y, x, alpha=0.15)
    ax.legend(loc="upper left", fontsize=8)


def _time_to_lease(ax: Axes, orders: Columns) -> None:
    ttl = np.sort(orders["time_to_lease"][np.isfinite(orders["time_to_lease"])])
    total = orders["time_to_lease"].size
    ax.set_title("time to lease (orders that got a lease)")
    ax.set_ylabel("share of leased orders")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    if ttl.size == 0:
        ax.set_xlabel("time from order to first lease")
        _no_data(ax, f"no data: none of {total} orders got a lease")
        return
    median, p95 = float(np.median(ttl)), float(np.percentile(ttl, 95))
    scale, unit = _time_unit(p95 if p95 > 0 else float(ttl[-1]))
    x = ttl / scale
    y = np.arange(1, ttl.size + 1) / ttl.size
    ax.step(np.concatenate(([0.0], x)), np.concatenate(([0.0], y)), where="post", lw=1.5,
            label=f"{ttl.size} of {total} orders")  # fmt: skip
    ax.axvline(median / scale, color="tab:green", ls="--", lw=1,
               label=f"median {_fmt(median / scale)} {unit}")  # fmt: skip
    ax.axvline(p95 / scale, color="tab:red", ls=":", lw=1.2,
               label=f"p95 {_fmt(p95 / scale)} {unit}")  # fmt: skip
    ax.set_xlabel(f"time from order to first lease ({unit})")
    ax.set_xlim(0, max(x[-1], 1e-9) * 1.02)
    ax.legend(loc="lower right", fontsize=8)


def _time_unit(span_blocks: float) -> tuple[float, str]:
    if span_blocks >= 3 * 3600:
        return 3600.0, "hours"
    if span_blocks >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _dollars(value: float, _position: object = None) -> str:
    """A money tick label without scientific notation: $950, $12.5k, $3.2M."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"${value / scale:g}{suffix}"
    return f"${value:g}"


def _escrow_paused(ax: Axes, ts: Columns) -> None:
    ax.set_title("escrow held and paused leases")
    hours = _hours(ax, ts)
    ax.set_ylabel("escrow held ($)", color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    right = ax.twinx()
    right.set_ylabel("paused leases", color="tab:red")
    right.tick_params(axis="y", colors="tab:red")
    if hours.size == 0:
        _no_data(ax, "no data: no settlement round")
        return
    (escrow,) = ax.plot(hours, ts["escrow_held"] / MICRO, color="tab:blue", lw=1.5,
                        label="escrow held")  # fmt: skip
    paused = ts["paused_leases"]
    (held,) = right.step(hours, paused, where="post", color="tab:red", lw=1,
                         label="paused leases")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(_dollars))
    right.set_ylim(0, max(1.0, float(paused.max()) * 1.1))
    right.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(handles=[escrow, held], loc="upper left", fontsize=8)
