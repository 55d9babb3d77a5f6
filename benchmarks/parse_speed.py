"""Parse and validation speed: this checkout's `parse_event` against another version's, interleaved.

Loads a reference copy of ``transforms/ingest/validation.py`` (say, from an earlier commit:
``git show REV:transforms/ingest/validation.py > /tmp/validation_ref.py``) beside the
current one, generates a JSON-lines file with the generator's invalid kinds mixed in
(``--corrupt-rate``), checks that both judge every record the same way (the same event,
or the same code and detail), then times them on alternating chunks of the file, so that
both see the same machine load, and prints the ratio.

    python -m benchmarks.parse_speed --reference /tmp/validation_ref.py --events 50000
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import sys
import tempfile
import time

CHUNK = 500


def _judge_all(module, lines, config) -> list:
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(tuple(module.parse_event(line, f"f:{i}", config)))
        except module.InvalidEvent as invalid:
            out.append((invalid.code.value, invalid.detail))
    return out


def _time_chunk(module, chunk, config) -> float:
    parse, invalid = module.parse_event, module.InvalidEvent
    started = time.perf_counter()
    for line in chunk:
        try:
            parse(line, "f", config)
        except invalid:
            pass
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="A copy of another version's validation.py.")
    parser.add_argument("--events", type=int, default=50_000, help="About this many records. Default: 50000.")
    parser.add_argument("--corrupt-rate", type=float, default=0.05, help="Share of invalid records. Default: 0.05.")
    parser.add_argument("--rounds", type=int, default=5, help="Passes over the file. Default: 5.")
    args = parser.parse_args(argv)

    from devtools import generate
    from transforms.ingest import validation as current

    spec = importlib.util.spec_from_file_location("reference_validation", args.reference)
    reference = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = reference  # dataclasses look their module up while building
    spec.loader.exec_module(reference)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "events.jsonl")
        generate.generate_events(path, users=max(1, args.events // 54), days=30, end=dt.date(2026, 11, 1), seed=5,
                                 fmt="jsonl", corrupt_rate=args.corrupt_rate)
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()
    now_us = int(dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    configs = {module: module.ValidationConfig(now_us=now_us) for module in (reference, current)}
    judged = {module: _judge_all(module, lines, config) for module, config in configs.items()}
    differing = sum(a != b for a, b in zip(judged[reference], judged[current]))
    dead = sum(1 for outcome in judged[current] if isinstance(outcome[0], str) and len(outcome) == 2)

    totals = {reference: 0.0, current: 0.0}
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds):
        for start in range(0, len(lines), CHUNK):
            chunk = lines[start:start + CHUNK]
            order = (reference, current) if (round_ + start // CHUNK) % 2 == 0 else (current, reference)
            for module in order:
                totals[module] += _time_chunk(module, chunk, configs[module])
    load_after = os.getloadavg()[0]
    n = len(lines) * args.rounds
    print(f"{len(lines):,} records ({dead:,} dead-lettered), {args.rounds} rounds in alternating chunks of {CHUNK}; "
          f"load average {load_before:.2f} -> {load_after:.2f} (not a quiet machine when above 1)")
    print(f"records judged differently: {differing}")
    print(f"reference: {totals[reference] / n * 1e6:.2f} us/record")
    print(f"current:   {totals[current] / n * 1e6:.2f} us/record")
    print(f"speed-up:  {totals[reference] / totals[current]:.2f}x")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
