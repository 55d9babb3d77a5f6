"""Side-by-side comparison of the four segmentation algorithms on one generated population.

Steps, all in one run so the timings are comparable:

1. generate a population with its truth (`segments generate ... --truth`);
2. compute the training rows ONCE with the training pipeline (`pipelines.train.build_pipeline`:
   every user's profile as of the calibration end, exactly as `segments train` does);
3. for each algorithm: `train_model` on those rows (timed: "training"), save and load the
   verified artifact, and score every training row through the serving handler's
   `score_batch` in batches of 4,096 (timed: "serving", the segment, RFM and BG/NBD scores
   RunInference computes), then the ARI of the served segments against the truth.

Run::

    python -m benchmarks.segmentation                                   # 20,000 users: ~10 min on 2 cores
    python -m benchmarks.segmentation --users 5000 --algorithms kmeans,density --json out.json

Output: a Markdown table (algorithm, k, segments, unclassified share, ARI, supervised
ceiling, ratio, training seconds, serving microseconds per user, artifact size) and the
exact commands, as `models/README.md` shows them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BATCH = 4096  # the handler's largest inference batch (models.handler.DEFAULT_MAX_BATCH_SIZE)


def _rows(events: str, work: str) -> list[dict]:
    """Every user's profile as of the calibration end, as `segments train` computes it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.train import TrainOptions, _read_rows, build_pipeline
    from transforms.ingest.privacy import DEMO_ID_KEY

    # Without the baseline days (the card's daily-movement baseline): one row per user.
    options = PipelineOptions(["--input", events, "--out", os.path.join(work, "unused"), "--demo_key",
                               "--baseline_days", "0"])
    prefix = os.path.join(work, "rows", "rows")
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, options.view_as(TrainOptions), DEMO_ID_KEY, prefix, None)
    return _read_rows(prefix)


def measure(rows: list[dict], truth: dict[str, str], algorithm: str, work: str, seed: int = 0) -> dict:
    """Trains, ships and serves one algorithm; returns its line of the table."""
    from sklearn.metrics import adjusted_rand_score

    from models.artifact import load_artifact, save_artifact
    from models.handler import score_batch, scoring_vector
    from models.training import latest_per_user, train_model

    started = time.perf_counter()
    trained = train_model(rows, truth=truth, algorithm=algorithm, seed=seed)
    training = time.perf_counter() - started
    folder = os.path.join(work, f"model-{algorithm}")
    card = save_artifact(folder, trained.model, trained.card_fields)
    model = load_artifact(folder)
    latest = latest_per_user(rows, None)
    vectors = [scoring_vector(r) for r in latest]
    started = time.perf_counter()
    served = [s for i in range(0, len(vectors), BATCH) for s in score_batch(model, vectors[i:i + BATCH])]
    serving = time.perf_counter() - started
    known = [i for i, r in enumerate(latest) if r["user_key"] in truth]
    ari = adjusted_rand_score([truth[latest[i]["user_key"]] for i in known], [served[i].segment_id for i in known])
    q = card["quality"]
    return {
        "algorithm": algorithm,
        "k": card["k"],
        "segments": card["segment_count"],
        "unclassified_share": q["unclassified_share"],
        "ari": ari,
        "ari_card": q["ari"],
        "ari_classified": q.get("ari_classified"),
        "supervised_ceiling": q["supervised_ceiling"],
        "ratio_to_ceiling": ari / q["supervised_ceiling"],
        "training_seconds": training,
        "serving_us_per_user": 1e6 * serving / len(vectors),
        "artifact_bytes": os.path.getsize(os.path.join(folder, "model.joblib")),
        "users": len(vectors),
        "segment_names": [s["name"] for s in card["segments"]],
    }


def table(results: list[dict]) -> str:
    lines = ["| algorithm | k | segments | unclassified | ARI | ceiling | ARI / ceiling | training | serving | "
             "model.joblib |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        classified = f" ({r['ari_classified']:.3f} classified)" if r.get("ari_classified") is not None else ""
        lines.append(f"| `{r['algorithm']}` | {r['k']} | {r['segments']} | {r['unclassified_share']:.1%} | "
                     f"{r['ari']:.3f}{classified} | {r['supervised_ceiling']:.3f} | {r['ratio_to_ceiling']:.2f} | "
                     f"{r['training_seconds']:.0f} s | {r['serving_us_per_user']:.1f} µs/user | "
                     f"{r['artifact_bytes'] / 1024:.0f} KiB |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    from models.algorithms import ALGORITHMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000, help="Users generated. Default: 20000.")
    parser.add_argument("--days", type=int, default=365, help="Days of calibration data. Default: 365.")
    parser.add_argument("--seed", type=int, default=7, help="Generator seed. Default: 7.")
    parser.add_argument("--end", default="2026-12-01", help="Last day of the generated data. Default: 2026-12-01.")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help=f"Comma-separated, of {', '.join(ALGORITHMS)}. Default: all.")
    parser.add_argument("--work", default=None, help="Folder for the data and models. Default: a temp folder.")
    parser.add_argument("--json", default=None, help="Also write the measurements here. Default: none.")
    args = parser.parse_args(argv)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    unknown = sorted(set(algorithms) - set(ALGORITHMS))
    if unknown:
        parser.error(f"unknown algorithm(s) {unknown}; expected some of {list(ALGORITHMS)}")

    from devtools import generate
    from pipelines.train import read_truth
    from transforms.ingest.privacy import DEMO_ID_KEY

    with tempfile.TemporaryDirectory(prefix="segmentation-bench-") as scratch:
        work = args.work or scratch
        os.makedirs(work, exist_ok=True)
        events, truth_path = os.path.join(work, "events.jsonl"), os.path.join(work, "truth.csv")
        started = time.perf_counter()
        generate.generate_events(events, users=args.users, days=args.days, seed=args.seed, fmt="jsonl",
                                 truth=truth_path, end=dt.date.fromisoformat(args.end))
        print(f"generated {args.users:,} users x {args.days} days in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        rows = _rows(events, work)
        print(f"training rows: {len(rows):,} users in {time.perf_counter() - started:.0f} s", flush=True)
        truth = read_truth(truth_path, DEMO_ID_KEY)
        results = []
        for algorithm in algorithms:
            results.append(measure(rows, truth, algorithm, work))
            r = results[-1]
            print(f"{algorithm}: ARI {r['ari']:.3f}, ratio {r['ratio_to_ceiling']:.2f}, "
                  f"{r['training_seconds']:.0f} s, {r['serving_us_per_user']:.1f} µs/user", flush=True)
    print()
    print(f"{args.users:,} users x {args.days} days (seed {args.seed}), {len(rows):,} profiled; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
