"""Where a gate session's result goes: every sink is a plugin of one hook.

A sink is any object with a ``pytest_gates_session_finished(result)`` method, registered
with pytest's plugin manager (``config.pluginmanager.register(sink)``), the way pytest
registers its junitxml plugin only when asked for. The built-in sinks are registered by
``gates.plugin`` when enabled: local files (always), GitHub (``GITHUB_ACTIONS=true``), the
run ledger (unless ``--gates-no-ledger``) and W&B (unless ``--gates-wandb off``). A user adds
one (MLflow, Slack) from a ``conftest.py``:

    class SlackSink:
        def pytest_gates_session_finished(self, result):
            post(result.verdict, result.promotion_line())

    def pytest_configure(config):
        config.pluginmanager.register(SlackSink(), "slack-sink")

Local files come first and W&B last (``tryfirst``/``trylast``), so W&B trouble can never cost
a local output. One sink's exception is one warning line: it never changes the verdict,
the exit code or another sink's output.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import pytest

    from gates.result import SessionResult

#: pytest's hookspec marker (``pytest.hookspec`` is an equal ``HookspecMarker("pytest")``),
#: made from pluggy so that the chart process, which imports this package, does not load
#: pytest (0.2 s of its start)
hookspec = pluggy.HookspecMarker("pytest")


class GatesHookSpec:
    """The hook every sink implements."""

    @hookspec
    def pytest_gates_session_finished(self, result: SessionResult) -> None:
        """The session's verdict is decided and any promotion done: report ``result``."""


def report(pluginmanager: pytest.PytestPluginManager, result: SessionResult) -> None:
    """Call every sink in order, each isolated from the others' failures."""
    hook = pluginmanager.hook.pytest_gates_session_finished
    for impl in reversed(hook.get_hookimpls()):  # pluggy's call order
        try:
            impl.function(result=result)
        except Exception as exc:  # noqa: BLE001 - a sink never decides anything
            name = impl.plugin_name or type(impl.plugin).__name__
            message = f"sink {name} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            result.notes.append(message)
            print(f"gates: warning: {message}", file=sys.stderr)
