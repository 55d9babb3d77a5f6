"""Side-by-side throughput benchmark: the Beam pipeline against DuckDB and a plain Python loop.

For each size (events) it generates one input (`segments generate --days 30`, JSON lines
and Avro, same seed, no corruption; the number of users is calibrated on a small run of
the generator, so that the file holds about that many events), then runs every variant in
its own subprocess. All of them compute every known user's profile record (feature
version v3) as of the midnight after the latest event, as `segments run` does:

* ``a``      the full batch job, ``segments run`` into an ephemeral local warehouse
             (read, validate, privacy, dedupe, profiles, model, warehouse writes);
* ``b``      the feature stage alone on DirectRunner: read, privacy, as-of time,
             `ComputeProfiles` (dedupe inside the per-user grouping, one record per user), count;
* ``b-avro`` the same over the Avro file (not in the default set);
* ``c``      the same records in DuckDB SQL (`benchmarks/duckdb_features.sql`);
* ``d``      the same in a plain Python loop (`benchmarks/python_loop.py`).

Each child runs under ``/usr/bin/time -v`` (peak RSS of the largest process of the
child's tree, as the kernel reports it) while the parent samples ``/proc`` every 0.1 s for
the summed RSS of the whole process tree. ``seconds`` is the child's own time for the
work (after imports, before exit); ``wall`` is the whole subprocess.

Run::

    python -m benchmarks.throughput                          # 20k and 40k events, ~10 min
    python -m benchmarks.throughput --sizes 1000000,2000000 --variants b,c,d   # issue 7 sizes
    python -m benchmarks.throughput --sizes 20000 --variants c,d --repeat 3

Output: a table (variant, size, seconds, events/s, peak RSS, ratio to DuckDB's events/s)
and the growth from the smallest to the largest size. ``--json PATH`` also writes the
raw measurements. See `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional, Sequence

VARIANTS: dict[str, str] = {
    "a": "full batch job (segments run -> local warehouse)",
    "b": "feature stage (read -> privacy -> ComputeProfiles as of the end), JSONL",
    "b-avro": "feature stage, Avro input",
    "c": "DuckDB SQL (the same profile records)",
    "d": "plain Python loop (orjson + dicts)",
}
DEFAULT_VARIANTS = ("a", "b", "c", "d")
DEFAULT_SIZES = (20_000, 40_000)
DAYS = 30
CALIBRATION_USERS = 1_000  # users of the small run that measures the generator's events per user
SEED = 7
TIME_BIN = "/usr/bin/time"
# Without /usr/bin/time: a parent that runs only this one child reports the child tree's
# peak RSS from getrusage(RUSAGE_CHILDREN), in /usr/bin/time's words.
_RUSAGE_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print('Maximum resident set size (kbytes): %d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); sys.exit(code)"
)
RESULT_PREFIX = "BENCH_RESULT "


# -- children --------------------------------------------------------------------------


def _child_full_job(path: str, endpoint: str, project: str, dataset: str) -> Callable[[], int]:
    from devtools import cli
    from transforms.bigquery.client import client_for

    def work() -> int:
        code = cli.main(["run", "--input", path, "--demo_key", "--bq_endpoint", endpoint,
                         "--bq_project", project, "--bq_dataset", dataset])
        if code:
            raise SystemExit(f"segments run exited with {code}")
        rows = client_for(endpoint, project).query(
            f"SELECT COUNT(*) AS n FROM `{project}.{dataset}.segment_assignments`").result()
        return int(next(iter(rows))["n"])

    return work


def _child_feature_stage(path: str) -> Callable[[], int]:
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.batch import BatchOptions
    from transforms.features.as_of import AsOfMicros
    from transforms.ingest.files import ReadEventFiles
    from transforms.ingest.privacy import DEMO_ID_KEY, ApplyPrivacy

    def work() -> int:
        options = PipelineOptions(["--input", path, "--demo_key"])
        batch = options.view_as(BatchOptions)
        records = beam.metrics.Metrics.counter("bench", "feature_records")

        def count(record):
            records.inc()
            return record

        # The head of `pipelines.batch.build_pipeline`, same labels, without scoring and writes.
        with beam.Pipeline(options=options) as p:
            parsed = p | "ReadEvents" >> ReadEventFiles(batch.input, batch.validation_config())
            events = (parsed.events | "Privacy" >> ApplyPrivacy(DEMO_ID_KEY, batch.suppression_list,
                                                                batch.consent_default)).events
            as_of_us = events | "AsOf" >> AsOfMicros(batch.as_of)
            profiles = events | "Profiles" >> batch.profile_transform(as_of_us, batch.history_days)
            _ = profiles.features | "Count" >> beam.Map(count)
        found = p.result.metrics().query(MetricsFilter().with_name("feature_records"))["counters"]
        return int(sum(c.committed or c.attempted or 0 for c in found))

    return work


def _child_duckdb(path: str) -> Callable[[], int]:
    import duckdb  # noqa: F401  (imported before the clock starts, like the other variants' modules)

    from benchmarks import duckdb_features
    from benchmarks.pseudonyms import BENCH_KEY

    return lambda: len(duckdb_features.compute(path, BENCH_KEY))


def _child_python_loop(path: str) -> Callable[[], int]:
    from benchmarks import python_loop
    from benchmarks.pseudonyms import BENCH_KEY

    return lambda: len(python_loop.compute(path, BENCH_KEY))


def run_child(args: argparse.Namespace) -> None:
    """Runs one variant in this process and prints its result line.

    Imports happen before the clock starts (Beam's take about 3 s); `wall s` in the
    table includes them.
    """
    if args.child == "a":
        endpoint, project, dataset = args.warehouse.split(",")
        work = _child_full_job(args.input, endpoint, project, dataset)
    elif args.child in ("b", "b-avro"):
        work = _child_feature_stage(args.input)
    elif args.child == "c":
        work = _child_duckdb(args.input)
    else:
        work = _child_python_loop(args.input)
    started = time.perf_counter()
    outputs = work()
    seconds = time.perf_counter() - started
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "outputs": outputs}), flush=True)


# -- measuring a child -----------------------------------------------------------------


def _tree_rss_bytes(root: int) -> int:
    """Summed RSS of `root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as handle:
                total += int(handle.read().split()[1]) * page
        except OSError:
            pass
        todo.extend(children.get(pid, ()))
    return total


@dataclasses.dataclass
class Measurement:
    variant: str
    size: int  # requested
    events: int  # records in the input file
    seconds: float  # the child's own time for the work
    wall_s: float  # the whole subprocess
    peak_rss_mib: float  # largest process of the tree (/usr/bin/time -v or getrusage)
    tree_rss_mib: float  # sampled peak of the summed RSS of the tree
    outputs: int  # profile records (b, c, d) or assignment rows (a): one per user

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def measure(variant: str, size: int, events: int, path: str, warehouse: Optional[str]) -> Measurement:
    """Runs one variant in a subprocess and measures it."""
    command = [sys.executable, "-m", "benchmarks.throughput", "--child", variant, "--input", path]
    if warehouse:
        command += ["--warehouse", warehouse]
    if os.access(TIME_BIN, os.X_OK):
        command = [TIME_BIN, "-v"] + command
    else:
        command = [sys.executable, "-c", _RUSAGE_WRAPPER] + command
    peak_tree = [0]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=pathlib.Path(__file__).resolve().parent.parent)
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak_tree[0] = max(peak_tree[0], _tree_rss_bytes(process.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"variant {variant} failed ({process.returncode}):\n{stderr[-3000:]}")
    result = next((json.loads(line[len(RESULT_PREFIX):]) for line in stdout.splitlines()
                   if line.startswith(RESULT_PREFIX)), None)
    if result is None:
        raise RuntimeError(f"variant {variant} printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    peak_kib = int(found.group(1)) if found else 0
    return Measurement(variant, size, events, result["seconds"], wall, peak_kib / 1024,
                       peak_tree[0] / 2**20, result["outputs"])


# -- inputs ----------------------------------------------------------------------------


def events_per_user(workdir: pathlib.Path) -> float:
    """Valid events per user the generator writes over `DAYS` days (measured on a small run)."""
    from devtools import generate

    path = workdir / "calibration.jsonl"
    stats = generate.generate_events(path, users=CALIBRATION_USERS, days=DAYS, seed=SEED, fmt="jsonl")
    path.unlink()
    return stats.events / CALIBRATION_USERS


def generate_inputs(size: int, workdir: pathlib.Path, per_user: float) -> tuple[int, dict[str, str]]:
    """Generates ~`size` events over `DAYS` days as JSONL and Avro; returns (events, paths)."""
    from devtools import generate

    users = max(1, round(size / per_user))
    paths = {}
    for fmt in ("jsonl", "avro"):
        path = workdir / f"events-{size}.{fmt}"
        stats = generate.generate_events(path, users=users, days=DAYS, seed=SEED, fmt=fmt)
        paths[fmt] = str(path)
    with open(paths["jsonl"], "rb") as handle:
        events = sum(1 for line in handle if line.strip())
    del stats
    return events, paths


# -- report ----------------------------------------------------------------------------


def _ratio_text(ratio: float) -> str:
    """0.72 as "0.72", 0.02 as "1/50" (easier to read against issue 7's 1/5 and 1/8)."""
    if ratio != ratio:  # no DuckDB run at this size
        return "-"
    return format(ratio, ".2f") if ratio >= 0.1 else f"1/{1 / ratio:.0f}"


def format_table(results: Sequence[Measurement]) -> str:
    duck = {m.size: m.events_per_s for m in results if m.variant == "c"}
    header = (f"{'variant':<8} {'size':>9} {'events':>9} {'seconds':>9} {'wall s':>8} {'events/s':>11} "
              f"{'peak RSS MiB':>13} {'tree RSS MiB':>13} {'vs DuckDB':>10}")
    lines = [header, "-" * len(header)]
    for m in results:
        ratio = m.events_per_s / duck[m.size] if m.size in duck else float("nan")
        lines.append(f"{m.variant:<8} {m.size:>9} {m.events:>9} {m.seconds:>9.2f} {m.wall_s:>8.1f} "
                     f"{m.events_per_s:>11,.0f} {m.peak_rss_mib:>13.0f} {m.tree_rss_mib:>13.0f} "
                     f"{_ratio_text(ratio):>10}")
    return "\n".join(lines)


def format_growth(results: Sequence[Measurement]) -> str:
    sizes = sorted({m.size for m in results})
    if len(sizes) < 2:
        return "growth: needs two sizes"
    small, large = sizes[0], sizes[-1]
    lines = [f"growth {small} -> {large} events:",
             f"{'variant':<8} {'events x':>9} {'time x':>8} {'peak RSS x':>11} {'tree RSS x':>11}"]
    for variant in dict.fromkeys(m.variant for m in results):
        a = next((m for m in results if m.variant == variant and m.size == small), None)
        b = next((m for m in results if m.variant == variant and m.size == large), None)
        if a and b:
            lines.append(f"{variant:<8} {b.events / a.events:>9.2f} {b.seconds / a.seconds:>8.2f} "
                         f"{b.peak_rss_mib / a.peak_rss_mib:>11.2f} {b.tree_rss_mib / a.tree_rss_mib:>11.2f}")
    return "\n".join(lines)


def _median_measurement(runs: list[Measurement]) -> Measurement:
    best = sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]
    return dataclasses.replace(
        best, peak_rss_mib=statistics.median(m.peak_rss_mib for m in runs),
        tree_rss_mib=statistics.median(m.tree_rss_mib for m in runs))


def run_benchmark(sizes: Sequence[int], variants: Sequence[str], repeat: int, workdir: pathlib.Path,
                  log=print) -> list[Measurement]:
    """Generates the inputs and measures every variant at every size (median of `repeat`)."""
    from devtools import warehouse as wh

    results: list[Measurement] = []
    per_user = events_per_user(workdir)
    log(f"# generator: {per_user:.1f} events per user over {DAYS} days (seed {SEED}, {CALIBRATION_USERS} users)")
    with wh.ephemeral() if "a" in variants else _nothing() as house:
        for size in sizes:
            started = time.perf_counter()
            events, paths = generate_inputs(size, workdir, per_user)
            log(f"# size {size}: {events} events generated in {time.perf_counter() - started:.1f} s "
                f"({', '.join(paths.values())})")
            for variant in variants:
                path = paths["avro" if variant == "b-avro" else "jsonl"]
                runs = []
                for attempt in range(repeat):
                    target = None
                    if variant == "a":
                        target = f"{house.endpoint},{house.project},bench_{size}_{attempt}"
                    runs.append(measure(variant, size, events, path, target))
                    log(f"#   {variant:<6} run {attempt + 1}/{repeat}: {runs[-1].seconds:.2f} s, "
                        f"{runs[-1].peak_rss_mib:.0f} MiB, {runs[-1].outputs} outputs")
                results.append(_median_measurement(runs))
    return results


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated event counts, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _variants(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description="Pipeline vs DuckDB vs Python loop, side by side.")
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                        help="Comma-separated event counts (approximate: users = size / the generator's events "
                             "per user over 30 days, measured first). Default: 20000,40000.")
    parser.add_argument("--variants", type=_variants, default=list(DEFAULT_VARIANTS),
                        help=f"Comma-separated subset of {', '.join(VARIANTS)}. Default: a,b,c,d.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per variant and size (median). Default: 1.")
    parser.add_argument("--workdir", type=pathlib.Path, default=None,
                        help="Where the inputs are generated. Default: a temporary directory, removed after.")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="Also write the measurements here.")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--warehouse", help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child:
        run_child(args)
        return
    if args.repeat < 1:
        build_parser().error("--repeat must be >= 1")
    started = time.perf_counter()
    temp = None
    workdir = args.workdir
    if workdir is None:
        temp = tempfile.mkdtemp(prefix="segments-bench-")
        workdir = pathlib.Path(temp)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"RSS via {TIME_BIN + ' -v' if os.access(TIME_BIN, os.X_OK) else 'getrusage(RUSAGE_CHILDREN)'}")
    try:
        results = run_benchmark(args.sizes, args.variants, args.repeat, workdir)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    print()
    print(format_table(results))
    print()
    print(format_growth(results))
    print(f"\n# total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([dict(dataclasses.asdict(m), events_per_s=m.events_per_s)
                                         for m in results], indent=2))


if __name__ == "__main__":
    main()
