"""The dependency locks against pyproject.toml, against each other and against this venv.

Parsed here with `packaging` (not with `devtools.locks`' own reader), so a reader that
skipped pins could not hide a package the lock lacks.
"""

from __future__ import annotations

import os
import pathlib
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devtools import locks

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCKS = ROOT / "locks"
PIN = re.compile(r"^(\S+?)==(\S+)(?: \\)?$")


def pins(path: pathlib.Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def project() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def declared(extra: str | None) -> list[Requirement]:
    """What pyproject.toml asks of one set: the base dependencies, the extra's own
    (following the self-reference `behavioural-segments[local]`) and the build tools."""
    data = project()
    found = [Requirement(text) for text in data["project"]["dependencies"]]
    found += [Requirement(text) for text in data["build-system"]["requires"]]
    pending = [extra] if extra else []
    while pending:
        for text in data["project"]["optional-dependencies"][pending.pop()]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(data["project"]["name"]):
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("name, extra", [("base", None), ("local", "local"), ("dev", "dev")])
def test_every_declared_dependency_is_locked_within_its_range(name, extra):
    locked = pins(LOCKS / f"{name}.txt")
    problems = []
    for requirement in declared(extra):
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name}: not in locks/{name}.txt")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}: {version} outside {requirement.specifier}")
    assert problems == [], "run: make lock"


def test_every_pin_carries_a_hash():
    for path in sorted(LOCKS.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if PIN.match(line):
                assert lines[index + 1].lstrip().startswith("--hash=sha256:"), f"{path.name}: {line}"


def test_a_package_has_one_version_in_all_locks():
    dev, local, base = (pins(LOCKS / f"{name}.txt") for name in ("dev", "local", "base"))
    assert set(base) <= set(local) <= set(dev)
    assert {name: dev[name] for name in local} == local
    assert {name: dev[name] for name in base} == base


def test_this_environment_is_the_lock():
    # `make test` installs locks/dev.txt; `make test-latest` points SEGMENTS_LOCK at its own.
    lock = pathlib.Path(os.environ.get("SEGMENTS_LOCK", LOCKS / "dev.txt"))
    from importlib.metadata import distributions

    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in distributions()}
    installed.pop("pip", None)  # the venv's own installer, never locked
    installed.pop(canonicalize_name(project()["project"]["name"]), None)
    assert installed == pins(lock)


def test_differences_name_missing_changed_and_extra_packages():
    expected = {"a": "1", "b": "2", "pip": "9"}
    actual = {"a": "1", "b": "3", "c": "4", locks.PROJECT: "0.1"}
    assert locks.differences(expected, actual, exact=False) == [("b", "2", "3")]
    assert locks.differences(expected, actual, exact=True) == [("b", "2", "3"), ("c", None, "4")]
    assert locks.differences({"d": "1"}, {}, exact=False) == [("d", "1", None)]


def test_read_lock_agrees_with_an_independent_parse():
    for path in sorted(LOCKS.glob("*.txt")):
        assert locks.read_lock(path) == pins(path)


def test_compile_command_constrains_local_and_base_by_dev(tmp_path):
    build_in = tmp_path / "build.in"
    dev = locks.compile_command("uv", tmp_path / "dev.txt", "dev", None, build_in)
    base = locks.compile_command("uv", tmp_path / "base.txt", None, tmp_path / "dev.txt", build_in)
    assert "--upgrade" in dev and "--generate-hashes" in dev and dev[dev.index("--extra") + 1] == "dev"
    assert "--constraint" not in dev
    assert base[base.index("--constraint") + 1] == str(tmp_path / "dev.txt") and "--extra" not in base
    assert str(build_in) in dev and str(build_in) in base
