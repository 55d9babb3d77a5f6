"""`segments`: the command line of the behavioural segmentation product.

Every subcommand has `--help`, listing every flag it takes. Exit codes:

* 0: done (for `run`: every record met one fate and every row reached the warehouse);
* 2: an error a user can fix before anything runs (a bad flag, a missing or unreadable
  file, a refused key or model, an unreachable warehouse), reported on one line;
* 1: the job ran and failed, or did not write everything (one line says what, and where
  what was not written is kept);
* 130: interrupted (Ctrl-C).

No traceback is printed unless `-v` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, Optional, Sequence

from devtools import generate as generate_module
from pipelines.options import declare_flags, unknown_pipeline_args

PROG = "segments"


class UsageError(Exception):
    """A problem with what the user asked for; reported on one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block): ``segments run: error: ... (see --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _cmd_generate(args: argparse.Namespace, _rest: Sequence[str]) -> int:
    started = time.monotonic()
    stats = generate_module.generate(args)
    print(f"{PROG} generate: wrote {stats.records:,} records for {stats.users:,} users to {stats.output}"
          f" ({stats.events:,} valid events, {stats.corrupt:,} corrupt, {stats.duplicates:,} duplicates)"
          f" in {time.monotonic() - started:.1f} s")
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from devtools.warehouse_cli import add_port_argument
    from pipelines.batch import BatchOptions

    declare_flags(parser, BatchOptions)
    _require(parser, "--input")
    add_port_argument(parser)


def _require(parser: argparse.ArgumentParser, flag: str) -> None:
    """Marks a flag required on the command line (Beam's own parsing must not require it)."""
    for action in parser._actions:
        if flag in action.option_strings:
            action.required = True


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from devtools import demo
    from devtools.warehouse_cli import add_port_argument

    demo.add_arguments(parser)
    add_port_argument(parser)


def _without(argv: Sequence[str], flag: str) -> list[str]:
    """`argv` without `flag` and its value (``--flag V`` or ``--flag=V``): a flag of the command, not of Beam."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def _cmd_run(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions

    from devtools import warehouse
    from pipelines import batch

    rest = _without(rest, "--warehouse_port")
    # Everything that can be checked is, before the warehouse is started.
    batch.prepare(PipelineOptions(rest).view_as(batch.BatchOptions))
    argv = warehouse.with_endpoint(rest, args.warehouse, args.bq_project, port=args.warehouse_port)
    print(f"{PROG} run: reading {', '.join(args.input)} ...", flush=True)
    started = time.monotonic()
    summary = batch.run(argv)
    if summary.extra.get("dry_run"):
        print(f"{PROG} run: dry run: the job was built, checked and not submitted (run {summary.extra['run_id']})")
        return 0
    print(f"{PROG} run: finished in {time.monotonic() - started:.1f} s")
    print(f"{PROG} run: {summary.console_line()}")
    print(f"{PROG} run: {summary.writes_line()}")
    if summary.drift_line():
        print(f"{PROG} run: {summary.drift_line()}")
    if args.summary:
        print(f"{PROG} run: summary written to {args.summary}")
    summary.check()
    return 0


def _cmd_demo(args: argparse.Namespace, _rest: Sequence[str]) -> int:
    from devtools import demo

    demo.run_demo(args)
    return 0


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.train import TrainOptions

    declare_flags(parser, TrainOptions)
    _require(parser, "--input")
    _require(parser, "--out")


def _cmd_train(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from pipelines import train
    from pipelines.options import check_inputs

    check_inputs(args.input)
    train.run(list(rest), say=lambda line: print(f"{PROG} train: {line}" if "\n" not in line else line, flush=True))
    return 0


def _lazy(name: str, module: str = "warehouse_cli") -> Callable:
    """A command function imported on first use (keeps `segments --help` fast)."""
    def call(*args):
        import importlib

        return getattr(importlib.import_module(f"devtools.{module}"), name)(*args)

    return call


# name -> (help, add_arguments, handler, passes Beam options through)
COMMANDS: dict[str, tuple[str, Callable, Callable, bool]] = {
    "generate": ("Write realistic synthetic events (JSON lines or Avro).", generate_module.add_arguments,
                 _cmd_generate, False),
    "run": ("Run the batch segmentation job over event files.", _add_run_arguments, _cmd_run, True),
    "train": ("Train a segmentation model on event files (features as in serving).", _add_train_arguments,
              _cmd_train, True),
    "warehouse": ("Start, stop or check the local BigQuery-API warehouse.", _lazy("add_warehouse_arguments"),
                  _lazy("cmd_warehouse"), False),
    "bq": ("Create the dataset, tables and analyst views (idempotent).", _lazy("add_bq_arguments"),
           _lazy("cmd_bq"), False),
    "query": ("Run SQL or print an analyst view as a table.", _lazy("add_query_arguments"), _lazy("cmd_query"),
              False),
    "stream": ("Run the streaming job (Pub/Sub -> warehouse); --local runs it all on this machine.",
               _lazy("add_arguments", "live"), _lazy("cmd_stream", "live"), True),
    "erase": ("Erase users: delete their rows from every table, add them to the suppression list, record it.",
              _lazy("add_arguments", "erase_cli"), _lazy("cmd_erase", "erase_cli"), False),
    "changes": ("Print segment changes as they arrive on Pub/Sub; --local follows `segments stream --local`.",
                _lazy("add_arguments", "changes"), _lazy("cmd_changes", "changes"), False),
    "report": ("Write the segment report: one self-contained HTML page (sizes, profiles, movements, drift, health).",
               _lazy("add_arguments", "report.cli"), _lazy("cmd_report", "report.cli"), False),
    "shadow": ("Score the latest rows with the current and a candidate model; write who would move (shadow_moves).",
               _lazy("add_arguments", "shadow"), _lazy("cmd_shadow", "shadow"), False),
    "demo": ("Generate events, run the job locally and show the segments.", _add_demo_arguments, _cmd_demo, False),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="Log Beam's progress (INFO).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, _, beam_flags) in COMMANDS.items():
        epilog = ("Any Beam pipeline option is accepted too (--runner, --project, --temp_location, ...)."
                  if beam_flags else None)
        command = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog)
        add_arguments(command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    _, _, handler, beam_flags = COMMANDS[args.command]
    if rest and not beam_flags:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if beam_flags:
        unknown = unknown_pipeline_args(rest)
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        # Beam re-parses the whole command line (its flags and ours) from here.
        rest = argv[argv.index(args.command) + 1:]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Beam logs our own flags as "unparseable" when it re-reads options internally.
        logging.getLogger("apache_beam.options.pipeline_options").setLevel(logging.ERROR)
        # Offline, Beam's credential lookup logs each retry with a traceback; the error that
        # follows is reported on one line.
        for name in ("apache_beam.utils.retry", "apache_beam.internal.gcp.auth", "google.auth"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # RunInference warns on every model load that it cannot read memory usage: Beam
        # 2.77 sets its `resource` module to None when torch is missing. Not actionable.
        logging.getLogger().addFilter(
            lambda record: not record.getMessage().startswith("Resource module is not available"))
    try:
        return handler(args, rest)
    except KeyboardInterrupt as interrupted:
        print(f"{PROG} {args.command}: interrupted{': ' + str(interrupted) if str(interrupted) else ''}",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        # A local pipeline may still run on its own threads; nothing of it is wanted now.
        os._exit(130)
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into a line
        if args.verbose:
            raise
        known = _user_facing(error)
        if known is None:
            raise
        message, code = known
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return code


def _user_facing(error: Exception) -> Optional[tuple[str, int]]:
    """(one line, exit code) for an error a user should see as such; None for a bug (traceback)."""
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    from models.artifact import ArtifactError
    from pipelines.batch import JobFailed
    from pipelines.options import ConfigError
    from pipelines.summary import ReconciliationError, WriteFailure
    from transforms.bigquery.loads import WarehouseUnreachable
    from transforms.contracts.outcomes import first_line
    from transforms.ingest.privacy import MissingIdKey, SuppressionListError

    if isinstance(error, (UsageError, ConfigError, MissingIdKey, SuppressionListError, ArtifactError,
                          WarehouseUnreachable, FileNotFoundError, PermissionError, IsADirectoryError,
                          NotADirectoryError, ValueError)):
        return first_line(error), 2
    if isinstance(error, (ReconciliationError, WriteFailure, JobFailed)):
        return first_line(error), 1
    if isinstance(error, (RuntimeError, GoogleAPIError, GoogleAuthError, OSError)):  # a server or runner said no
        return f"{first_line(error)} (run with -v for details)", 1
    return None


if __name__ == "__main__":
    sys.exit(main())
