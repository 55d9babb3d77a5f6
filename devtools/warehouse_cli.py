"""The `segments warehouse`, `segments bq` and `segments query` commands.

They reach a warehouse the same way the jobs do: the local BigQuery-API server
(default) or Google BigQuery (`--warehouse bigquery --bq_project P`), always
through google-cloud-bigquery.
"""

from __future__ import annotations

import argparse
import sys

from devtools import query, warehouse
from transforms.bigquery import admin
from transforms.bigquery.client import client_for


def port_number(text: str) -> int:
    """argparse type: a TCP port a warehouse may listen on."""
    if not text.isdigit() or not 1024 <= int(text) <= 65525:
        raise argparse.ArgumentTypeError(f"must be a port number from 1024 to 65525, got {text!r}")
    return int(text)


def add_port_argument(parser: argparse.ArgumentParser) -> None:
    """``--warehouse_port``: where a command that starts the local warehouse on demand starts it."""
    parser.add_argument("--warehouse_port", type=port_number, default=None,
                        help=f"REST port of the local warehouse if this command has to start it (gRPC: this + 10). "
                             f"Default: ${warehouse.PORT_ENV}, else {warehouse.DEFAULT_REST_PORT} when free, else a "
                             f"free port. A running warehouse is used whatever its port.")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse", choices=["local", "bigquery"], default="local",
                        help="local: the server `segments warehouse` runs; bigquery: Google BigQuery. Default: local.")
    parser.add_argument("--bq_project", default=None,
                        help=f"Project. Default: {warehouse.DEFAULT_PROJECT} (local); required for bigquery.")
    parser.add_argument("--bq_dataset", default="segments", help="Dataset. Default: segments.")
    add_port_argument(parser)


def client_and_project(args: argparse.Namespace):
    """A client for the chosen warehouse (starting the local one if needed) and its project.

    Raises:
      WarehouseUnreachable: the warehouse does not answer (within about 20 s).
    """
    from transforms.bigquery.loads import check_reachable

    if args.warehouse == "local":
        project = args.bq_project or warehouse.DEFAULT_PROJECT
        info = warehouse.start(project=project, rest_port=args.warehouse_port)
        client = client_for(info["endpoint"], project)
        check_reachable(client, project, args.bq_dataset)
        return client, project
    if not args.bq_project:
        raise ValueError("--warehouse bigquery needs --bq_project")
    from google.cloud import bigquery

    client = bigquery.Client(project=args.bq_project)
    check_reachable(client, args.bq_project, args.bq_dataset)
    return client, args.bq_project


def add_warehouse_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status"], help="What to do with the local warehouse.")
    parser.add_argument("--data_dir", default=None,
                        help="Persistent data directory. Default: .work/warehouse in the project (or "
                             "$SEGMENTS_WAREHOUSE_DIR).")
    parser.add_argument("--port", type=port_number, default=None,
                        help=f"start: REST port on 127.0.0.1 (gRPC: this + 10 when free). Default: "
                             f"${warehouse.PORT_ENV}, else {warehouse.DEFAULT_REST_PORT} when free, else a free port.")


def cmd_warehouse(args: argparse.Namespace, _rest) -> int:
    if args.action == "start":
        info = warehouse.start(args.data_dir, rest_port=args.port)
        print(f"segments warehouse: running at {info['endpoint']} (project {info['project']}, data in "
              f"{info['data_dir']}, log {info.get('log', '-')})")
    elif args.action == "stop":
        info = warehouse.stop(args.data_dir)
        print(f"segments warehouse: stopped (data kept in {info['data_dir']})")
    else:
        info = warehouse.status(args.data_dir)
        if info["state"] == "running":
            print(f"segments warehouse: running at {info['endpoint']} (project {info['project']}, data in "
                  f"{info['data_dir']})")
        else:
            print(f"segments warehouse: stopped (data dir {info['data_dir']})")
            return 3
    return 0


def _retention_days(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 3650:
        raise argparse.ArgumentTypeError(f"must be a number of days from 0 (keep forever) to 3650, got {text!r}")
    return int(text)


def add_bq_arguments(parser: argparse.ArgumentParser) -> None:
    from transforms.bigquery.tables import DEAD_LETTER_RETENTION_DAYS

    parser.add_argument("action", choices=["setup"], help="setup: create the dataset, tables and views (idempotent).")
    parser.add_argument("--location", default=admin.DEFAULT_LOCATION,
                        help=f"Dataset location (BigQuery). Default: {admin.DEFAULT_LOCATION}.")
    parser.add_argument("--dead_letter_retention_days", type=_retention_days, default=None,
                        help=f"Set the partition expiration of dead_letters (payloads hold raw user ids), also on an "
                             f"existing table; 0 keeps them forever. Default: a new table gets "
                             f"{DEAD_LETTER_RETENTION_DAYS} days, an existing one is left as it is.")
    add_target_arguments(parser)


def cmd_bq(args: argparse.Namespace, _rest) -> int:
    from transforms.bigquery.tables import TABLES, Table

    client, project = client_and_project(args)
    made = admin.setup(client, args.bq_dataset, location=args.location, project=project)
    print(f"segments bq setup: {made['dataset']} ready with tables {', '.join(made['tables'])} and views "
          f"{', '.join(made['views'])}")
    if args.dead_letter_retention_days is not None:
        admin.set_partition_expiration(client, project, args.bq_dataset, TABLES[Table.DEAD_LETTERS],
                                       args.dead_letter_retention_days or None)
        print(f"segments bq setup: dead_letters partitions expire after "
              f"{args.dead_letter_retention_days or 'no'} days")
    return 0


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", nargs="?", default=None, help="A SQL query (BigQuery standard SQL).")
    parser.add_argument("--view", choices=list(admin.VIEWS), default=None, help="Print one of the analyst views.")
    parser.add_argument("--max_rows", type=int, default=100, help="Rows to print at most. Default: 100.")
    add_target_arguments(parser)


def cmd_query(args: argparse.Namespace, _rest) -> int:
    if (args.sql is None) == (args.view is None):
        raise ValueError("give either a SQL query or --view NAME")
    client, project = client_and_project(args)
    if args.view:
        text = query.run_view(client, args.bq_dataset, args.view, project=project, max_rows=args.max_rows)
    else:
        text = query.query_table(client, args.sql, max_rows=args.max_rows)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
