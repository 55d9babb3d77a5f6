"""`segments`: the command line of the behavioural segmentation product.

Every subcommand has `--help`. Errors a user can fix (a bad flag, a missing
file, no key) are reported on one line, without a traceback, and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Callable, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from devtools import generate as generate_module
from pipelines.options import declare_flags, unknown_pipeline_args

PROG = "segments"


class UsageError(Exception):
    """A problem with what the user asked for; reported on one line."""


def _cmd_generate(args: argparse.Namespace, _rest: Sequence[str]) -> int:
    started = time.monotonic()
    stats = generate_module.generate(args)
    print(f"{PROG} generate: wrote {stats.records:,} records for {stats.users:,} users to {stats.output}"
          f" ({stats.events:,} valid events, {stats.corrupt:,} corrupt, {stats.duplicates:,} duplicates)"
          f" in {time.monotonic() - started:.1f} s")
    return 0


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.batch import BatchOptions

    declare_flags(parser, BatchOptions)
    _require(parser, "--input")


def _require(parser: argparse.ArgumentParser, flag: str) -> None:
    """Marks a flag required on the command line (Beam's own parsing must not require it)."""
    for action in parser._actions:
        if flag in action.option_strings:
            action.required = True


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    from devtools import demo

    demo.add_arguments(parser)


def _check_inputs(patterns: Sequence[str]) -> None:
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as error:  # BeamIOError and friends: report, don't trace
            raise UsageError(f"cannot read --input {pattern}: {error}") from None
        if not matched:
            raise UsageError(f"--input {pattern} matches no file")


def _cmd_run(args: argparse.Namespace, rest: Sequence[str]) -> int:
    from pipelines import batch

    _check_inputs(args.input)
    from devtools import warehouse

    argv = warehouse.with_endpoint(rest, args.warehouse, args.bq_project)
    print(f"{PROG} run: reading {', '.join(args.input)} ...", flush=True)
    started = time.monotonic()
    summary = batch.run(argv)
    print(f"{PROG} run: finished in {time.monotonic() - started:.1f} s")
    print(f"{PROG} run: {summary.console_line()}")
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

    _check_inputs(args.input)
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
    "changes": ("Print segment changes as they arrive on Pub/Sub; --local follows `segments stream --local`.",
                _lazy("add_arguments", "changes"), _lazy("cmd_changes", "changes"), False),
    "demo": ("Generate events, run the job locally and show the segments.", _add_demo_arguments, _cmd_demo, False),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
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
        # RunInference warns on every model load that it cannot read memory usage: Beam
        # 2.77 sets its `resource` module to None when torch is missing. Not actionable.
        logging.getLogger().addFilter(
            lambda record: not record.getMessage().startswith("Resource module is not available"))
    try:
        return handler(args, rest)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into a line
        if args.verbose:
            raise
        known = _user_facing(error)
        if known is None:
            raise
        print(f"{PROG} {args.command}: error: {known}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1


def _user_facing(error: Exception) -> Optional[str]:
    from pipelines.summary import ReconciliationError
    from transforms.ingest.privacy import MissingIdKey

    from google.api_core.exceptions import GoogleAPIError

    from models.artifact import ArtifactError

    if isinstance(error, (UsageError, MissingIdKey, ReconciliationError, ArtifactError, FileNotFoundError,
                          PermissionError, ValueError)):
        return str(error)
    if isinstance(error, (RuntimeError, GoogleAPIError)):  # a server or runner said no: details help
        return f"{error} (run with -v for details)"
    return None


if __name__ == "__main__":
    sys.exit(main())
