"""Starting the local warehouse from several processes at once starts one server, and stop stops it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

from devtools import warehouse as wh

pytestmark = pytest.mark.integration

START = "import json, sys; from devtools import warehouse; print(json.dumps(warehouse.start(sys.argv[1])))"


def test_two_processes_starting_at_once_share_one_server(tmp_path):
    data_dir = tmp_path / "wh"
    env = {k: v for k, v in os.environ.items() if k != wh.PORT_ENV}

    def start():
        result = subprocess.run([sys.executable, "-c", START, str(data_dir)], capture_output=True, text=True,
                                timeout=180, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            first, second = pool.map(lambda _: start(), range(2))
        assert first["pid"] == second["pid"] and first["endpoint"] == second["endpoint"]
        assert wh.serving_pids(data_dir) == [first["pid"]]
    finally:
        wh.stop(data_dir)
    assert wh.serving_pids(data_dir) == []
    assert wh.status(data_dir)["state"] == "stopped"


def test_stop_also_ends_a_server_the_state_file_lost(tmp_path):
    data_dir = tmp_path / "wh"
    info = wh.start(data_dir, rest_port=wh.free_port())
    (data_dir / wh.STATE_FILE).unlink()  # as an older release could leave it
    assert wh.status(data_dir)["state"] == "stopped"
    assert wh.serving_pids(data_dir) == [info["pid"]]
    wh.stop(data_dir)
    assert wh.serving_pids(data_dir) == []


def test_the_port_comes_from_the_environment(tmp_path, monkeypatch):
    port = wh.free_port()
    monkeypatch.setenv(wh.PORT_ENV, str(port))
    info = wh.start(tmp_path / "wh")
    try:
        assert info["endpoint"] == f"http://127.0.0.1:{port}"
    finally:
        wh.stop(tmp_path / "wh")
    monkeypatch.setenv(wh.PORT_ENV, "80")
    with pytest.raises(ValueError, match="port number"):
        wh.start(tmp_path / "wh2")
