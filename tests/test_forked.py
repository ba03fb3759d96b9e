"""Work in forked children: answers, errors, a dead child, and siblings that must not
keep each other's input open. Each case runs in a fresh interpreter: forking is refused
in a process where other threads run (as in a long test session), by design."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import os, signal
from gates.forked import Forked, ForkedError
def boom():
    raise RuntimeError("init failed")
"""

CASES = {
    "answer": ("""
child = Forked(lambda: 10, lambda prepared, payload: prepared + sum(payload))
assert child.running
child.submit([1, 2, 3])
print(child.collect(timeout=30), child.running)
""", "16 False"),
    "failed-preparation": ("""
child = Forked(boom, lambda prepared, payload: payload)
child.submit("x")
try:
    child.collect(timeout=30)
except ForkedError as exc:
    print(exc)
""", "RuntimeError: init failed"),
    "killed-child": ("""
child = Forked(lambda: None, lambda prepared, payload: payload)
os.kill(child.pid, signal.SIGKILL)
child.submit("x")
try:
    child.collect(timeout=30)
except ForkedError as exc:
    print(exc)
""", "the child ended without an answer"),
    "siblings": ("""
first = Forked(lambda: "a", lambda prepared, payload: prepared + payload)
second = Forked(lambda: "b", lambda prepared, payload: prepared + payload)
first.submit("1")  # answered while the second still waits for its input
print(first.collect(timeout=20), end=" ")
second.submit("2")
print(second.collect(timeout=20))
""", "a1 b2"),
    "no-fork-with-threads": ("""
import threading
stop = threading.Event()
worker = threading.Thread(target=stop.wait)
worker.start()
print(Forked(lambda: None, lambda prepared, payload: payload).running)
stop.set()
""", "False"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forked_children(case: str) -> None:
    code, expected = CASES[case]
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
