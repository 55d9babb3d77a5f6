"""The local warehouse: a real BigQuery API (bqemulator, DuckDB-backed) on loopback.

Lifecycle::

    from devtools import warehouse
    info = warehouse.start()            # detached; state in .work/warehouse/state.json
    warehouse.status()                  # {"state": "running", "endpoint": ...}
    client = transforms.bigquery.client.client_for(info["endpoint"], info["project"])
    warehouse.stop()

    with warehouse.ephemeral() as wh:   # tests and demos: free ports, temp data dir
        wh.client.query("SELECT 1").result()

The default data directory is ``<project root>/.work/warehouse``, where the project root
is the nearest ancestor of the current directory holding ``pyproject.toml`` (else the
current directory); ``SEGMENTS_WAREHOUSE_DIR`` overrides it. The server binds 127.0.0.1
only, runs ``bqemulator start --persistent`` found next to ``sys.executable``, and logs to
``<data dir>/bqemulator.log``.

Ports: an explicit ``rest_port`` (``segments warehouse start --port``, ``--warehouse_port``
of the commands that start it on demand, or ``SEGMENTS_WAREHOUSE_PORT``) must be free;
without one, 9050 is used when free and any free port otherwise (another checkout's
warehouse may hold 9050). The gRPC port is the REST port + 10 when free. Commands find a
running warehouse by its data directory's state file, whatever its port.

Starting and stopping hold an exclusive lock on ``<data dir>/.lock``: two processes
starting the warehouse at once start one server, and the second uses it. `stop` also
ends any bqemulator still serving the data directory without being recorded (an orphan
of an older release).

Emulator deviations found by probing bqemulator 1.4.0 (duckdb 1.5.5), and how this
project guards against them:

* Start-up needs DuckDB's ``spatial`` extension and tries to download it; offline that
  fails. `ensure_duckdb_extensions` installs ``spatial`` and ``avro`` from the PyPI
  wheels (``duckdb-extension-spatial``/``-avro``) into DuckDB's extension directory first.
* Multipart uploads fail ("second part has unsupported Content-Type */*"); resumable
  uploads work. The local sink calls ``load_table_from_file`` without ``size``, which
  makes google-cloud-bigquery use a resumable upload.
* Avro loads with ``use_avro_logical_types=True`` read ``timestamp-micros`` exactly
  (microsecond precision round-trips).
* A missing REQUIRED field is stored as NULL, unknown fields are dropped silently, a bad
  value answers HTTP 500 (the client retries for 10 minutes): rows are validated with
  `transforms.bigquery.tables.validate_row` before writing; failures become dead letters.
* ``PARTITION BY`` / ``CLUSTER BY`` in DDL are accepted but ignored; partitioning and
  clustering given through the tables API (``Table.time_partitioning``,
  ``clustering_fields``) are kept. `transforms.bigquery.admin.setup` therefore creates tables
  through the API; the DDL files are for real BigQuery.
* ``MERGE ... WHEN NOT MATCHED THEN INSERT ROW`` is a parse error; an explicit column
  list works, as do ``WHEN MATCHED AND <cond> THEN UPDATE SET``, ``DELETE``, ``QUALIFY``
  and ``CREATE OR REPLACE VIEW``.
* ``PERCENTILE_CONT`` is accepted as a plain aggregate (real BigQuery only allows it as an
  analytic function): views use the analytic form, valid on both.
* Unaliased expression columns get DuckDB-style names (``_col_0``, the translated SQL):
  every computed column in the views is aliased.
* Beam's DIRECT_READ deletes every dataset in the emulator: never read it with Beam's
  BigQuery source; read with google-cloud-bigquery queries.
* ``tables.delete`` on a view answers HTTP 500 (DuckDB is asked to drop a table); ``DROP
  VIEW`` works. Views keep their labels and return no ``view_query``, so `bq_admin`
  recognises its own views by a digest label, not by their text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from transforms.bigquery.client import LOCAL_PROJECT, client_for

_LOG = logging.getLogger(__name__)

DEFAULT_PROJECT = LOCAL_PROJECT
DEFAULT_REST_PORT = 9050
HOST = "127.0.0.1"
STATE_FILE = "state.json"
LOG_FILE = "bqemulator.log"
LOCK_FILE = ".lock"
PORT_ENV = "SEGMENTS_WAREHOUSE_PORT"
_DUCKDB_EXTENSIONS = ("spatial", "avro")


def default_data_dir() -> Path:
    """``$SEGMENTS_WAREHOUSE_DIR``, else ``<project root or cwd>/.work/warehouse``."""
    env = os.environ.get("SEGMENTS_WAREHOUSE_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd().resolve()
    for d in (cwd, *cwd.parents):
        if (d / "pyproject.toml").is_file():
            return d / ".work" / "warehouse"
    return cwd / ".work" / "warehouse"


def _executable() -> str:
    candidate = Path(sys.executable).parent / "bqemulator"
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(
        f"bqemulator not found next to {sys.executable}; install the 'local' extra: "
        "pip install 'behavioural-segments[local]'"
    )


def ensure_duckdb_extensions() -> None:
    """Installs DuckDB's spatial and avro extensions from their PyPI wheels (idempotent).

    bqemulator runs ``INSTALL spatial`` at start, which downloads unless the extension is
    already in DuckDB's extension directory.
    """
    import duckdb

    con = duckdb.connect()
    try:
        installed = {
            name
            for name, ok in con.sql(
                "SELECT extension_name, installed FROM duckdb_extensions()"
            ).fetchall()
            if ok
        }
        missing = [name for name in _DUCKDB_EXTENSIONS if name not in installed]
        if missing:
            from duckdb_extensions import import_extension

            for name in missing:
                import_extension(name, con=con)
                _LOG.info("Installed DuckDB extension %s from its wheel", name)
    finally:
        con.close()


def _state_path(data_dir: Path) -> Path:
    return Path(data_dir) / STATE_FILE


def _read_state(data_dir: Path) -> dict | None:
    try:
        return json.loads(_state_path(data_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (ours, not reaped yet) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def _ready(endpoint: str, project: str) -> bool:
    url = f"{endpoint}/bigquery/v2/projects/{project}/datasets"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_in_use(port: int) -> bool:
    """Whether something already listens on 127.0.0.1:`port`."""
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def configured_port() -> int | None:
    """``SEGMENTS_WAREHOUSE_PORT`` as a port number, or None when unset.

    Raises:
      ValueError: the variable is not a port number.
    """
    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1024 <= int(text) <= 65525:
        raise ValueError(f"{PORT_ENV} must be a port number from 1024 to 65525, got {text!r}")
    return int(text)


@contextlib.contextmanager
def _locked(data_dir: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Holds the data directory's lock (processes on this machine wait for each other)."""
    with open(Path(data_dir) / LOCK_FILE, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another process has held {handle.name} for {timeout_s:g} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _choose_ports(rest_port: int | None, grpc_port: int | None) -> tuple[int, int]:
    explicit = rest_port if rest_port is not None else configured_port()
    if explicit is not None:
        busy = [port for port in (explicit, grpc_port) if port is not None and port_in_use(port)]
        if busy:
            raise RuntimeError(
                f"port {busy[0]} on {HOST} is already in use (another warehouse, from another directory?): stop it "
                f"with `segments warehouse stop` there, or choose another port")
        rest = explicit
    else:
        rest = DEFAULT_REST_PORT if not port_in_use(DEFAULT_REST_PORT) else free_port()
        if rest != DEFAULT_REST_PORT:
            _LOG.warning("port %d is taken: the warehouse uses port %d", DEFAULT_REST_PORT, rest)
    if grpc_port is None:
        grpc_port = rest + 10 if rest + 10 <= 65535 and not port_in_use(rest + 10) else free_port()
    return rest, grpc_port


def start(
    data_dir: Path | str | None = None,
    rest_port: int | None = None,
    grpc_port: int | None = None,
    project: str = DEFAULT_PROJECT,
    timeout_s: float = 60.0,
) -> dict:
    """Starts the warehouse detached in the background, or reports the running one.

    Safe to call from several processes at once (see the module docstring).

    Args:
        data_dir: persistent data directory (default: `default_data_dir()`).
        rest_port / grpc_port: ports on 127.0.0.1; None: see the module docstring.
        project: default project id.
        timeout_s: how long to wait for the REST API to answer.

    Returns:
        The state: pid, endpoint, grpc_endpoint, project, data_dir, log.

    Raises:
        RuntimeError: when a port is taken, or the server exits or does not become ready in time.
    """
    data_dir = Path(data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        current = status(data_dir)
        if current["state"] == "running":
            return current
        _stop_orphans(data_dir)
        rest_port, grpc_port = _choose_ports(rest_port, grpc_port)
        return _launch(data_dir, rest_port, grpc_port, project, timeout_s)


def _launch(data_dir: Path, rest_port: int, grpc_port: int, project: str, timeout_s: float) -> dict:
    ensure_duckdb_extensions()
    log_path = data_dir / LOG_FILE
    cmd = [
        _executable(), "start", "--persistent", "--data-dir", str(data_dir),
        "--rest-host", HOST, "--rest-port", str(rest_port),
        "--grpc-host", HOST, "--grpc-port", str(grpc_port),
        "--project", project, "--log-format", "console", "--log-level", "warning",
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=data_dir,
        )
    endpoint = f"http://{HOST}:{rest_port}"
    info = {
        "pid": proc.pid,
        "endpoint": endpoint,
        "grpc_endpoint": f"{HOST}:{grpc_port}",
        "project": project,
        "data_dir": str(data_dir),
        "log": str(log_path),
    }
    _state_path(data_dir).write_text(json.dumps(info, indent=2))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _state_path(data_dir).unlink(missing_ok=True)
            raise RuntimeError(f"bqemulator exited with {proc.returncode}; see {log_path}")
        if _ready(endpoint, project):
            _LOG.info("Warehouse running at %s (data in %s)", endpoint, data_dir)
            return dict(info, state="running")
        time.sleep(0.25)
    _terminate(proc.pid)
    _state_path(data_dir).unlink(missing_ok=True)
    raise RuntimeError(f"bqemulator did not answer on {endpoint} within {timeout_s}s; see {log_path}")


def serving_pids(data_dir: Path | str) -> list[int]:
    """Processes of this user running bqemulator on `data_dir` (Linux: read from /proc; elsewhere none)."""
    target = str(Path(data_dir).resolve())
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode("utf-8", "replace") for a in argv]
        if any(a.endswith("bqemulator") for a in args[:2]) and "--data-dir" in args:
            where = args[args.index("--data-dir") + 1] if args.index("--data-dir") + 1 < len(args) else ""
            if where == target and _pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _stop_orphans(data_dir: Path) -> None:
    """Ends bqemulator processes serving `data_dir` that the state file does not record."""
    state = _read_state(data_dir)
    recorded = int(state["pid"]) if state else None
    for pid in serving_pids(data_dir):
        if pid != recorded:
            _LOG.warning("stopping an unrecorded warehouse process %d on %s", pid, data_dir)
            _terminate(pid)


def _terminate(pid: int, timeout_s: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def stop(data_dir: Path | str | None = None) -> dict:
    """Stops the warehouse of `data_dir` (and any unrecorded one serving it); no-op when none runs."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    if not data_dir.is_dir():
        return {"state": "stopped", "data_dir": str(data_dir)}
    with _locked(data_dir):
        state = _read_state(data_dir)
        if state and _pid_alive(int(state["pid"])):
            _terminate(int(state["pid"]))
        _state_path(data_dir).unlink(missing_ok=True)
        _stop_orphans(data_dir)
    return {"state": "stopped", "data_dir": str(data_dir)}


def status(data_dir: Path | str | None = None) -> dict:
    """``{"state": "running", "endpoint": ..., ...}`` or ``{"state": "stopped", ...}``."""
    data_dir = Path(data_dir or default_data_dir()).resolve()
    state = _read_state(data_dir)
    if state and _pid_alive(int(state["pid"])) and _ready(state["endpoint"], state["project"]):
        return dict(state, state="running")
    return {"state": "stopped", "data_dir": str(data_dir)}


def with_endpoint(argv: Sequence[str], kind: str = "local", project: str | None = None,
                  port: int | None = None) -> list[str]:
    """A job's command line with ``--bq_endpoint`` of the local warehouse, started if needed.

    The jobs never start servers: the commands that launch them do, here. Nothing is
    added for ``--warehouse bigquery`` or when ``--bq_endpoint`` is given. `port`: see `start`.
    """
    argv = list(argv)
    if kind != "local" or any(a == "--bq_endpoint" or a.startswith("--bq_endpoint=") for a in argv):
        return argv
    return argv + ["--bq_endpoint", start(project=project or DEFAULT_PROJECT, rest_port=port)["endpoint"]]


@dataclasses.dataclass
class Warehouse:
    """A running warehouse: endpoint, project and a client pointed at it."""

    endpoint: str
    project: str
    data_dir: Path
    client: object


@contextlib.contextmanager
def ephemeral(project: str = DEFAULT_PROJECT, data_dir: Path | str | None = None) -> Iterator[Warehouse]:
    """Starts a throwaway warehouse on free ports (temp data dir by default); stops it after."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="warehouse-"))
        info = start(data_dir, rest_port=free_port(), grpc_port=free_port(), project=project)
        try:
            yield Warehouse(info["endpoint"], project, Path(data_dir), client_for(info["endpoint"], project))
        finally:
            stop(data_dir)
