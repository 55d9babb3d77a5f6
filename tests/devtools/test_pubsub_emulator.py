"""The Pub/Sub emulator helper: finding it, a clear error without it, start and stop.

The start/stop tests run the real emulator (it is on every project machine and in CI);
they fail, rather than skip, when it is missing.
"""

from __future__ import annotations

import os
import signal
import stat

import pytest

from devtools import pubsub_emulator as pe


def _gone(pid: int) -> bool:
    """Whether neither the process nor its process group exists any more."""
    for probe in (lambda: os.kill(pid, 0), lambda: os.killpg(pid, 0)):
        try:
            probe()
        except ProcessLookupError:
            continue
        return False
    return True


def test_find_emulator_returns_the_sdk_launcher():
    launcher = pe.find_emulator()

    assert launcher.name == "cloud-pubsub-emulator"
    assert launcher.parts[-4:] == ("platform", "pubsub-emulator", "bin", "cloud-pubsub-emulator")
    assert os.access(launcher, os.X_OK)


def test_find_emulator_prefers_cloudsdk_root(tmp_path, monkeypatch):
    launcher = tmp_path / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    launcher.parent.mkdir(parents=True)
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CLOUDSDK_ROOT", str(tmp_path))

    assert pe.find_emulator() == launcher


@pytest.fixture
def no_sdk(tmp_path, monkeypatch):
    """An environment with no Cloud SDK anywhere."""
    monkeypatch.setenv("CLOUDSDK_ROOT", str(tmp_path / "no-sdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(pe, "WELL_KNOWN_SDK_ROOTS", ())


def test_missing_emulator_says_how_to_install_it(no_sdk):
    with pytest.raises(pe.EmulatorNotFound) as raised:
        pe.find_emulator()

    message = str(raised.value)
    assert "gcloud components install pubsub-emulator" in message
    assert "google-cloud-cli-pubsub-emulator" in message


def test_start_without_emulator_raises_before_spawning(no_sdk):
    with pytest.raises(pe.EmulatorNotFound):
        with pe.running():
            pass


def test_missing_java_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(pe.EmulatorNotFound, match="Java"):
        pe._check_java()


@pytest.mark.integration
def test_emulator_starts_serves_and_stops(tmp_path, monkeypatch):
    from google.cloud import pubsub_v1

    monkeypatch.delenv(pe.EMULATOR_HOST_ENV, raising=False)
    with pe.running(project="emulator-test", log_dir=tmp_path) as emulator:
        pid = emulator.pid
        assert os.environ[pe.EMULATOR_HOST_ENV] == emulator.host
        assert emulator.host.startswith("127.0.0.1:")
        assert pe.is_ready(emulator.host)
        topic, subscription = emulator.create_topic_and_subscription("roundtrip", "roundtrip-sub")
        assert (topic, subscription) == (
            "projects/emulator-test/topics/roundtrip", "projects/emulator-test/subscriptions/roundtrip-sub")
        # Creating them again is not an error.
        emulator.create_topic_and_subscription("roundtrip", "roundtrip-sub")

        publisher = pubsub_v1.PublisherClient()
        message_id = publisher.publish(topic, b"hello", kind="greeting").result(timeout=30)
        publisher.stop()
        subscriber = pubsub_v1.SubscriberClient()
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=30)
        subscriber.close()
        received = [(m.message.message_id, m.message.data, dict(m.message.attributes))
                    for m in response.received_messages]

    assert received == [(message_id, b"hello", {"kind": "greeting"})]
    assert _gone(pid)
    assert not pe.is_ready(emulator.host)
    assert pe.EMULATOR_HOST_ENV not in os.environ
    assert emulator.log_path.parent == tmp_path


@pytest.mark.integration
def test_emulator_is_stopped_when_the_block_fails(tmp_path, monkeypatch):
    monkeypatch.setenv(pe.EMULATOR_HOST_ENV, "previous:1")
    with pytest.raises(RuntimeError, match="boom"):
        with pe.running(log_dir=tmp_path) as emulator:
            pid = emulator.pid
            raise RuntimeError("boom")

    assert _gone(pid)
    assert os.environ[pe.EMULATOR_HOST_ENV] == "previous:1"


@pytest.mark.integration
def test_stop_kills_an_emulator_that_ignores_sigterm(tmp_path, monkeypatch):
    emulator = pe.start(log_dir=tmp_path)
    try:
        # Pretend SIGTERM is ignored: only SIGKILL gets through.
        real_killpg = os.killpg
        monkeypatch.setattr(pe.os, "killpg", lambda pgid, sig: None if sig == signal.SIGTERM else real_killpg(pgid, sig))
        pe.stop(emulator, timeout_s=0.5)
    finally:
        monkeypatch.undo()
        pe.stop(emulator)

    assert _gone(emulator.pid)
