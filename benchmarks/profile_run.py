"""Where `segments run` spends its time, and how two versions of the code compare, side by side.

Generates one JSON-lines file (`segments generate`, 30 days, no corruption, about
``--events`` events), then, for each ``--code`` folder (a checkout of this repository:
``.`` and, say, an earlier commit unpacked with ``git archive REV | tar -x -C DIR``), runs
the real batch job (`pipelines.batch.run`, ``history_days 0``, into one ephemeral local
warehouse, a fresh dataset each run, so every user is "entered" and explained) in its own
subprocess with that folder first on ``PYTHONPATH``:

* ``--repeat`` timed runs each, alternating between the folders (the same machine load
  for both), reported as seconds and as the ratio to the first folder;
* one run each under py-spy (``--py-spy``: a sampling profiler, every thread and
  subprocess): the share of the job's samples in each area (explanation, scoring, parse
  and validation, profiles, row conversion).

Run from the repository root::

    git archive HEAD~3 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    nice -n 10 python benchmarks/profile_run.py --events 100000 --code /tmp/base --code .

It prints a Markdown block for ``benchmarks/RESULTS.md`` (with the machine's load).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Optional

EVENTS_PER_USER_30_DAYS = 20  # what the generator writes on average
END = dt.date(2026, 11, 1)
RESULT_PREFIX = "PROFILE_RUN_RESULT "

# Area -> frames (a file's path ending, and a function name or None for any function of
# the file); a sample counts for an area when its stack holds one of them (once).
AREAS: dict[str, tuple[tuple[str, Optional[str]], ...]] = {
    "change step (detection and explanation)": (("transforms/changes.py", None),),
    "  of which the explanation (models/explain.py)": (("models/explain.py", None),),
    "scoring batches (segments, RFM, BG/NBD)": (("models/handler.py", "score_batch"),),
    "scoring vectors (per record)": (("models/handler.py", "scoring_vector"),),
    "parse and validate": (("transforms/ingest/validation.py", None),),
    "profiles (add, fold, snapshot)": (("transforms/features/profile.py", None),
                                       ("transforms/features/activity.py", None)),
    "row conversion": (("transforms/bigquery/rows.py", None),),
    "  of which content_sha256": (("transforms/bigquery/rows.py", "content_sha256"),),
    "scikit-learn, anywhere": (("sklearn/", None),),
}


def _frame_matches(frame: str, suffix: str, name: Optional[str]) -> bool:
    # py-spy's raw frames read "function (path/to/file.py:line)".
    function, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return (suffix in path if suffix.endswith("/") else path.endswith(suffix)) and (name is None or function == name)


def area_shares(raw: str) -> tuple[int, dict[str, int], int]:
    """(samples of the work, samples per area, samples importing modules) from py-spy's raw
    output (``stack;stack;... count`` lines). Imports (a ``<module>`` frame on the stack) are
    counted apart: the timed runs start after them."""
    total, imports, areas = 0, 0, {area: 0 for area in AREAS}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if any(frame.startswith("<module> (") for frame in frames):
            imports += n
            continue
        total += n
        for area, wanted in AREAS.items():
            if any(_frame_matches(frame, suffix, name) for frame in frames for suffix, name in wanted):
                areas[area] += n
    return total, areas, imports


def _child(args: argparse.Namespace) -> None:
    """One run of the job in this process; prints its seconds."""
    from pipelines import batch

    argv = ["--input", args.input, "--demo_key", "--run_id", f"profile-{uuid.uuid4().hex[:8]}",
            "--history_days", "0", "--bq_endpoint", args.endpoint, "--bq_project", args.project,
            "--bq_dataset", args.dataset]
    started = time.perf_counter()
    batch.run(argv).check()
    print(RESULT_PREFIX + json.dumps({"seconds": time.perf_counter() - started}), flush=True)


def _run_child(code: str, input_path: str, house, py_spy: Optional[str] = None,
               raw_dir: Optional[str] = None) -> dict:
    """One run of the job with `code` first on the path; under py-spy (all threads and
    subprocesses, 100 samples a second) when `py_spy` names its binary."""
    dataset = f"p_{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, PYTHONPATH=os.path.abspath(code))
    # This file runs the child, so that a checkout without it can be measured too.
    command = [sys.executable, os.path.abspath(__file__), "--child", "--input", input_path,
               "--endpoint", house.endpoint, "--project", house.project, "--dataset", dataset]
    raw_path = None
    if py_spy:
        raw_path = os.path.join(raw_dir or os.path.dirname(input_path), f"{dataset}.raw")
        command = [py_spy, "record", "--subprocesses", "--nonblocking", "--format", "raw", "--output", raw_path,
                   "--"] + command
    try:
        done = subprocess.run(command, cwd=os.path.abspath(code), env=env, capture_output=True, text=True)
    finally:
        house.client.delete_dataset(f"{house.project}.{dataset}", delete_contents=True, not_found_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            if raw_path:
                with open(raw_path, encoding="utf-8") as handle:
                    result["samples"], result["areas"], result["import_samples"] = area_shares(handle.read())
            return result
    raise RuntimeError(f"{code}: the run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="About this many events. Default: 100000.")
    parser.add_argument("--code", action="append", default=None,
                        help="A checkout of the repository to run (repeatable; the first is the reference). "
                             "Default: the current folder.")
    parser.add_argument("--repeat", type=int, default=2, help="Timed runs per folder. Default: 2.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--raw_dir", default=None,
                        help="Keep py-spy's raw samples here (flamegraph input). Default: discarded.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--py-spy", default=shutil.which("py-spy"),
                        help="The py-spy binary for the sampled run (none: no profile). Default: py-spy on PATH.")
    for name in ("--input", "--endpoint", "--project", "--dataset"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0

    from devtools import generate
    from devtools import warehouse as wh

    codes = args.code or ["."]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, wh.ephemeral(data_dir=pathlib.Path(tmp) / "house") as house:
        path = str(pathlib.Path(tmp) / "events.jsonl")
        users = max(1, round(args.events / EVENTS_PER_USER_30_DAYS))
        stats = generate.generate_events(path, users=users, days=30, end=END, seed=args.seed, fmt="jsonl",
                                         corrupt_rate=0.0)
        timed: dict[str, list[float]] = {code: [] for code in codes}
        for _ in range(args.repeat):
            for code in codes:
                timed[code].append(_run_child(code, path, house)["seconds"])
        profiled = ({code: _run_child(code, path, house, args.py_spy, args.raw_dir) for code in codes}
                    if args.py_spy else {})
    load_after = os.getloadavg()

    reference = min(timed[codes[0]], default=float("nan"))
    print(f"`segments run` over {stats.records:,} events ({users:,} users, 30 days, history_days 0), "
          f"{args.repeat} timed runs per code, alternating; load average before "
          f"{load_before[0]:.2f} / after {load_after[0]:.2f} (not a quiet machine when above 1).\n")
    print("| code | best s | runs s | events/s | vs first |")
    print("|---|---:|---:|---:|---:|")
    for code in codes:
        best = min(timed[code], default=float("nan"))
        print(f"| `{code}` | {best:.1f} | {', '.join(f'{s:.1f}' for s in timed[code])} | "
              f"{stats.records / best:,.0f} | {reference / best:.2f}x |")
    if not profiled:
        return 0
    print("\nShare of the job's samples (py-spy, 100 a second, every thread and subprocess of the job, imports "
          "left out; a sample counts for an area when the area's code is on its stack):\n")
    print("| area | " + " | ".join(f"`{code}`" for code in codes) + " |")
    print("|---|" + "---:|" * len(codes))
    for area in AREAS:
        cells = [f"{100 * profiled[c]['areas'][area] / max(profiled[c]['samples'], 1):.0f} %" for c in codes]
        print(f"| {area} | " + " | ".join(cells) + " |")
    print("| samples of the work (the 100 %) | " + " | ".join(f"{profiled[c]['samples']:,}" for c in codes) + " |")
    print("| samples importing modules (left out) | " + " | ".join(f"{profiled[c]['import_samples']:,}" for c in codes)
          + " |")
    print("| seconds of the sampled run | " + " | ".join(f"{profiled[c]['seconds']:.1f}" for c in codes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
