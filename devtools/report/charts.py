"""The report's charts: matplotlib figures written as SVG text, to be inlined in the page.

Deterministic: the same data gives the same bytes (no date in the metadata, ids hashed with
a fixed salt per chart, glyphs drawn as paths so the page needs no font). Each function
takes plain data from `devtools.report.gather` and returns the ``<svg>`` element, or None
when there is nothing to draw (the page then says so in words).
"""

from __future__ import annotations

import io
import re
from typing import Mapping, Optional, Sequence

from matplotlib import rc_context
from matplotlib.figure import Figure

WIDTH = 9.0  # inches; the page scales the SVG to its column
_RC = {"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
       "axes.titlesize": 10, "axes.titleweight": "bold", "legend.frameon": False}
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94")
MIN_BAR_SLOTS = 8
FLAG_COLOURS = {"stable": "#59a14f", "moderate": "#edc948", "major": "#e15759"}


def segment_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _svg(fig: Figure, name: str) -> str:
    buffer = io.StringIO()
    with rc_context({**_RC, "svg.hashsalt": f"segments-report-{name}"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
    # Scale to the column: drop the fixed size, keep the viewBox.
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1', text, count=1)
    return text.replace("<svg", f'<svg class="chart" data-chart="{name}" role="img" preserveAspectRatio="xMinYMin meet"',
                        1)


def _figure(height: float) -> Figure:
    with rc_context(_RC):
        return Figure(figsize=(WIDTH, height))


def _date_ticks(ax, days: Sequence[str], every: Optional[int] = None) -> None:
    step = every or max(1, len(days) // 10)
    ax.set_xticks(range(0, len(days), step))
    ax.set_xticklabels([d[5:] for d in days[::step]])


def sizes(days: Sequence[str], series: Mapping[str, Sequence[int]], names: Mapping[str, str]) -> Optional[str]:
    """Users per segment per day, stacked."""
    if not days:
        return None
    fig = _figure(3.4)
    with rc_context(_RC):
        ax = fig.subplots()
        ids = list(series)
        ax.stackplot(range(len(days)), [series[i] for i in ids], labels=[names[i] for i in ids],
                     colors=[segment_colour(k) for k in range(len(ids))], linewidth=0.3, edgecolor="white")
        _date_ticks(ax, days)
        ax.set_ylabel("users")
        ax.set_xlim(0, max(1, len(days) - 1))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        ax.set_title("Users per segment, by score date")
    return _svg(fig, "sizes")


def heatmap(rows: Sequence[str], columns: Sequence[str], values: Sequence[Sequence[Optional[float]]], name: str,
            title: str, fmt: str = "{:+.1f}", symmetric: bool = True, cmap: str = "RdBu_r") -> Optional[str]:
    """A labelled heatmap; None cells are left blank."""
    if not rows or not columns:
        return None
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    fig = _figure(0.45 * len(rows) + 1.6)
    with rc_context(_RC):
        ax = fig.subplots()
        finite = data[np.isfinite(data)]
        top = float(np.max(np.abs(finite))) if finite.size else 1.0
        vmin, vmax = (-top, top) if symmetric else (0.0, top or 1.0)
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels(columns, rotation=35, ha="right")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows)
        for spine in ax.spines.values():
            spine.set_visible(False)
        for i in range(len(rows)):
            for j in range(len(columns)):
                if np.isfinite(data[i, j]):
                    strong = abs(data[i, j]) > 0.6 * (vmax if symmetric else top or 1.0)
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=7.5,
                            color="white" if strong else "#222")
        fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
        ax.set_title(title)
    return _svg(fig, name)


def stacked_shares(rows: Sequence[str], parts: Sequence[str], shares: Sequence[Sequence[float]], name: str,
                   title: str) -> Optional[str]:
    """Horizontal bars of 100 %, one per row, split into parts."""
    if not rows or not parts:
        return None
    fig = _figure(0.38 * len(rows) + 1.4)
    with rc_context(_RC):
        ax = fig.subplots()
        left = [0.0] * len(rows)
        for k, part in enumerate(parts):
            widths = [shares[i][k] for i in range(len(rows))]
            ax.barh(range(len(rows)), widths, left=left, color=segment_colour(k), label=part, height=0.7)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        ax.set_title(title)
    return _svg(fig, name)


def daily_share(days: Sequence[str], share: Sequence[float], baseline: Optional[float]) -> Optional[str]:
    """The share of users changing segment each day, against the training baseline."""
    if not days:
        return None
    fig = _figure(2.6)
    with rc_context(_RC):
        ax = fig.subplots()
        ax.plot(range(len(days)), share, marker="o", markersize=3, color=PALETTE[0], label="this period")
        if baseline is not None:
            ax.axhline(baseline, color="#888", linestyle="--", linewidth=1, label="training baseline")
        _date_ticks(ax, days)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(lambda y, _: f"{y:.0%}")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title("Users changing segment, per day")
    return _svg(fig, "movement")


def stacked_bars(labels: Sequence[str], parts: Mapping[str, Sequence[int]], name: str, title: str,
                 ylabel: str, rotate: bool = False) -> Optional[str]:
    """Vertical bars, one per label, stacked by part."""
    if not labels or not parts:
        return None
    fig = _figure(2.8)
    with rc_context(_RC):
        ax = fig.subplots()
        bottom = [0] * len(labels)
        for k, (part, values) in enumerate(parts.items()):
            ax.bar(range(len(labels)), values, bottom=bottom, color=segment_colour(k), label=part, width=0.7)
            bottom = [a + b for a, b in zip(bottom, values)]
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=7.5)
        ax.set_xlim(-0.6, max(len(labels), MIN_BAR_SLOTS) - 0.4)  # a few bars stay bars, not walls
        ax.set_ylabel(ylabel)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        ax.set_title(title)
    return _svg(fig, name)


def psi_bars(features: Sequence[Mapping], moderate: float, major: float, limit: int = 15) -> Optional[str]:
    """The largest PSIs, coloured by flag, with the two thresholds."""
    shown = list(features)[:limit]
    if not shown:
        return None
    fig = _figure(0.3 * len(shown) + 1.2)
    with rc_context(_RC):
        ax = fig.subplots()
        ax.barh(range(len(shown)), [f["psi"] for f in shown], color=[FLAG_COLOURS[f["flag"]] for f in shown],
                height=0.7)
        ax.axvline(moderate, color="#b8860b", linestyle="--", linewidth=1)
        ax.axvline(major, color="#c0392b", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([f["feature"] for f in shown])
        ax.invert_yaxis()
        ax.set_xlim(0, max(major * 1.2, max(f["psi"] for f in shown) * 1.05))
        ax.set_xlabel("population stability index (dashed: 0.1 moderate, 0.25 major)")
        ax.set_title("Drift of the latest day against the training data")
    return _svg(fig, "psi")


def psi_history(history: Sequence[Mapping], moderate: float, major: float) -> Optional[str]:
    """The largest PSI each run recorded in run_audit."""
    if not history:
        return None
    fig = _figure(2.4)
    with rc_context(_RC):
        ax = fig.subplots()
        ax.plot(range(len(history)), [h["max_psi"] for h in history], marker="o", markersize=3, color=PALETTE[0])
        ax.axhline(moderate, color="#b8860b", linestyle="--", linewidth=1)
        ax.axhline(major, color="#c0392b", linestyle="--", linewidth=1)
        step = max(1, len(history) // 8)
        ax.set_xticks(range(0, len(history), step))
        ax.set_xticklabels([h["finished_at"][5:16] for h in history[::step]], fontsize=7.5)
        ax.set_ylim(0, max(major * 1.2, max(h["max_psi"] for h in history) * 1.1))
        ax.set_title("Largest PSI recorded by each run (run_audit)")
    return _svg(fig, "psi_history")


def moment_shares(days: Sequence[str], series: Mapping[str, Mapping[str, Sequence]]) -> Optional[str]:
    """One small panel per moment: its daily share, the trailing baseline, rises and falls marked."""
    if not days or not series:
        return None
    names = list(series)
    columns = 3
    rows = -(-len(names) // columns)
    fig = _figure(1.9 * rows + 0.4)
    with rc_context(_RC):
        axes = fig.subplots(rows, columns, squeeze=False, sharex=True)
        x = range(len(days))
        for k, ax in enumerate(axes.flat):
            if k >= len(names):
                ax.set_visible(False)
                continue
            s = series[names[k]]
            ax.plot(x, s["share"], color=PALETTE[0], linewidth=1.2)
            ax.plot(x, [b if b is not None else float("nan") for b in s["baseline"]], color="#888",
                    linestyle="--", linewidth=0.9)
            for i, mark in enumerate(s["mark"]):
                if mark:
                    ax.plot(i, s["share"][i], marker="^" if mark == "rise" else "v", markersize=6,
                            color="#c0392b" if mark == "rise" else "#2e6fbd", linestyle="none")
            ax.set_title(names[k].replace("_", " "), fontsize=9)
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_formatter(lambda y, _: f"{y:.1%}" if y < 0.1 else f"{y:.0%}")
            _date_ticks(ax, days, every=max(1, len(days) // 4))
        fig.suptitle("Share of users in each moment, by score date (dashed: trailing 7-day mean; "
                     "triangles: rise, fall)", fontsize=9)
    return _svg(fig, "moments")
