"""`segments erase`: delete users' rows everywhere, keep them out of later runs, record it.

    segments erase --user_ids requests.txt --suppression_list erasures.txt --id_key_file key.txt \
        --snapshot_dir gs://BUCKET/snapshots

The ids file and the suppression list share one format (`transforms.ingest.privacy.SUPPRESSION_FORMAT`).
What is deleted and how: `transforms.bigquery.erasure`.
"""

from __future__ import annotations

import argparse

from devtools import warehouse_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user_ids", required=True, metavar="FILE",
                        help="Raw user ids to erase (local or gs://), one per line, in the suppression list's format "
                             "(README, Privacy). Required.")
    parser.add_argument("--suppression_list", required=True, metavar="FILE",
                        help="The suppression list the jobs read (--suppression_list of `segments run`): the ids are "
                             "appended to it (created if missing), so that no later run brings them back. Required.")
    parser.add_argument("--id_key_file", default=None,
                        help="File (local or gs://) with the HMAC key the jobs use. Default: --id_key_secret, else "
                             "SEGMENTS_ID_KEY.")
    parser.add_argument("--id_key_secret", default=None,
                        help="Secret Manager version with the key, projects/P/secrets/S/versions/V. Default: none.")
    parser.add_argument("--demo_key", action="store_true", default=False,
                        help="Use the published demo key (data written by demo runs). Default: a key must be "
                             "configured: erasing with the wrong key would delete nothing.")
    parser.add_argument("--snapshot_dir", default=None,
                        help="The jobs' profile snapshots (--snapshot_dir of `segments run` and `segments stream`): "
                             "every snapshot file under it is rewritten without the users. Default: none.")
    parser.add_argument("--erasure_id", default=None,
                        help="Name of this erasure in erasure_audit. Default: erase-<UTC time>-<random>.")
    warehouse_cli.add_target_arguments(parser)


def cmd_erase(args: argparse.Namespace, _rest) -> int:
    from pipelines.options import check_output_file
    from transforms.bigquery.erasure import erase_users
    from transforms.ingest.privacy import id_key_reference, read_user_ids

    user_ids = read_user_ids(args.user_ids, "--user_ids")
    if not user_ids:
        raise ValueError(f"--user_ids {args.user_ids} lists no user id")
    check_output_file(args.suppression_list, "--suppression_list")
    key = id_key_reference(args.id_key_file, args.id_key_secret, use_demo_key=args.demo_key)
    key.read()  # fail here, before anything changes, if the key cannot be read
    client, project = warehouse_cli.client_and_project(args)
    erasure = erase_users(client, project, args.bq_dataset, user_ids, key, args.suppression_list, args.erasure_id)
    counts = ", ".join(f"{table} {rows:,}" for table, rows in sorted(erasure.deleted.items()))
    print(f"segments erase: {erasure.users:,} users erased ({erasure.erasure_id}): rows deleted: {counts}; "
          f"{erasure.suppression_added:,} ids added to {erasure.suppression_list}; recorded in "
          f"{project}.{args.bq_dataset}.erasure_audit")
    if args.snapshot_dir:
        from transforms.features.snapshots import erase_users as erase_from_snapshots

        removed = erase_from_snapshots(args.snapshot_dir, erasure.user_keys)
        print(f"segments erase: {removed:,} profile records removed from the snapshots under {args.snapshot_dir}")
    return 0
