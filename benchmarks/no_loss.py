"""Nothing lost at scale: a million mixed-bad records through `segments run`, checked against the warehouse.

Builds one JSON-lines file of about ``--records`` records: generated behaviour
(`segments generate`, 30 days, ``--corrupt-rate`` of the generator's invalid kinds and
duplicates) with hostile records mixed in at fixed intervals (a byte-order mark, CRLF,
NUL bytes, bytes that are not UTF-8, lone surrogates, NaN, a 2,000-deep nesting, a
whitespace-only line, a purchase of 1e308, records just over the 16 KiB limit, and 2 MiB records, which the
dead letters store truncated). It counts the records as it writes them. Then it runs the
real command, ``python -m devtools.cli run --input FILE --summary S.json ...``, into an
ephemeral local warehouse, under ``/usr/bin/time -v`` when present (peak RSS) and
checks, from the warehouse's own tables:

* exit code 0, and the summary reconciled and complete (every row written);
* read == the records written to the file (counted here, not by the job);
* dead_letters rows == the summary's dead letters, per code; the hostile records
  are all there, with the 2 MiB ones truncated and their full size and SHA-256 kept;
* segment_assignments rows == the assignments the summary says were produced;
* the run_audit row says ``succeeded``.

Run from the repository root (a benchmark, not a test: minutes and about a GiB)::

    python -m benchmarks.no_loss                        # 1,000,000 records
    python -m benchmarks.no_loss --records 50000        # a quick look
    python -m benchmarks.no_loss --json out.json        # also the raw numbers

It prints a Markdown block for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time

EVENTS_PER_USER_30_DAYS = 54
END = dt.date(2026, 11, 1)
HOSTILE_EVERY = 997  # one hostile record after every this many generated lines
BIG = 2 * 1024 * 1024
TIME_BIN = "/usr/bin/time"


def _event(n: int, **changes) -> dict:
    record = {"event_id": f"h-{n}", "user_id": f"hostile-{n % 50}", "event_type": "page_view",
              "timestamp": "2026-10-30T12:00:00Z", "consent": {"analytics": True, "personalization": True}}
    record.update(changes)
    return record


def hostile(n: int) -> tuple[bytes, str]:
    """The n-th hostile record (bytes of one line) and the fate expected of it (a code, or 'valid')."""
    kind = n % 12
    plain = json.dumps(_event(n)).encode()
    if kind == 0:
        return b"\xef\xbb\xbf" + plain, "invalid_json"  # a BOM: not JSON
    if kind == 1:
        return plain + b"\r", "valid"  # a CRLF line end
    if kind == 2:
        return plain[:20] + b"\x00" + plain[20:], "invalid_json"
    if kind == 3:
        return b"\xff\xfe" + plain, "invalid_json"  # not UTF-8: stored in base64
    if kind == 4:
        return json.dumps(_event(n, user_id="\ud800x")).encode("utf-8", "surrogatepass"), "invalid_json"
    if kind == 5:
        return json.dumps(_event(n, properties={"value": float("nan")})).encode(), "invalid_json"  # NaN is not JSON
    if kind == 6:
        return b"[" * 2000 + b"]" * 2000, "invalid_json"  # deeper than any parser's limit
    if kind == 7:
        return b"   \t ", "invalid_json"  # whitespace only: a record, like a blank message
    if kind == 8:
        return json.dumps(_event(n, page="x" * 17_000)).encode(), "oversized"
    if kind == 9:
        return json.dumps(_event(n, page="y" * BIG)).encode(), "oversized"
    if kind == 10:
        # Valid JSON and a valid shape, but summed into spend it would make it infinite.
        return json.dumps(_event(n, event_type="purchase", properties={"value": 1e308})).encode(), "value_out_of_range"
    return json.dumps(_event(n, event_type="teleport")).encode(), "unknown_event_type"


def build_input(path: str, records: int, corrupt_rate: float, seed: int) -> dict:
    """Writes the file; returns what it holds, counted while writing."""
    from devtools import generate

    users = max(1, round(records / EVENTS_PER_USER_30_DAYS))
    generated = path + ".generated"
    stats = generate.generate_events(generated, users=users, days=30, end=END, seed=seed, fmt="jsonl",
                                     corrupt_rate=corrupt_rate)
    counts = {"lines": 0, "hostile": {}, "big_sha256": []}
    with open(generated, "rb") as source, open(path, "wb") as out:
        for index, line in enumerate(source, start=1):
            out.write(line)
            counts["lines"] += 1
            if index % HOSTILE_EVERY == 0:
                data, fate = hostile(index // HOSTILE_EVERY)
                out.write(data + b"\n")
                counts["lines"] += 1
                counts["hostile"][fate] = counts["hostile"].get(fate, 0) + 1
                if len(data) > BIG:
                    counts["big_sha256"].append(hashlib.sha256(data).hexdigest())
    os.remove(generated)
    counts["generator"] = {"records": stats.records, "valid": stats.events, "corrupt": stats.corrupt,
                           "duplicates": stats.duplicates}
    return counts


def run_job(path: str, endpoint: str, project: str, dataset: str, summary: str, fallback: str) -> dict:
    argv = [sys.executable, "-m", "devtools.cli", "run", "--input", path, "--demo_key", "--run_id", "no-loss",
            "--summary", summary, "--dead_letter_fallback", fallback, "--bq_endpoint", endpoint,
            "--bq_project", project, "--bq_dataset", dataset]
    timed = [TIME_BIN, "-v", *argv] if os.access(TIME_BIN, os.X_OK) else argv
    started = time.monotonic()
    result = subprocess.run(timed, capture_output=True, text=True)
    seconds = time.monotonic() - started
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    peak_kib = int(match.group(1)) if match else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"exit": result.returncode, "seconds": seconds, "peak_rss_mib": peak_kib / 1024,
            "stdout": result.stdout, "stderr": result.stderr[-3000:], "command": " ".join(argv)}


def warehouse_counts(client, project: str, dataset: str) -> dict:
    def one(sql):
        return [dict(row) for row in client.query(sql).result()]

    table = f"`{project}.{dataset}"
    return {
        "assignments": one(f"SELECT COUNT(*) AS n FROM {table}.segment_assignments`")[0]["n"],
        "dead_letters": {r["error_code"]: r["n"] for r in one(
            f"SELECT error_code, COUNT(*) AS n FROM {table}.dead_letters` GROUP BY 1")},
        "truncated": sorted((r["payload_bytes"], r["payload_sha256"]) for r in one(
            f"SELECT payload_bytes, payload_sha256 FROM {table}.dead_letters` WHERE payload_truncated")),
        "audit": one(f"SELECT status, reconciled FROM {table}.run_audit` WHERE run_id = 'no-loss'"),
    }


def check(counts: dict, summary: dict, job: dict, stored: dict) -> list[str]:
    """Every way the run lost or claimed something; empty when nothing was."""
    problems = []
    if job["exit"] != 0:
        problems.append(f"exit code {job['exit']}: {job['stderr'][-500:]}")
    if summary.get("read") != counts["lines"]:
        problems.append(f"read {summary.get('read')} != {counts['lines']} records in the file")
    if not (summary.get("reconciled") and summary.get("complete")):
        problems.append(f"summary reconciled={summary.get('reconciled')} complete={summary.get('complete')}")
    dead = {code: n for code, n in {**summary["dead_lettered"], **summary["rows_dead_lettered"]}.items() if n}
    if stored["dead_letters"] != dead:
        problems.append(f"dead_letters table {stored['dead_letters']} != summary {dead}")
    if stored["assignments"] != summary["writes"]["segment_assignments"]["produced"]:
        problems.append(f"segment_assignments rows {stored['assignments']} != produced "
                        f"{summary['writes']['segment_assignments']['produced']}")
    for code, n in counts["hostile"].items():
        if code != "valid" and stored["dead_letters"].get(code, 0) < n:
            problems.append(f"fewer {code} dead letters than the {n} hostile ones written")
    big = sorted(sha for _, sha in stored["truncated"] if _ > BIG)
    if big != sorted(counts["big_sha256"]):
        problems.append(f"{len(counts['big_sha256'])} records over 2 MiB written, {len(big)} stored truncated "
                        "with their digest")
    if [a["status"] for a in stored["audit"]] != ["succeeded"]:
        problems.append(f"run_audit: {stored['audit']}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="About this many records. Default: 1000000.")
    parser.add_argument("--corrupt_rate", type=float, default=0.02,
                        help="The generator's share of invalid records and duplicates. Default: 0.02.")
    parser.add_argument("--seed", type=int, default=17, help="Generator seed. Default: 17.")
    parser.add_argument("--workdir", default=None, help="Keep the files here. Default: a temporary folder.")
    parser.add_argument("--json", default=None, help="Also write the measurements to this file.")
    args = parser.parse_args(argv)

    from devtools import warehouse

    with tempfile.TemporaryDirectory(prefix="no-loss-") as scratch:
        work = args.workdir or scratch
        os.makedirs(work, exist_ok=True)
        path = os.path.join(work, "mixed.jsonl")
        started = time.monotonic()
        counts = build_input(path, args.records, args.corrupt_rate, args.seed)
        built_s = time.monotonic() - started
        print(f"input: {counts['lines']:,} records ({os.path.getsize(path) / 2**20:,.0f} MiB) in {built_s:.0f} s; "
              f"hostile by expected fate: {counts['hostile']}", flush=True)
        with warehouse.ephemeral(data_dir=os.path.join(work, "warehouse")) as wh:
            summary_path = os.path.join(work, "summary.json")
            job = run_job(path, wh.endpoint, wh.project, "no_loss", summary_path, os.path.join(work, "fallback"))
            summary = json.loads(open(summary_path).read()) if os.path.exists(summary_path) else {}
            stored = warehouse_counts(wh.client, wh.project, "no_loss") if summary else {}
        problems = check(counts, summary, job, stored) if summary else [f"no summary: {job['stderr']}"]
    report = {
        "date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "records": counts["lines"], "seconds": round(job["seconds"], 1),
        "records_per_s": round(counts["lines"] / job["seconds"]), "peak_rss_mib": round(job["peak_rss_mib"]),
        "read": summary.get("read"), "valid": summary.get("valid"), "duplicates": summary.get("duplicates"),
        "filtered": summary.get("filtered"), "dead_letters": stored.get("dead_letters"),
        "assignments": stored.get("assignments"), "truncated_payloads": len(stored.get("truncated", [])),
        "command": job["command"].replace(work, "WORK"), "nothing_lost": not problems, "problems": problems,
    }
    print(json.dumps(report, indent=2))
    print(job["stdout"])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
