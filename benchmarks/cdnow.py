"""The scores on a public real transaction log: CDNOW (Fader, Hardie & Lee 2005).

CDNOW: every purchase of the 23,570 customers who first bought at the CD retailer
CDNOW in the first quarter of 1997, until the end of June 1998 (69,659 purchase lines:
customer, date, number of CDs, dollar value). The BTYD literature's split, used here:
39 weeks of calibration from 1997-01-01 (to 1997-09-30; ``--until 1997-10-01``) and the
39 weeks after as the hold-out (1997-10-01 to 1998-06-30; 273 days).

The file ships inside the PyPI package `lifetimes` (wheel ``Lifetimes-0.11.3``, path
``lifetimes/datasets/CDNOW_master.txt``). This script fetches the wheel with
``pip download --no-deps lifetimes==0.11.3`` into a cache folder and reads the file from
the zip; `lifetimes` is not a dependency of the product and is never imported.

Each purchase line becomes one ``purchase`` event of the event contract (timestamp: noon
UTC of its date, ``properties.value`` its dollar value in USD, ``quantity`` its CDs, one
order per line, consent granted). Then the product's own pipelines run:

1. ``segments train`` (`pipelines.train.run`) on the calibration events with ``--until
   1997-10-01 --holdout <hold-out events> --holdout_days 273``: fits the model and prints
   the hold-out report (every score against recency-only and frequency-only);
2. the ``segments run --as_of 1997-10-01`` graph (`pipelines.batch.build_pipeline`, with
   the warehouse writes left out) scores every customer with the trained model; from
   those rows: ``p_purchase_90d`` against recency only on "bought in the first 90 days of
   the hold-out" (AUC, decile calibration), the F scores given and the RFM segment shares;
3. for comparison only (not a product score): a learned propensity, scikit-learn's
   HistGradientBoostingClassifier trained inside the calibration period (profiles as of
   1997-07-03 by the training pipeline, label: bought in the 90 days to 1997-10-01) on
   `LEARNED_FEATURES`, applied to the rows as of 1997-10-01 and judged the same way.

Run::

    python -m benchmarks.cdnow [--cache ~/.cache/segments-benchmarks] [--work DIR] [--k 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter

import numpy as np
import orjson

WHEEL = "Lifetimes-0.11.3-py3-none-any.whl"
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
CALIBRATION_START = dt.date(1997, 1, 1)
CALIBRATION_END = dt.date(1997, 10, 1)  # 39 weeks after the start
HOLDOUT_END = CALIBRATION_END + dt.timedelta(weeks=39)  # 1998-07-01
HORIZON_DAYS = 90
# Published CDNOW estimates, FHL (2005), in weeks; fitted there on the 1/10 sample of 2,357
# customers, here on all 23,570.
PUBLISHED_WEEKS = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
# The purchase figures of a profile; tenure is left out: every CDNOW customer arrived in
# the first quarter of 1997, so tenure at the training as-of never reaches the scoring one's.
LEARNED_FEATURES = ("orders", "orders_90d", "recency_days", "spend_total", "avg_order_value")
COMMON_FLAGS = ["--demo_key", "--max_event_age_days", "36500", "--reporting_currency", "USD"]


def fetch_wheel(cache: pathlib.Path) -> pathlib.Path:
    """The lifetimes wheel in `cache`, downloaded with pip when absent."""
    wheel = cache / WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "lifetimes==0.11.3", "-d", str(cache)], check=True)
    return wheel


def read_cdnow(wheel: pathlib.Path) -> list[tuple[str, dt.date, int, float]]:  # `Line`s
    """(customer id, date, CDs, dollar value) per purchase line."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(MEMBER).decode("ascii")
    lines = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[0] == "customer_id":
            continue
        day = dt.datetime.strptime(parts[1], "%Y%m%d").date()
        lines.append((parts[0], day, int(parts[2]), float(parts[3])))
    return lines


def to_event(index: int, customer: str, day: dt.date, cds: int, dollars: float) -> dict:
    """One purchase line as an event of the contract."""
    return {
        "event_id": f"cdnow-{index}",
        "user_id": f"cdnow-{customer}",
        "event_type": "purchase",
        "timestamp": f"{day.isoformat()}T12:00:00Z",
        "properties": {"value": dollars, "currency": "USD", "quantity": cds, "order_id": f"cdnow-order-{index}"},
        "consent": {"analytics": True, "personalization": True},
    }


Line = tuple[str, dt.date, int, float]  # customer id, date, CDs, dollar value


def write_events(lines: list[Line], work: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    calibration, holdout = work / "calibration.jsonl", work / "holdout.jsonl"
    with open(calibration, "wb") as cal, open(holdout, "wb") as hold:
        for i, (customer, day, cds, dollars) in enumerate(lines):
            target = cal if day < CALIBRATION_END else hold if day < HOLDOUT_END else None
            if target is not None:
                target.write(orjson.dumps(to_event(i, customer, day, cds, dollars)) + b"\n")
    return calibration, holdout


def score(calibration: pathlib.Path, model: pathlib.Path, out_prefix: str) -> list[dict]:
    """Every user's assignment as of the calibration end, by the `segments run` graph (no warehouse)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from models.serving import serving_model
    from pipelines import batch

    argv = ["--input", str(calibration), "--model", str(model), "--as_of", CALIBRATION_END.isoformat(),
            *COMMON_FLAGS]
    options = PipelineOptions(argv)
    run = options.view_as(batch.BatchOptions)
    with beam.Pipeline(options=options) as p:
        outputs = batch.build_pipeline(p, run, run.pseudonymisation_key(), serving_model(str(model)))
        (outputs.assignments
         | beam.Map(lambda a: orjson.dumps(a).decode("utf-8"))
         | beam.io.WriteToText(out_prefix, file_name_suffix=".jsonl"))
    rows = []
    directory = pathlib.Path(out_prefix).parent
    for path in sorted(directory.glob(pathlib.Path(out_prefix).name + "*.jsonl")):
        rows.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return rows


def holdout_buyers(lines: list[Line], key) -> dict[str, int]:
    """user_key -> days from the calibration end to their first hold-out purchase."""
    from transforms.ingest.privacy import pseudonymise

    first: dict[str, int] = {}
    for customer, day, _, _ in lines:
        if CALIBRATION_END <= day < HOLDOUT_END:
            offset = (day - CALIBRATION_END).days
            user = f"cdnow-{customer}"
            first[user] = min(first.get(user, offset), offset)
    return {pseudonymise(key, user): offset for user, offset in first.items()}


def judge(rows: list[dict], first_purchase: dict[str, int]) -> dict:
    """p_purchase_90d against recency only on the scored rows; F scores and RFM segment shares."""
    from sklearn.metrics import roc_auc_score

    from models.evaluation import decile_means

    customers = [r for r in rows if r["p_purchase_90d"] is not None]
    bought = np.array([first_purchase.get(r["user_key"], 10 ** 6) < HORIZON_DAYS for r in customers])
    p90 = np.array([r["p_purchase_90d"] for r in customers])
    recency = -np.array([r["features"]["recency_days"] for r in customers])
    frequency = np.array([r["features"]["orders"] for r in customers])
    actual, predicted = decile_means(p90, bought), decile_means(p90, p90)
    f_scores = Counter(r["rfm"]["f"] for r in customers)
    segments = Counter(r["rfm"]["rfm_segment"] for r in customers)
    return {
        "customers": len(customers),
        "buyers_90d": int(bought.sum()),
        "auc": {"p_purchase_90d": float(roc_auc_score(bought, p90)),
                "recency_only": float(roc_auc_score(bought, recency)),
                "frequency_only": float(roc_auc_score(bought, frequency)),
                "churn_risk (reversed)": float(roc_auc_score(bought, -np.array([r["churn_risk"] for r in customers])))},
        "deciles": [{"decile": d + 1, "predicted": float(predicted[d]), "actual": float(actual[d]),
                     "relative_error": float((predicted[d] - actual[d]) / actual[d]) if actual[d] else None}
                    for d in range(10)],
        "f_scores": {str(f): n / len(customers) for f, n in sorted(f_scores.items())},
        "rfm_segments": {name: n / len(customers) for name, n in segments.most_common()},
        "one_time_buyers": float(np.mean(frequency == 1)),
    }


def learned_propensity(calibration: pathlib.Path, lines: list[Line], key, rows: list[dict], work: pathlib.Path) -> dict:
    """A gradient-boosting propensity trained inside the calibration period, judged like p_purchase_90d."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from models.evaluation import decile_means
    from pipelines import train
    from transforms.ingest.privacy import pseudonymise

    start = CALIBRATION_END - dt.timedelta(days=HORIZON_DAYS)
    options = PipelineOptions(["--input", str(calibration), "--baseline_days", "0", *COMMON_FLAGS])
    prefix = str(work / "learned" / "rows")
    with beam.Pipeline(options=options) as p:
        train.build_pipeline(p, options.view_as(train.TrainOptions), key, prefix, start)
    records = []
    for path in sorted((work / "learned").glob("rows*.jsonl")):
        records.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    bought_late = {pseudonymise(key, f"cdnow-{c}") for c, day, _, _ in lines if start <= day < CALIBRATION_END}
    train_rows = [r for r in records if r["orders"] > 0]
    X = np.array([[r[n] for n in LEARNED_FEATURES] for r in train_rows])
    y = np.array([r["user_key"] in bought_late for r in train_rows])
    model = HistGradientBoostingClassifier(random_state=0).fit(X, y)
    customers = [r for r in rows if r["p_purchase_90d"] is not None]
    first = holdout_buyers(lines, key)
    bought = np.array([first.get(r["user_key"], 10 ** 6) < HORIZON_DAYS for r in customers])
    p = model.predict_proba(np.array([[r["features"][n] for n in LEARNED_FEATURES] for r in customers]))[:, 1]
    actual, predicted = decile_means(p, bought), decile_means(p, p)
    return {"training_rows": len(train_rows), "auc": float(roc_auc_score(bought, p)),
            "deciles": [{"decile": d + 1, "predicted": float(predicted[d]), "actual": float(actual[d]),
                         "relative_error": float((predicted[d] - actual[d]) / actual[d])} for d in range(10)]}


def report_lines(card: dict, judged: dict) -> list[str]:
    b = card["bgnbd"]
    fitted_weeks = {"r": b["r"], "alpha": b["alpha"] / 7.0, "a": b["a"], "b": b["b"]}
    auc = judged["auc"]
    lines = [
        f"CDNOW: {judged['customers']:,} customers scored as of {CALIBRATION_END} "
        f"({judged['one_time_buyers']:.1%} with one order); {judged['buyers_90d']:,} bought in the first "
        f"{HORIZON_DAYS} days of the hold-out",
        "BG/NBD fitted on all customers (alpha in weeks) vs published on the 1/10 sample: " + ", ".join(
            f"{k} {fitted_weeks[k]:.4g}/{PUBLISHED_WEEKS[k]:.4g} ({fitted_weeks[k] / PUBLISHED_WEEKS[k] - 1:+.1%})"
            for k in PUBLISHED_WEEKS),
        "AUC, bought in the first 90 days: " + ", ".join(f"{k} {v:.4f}" for k, v in auc.items()),
        f"p_purchase_90d - recency_only: {auc['p_purchase_90d'] - auc['recency_only']:+.4f} (goal +0.02)",
        "p_purchase_90d deciles (predicted / actual buyer rate, relative error):",
    ]
    lines += [f"  {d['decile']:>2}  {d['predicted']:.3f} / {d['actual']:.3f}  "
              + ("n/a" if d["relative_error"] is None else f"{d['relative_error']:+.1%}") for d in judged["deciles"]]
    top5 = [abs(d["relative_error"]) for d in judged["deciles"][:5] if d["relative_error"] is not None]
    lines.append(f"top 5 deciles within 20 %: {all(e <= 0.2 for e in top5)} (largest {max(top5):.1%})")
    lines.append("F scores (share of customers): " + ", ".join(f"F{k} {v:.1%}" for k, v in judged["f_scores"].items()))
    lines.append("RFM segments: " + ", ".join(f"{k} {v:.1%}" for k, v in judged["rfm_segments"].items()))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/segments-benchmarks"),
                        help="Folder for the downloaded wheel. Default: ~/.cache/segments-benchmarks.")
    parser.add_argument("--work", default=None, help="Folder for events, model and rows. Default: a temp folder.")
    parser.add_argument("--k", type=int, default=None, help="Number of segments for training. Default: chosen.")
    args = parser.parse_args(argv)
    from pipelines import train

    started = time.monotonic()
    lines = read_cdnow(fetch_wheel(pathlib.Path(args.cache)))
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="cdnow-"))
    work.mkdir(parents=True, exist_ok=True)
    calibration, holdout = write_events(lines, work)
    print(f"{len(lines):,} purchase lines of {len({c for c, *_ in lines}):,} customers -> {work}", flush=True)
    train_argv = ["--input", str(calibration), "--holdout", str(holdout), "--until", CALIBRATION_END.isoformat(),
                  "--holdout_days", str((HOLDOUT_END - CALIBRATION_END).days), "--out", str(work / "model"),
                  *COMMON_FLAGS] + (["--k", str(args.k)] if args.k else [])
    print("segments train " + " ".join(train_argv), flush=True)
    card = train.run(train_argv)
    print(f"segments run --as_of {CALIBRATION_END} (the batch graph, no warehouse) ...", flush=True)
    rows = score(calibration, work / "model", str(work / "scored" / "rows"))
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.options import FileInputOptions

    key = PipelineOptions(["--input", str(calibration), *COMMON_FLAGS]).view_as(FileInputOptions).pseudonymisation_key()
    judged = judge(rows, holdout_buyers(lines, key))
    for line in report_lines(card, judged):
        print(line)
    print(f"for comparison: a learned propensity (gradient boosting on {', '.join(LEARNED_FEATURES)}, trained on "
          f"profiles as of {CALIBRATION_END - dt.timedelta(days=HORIZON_DAYS)}) ...", flush=True)
    learned = learned_propensity(calibration, lines, key, rows, work)
    judged["learned_for_comparison"] = learned
    print(f"learned: AUC {learned['auc']:.4f} ({learned['auc'] - judged['auc']['recency_only']:+.4f} vs recency only, "
          f"{learned['auc'] - judged['auc']['p_purchase_90d']:+.4f} vs p_purchase_90d) on "
          f"{learned['training_rows']:,} training rows; deciles 1-5 predicted / actual: "
          + ", ".join(f"{d['predicted']:.3f}/{d['actual']:.3f} ({d['relative_error']:+.0%})"
                      for d in learned["deciles"][:5]))
    (work / "cdnow_result.json").write_text(json.dumps({"judged": judged, "holdout": card.get("holdout")}, indent=1))
    print(f"total {time.monotonic() - started:.0f} s; result in {work / 'cdnow_result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
