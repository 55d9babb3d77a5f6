"""Google's Pub/Sub emulator on loopback, for local live mode and tests.

The emulator comes with the Google Cloud SDK: the `cloud-pubsub-emulator` launcher under
``<SDK root>/platform/pubsub-emulator/bin/``. It is a Java program (needs `java` on PATH
or ``JAVA_HOME``). Install it with one of::

    gcloud components install pubsub-emulator
    sudo apt-get install google-cloud-cli-pubsub-emulator      # SDK installed with apt

Use::

    from devtools import pubsub_emulator

    with pubsub_emulator.running(project="segments-local") as emulator:
        # PUBSUB_EMULATOR_HOST is set while the block runs (and restored after).
        topic, subscription = emulator.create_topic_and_subscription("events", "events-sub")
        ...                     # publish to `topic`, read `subscription` with Beam

The server binds 127.0.0.1 on a free port, logs to a file, and runs in its own process
group; `stop` (and leaving `running`, whatever the reason) ends the whole group, so the
`java` the launcher starts goes too. As a further guard, the child gets SIGTERM if the
Python thread that started it dies (Linux ``PR_SET_PDEATHSIG``), and an ``atexit`` hook
stops emulators still running when the interpreter exits.

Emulator behaviour to know (probed with emulator 0.8.20): every project name is valid
unless ``--projects`` is given; readiness is an HTTP ``GET /`` answering "Ok"; the
launcher ``exec``s java, so the launcher pid is the java pid.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

_LOG = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PROJECT = "segments-local"
EMULATOR_HOST_ENV = "PUBSUB_EMULATOR_HOST"
LAUNCHER_RELATIVE = Path("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
# Where package managers put the SDK, tried before asking `gcloud info` (which takes seconds).
WELL_KNOWN_SDK_ROOTS = (
    Path("/usr/lib/google-cloud-sdk"),
    Path("/usr/share/google-cloud-sdk"),
    Path("/opt/google-cloud-sdk"),
    Path("/snap/google-cloud-cli/current"),
    Path("/snap/google-cloud-sdk/current"),
    Path.home() / "google-cloud-sdk",
)
INSTALL_HINT = (
    "Install Google's Pub/Sub emulator: `gcloud components install pubsub-emulator`, or, when the "
    "Cloud SDK came from apt, `sudo apt-get install google-cloud-cli-pubsub-emulator`. "
    "It needs Java (a JRE 11+ on PATH or JAVA_HOME)."
)


class EmulatorNotFound(FileNotFoundError):
    """The Pub/Sub emulator (or the Java it needs) is not installed."""


class EmulatorFailed(RuntimeError):
    """The emulator exited or did not become ready."""


# ---------------------------------------------------------------------------
# Finding the launcher


def _sdk_root_candidates() -> Iterator[Path]:
    env_root = os.environ.get("CLOUDSDK_ROOT")
    if env_root:
        yield Path(env_root)
    gcloud = shutil.which("gcloud")
    if gcloud:
        # <root>/bin/gcloud, often behind a symlink such as /usr/bin/gcloud.
        yield Path(gcloud).resolve().parent.parent
    yield from WELL_KNOWN_SDK_ROOTS


def _sdk_root_from_gcloud(timeout_s: float = 30.0) -> Optional[Path]:
    gcloud = shutil.which("gcloud")
    if not gcloud:
        return None
    try:
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True, text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    root = out.stdout.strip()
    return Path(root) if out.returncode == 0 and root else None


def find_emulator() -> Path:
    """The `cloud-pubsub-emulator` launcher.

    Looks under ``$CLOUDSDK_ROOT``, the SDK holding the `gcloud` on PATH and the usual
    install locations; asks ``gcloud info`` only when those fail (it is slow).

    Raises:
      EmulatorNotFound: no launcher was found; the message says how to install it.
    """
    tried = []
    for root in _sdk_root_candidates():
        launcher = root / LAUNCHER_RELATIVE
        tried.append(str(launcher))
        if launcher.is_file() and os.access(launcher, os.X_OK):
            return launcher
    root = _sdk_root_from_gcloud()
    if root is not None:
        launcher = root / LAUNCHER_RELATIVE
        tried.append(str(launcher))
        if launcher.is_file() and os.access(launcher, os.X_OK):
            return launcher
    raise EmulatorNotFound(f"Pub/Sub emulator not found (looked for {', '.join(dict.fromkeys(tried))}). {INSTALL_HINT}")


def _check_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return
    if shutil.which("java"):
        return
    raise EmulatorNotFound(f"the Pub/Sub emulator needs Java, and no `java` is on PATH or in JAVA_HOME. {INSTALL_HINT}")


# ---------------------------------------------------------------------------
# Process lifecycle


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def is_ready(host_port: str, timeout_s: float = 2.0) -> bool:
    """Whether an emulator answers at ``host:port``."""
    try:
        with urllib.request.urlopen(f"http://{host_port}/", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


_PR_SET_PDEATHSIG = 1
try:
    _LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover - exotic libc
    _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_RUNNING: set["PubSubEmulator"] = set()
_RUNNING_LOCK = threading.Lock()


@dataclasses.dataclass(eq=False)
class PubSubEmulator:
    """A running emulator.

    Attributes:
      host: the ``PUBSUB_EMULATOR_HOST`` value, ``127.0.0.1:PORT``.
      project: the project used for topic and subscription paths.
      log_path: the server's stdout and stderr.
      process: the launcher process (the leader of its own process group).
    """

    host: str
    project: str
    log_path: Path
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def create_topic_and_subscription(self, topic: str, subscription: str,
                                      ack_deadline_s: int = 60) -> tuple[str, str]:
        """Creates a topic and a pull subscription to it (no-op for those that exist).

        Returns:
          (topic path, subscription path).
        """
        return create_topic_and_subscription(self.host, self.topic_path(topic),
                                             self.subscription_path(subscription), ack_deadline_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the emulator's whole process group (idempotent)."""
        stop(self, timeout_s)


def start(project: str = DEFAULT_PROJECT, port: Optional[int] = None, log_dir: Optional[Path | str] = None,
          timeout_s: float = 60.0) -> PubSubEmulator:
    """Starts the emulator on 127.0.0.1 and waits until it answers.

    Args:
      project: project for topic and subscription paths (the emulator accepts any).
      port: TCP port; a free one when None.
      log_dir: directory for ``pubsub-emulator-<port>.log``; the system temp dir when None.
      timeout_s: how long to wait for readiness.

    Returns:
      The running emulator; stop it with `stop` (or use `running`).

    Raises:
      EmulatorNotFound: the emulator or Java is missing (the message says how to install).
      EmulatorFailed: it exited, or did not answer within `timeout_s`.
    """
    launcher = find_emulator()
    _check_java()
    port = port or free_port()
    host = f"{HOST}:{port}"
    log_path = Path(log_dir or tempfile.gettempdir()) / f"pubsub-emulator-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(launcher), f"--host={HOST}", f"--port={port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    emulator = PubSubEmulator(host=host, project=project, log_path=log_path, process=process)
    with _RUNNING_LOCK:
        _RUNNING.add(emulator)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmulatorFailed(f"the Pub/Sub emulator exited with {process.returncode}; see {log_path}")
            if is_ready(host):
                _LOG.info("Pub/Sub emulator running at %s (log: %s)", host, log_path)
                return emulator
            time.sleep(0.2)
        raise EmulatorFailed(f"the Pub/Sub emulator did not answer on {host} within {timeout_s}s; see {log_path}")
    except BaseException:
        stop(emulator)
        raise


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(emulator: PubSubEmulator, timeout_s: float = 10.0) -> None:
    """Stops the emulator: SIGTERM to its process group, SIGKILL after `timeout_s`."""
    process = emulator.process
    pgid = process.pid  # start_new_session: the launcher leads its own group
    with _RUNNING_LOCK:
        _RUNNING.discard(emulator)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.poll()  # reaps the leader once it has exited
        if process.returncode is not None and not _group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        _LOG.warning("Pub/Sub emulator (pid %d) ignored SIGTERM for %ss; killing it", pgid, timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)


@atexit.register
def _stop_leftovers() -> None:
    with _RUNNING_LOCK:
        leftovers = list(_RUNNING)
    for emulator in leftovers:
        stop(emulator, timeout_s=5.0)


@contextlib.contextmanager
def emulator_env(host: str) -> Iterator[None]:
    """Sets ``PUBSUB_EMULATOR_HOST`` for the block, then restores the previous value."""
    previous = os.environ.get(EMULATOR_HOST_ENV)
    os.environ[EMULATOR_HOST_ENV] = host
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(EMULATOR_HOST_ENV, None)
        else:
            os.environ[EMULATOR_HOST_ENV] = previous


@contextlib.contextmanager
def running(project: str = DEFAULT_PROJECT, port: Optional[int] = None, log_dir: Optional[Path | str] = None,
            set_env: bool = True, timeout_s: float = 60.0) -> Iterator[PubSubEmulator]:
    """Runs an emulator for the block and stops it afterwards, whatever happens.

    Args:
      project, port, log_dir, timeout_s: as for `start`.
      set_env: also set ``PUBSUB_EMULATOR_HOST`` for the block (Beam's Pub/Sub I/O and
        google-cloud-pubsub clients made in this process then talk to the emulator).
    """
    emulator = start(project=project, port=port, log_dir=log_dir, timeout_s=timeout_s)
    try:
        with emulator_env(emulator.host) if set_env else contextlib.nullcontext():
            yield emulator
    finally:
        stop(emulator)


# ---------------------------------------------------------------------------
# Admin


def create_topic_and_subscription(host: str, topic_path: str, subscription_path: str,
                                  ack_deadline_s: int = 60) -> tuple[str, str]:
    """Creates `topic_path` and a pull subscription `subscription_path` on the emulator at `host`.

    Existing ones are kept. Returns (topic path, subscription path).
    """
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    with emulator_env(host):
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
    try:
        with contextlib.suppress(exceptions.AlreadyExists):
            publisher.create_topic(name=topic_path)
        with contextlib.suppress(exceptions.AlreadyExists):
            subscriber.create_subscription(
                name=subscription_path, topic=topic_path, ack_deadline_seconds=ack_deadline_s)
    finally:
        subscriber.close()
        publisher.transport.close()
    return topic_path, subscription_path
