"""The `segments report` command: flags, progress, and the summary at the end."""

from __future__ import annotations

import argparse
import os
import time

from devtools import warehouse_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from models import DEFAULT_MODEL_DIR
    from pipelines.flags import iso_date, sha256_hex

    parser.add_argument("--out", required=True, metavar="FILE",
                        help="The HTML file to write (one self-contained page). Required.")
    parser.add_argument("--from", dest="start", type=iso_date, default=None, metavar="DATE",
                        help="First day of the period (UTC date): score dates for the segments, processing dates for "
                             "runs and dead letters. Default: 29 days before --to.")
    parser.add_argument("--to", dest="end", type=iso_date, default=None, metavar="DATE",
                        help="Last day of the period (UTC date). Default: the model's latest score date, and runs and "
                             "dead letters processed until now (a backfill of old days shows the runs that wrote it).")
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR, metavar="DIR",
                        help="The model whose segments to report (its card gives names, descriptions, distinguishing "
                             "features and the training distribution). Default: the shipped model.")
    parser.add_argument("--model_sha256", type=sha256_hex, default=None,
                        help="Refuse the model unless its model.joblib has this SHA-256. Default: its card's digest is "
                             "checked, not pinned.")
    warehouse_cli.add_target_arguments(parser)


def cmd_report(args: argparse.Namespace, _rest) -> int:
    from devtools.report import write_report
    from pipelines.options import ConfigError, check_output_file

    from models.artifact import verified_card

    check_output_file(args.out, "--out")
    if args.start and args.end and args.start > args.end:
        raise ConfigError(f"--from {args.start} is after --to {args.end}")
    # A missing, broken, tampered or unpinned model is reported before the warehouse is started.
    verified_card(args.model, expected_sha256=args.model_sha256)
    started = time.monotonic()
    client, project = warehouse_cli.client_and_project(args)
    data = write_report(client, project, args.bq_dataset, args.model, args.out, args.start, args.end,
                        model_sha256=args.model_sha256, say=lambda line: print(f"segments report: {line}", flush=True))
    print(f"segments report: {summary_line(data)}")
    path = os.path.abspath(args.out)
    print(f"segments report: wrote {path} ({os.path.getsize(path) / 1024:,.0f} KiB) in "
          f"{time.monotonic() - started:.1f} s; open it in a browser: file://{path}")
    return 0


def summary_line(data: dict) -> str:
    """The report's key figures on one line."""
    parts = [f"{data['sizes']['total_latest']:,} users in {len(data['segments'])} segments on "
             f"{data['sizes']['latest_day'] or '-'}", f"{data['moves']['total']:,} segment changes"]
    if data["drift"]["features"]:
        top = data["drift"]["features"][0]
        parts.append(f"largest drift {top['psi']:.3f} ({top['feature']}, {top['flag']})")
    parts.append(f"{data['health']['dead_total']:,} dead letters")
    if data["shadow"]:
        parts.append(f"a candidate would move {data['shadow']['share']:.1%}")
    return ", ".join(parts)
