"""The development runner restarts a crashed service with backoff and says so, instead of
stopping everything; and it keeps the secret key out of output that may be shipped."""

from __future__ import annotations

import io
import os
import signal
import sys

import pytest

from services.devrun import Prepared, check_dev_keys, secret_key_line
from services.supervisor import Supervisor
from shared.environments import EnvironmentKeys
from shared.settings import Settings

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait_exit(supervisor: Supervisor, name: str) -> None:
    proc = supervisor.children[name].proc
    assert proc is not None
    proc.wait(timeout=20)


def test_a_crashed_service_is_restarted_with_growing_backoff_and_a_line() -> None:
    out, clock = io.StringIO(), Clock()
    supervisor = Supervisor({"crasher": CRASH, "steady": SLEEP}, os.environ, out, clock)
    supervisor.start_all()
    steady = supervisor.pid("steady")
    try:
        delays = []
        for _ in range(3):
            _wait_exit(supervisor, "crasher")
            supervisor.check()  # noticed: restart scheduled
            line = out.getvalue().splitlines()[-1]
            assert line.startswith("crasher exited with code 3; restarting it in "), line
            delays.append(int(line.rsplit(" ", 1)[1].rstrip("s")))
            supervisor.check()
            assert supervisor.pid("crasher") is None  # not before its delay
            clock.now += delays[-1]
            supervisor.check()
            assert out.getvalue().splitlines()[-1].startswith("crasher restarted (pid ")
        assert delays == [1, 2, 4]
        assert supervisor.restarts("crasher") == 3
        assert supervisor.pid("steady") == steady  # the others are left alone
    finally:
        supervisor.stop_all()
    assert supervisor.pid("steady") is None


def test_kill_9_of_a_service_is_restarted_and_backoff_resets_once_stable() -> None:
    out, clock = io.StringIO(), Clock()
    supervisor = Supervisor({"svc": SLEEP}, os.environ, out, clock)
    supervisor.start_all()
    try:
        for _ in range(2):
            clock.now += 120  # up long enough to count as stable
            pid = supervisor.pid("svc")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            _wait_exit(supervisor, "svc")
            supervisor.check()
            assert out.getvalue().splitlines()[-1] == (
                "svc was killed by SIGKILL; restarting it in 1s"
            )
            clock.now += 1
            supervisor.check()
            assert supervisor.pid("svc") not in (None, pid)
    finally:
        supervisor.stop_all()


def _prepared(new_secret: bool) -> Prepared:
    keys = EnvironmentKeys(id=1, name="development", writeKey="wk_1", secretKey="sk_secret")
    return Prepared(keys, new_secret=new_secret, keys_file=".data/dev-keys.json")


def test_the_secret_key_is_printed_once_to_a_terminal_only() -> None:
    plain = Settings()
    assert "sk_secret" in secret_key_line(_prepared(True), plain, terminal=True)
    for prepared, terminal in ((_prepared(True), False), (_prepared(False), True)):
        line = secret_key_line(prepared, plain, terminal=terminal)
        assert "sk_secret" not in line and ".data/dev-keys.json" in line
    given = Settings(dev_secret_key="sk_secret")  # noqa: S106
    assert secret_key_line(_prepared(False), given, terminal=True) == (
        "from SEGMENTS_DEV_SECRET_KEY"
    )


def test_unsafe_or_unusable_dev_keys_are_refused() -> None:
    good_w, good_s = "wk_" + "a" * 30, "sk_" + "b" * 40
    check_dev_keys(Settings(dev_write_key=good_w, dev_secret_key=good_s))
    check_dev_keys(Settings())  # none given: they are generated
    for write, secret, variable in (
        ("wk_dev_change_me", good_s, "SEGMENTS_DEV_WRITE_KEY"),
        (good_w, "sk_dev_change_me", "SEGMENTS_DEV_SECRET_KEY"),
        (good_w, "x" * 40, "SEGMENTS_DEV_SECRET_KEY"),
        ("sk_" + "c" * 30, good_s, "SEGMENTS_DEV_WRITE_KEY"),
    ):
        with pytest.raises(SystemExit) as refused:
            check_dev_keys(Settings(dev_write_key=write, dev_secret_key=secret))
        assert str(refused.value).startswith(variable)
