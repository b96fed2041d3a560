"""The console's charts: SVG drawn on the server from the API's numbers (no script, so they read
without JavaScript and print as they look).

Every number drawn is one the API gave: the escrow at each point of its history, now, and the
forecast pause height (``pauses_at``, the core's own arithmetic through the deployment view);
only the lines between them are drawn here.
"""

from __future__ import annotations

from typing import Any

from markupsafe import escape

from kova_core import deposit_for_hours, format_micro

__all__ = ["earnings_chart", "escrow_chart", "per_hour"]

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, BOTTOM = 70, 16, 34
LEGEND = 15  # the height of a line of the legend, above the plot


def _top(lines: int) -> int:
    return 10 + LEGEND * lines


def _scale(low: float, high: float, start: float, end: float) -> Any:
    span = (high - low) or 1
    return lambda v: start + (v - low) * (end - start) / span


def _frame(title: str, xs: tuple[int, int], ys: tuple[int, int], body: list[str],
           legend: list[str]) -> str:  # fmt: skip
    top = _top(len(legend))
    x_of = _scale(xs[0], xs[1], LEFT, WIDTH - RIGHT)
    y_of = _scale(ys[0], ys[1], HEIGHT - BOTTOM, top)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
    ]
    for value in (ys[0], (ys[0] + ys[1]) // 2, ys[1]):
        y = y_of(value)
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{format_micro(value).rstrip("0").rstrip(".")}</text>')
    for value, anchor in ((xs[0], "start"), (xs[1], "end")):
        parts.append(f'<text class="tick" x="{x_of(value):.1f}" y="{HEIGHT - BOTTOM + 16}" '
                     f'text-anchor="{anchor}">block {value}</text>')
    parts += body
    for i, text in enumerate(legend):
        parts.append(f'<text class="legend" x="{LEFT}" y="{8 + LEGEND * (i + 1) - 4}">'
                     f'{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def per_hour(micro: int, block_seconds: float) -> str:
    """What ``micro`` a block comes to in an hour of the network's blocks (the core's
    ``deposit_for_hours``), in units."""
    if block_seconds <= 0:
        return "—"
    return format_micro(deposit_for_hours(micro, 1, round(block_seconds * 1000)))


def escrow_chart(points: list[dict[str, Any]], view: dict[str, Any], height: int,
                 block_seconds: float) -> str:  # fmt: skip
    """The escrow from its first point to now, and on from now to the forecast pause."""
    history = [(p["height"], p["escrow"]) for p in points if p["height"] <= height]
    now = (height, int(view["escrow"]))
    if not history or history[-1] != now:
        history.append(now)
    pause = view.get("pauses_at")
    burn = int(view.get("burn_rate") or 0)
    forecast: list[tuple[int, int]] = []
    if isinstance(pause, int) and pause >= height:
        # at the pause round the escrow holds less than the round's payment; drawn at what the
        # burn rate leaves of it then, never below zero
        forecast = [now, (pause, max(0, now[1] - burn * (pause - height)))]
    xs = [h for h, _ in history + forecast]
    low_x, high_x = min(xs), max(max(xs), min(xs) + 1)
    highest = max(max(v for _, v in history + forecast), 1)
    legend = [f"escrow now: {format_micro(now[1])}; burn rate {format_micro(burn)} a block "
              f"({per_hour(burn, block_seconds)}"
              " an hour)"]  # fmt: skip
    if forecast:
        legend.append(f"- - forecast: pauses at block {pause}")
    elif view.get("state") == "insufficient_funds":
        legend.append("paused: the escrow ran short (deposit to resume)")
    top = _top(len(legend))
    x_of = _scale(low_x, high_x, LEFT, WIDTH - RIGHT)
    y_of = _scale(0, highest, HEIGHT - BOTTOM, top)
    line = " ".join(f"{x_of(h):.1f},{y_of(v):.1f}" for h, v in history)
    body = [f'<polyline class="escrow" points="{line}"/>']
    if forecast:
        line = " ".join(f"{x_of(h):.1f},{y_of(v):.1f}" for h, v in forecast)
        body.append(f'<polyline class="forecast" points="{line}"/>')
        x = x_of(pause)
        body.append(f'<line class="pause" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" '
                    f'y2="{HEIGHT - BOTTOM}"/>')
    for h, v in history[-1:]:
        body.append(f'<circle class="now" cx="{x_of(h):.1f}" cy="{y_of(v):.1f}" r="4"/>')
    return _frame("Escrow over time", (low_x, high_x), (0, highest), body, legend)


def earnings_chart(earned: list[dict[str, Any]], height: int, block_seconds: float) -> str:
    """A provider's cumulative earnings, from the payments its ledger lists."""
    payments = sorted((t["height"], t["amount"]) for t in earned)
    if not payments:
        return ('<p class="empty">No payments yet: they arrive at each settlement round of '
                "a lease.</p>")
    total, steps = 0, [(payments[0][0], 0)]
    for h, amount in payments:
        total += amount
        steps.append((h, total))
    steps.append((max(height, steps[-1][0]), total))
    low_x, high_x = steps[0][0], max(steps[-1][0], steps[0][0] + 1)
    x_of = _scale(low_x, high_x, LEFT, WIDTH - RIGHT)
    y_of = _scale(0, max(total, 1), HEIGHT - BOTTOM, _top(1))
    line = " ".join(f"{x_of(h):.1f},{y_of(v):.1f}" for h, v in steps)
    body = [f'<polyline class="earnings" points="{line}"/>']
    return _frame("Earnings over time", (low_x, high_x), (0, max(total, 1)), body,
                  [f"earned: {format_micro(total)} in {len(payments)} payments"])
