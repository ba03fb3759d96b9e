"""Work done in a child process forked at session start.

A sink's set-up (importing matplotlib or wandb, starting W&B's helper process) costs about a
second, a fixed price per session. Forked when the session starts, the child pays it on the
other core while the gate checks run; at the end the parent hands over its results and
waits for the answer. Where forking is unsafe (threads already running, no ``fork``) there
is no child and the caller does the work in-process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any


class ForkedError(Exception):
    """The child failed; the message is its error, or why there was no answer."""


class Forked:
    """``prepare()`` runs in the child at once; ``work(prepared, payload)`` on submit."""

    #: pipe ends this process holds for its children: a later child closes its copies,
    #: or an earlier child would never see the end of its input
    _held: set[int] = set()

    def __init__(self, prepare: Callable[[], Any], work: Callable[[Any, Any], Any]) -> None:
        self.pid: int | None = None
        self._send: int | None = None
        self._receive: int | None = None
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            for fd in (to_child, from_child, *Forked._held):
                with contextlib.suppress(OSError):
                    os.close(fd)
            _serve(prepare, work, from_parent, to_parent)
        os.close(from_parent)
        os.close(to_parent)
        self.pid, self._send, self._receive = pid, to_child, from_child
        Forked._held.update((to_child, from_child))

    @property
    def running(self) -> bool:
        return self.pid is not None

    def submit(self, payload: Any) -> None:
        """Hand the payload over; closing the pipe tells the child to start."""
        if self._send is None:
            raise ForkedError("no child to hand the work to")
        send, self._send = self._send, None
        Forked._held.discard(send)
        with contextlib.suppress(OSError), os.fdopen(send, "wb") as handle:
            handle.write(pickle.dumps(payload))

    def collect(self, timeout: float) -> Any:
        """The child's result; ForkedError if it failed or did not answer in time."""
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while self._receive is not None:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self._receive], [], [], max(left, 0.0))
                if not ready:
                    raise ForkedError(f"no answer within {timeout:g} s")
                chunk = os.read(self._receive, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            self.close()
        if not chunks:
            raise ForkedError("the child ended without an answer")
        status, value = pickle.loads(b"".join(chunks))  # our own child's answer
        if status != "ok":
            raise ForkedError(value)
        return value

    def close(self) -> None:
        """Stop the child if it is still there (a session that ended early)."""
        if self.pid is None:
            return
        for fd in (self._send, self._receive):
            if fd is not None:
                Forked._held.discard(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._send = self._receive = None
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        self.pid = None


def _serve(prepare: Callable[[], Any], work: Callable[[Any, Any], Any], incoming: int,
           outgoing: int) -> None:
    code = 1
    try:
        try:
            prepared, failure = prepare(), None
        except BaseException as exc:  # noqa: BLE001 - reported when the work is asked for
            prepared, failure = None, exc
        with os.fdopen(incoming, "rb") as handle:
            data = handle.read()
        if data:
            answer: tuple[str, Any]
            if failure is not None:
                answer = ("error", f"{type(failure).__name__}: {failure}")
            else:
                try:
                    answer = ("ok", work(prepared, pickle.loads(data)))
                except BaseException as exc:  # noqa: BLE001 - the parent reports it
                    answer = ("error", f"{type(exc).__name__}: {exc}")
            with os.fdopen(outgoing, "wb") as handle:
                handle.write(pickle.dumps(answer))
        code = 0
    finally:
        os._exit(code)
