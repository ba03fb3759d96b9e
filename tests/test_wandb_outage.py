"""W&B outages: the sink is bounded by one deadline and the session's record is never lost.

Three servers on 127.0.0.1, each stopping by itself: a closed port (refuses), one that
accepts connections and never answers, and a minimal W&B look-alike that answers the
GraphQL calls of an online ``wandb.init`` (RunResumeStatus, UpsertBucket, Viewer) and then
hangs on everything else (the file stream, artifacts). Each outage ends with the same
record written as an offline run in the gates output folder, read back with W&B's reader,
and one warning line naming ``wandb sync <that folder>``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gates.model import Outcome, Status
from gates.sinks.wandb import WandbSink, reserve_of
from tests.wandb_run import find_offline_runs, read_offline_run, session_result

TIMEOUT = 10.0  # gates_wandb_timeout of these sessions: the whole sink
INIT_TIMEOUT = "1"  # WANDB_INIT_TIMEOUT
SLACK = 3.0  # process start and teardown beyond the deadline, on a machine the parallel
#             tests keep busy (without the deadline these sessions wait 30 s or more)
HANG_LIMIT = 30.0  # a hanging handler gives up by itself after this long

OUTCOMES = [
    Outcome(id="regression/nrmse", kind="regression", metric="nrmse", status=Status.FAIL,
            current=0.02, baseline=0.0162498, change_pct=23.08, threshold=5.0,
            message="nrmse is 23.1 % worse"),
    Outcome(id="physics/bc_violation/ceiling", kind="physics", metric="bc_violation",
            status=Status.PASS, current=0.004, threshold=1.0, message="within ceiling"),
]


@contextlib.contextmanager
def closed_port() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}"  # nothing listens there any more: refused


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Accepts every connection, reads nothing, answers nothing."""
    stop = threading.Event()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    held: list[socket.socket] = []

    def serve() -> None:
        end = time.monotonic() + HANG_LIMIT
        while not stop.is_set() and time.monotonic() < end:
            with contextlib.suppress(TimeoutError, OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


INIT_ANSWERS = {
    "RunResumeStatus": {"model": {"id": "p1", "name": "physics-gates",
                                  "entity": {"id": "e1", "name": "lab"}, "bucket": None}},
    "UpsertBucket": {"upsertBucket": {"inserted": True, "bucket": {
        "id": "b1", "name": "ev1", "displayName": "ev1", "description": "", "config": "{}",
        "sweepName": None, "historyLineCount": 0,
        "project": {"id": "p1", "name": "physics-gates",
                    "entity": {"id": "e1", "name": "lab"}}}}},
    "Viewer": {"viewer": {"id": "u1", "entity": "lab", "username": "me", "flags": "{}",
                          "teams": {"edges": []}}},
}


@contextlib.contextmanager
def init_then_hang() -> Iterator[tuple[str, list[str]]]:
    """Answers what an online init asks, then hangs on every other request."""
    stop = threading.Event()
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(ValueError):
                query = str(json.loads(body).get("query", ""))
            name = next((n for n in INIT_ANSWERS if n in query), None) \
                if self.path.endswith("/graphql") else None
            seen.append(name or self.path)
            if name is None:
                stop.wait(HANG_LIMIT)  # hang, but never longer than the test
                return
            data = json.dumps({"data": INIT_ANSWERS[name]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", INIT_TIMEOUT)


def log_online(out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Any, float, str]:
    result = session_result(out, list(OUTCOMES), mode="online", timeout=TIMEOUT,
                            run_info={"id": "ev1", "group": "sweep-3", "name": "eval-7"})
    sink = WandbSink()
    began = time.monotonic()
    sink.start(result.plan, out)
    sink.pytest_gates_session_finished(result)
    return result, time.monotonic() - began, capsys.readouterr().err


def assert_kept_offline(result: Any, out: Path, err: str) -> None:
    assert (result.verdict, result.exit_code) == ("fail", 1)  # W&B changed nothing
    warnings = [line for line in err.splitlines() if line.startswith("gates: warning:")]
    assert len(warnings) == 1, err
    (offline,) = find_offline_runs(out)
    assert f"wandb sync {offline}" in warnings[0]
    assert offline.parent == out / "wandb"
    run = read_offline_run(offline)
    assert run.exited
    # the gate run beside the evaluation's, never under its id
    assert run.run_id != "ev1" and run.job_type == "gates" and run.group == "sweep-3"
    assert run.config["gates"]["eval_run_id"] == "ev1"
    assert [r["gate"] for r in run.table_rows("gates/results")] == [o.id for o in OUTCOMES]
    assert run.summary["gates/verdict"] == "fail"
    assert run.summary["gates/regression/nrmse"] == "fail"
    assert [a["title"] for a in run.alerts] == ["Performance Regression Detected"]


@pytest.mark.parametrize("server", [closed_port, silent_server],
                         ids=["a-refusing-server", "a-server-that-never-answers"])
def test_an_unreachable_server(server: Any, online: None, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    with server() as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        result, took, err = log_online(tmp_path / "out", capsys)
    assert took < TIMEOUT + SLACK  # the sink's deadline, with slack for a loaded machine
    assert_kept_offline(result, tmp_path / "out", err)


def test_a_server_that_answers_init_then_hangs(online: None, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with init_then_hang() as (url, seen):
        monkeypatch.setenv("WANDB_BASE_URL", url)
        result, took, err = log_online(tmp_path / "out", capsys)
    # the online run really started (the evaluation's run, resumed); what it asked for
    # next hung until the child was killed
    assert "UpsertBucket" in seen, seen
    assert any((tmp_path / "out" / "wandb").glob("run-*-ev1"))  # its local folder
    # killed when the online window closed; the offline copy fits in the time kept for it
    assert TIMEOUT - reserve_of(TIMEOUT) - 0.5 < took < TIMEOUT + SLACK
    assert "did not finish in time" in err
    assert_kept_offline(result, tmp_path / "out", err)
