"""Polling helper for tests that watch a live server or a streaming job."""

import time


def wait_for(condition, what, timeout_s: float = 30.0, poll_s: float = 0.2):
    """Returns `condition()`'s first truthy value; fails the test after `timeout_s`.

    `what` names what is awaited: a string, or a callable giving the current state.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what() if callable(what) else what}")
