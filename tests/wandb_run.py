"""Read back what an offline W&B run recorded, with W&B's own reader.

wandb 0.31 reads its transaction log with ``wandb leet inspect --json PATH`` (one JSON object
per record) and ``wandb leet inspect --summary --json PATH`` (the run's state, summary and
config as one object); both work offline. That command is a thin wrapper
(``wandb/cli/leet.py``) that runs the bundled ``wandb-core`` binary as
``wandb-core leet inspect --no-observability [--summary] --json --run-file F DIR``; calling
the binary directly is what the command does without starting Python and importing wandb
again (30 ms instead of 1 s a call). ``tests/test_wandb_run.py`` checks that both give the
same output, so a wandb upgrade that changes either fails loudly there.

What an offline run folder holds (``<dir>/wandb/offline-run-<YYYYmmdd_HHMMSS>-<id>/``):
``run-<id>.wandb`` (the log ``wandb sync`` uploads), ``files/media/table/<key>_<step>_<hash>
.table.json`` for each ``wandb.Table`` (``{"columns": [...], "data": [[...]]}``, the steadier
format), ``logs/``. Facts of the records that matter here (wandb 0.31.0): nested keys are
joined with ``.`` in the record view (``_wandb.visualize.<chart key>`` holds a chart spec),
alerts carry ``wait_duration`` in milliseconds as a string, artifacts get ``"latest"`` added
to their aliases and their ``metadata`` as a JSON string, and proto3 omits an exit code of 0.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_DIR_PREFIX = "offline-run-"


def core_binary() -> Path | None:
    """The ``wandb-core`` binary bundled with the installed wandb, without importing it."""
    spec = importlib.util.find_spec("wandb")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "wandb-core"
    return binary if binary.is_file() else None


def log_file(path: Path) -> Path:
    """The ``.wandb`` log of a run folder (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.glob("run-*.wandb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb in {path}, found {len(found)}")
    return found[0]


def inspect(path: Path, *, summary: bool = False, via_cli: bool = False) -> str:
    """The output of ``wandb leet inspect [--summary] --json PATH``."""
    wandb_file = log_file(path)
    flags = ["--summary", "--json"] if summary else ["--json"]
    binary = core_binary()
    if via_cli or binary is None:
        command = [sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(wandb_file)]
    else:
        command = [str(binary), "leet", "inspect", "--no-observability", *flags,
                   "--run-file", str(wandb_file), str(wandb_file.parent.parent)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise ValueError(f"wandb leet inspect {wandb_file}: {done.stderr.strip()}")
    return done.stdout


def find_offline_runs(root: Path) -> list[Path]:
    """Every ``offline-run-*`` folder under ``root`` (searched recursively), sorted."""
    return sorted(p for p in Path(root).rglob(f"{RUN_DIR_PREFIX}*")
                  if p.is_dir() and not p.is_symlink())


@dataclass
class OfflineRun:
    """One run as its log records it: identity, config, summary, alerts, artifacts."""

    dir: Path
    records: list[dict[str, Any]]
    state: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.run.get("run_id", ""))

    @property
    def project(self) -> str | None:
        return self.run.get("project")

    @property
    def group(self) -> str | None:
        return self.run.get("run_group")

    @property
    def job_type(self) -> str | None:
        return self.run.get("job_type")

    @property
    def name(self) -> str | None:
        return self.run.get("display_name")

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.state.get("config") or {})

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.state.get("summary") or {})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r[kind] for r in self.records if r.get("type") == kind]

    @property
    def exited(self) -> bool:
        return bool(self.of_type("exit"))

    @property
    def exit_code(self) -> int | None:
        exits = self.of_type("exit")
        return int(exits[-1].get("exit_code", 0)) if exits else None

    @property
    def history(self) -> list[dict[str, Any]]:
        return [r.get("item", {}) for r in self.of_type("history")]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """title, text, level, and wait_duration in seconds (the log keeps milliseconds)."""
        return [{"title": a.get("title"), "text": a.get("text"), "level": a.get("level"),
                 "wait_duration": int(a.get("wait_duration", 0)) // 1000}
                for a in self.of_type("alert")]

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """name, type, aliases, metadata (parsed), digest and manifest entries."""
        out = []
        for a in self.of_type("artifact"):
            entries = [{"path": e["path"], "size": int(e.get("size", 0)),
                        "digest": e.get("digest"), "local_path": e.get("local_path")}
                       for e in (a.get("manifest") or {}).get("contents", [])]
            out.append({"name": a.get("name"), "type": a.get("type"),
                        "aliases": list(a.get("aliases", [])), "digest": a.get("digest"),
                        "metadata": json.loads(a["metadata"]) if a.get("metadata") else {},
                        "entries": entries})
        return out

    @property
    def charts(self) -> dict[str, Any]:
        """Chart specs (``wandb.plot.*``) by the key they were logged under."""
        prefix = "_wandb.visualize."
        specs: dict[str, Any] = {}
        for update in self.of_type("config"):
            for key, value in (update.get("update") or {}).items():
                if key.startswith(prefix):
                    specs[key[len(prefix):]] = value
        return specs

    def media_file(self, key: str) -> Path:
        """The file of the table (or image) last logged under ``key``."""
        value = self.summary.get(key)
        if not isinstance(value, dict) or "path" not in value:
            value = self.summary.get(f"{key}_table")  # wandb.plot.* keep it under <key>_table
        if not isinstance(value, dict) or "path" not in value:
            raise KeyError(f"no table or media file logged under {key!r} "
                           f"(summary keys: {sorted(self.summary)[:20]})")
        return self.dir / "files" / str(value["path"])

    def table(self, key: str) -> dict[str, Any]:
        return dict(json.loads(self.media_file(key).read_text()))

    def table_rows(self, key: str) -> list[dict[str, Any]]:
        content = self.table(key)
        return [dict(zip(content["columns"], row, strict=True)) for row in content["data"]]


def read_offline_run(path: Path) -> OfflineRun:
    """A run folder (or its ``.wandb`` file), read with ``wandb leet inspect``."""
    wandb_file = log_file(path)
    records = [json.loads(line) for line in inspect(wandb_file).splitlines() if line.strip()]
    runs = [r["run"] for r in records if r.get("type") == "run"]
    if not runs:
        raise ValueError(f"{wandb_file}: no run record")
    state = json.loads(inspect(wandb_file, summary=True))
    return OfflineRun(dir=wandb_file.parent, records=records, state=state, run=runs[0])


def the_run(folder: Path) -> OfflineRun:
    """The one offline run under ``folder``."""
    runs = find_offline_runs(folder)
    assert len(runs) == 1, runs
    return read_offline_run(runs[0])


def session_result(out_dir: Path, outcomes: list[Any], *, mode: str = "offline",
                   timeout: float | None = None, run_info: dict[str, Any] | None = None,
                   verdict: str = "fail", **fields: Any) -> Any:
    """A hand-built SessionResult with a plan of just what the W&B sink reads."""
    from types import SimpleNamespace

    from gates.result import SessionResult

    plan = SimpleNamespace(
        settings=SimpleNamespace(wandb=mode, wandb_timeout=timeout),
        run_info=dict(run_info or {}),
        evaluation=SimpleNamespace(path=out_dir / "eval.json", provenance={}),
        champion=SimpleNamespace(version=1), suite="burgers1d", store=fields.pop("store", None))
    extra: dict[str, Any] = {k: fields.pop(k) for k in ("promotable", "promotion_reasons")
                             if k in fields}
    result = SessionResult(verdict=verdict, outcomes=outcomes, suite="burgers1d",
                           baseline_version=1, eval_path=str(out_dir / "eval.json"),
                           out_dir=out_dir, exit_code=0 if verdict == "pass" else 1, **fields)
    attributes: dict[str, Any] = {"plan": plan, "promotable": False,
                                  "promotion_reasons": [], **extra}
    for name, value in attributes.items():
        setattr(result, name, value)
    return result
