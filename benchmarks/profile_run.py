"""Where `segments run` spends its time, and how two versions of the code compare, side by side.

Generates one JSON-lines file (`segments generate`, 30 days, no corruption, about
``--events`` events), then, for each ``--code`` folder (a checkout of this repository:
``.`` and, say, an earlier commit unpacked with ``git archive REV | tar -x -C DIR``), runs
the real batch job (`pipelines.batch.run`, ``history_days 0``, into one ephemeral local
warehouse, a fresh dataset each run, so every user is "entered" and explained) in its own
subprocess with that folder first on ``PYTHONPATH``:

* ``--repeat`` timed runs each, alternating between the folders (the same machine load
  for both), reported as seconds and as the ratio to the first folder;
* one run under cProfile each: the cumulative time of the functions that matter, grouped
  by area (explanation, scoring, parse and validation, profiles, row conversion), as a
  share of the job.

Run from the repository root::

    git archive HEAD~3 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    nice -n 10 python -m benchmarks.profile_run --events 100000 --code /tmp/base --code .

It prints a Markdown block for ``benchmarks/RESULTS.md`` (with the machine's load).
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
import uuid

EVENTS_PER_USER_30_DAYS = 54
END = dt.date(2026, 11, 1)
RESULT_PREFIX = "PROFILE_RUN_RESULT "

# Area -> functions (file suffix, function name) whose cumulative time is the area's.
# Nested calls are not double counted: an area takes its outermost function's time.
AREAS: dict[str, tuple[tuple[str, str], ...]] = {
    "change explanation": (("models/explain.py", "drivers"), ("models/explain.py", "drivers_of_rows")),
    "change detection (explanation included)": (("transforms/changes.py", "process"),),
    "scoring (RunInference batches)": (("models/handler.py", "run_inference"),),
    "scoring vectors": (("models/handler.py", "to_scoring_input"),),
    "parse and validate": (("transforms/ingest/validation.py", "parse_event"),),
    "profile add": (("transforms/features/profile.py", "add"),),
    "profile snapshot": (("transforms/features/profile.py", "snapshot"),),
    "row conversion": (("transforms/bigquery/rows.py", "assignment_row"), ("transforms/bigquery/rows.py", "change_row")),
    "row validation": (("transforms/bigquery/rows.py", "validate_row"),),
    "content_sha256": (("transforms/bigquery/rows.py", "content_sha256"),),
}


def _child(args: argparse.Namespace) -> None:
    """One run of the job in this process; prints its seconds (and the areas when profiled)."""
    import cProfile
    import pstats

    from pipelines import batch

    argv = ["--input", args.input, "--demo_key", "--run_id", f"profile-{uuid.uuid4().hex[:8]}",
            "--history_days", "0", "--bq_endpoint", args.endpoint, "--bq_project", args.project,
            "--bq_dataset", args.dataset]
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    batch.run(argv).check()
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    result: dict = {"seconds": seconds}
    if profiler:
        stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
        total = max(cumtime for (_, _, _, cumtime, _) in stats.values())
        areas = {}
        for area, wanted in AREAS.items():
            chosen = {key: value for key, value in stats.items()
                      if any(key[0].endswith(suffix) and key[2] == name for suffix, name in wanted)}
            # Outermost only: drop a function called by another chosen one.
            outer = [value for key, value in chosen.items() if not set(value[4]) & set(chosen)]
            areas[area] = sum(value[3] for value in outer)
        result.update(profiled_total=total, areas=areas)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _run_child(code: str, input_path: str, house, profile: bool) -> dict:
    dataset = f"p_{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, PYTHONPATH=os.path.abspath(code))
    # This file runs the child, so that a checkout without it can be measured too.
    command = [sys.executable, os.path.abspath(__file__), "--child", "--input", input_path,
               "--endpoint", house.endpoint, "--project", house.project, "--dataset", dataset]
    if profile:
        command.append("--profile")
    try:
        done = subprocess.run(command, cwd=os.path.abspath(code), env=env, capture_output=True, text=True)
    finally:
        house.client.delete_dataset(f"{house.project}.{dataset}", delete_contents=True, not_found_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{code}: the run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="About this many events. Default: 100000.")
    parser.add_argument("--code", action="append", default=None,
                        help="A checkout of the repository to run (repeatable; the first is the reference). "
                             "Default: the current folder.")
    parser.add_argument("--repeat", type=int, default=2, help="Timed runs per folder. Default: 2.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
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
                timed[code].append(_run_child(code, path, house, profile=False)["seconds"])
        profiled = {code: _run_child(code, path, house, profile=True) for code in codes}
    load_after = os.getloadavg()

    reference = min(timed[codes[0]])
    print(f"`segments run` over {stats.records:,} events ({users:,} users, 30 days, history_days 0), "
          f"{args.repeat} timed runs per code, alternating; load average before "
          f"{load_before[0]:.2f} / after {load_after[0]:.2f} (not a quiet machine when above 1).\n")
    print("| code | best s | runs s | events/s | vs first |")
    print("|---|---:|---:|---:|---:|")
    for code in codes:
        best = min(timed[code])
        print(f"| `{code}` | {best:.1f} | {', '.join(f'{s:.1f}' for s in timed[code])} | "
              f"{stats.records / best:,.0f} | {reference / best:.2f}x |")
    print("\nShare of the profiled job (cProfile, cumulative time of the area's outermost functions):\n")
    print("| area | " + " | ".join(f"`{code}`" for code in codes) + " |")
    print("|---|" + "---:|" * len(codes))
    for area in AREAS:
        cells = []
        for code in codes:
            result = profiled[code]
            seconds = result["areas"][area]
            cells.append(f"{seconds:.1f} s ({100 * seconds / result['profiled_total']:.0f} %)")
        print(f"| {area} | " + " | ".join(cells) + " |")
    print("| whole job (profiled) | " + " | ".join(f"{profiled[c]['profiled_total']:.1f} s" for c in codes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
