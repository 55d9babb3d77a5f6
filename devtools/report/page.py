"""The report page: the gathered numbers and the charts, in one self-contained HTML file.

No script, stylesheet, font or image is fetched when the page is viewed: the style is in
the page, the charts are inline SVG (`devtools.report.charts`). Every number shown is an
element ``<span class="num" data-key="..." data-value="..." data-format="...">``: the key
names it, the value is the number itself (full precision), the format says how the text
shows it (`FORMATS`). The whole gathered data is embedded as JSON
(``<script type="application/json" id="report-data">``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

import jinja2

from devtools.report import charts

MAX_HEATMAP_FEATURES = 12


def show(value: Any, fmt: str) -> str:
    """How a number is written on the page (`data-format`)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if fmt == "int":
        return f"{int(value):,}"
    if fmt == "signed":
        return f"{int(value):+,}"
    if fmt == "pct":
        return f"{value:.1%}"
    if fmt == "dec2":
        return f"{value:,.2f}"
    if fmt == "dec3":
        return f"{value:.3f}"
    if fmt == "z":
        return f"{value:+.2f}"
    if fmt == "num":  # three significant digits; whole numbers from 1,000 on; 0 below 0.0005
        if abs(value) < 0.0005:
            return "0"
        return f"{value:,.3g}" if abs(value) < 999.5 else f"{value:,.0f}"
    raise ValueError(f"unknown format {fmt!r}")


FORMATS = ("int", "signed", "pct", "dec2", "dec3", "z", "num")


def data_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("devtools.report", "."), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(show=show, data_value=data_value, palette=charts.segment_colour)
    return env


def build_charts(data: dict) -> dict[str, Optional[str]]:
    """Every chart of the page (None: nothing to draw)."""
    names = {str(s["segment_id"]): s["name"] for s in data["segments"]}
    sizes = data["sizes"]
    out: dict[str, Optional[str]] = {"sizes": charts.sizes(sizes["days"], sizes["series"], names)}

    profiles = data["profiles"].get("segments", {}) if data["profiles"] else {}
    with_features = [(sid, p) for sid, p in profiles.items() if p["features"]]
    columns: list[str] = []
    for _, p in with_features:
        for f in p["features"]:
            if f["feature"] not in columns and len(columns) < MAX_HEATMAP_FEATURES:
                columns.append(f["feature"])
    values = [[p["z"].get(c) for c in columns] for _, p in with_features]
    out["features"] = charts.heatmap([p["name"] for _, p in with_features], columns, values, "features",
                                     "What sets each segment apart (standard deviations from the population)")
    rfm_names = sorted({name for p in profiles.values() for name in p["rfm"]})
    populated = [(sid, p) for sid, p in profiles.items() if p["users"]]
    out["rfm"] = charts.stacked_shares([p["name"] for _, p in populated], rfm_names,
                                       [[p["rfm"].get(n, 0.0) for n in rfm_names] for _, p in populated], "rfm",
                                       "RFM mix of each segment (latest day)")

    out["moves"] = _move_matrix(data["moves"]["pairs"], names, "moves", "Users who changed segment (from row to column)")
    movement = data["movement"]
    out["movement"] = charts.daily_share(movement["days"], movement["share"], movement["baseline"])

    health = data["health"]
    runs = health["runs"]
    out["runs"] = charts.stacked_bars(
        [r["run_id"] if len(r["run_id"]) <= 26 else "…" + r["run_id"][-25:] for r in runs],
        {"valid": [r["valid"] for r in runs], "dead-lettered": [r["dead_lettered"] for r in runs],
         "filtered": [r["filtered"] for r in runs], "duplicates": [r["duplicates"] for r in runs]},
        "runs", "Records read by each run, by fate", "records", rotate=True) if runs else None
    dead = health["dead_letters"]
    days = sorted({d["day"] for d in dead})
    codes = sorted({d["code"] for d in dead})
    out["dead_letters"] = charts.stacked_bars(
        [d[5:] for d in days],
        {code: [sum(d["n"] for d in dead if d["day"] == day and d["code"] == code) for day in days] for code in codes},
        "dead_letters", "Dead letters by processing day and code", "records") if dead else None

    drift = data["drift"]
    out["psi"] = charts.psi_bars(drift["features"], drift["thresholds"]["moderate"], drift["thresholds"]["major"])
    out["psi_history"] = charts.psi_history(drift["history"], drift["thresholds"]["moderate"],
                                            drift["thresholds"]["major"])
    shadow = data["shadow"]
    out["shadow"] = None
    if shadow and shadow["pairs"]:
        shadow_names = dict(names)
        for p in shadow["pairs"]:
            shadow_names.setdefault(str(p["to"]), p["to_name"])
        out["shadow"] = _move_matrix(shadow["pairs"], shadow_names, "shadow",
                                     "Users the candidate would move (current segment by row, candidate's by column)",
                                     columns_from="to")
    moments = data.get("moments")
    out["moments"] = charts.moment_shares(moments["days"], moments["series"]) if moments else None
    out["moment_cross"] = None
    if moments and moments["cross"]["segments"]:
        c = moments["cross"]
        out["moment_cross"] = charts.heatmap(
            [names.get(str(s), str(s)) for s in c["segments"]], [m.replace("_", " ") for m in c["moments"]],
            [[c["users"][str(s)][m] or None for m in c["moments"]] for s in c["segments"]], "moment_cross",
            f"Users by segment (type) and moment on {moments['cross_day']}", fmt="{:,.0f}", symmetric=False,
            cmap="Blues")
    return out


def _move_matrix(pairs, names, name: str, title: str, columns_from: Optional[str] = None) -> Optional[str]:
    if not pairs:
        return None
    rows = sorted({p["from"] for p in pairs})
    cols = sorted({p["to"] for p in pairs})
    counts = {(p["from"], p["to"]): p["users"] for p in pairs}
    return charts.heatmap(
        [names.get(str(r), str(r)) for r in rows],
        [names.get(str(c), str(c)) for c in cols],
        [[counts.get((r, c)) for c in cols] for r in rows], name, title, fmt="{:,.0f}", symmetric=False,
        cmap="Blues")


def render(data: dict) -> str:
    """The page's HTML."""
    built = build_charts(data)
    template = _environment().get_template("report.html.j2")
    payload = json.dumps(data, sort_keys=True, ensure_ascii=True, allow_nan=False).replace("</", "<\\/")
    return template.render(d=data, charts=built, data_json=payload)
