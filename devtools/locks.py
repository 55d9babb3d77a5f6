"""The dependency locks: every install of the project takes exactly these versions.

``locks/`` holds three files generated from ``pyproject.toml`` by ``uv pip compile``,
every transitive package pinned with its hashes:

* ``dev.txt``: the project with the ``dev`` extra (tests), resolved first, at the newest
  versions ``pyproject.toml`` allows;
* ``local.txt``: the ``local`` extra (the demo's warehouse and report), and
* ``base.txt``: what the workers and the Flex Template image need;
  both resolved under ``dev.txt`` as a constraint, so a package has one version in all
  three. Each includes the build tools (``[build-system] requires``): the project is
  installed without build isolation, so nothing unlocked is downloaded to build it.

Commands (standard library only: they run before and outside the project's venv)::

    python -m devtools.locks compile --uv UV --out locks   # make lock
    python -m devtools.locks check-installed locks/dev.txt # after an install
    python -m devtools.locks diff locks/dev.txt OTHER      # make test-latest
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib
from typing import Optional, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCKS = ROOT / "locks"
# (lock name, extra of pyproject.toml or None for the base dependencies), dev first:
# the others are resolved under it.
SETS = (("dev", "dev"), ("local", "local"), ("base", None))
PYTHON_VERSION = "3.11"
COMPILE_COMMAND = "make lock"
# Installed by `python -m venv`, never by the lock: the installer itself.
NOT_LOCKED = frozenset({"pip"})
# The project itself, installed editable on top of the lock.
PROJECT = "behavioural-segments"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised name: ``Google_Cloud.BigQuery`` -> ``google-cloud-bigquery``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: pathlib.Path) -> dict[str, str]:
    """``{canonical name: version}`` of every pin in a lock file."""
    pins = {}
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of the distributions of this interpreter."""
    return {canonical(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}


def differences(expected: dict[str, str], actual: dict[str, str], exact: bool) -> list[tuple[str, Optional[str], Optional[str]]]:
    """``(name, expected version, actual version)`` where ``actual`` lacks a package of
    ``expected`` or has it at another version (and, when ``exact``, where it has a
    package ``expected`` does not name), sorted by name; None where a side lacks it."""
    found = []
    for name in sorted(set(expected) | set(actual)):
        if name in NOT_LOCKED or name == PROJECT:
            continue
        want, have = expected.get(name), actual.get(name)
        if want != have and (want is not None or exact):
            found.append((name, want, have))
    return found


def build_requirements(pyproject: pathlib.Path = PYPROJECT) -> list[str]:
    """The ``[build-system] requires`` of pyproject.toml: the editable install builds
    the project without isolation, with these locked tools."""
    with pyproject.open("rb") as handle:
        return list(tomllib.load(handle)["build-system"]["requires"])


def compile_command(uv: str, out: pathlib.Path, extra: Optional[str], constraint: Optional[pathlib.Path],
                    build_in: pathlib.Path) -> list[str]:
    command = [uv, "pip", "compile", "--quiet", "--generate-hashes", "--python-version", PYTHON_VERSION,
               "--custom-compile-command", COMPILE_COMMAND, "--upgrade", str(PYPROJECT), str(build_in)]
    if extra:
        command += ["--extra", extra]
    if constraint:
        command += ["--constraint", str(constraint)]
    return command + ["--output-file", str(out)]


def compile_locks(uv: str, out_dir: pathlib.Path) -> None:
    """Writes dev.txt, local.txt and base.txt into ``out_dir`` (see the module doc)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        build_in = pathlib.Path(scratch) / "build-system.in"
        build_in.write_text("\n".join(build_requirements()) + "\n", encoding="utf-8")
        dev = out_dir / "dev.txt"
        for name, extra in SETS:
            constraint = None if name == "dev" else dev
            subprocess.run(compile_command(uv, out_dir / f"{name}.txt", extra, constraint, build_in),
                           check=True, cwd=ROOT)
    for name, _extra in SETS:
        # "# via -r <input>" names the build tools' input, a temporary file: give it a stable name.
        path = out_dir / f"{name}.txt"
        path.write_text(path.read_text(encoding="utf-8").replace(str(build_in), "build-system.in"),
                        encoding="utf-8")
        print(f"{path}: {len(read_lock(path))} packages")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.locks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser("compile", help="Write dev.txt, local.txt and base.txt.")
    compile_parser.add_argument("--uv", required=True, help="The uv executable.")
    compile_parser.add_argument("--out", type=pathlib.Path, default=LOCKS, help="Folder to write. Default: locks/.")
    check = commands.add_parser("check-installed",
                                help="Exit 1 unless this interpreter has every package of LOCK at its version.")
    check.add_argument("lock", type=pathlib.Path)
    check.add_argument("--exact", action="store_true", help="Also fail on packages the lock does not name.")
    diff = commands.add_parser("diff", help="List the packages whose version differs between two locks.")
    diff.add_argument("old", type=pathlib.Path)
    diff.add_argument("new", type=pathlib.Path)
    args = parser.parse_args(argv)
    if args.command == "compile":
        compile_locks(args.uv, args.out)
        return 0
    if args.command == "check-installed":
        found = differences(read_lock(args.lock), installed(), exact=args.exact)
        for name, locked, have in found:
            print(f"{args.lock}: {name} {locked or 'not locked'}, installed {have or 'not'}", file=sys.stderr)
        return 1 if found else 0
    found = differences(read_lock(args.old), read_lock(args.new), exact=True)
    print(f"{len(found)} packages differ between {args.old} and {args.new}" + (":" if found else ""))
    for name, old_version, new_version in found:
        print(f"  {name}: {old_version or '-'} -> {new_version or '-'}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
