"""PNG charts of a gate session: regression changes against their thresholds, and
physics values against their ceilings. matplotlib is imported here only.

The charts are drawn by a child process (this module run as a script) that a gate session
starts as early as it can tell that it gates (as the plugin registers, when the command
line names the checks or an evaluation; else when pytest configures it): matplotlib loads
while pytest loads its plugins, collects and plans, and the child draws the planned
outcomes (the plan holds every built-in one) while the checks run; in-process, the import
and the drawing were about 1.3 s at the end of every session. At the end the session tells
the child to keep what it drew or, when the outcomes that ran differ from the planned ones
(``-k`` selection, a custom gate of kind regression or physics), to draw them again. One
child serves every session of its parent process in turn (an orchestrator or a test suite
running sessions in-process), so matplotlib loads once per process.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gates.model import Kind, Outcome

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_BARS = 40
COLOURS = {"pass": "#4c9a2a", "improved": "#1f77b4", "no_baseline": "#9e9e9e",
           "warn": "#ff9f1c", "fail": "#d62728", "changed": "#9467bd",
           "incomparable": "#8c564b", "error": "#8c1c13"}


def _figure(height: float) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _status_legend(ax: Axes, gates: list[Outcome], extra: bool = False) -> None:
    from matplotlib.patches import Patch

    statuses = sorted({str(o.status) for o in gates}, key=list(COLOURS).index)
    handles = [Patch(color=COLOURS[s], label=s) for s in statuses]
    if extra:
        ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], loc="lower right",
                  fontsize=8)
    else:
        ax.legend(handles=handles, loc="best", fontsize=8, title="status", title_fontsize=8)


def change_chart(outcomes: list[Outcome], path: Path) -> Path | None:
    """One bar per regression gate: change in % (positive = worse) against its limit."""
    gates = [o for o in outcomes if o.kind == "regression" and o.change_pct is not None
             and math.isfinite(o.change_pct)]
    if not gates:
        return None
    if len(gates) > MAX_BARS:  # keep it legible: the failures first, then the largest changes
        gates = sorted(gates, key=lambda o: (o.passed, -abs(o.change_pct or 0.0)))[:MAX_BARS]
    fig, ax = _figure(1.2 + 0.32 * len(gates))
    worse = [o.change_pct if (o.evidence.get("direction", "lower") == "lower") else
             -o.change_pct for o in gates if o.change_pct is not None]
    # a change of +30,000 % would flatten every other bar: clip, and print the real value
    limit = max(25.0, 2.5 * max((o.threshold or 0.0) for o in gates))
    shown_values = [min(max(w, -limit), limit) for w in worse]
    labels = [o.metric for o in gates]
    ys = range(len(gates))
    ax.barh(ys, shown_values, color=[COLOURS.get(str(o.status), "#555") for o in gates])
    limits = [(o.threshold, y) for y, o in zip(ys, gates, strict=True) if o.threshold is not None]
    if limits:  # one line of ticks split by NaNs, not a line per bar (the legend's "best"
        # place avoids lines, not line collections)
        ax.plot([x for t, _ in limits for x in (t, t, math.nan)],
                [v for _, y in limits for v in (y - 0.4, y + 0.4, math.nan)],
                color="black", lw=1.5)
    for y, w, v in zip(ys, worse, shown_values, strict=True):
        if w != v:
            ax.text(v * 0.97, y, f"{w:+.0f}%", va="center", ha="right" if v > 0 else "left",
                    fontsize=8, color="white", fontweight="bold")
    ax.set_xlim(-limit * 1.05, limit * 1.05)
    ax.axvline(0, color="#444", lw=0.8)
    _status_legend(ax, gates)
    _bar_labels(ax, labels)
    ax.set_xlabel("change against the champion, % (positive = worse; black tick = allowed)",
                  fontsize=9)
    shown = f" ({len(gates)} shown: failures and largest changes first)" \
        if len(gates) == MAX_BARS else ""
    ax.set_title("Regression gates: change against threshold" + shown)
    _save(fig, path, labels)
    return path


def physics_chart(outcomes: list[Outcome], path: Path) -> Path | None:
    """Each physics ceiling and spike: the value as a share of its limit, labelled with
    both (a spike's limit is its factor times the champion's value)."""
    gates = [o for o in outcomes if o.kind == "physics" and o.current is not None
             and o.threshold and o.id.endswith(("/ceiling", "/spike"))]
    if not gates:
        return None
    fig, ax = _figure(1.4 + 0.45 * len(gates))
    shares = [100.0 * (o.current or 0.0) / (o.threshold or 1.0) for o in gates]
    shown = [min(s, 150.0) if math.isfinite(s) else 150.0 for s in shares]
    ys = range(len(gates))
    ax.barh(ys, shown, color=[COLOURS.get(str(o.status), "#555") for o in gates])
    ax.axvline(100, color="black", lw=1.5, ls="--", label="limit")
    for y, o, s in zip(ys, gates, shown, strict=True):
        ax.text(s + 1, y, f"{o.current:.3g} / {o.threshold:.3g}", va="center", fontsize=8)
    labels = [f"{o.metric} ({o.id.rsplit('/', 1)[1]})" for o in gates]
    _bar_labels(ax, labels)
    ax.set_xlim(0, 175)
    ax.set_xlabel("value as % of its limit (value / limit at bar end; spike limit = factor x "
                  "champion)")
    ax.set_title("Physics gates: values against ceilings and spikes")
    _status_legend(ax, gates, extra=True)
    _save(fig, path, labels)
    return path


def _bar_labels(ax: Axes, labels: list[str]) -> None:
    """Each bar's name left of the axes, top bar first: plain texts rather than tick labels,
    as matplotlib builds two lines and two texts for every tick (a quarter of a 40-bar
    chart's drawing)."""
    from matplotlib import rcParams

    ax.set_yticks([])
    ax.set_ylim(len(labels) - 0.5, -0.5)
    where = ax.get_yaxis_transform()  # x in axes units, y in data units
    for y, label in enumerate(labels):
        ax.text(-0.01, y, label, transform=where, ha="right", va="center",
                fontsize=rcParams["ytick.labelsize"])


def _save(fig: Figure, path: Path, labels: list[str]) -> None:
    """Margins from the longest label (a layout engine measures every text twice: a third
    of the drawing), and fast PNG compression (files ~1.5x larger, written 3x faster)."""
    width, height = fig.get_size_inches()
    left = min(0.6, (0.35 + 0.075 * max((len(t) for t in labels), default=4)) / width)
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.45 / height,
                        bottom=0.55 / height)
    fig.savefig(path, dpi=110, pil_kwargs={"compress_level": 1})


def render_all(outcomes: list[Outcome], out_dir: Path) -> list[Path]:
    """Every chart of a session; the paths of those drawn."""
    drawn = (change_chart(outcomes, out_dir / "gates_change.png"),
             physics_chart(outcomes, out_dir / "gates_physics.png"))
    return [p for p in drawn if p is not None]


def charted(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes the charts show (what decides whether a drawing is still right)."""
    return [o for o in outcomes if o.kind in (Kind.REGRESSION, Kind.PHYSICS)]


class _Child:
    """The drawing process: one per parent process, serving its sessions one at a time."""

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - its stderr, for its last words
        self.proc = subprocess.Popen(  # -P: the current folder cannot shadow a module
            [sys.executable, "-P", "-m", "gates.sinks.charts"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)

    def send(self, order: str, staging: Path) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{order} {staging}\n".encode())
            self.proc.stdin.flush()
        except OSError:
            raise RuntimeError(self.failure()) from None

    def answer(self, wait: float) -> list[str]:
        """The names the child drew, or RuntimeError with why not."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            if ready:
                raise RuntimeError(self.failure())
            self.stop()
            raise RuntimeError(f"charts not drawn within {wait:.0f} s")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the chart process could not draw: {answer['error']}")
        return list(answer["drawn"])

    def failure(self) -> str:
        self.stop()
        self.log.seek(0)
        words = self.log.read().decode(errors="replace").strip().splitlines()
        return f"the chart process failed ({self.proc.returncode}): " \
            f"{words[-1] if words else 'no message'}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for handle in (self.proc.stdin, self.proc.stdout):
            if handle is not None:
                handle.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


_CHILD: list[_Child] = []  # this process's drawing process, started on first use


def _child() -> _Child:
    if not _CHILD or not _CHILD[0].alive:
        stop_child()
        _CHILD[:] = [_Child()]
    return _CHILD[0]


def start_child() -> bool:
    """Start this process's drawing process ahead of its session (it loads matplotlib
    meanwhile). True if this call started it; False if one was running already (an earlier
    session's, which this one shares) or it cannot start (the session says why later)."""
    if _CHILD and _CHILD[0].alive:
        return False
    try:
        _child()
    except OSError:
        return False
    return True


def stop_child() -> None:
    """Stop this process's drawing process, if any (the next session starts another)."""
    if _CHILD:
        _CHILD[0].stop()
        _CHILD[0].log.close()
        _CHILD.clear()


class ChartProcess:
    """One session's charts: drawn by the drawing process into a temporary folder once
    :meth:`plan` gives the planned outcomes; :meth:`finish` keeps or redraws them and
    moves them into place."""

    #: seconds the session waits at its end for the child (a chart is never a verdict)
    WAIT_S = 120.0

    def __init__(self) -> None:
        self.child = _child()
        self.staging = Path(tempfile.mkdtemp(prefix="gates-charts-"))
        self.planned: list[Outcome] | None = None
        self._order("open")  # the child removes the folder if this process dies first

    def plan(self, outcomes: list[Outcome]) -> None:
        """The planned outcomes: the child draws them while the checks run."""
        self.planned = charted(outcomes)
        self._order("plan", self.planned)

    def finish(self, outcomes: list[Outcome], out_dir: Path) -> list[Path]:
        """The charts of ``outcomes``, moved into ``out_dir``; raises RuntimeError with the
        child's last words if it could not draw them."""
        final = charted(outcomes)
        try:
            if final == self.planned:
                self._order("keep")
            else:
                self._order("redraw", final)
            names = self.child.answer(self.WAIT_S)
            out_dir.mkdir(parents=True, exist_ok=True)
            return [Path(shutil.move(self.staging / name, out_dir / name)) for name in names]
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        """Nothing to chart (bad input): the child drops what it drew for this session,
        without an answer, so nobody waits for it."""
        try:
            if self.child.alive:  # also a session that never planned: its "open" ends
                self._order("abort")
        except RuntimeError:
            pass  # a dead child has nothing to drop
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _order(self, order: str, outcomes: list[Outcome] | None = None) -> None:
        if outcomes is not None:
            path = self.staging / f"{order}.pickle"
            path.write_bytes(pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL))
        self.child.send(order, self.staging)


def _serve() -> None:
    """The child: load matplotlib, then follow one order a line, ``<order> <folder>``:
    ``open`` names a session's folder; ``plan`` draws ``plan.pickle`` into it; ``keep`` and
    ``redraw`` (draw ``redraw.pickle`` instead) end a session's turn with a JSON line,
    ``{"drawn": [names]}`` or ``{"error": why}``; ``abort`` drops the drawing and answers
    nothing. Ends with its input, removing the folders of sessions that never ended."""
    import matplotlib.backends.backend_agg  # noqa: F401 - loaded while the session plans
    import matplotlib.figure  # noqa: F401

    drawn: dict[str, list[Path] | str] = {}
    for line in sys.stdin:
        order, _, where = line.strip().partition(" ")
        staging = Path(where)
        try:
            if order == "open":
                drawn[where] = []
                continue
            if order == "plan":
                drawn[where] = render_all(_load(staging / "plan.pickle"), staging)
                continue
            before = drawn.pop(where, [])
            if isinstance(before, str):  # the planned drawing failed
                if order == "keep":
                    raise RuntimeError(before)
                before = []
            if order != "keep":
                for png in before:
                    png.unlink(missing_ok=True)
                if order == "abort":
                    continue
                before = render_all(_load(staging / "redraw.pickle"), staging)
            answer: dict[str, object] = {"drawn": [p.name for p in before]}
        except Exception as exc:  # noqa: BLE001 - said to the session, which carries on
            if order in ("plan", "abort"):
                drawn[where] = f"{type(exc).__name__}: {exc}"
                continue
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for where in drawn:  # the parent ended without ending these sessions (killed)
        shutil.rmtree(where, ignore_errors=True)


def _load(path: Path) -> list[Outcome]:
    return pickle.loads(path.read_bytes())  # type: ignore[no-any-return]  # noqa: S301 - ours


if __name__ == "__main__":
    _serve()

