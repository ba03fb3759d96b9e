"""Work in forked children: answers, errors, a dead child, and siblings that must not
keep each other's input open."""

from __future__ import annotations

import os
import signal

import pytest

from gates.forked import Forked, ForkedError


def boom() -> None:
    raise RuntimeError("init failed")


def test_the_child_prepares_then_works_on_the_payload() -> None:
    child = Forked(lambda: 10, lambda prepared, payload: prepared + sum(payload))
    assert child.running
    child.submit([1, 2, 3])
    assert child.collect(timeout=30) == 16
    assert not child.running


def test_a_failed_preparation_is_the_answer() -> None:
    child = Forked(boom, lambda prepared, payload: payload)
    child.submit("x")
    with pytest.raises(ForkedError, match="RuntimeError: init failed"):
        child.collect(timeout=30)


def test_a_killed_child_is_an_error_not_a_hang() -> None:
    child = Forked(lambda: None, lambda prepared, payload: payload)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.submit("x")
    with pytest.raises(ForkedError, match="without an answer"):
        child.collect(timeout=30)


def test_siblings_do_not_hold_each_others_input_open() -> None:
    first = Forked(lambda: "a", lambda prepared, payload: prepared + payload)
    second = Forked(lambda: "b", lambda prepared, payload: prepared + payload)
    first.submit("1")  # answered while the second still waits for its input
    assert first.collect(timeout=20) == "a1"
    second.submit("2")
    assert second.collect(timeout=20) == "b2"
