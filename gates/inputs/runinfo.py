"""Which W&B run the evaluation belongs to: ``--gates-wandb-info``,
``FAST_TO_SOTA_WANDB_INFO`` or ``WANDB_RUN_ID``.

universal-simulator writes this in three shapes, all read here: ``wandb_run.json`` from
``scripts/train.py`` (``{"id", "name", "project", "entity", "url"}``), the same keys from
``monitoring.py`` (``entity`` empty, ``url`` null), and ``wandb_context.json`` from
``save_wandb_context`` (``run_id`` instead of ``id``). The orchestrator records the path
of ``wandb_run.json`` even when training never wrote it (W&B off or failed), so a missing
file is a warning, never bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gates.errors import GateInputError
from gates.inputs.files import read_json

ENV_INFO = "FAST_TO_SOTA_WANDB_INFO"
FIELDS = ("id", "name", "entity", "project", "url", "group")
WARNING_KEY = "_warning"
_MAX_BYTES = 1024 * 1024


def load_run_info(path: Path | None, *, required: bool = False) -> dict[str, Any]:
    """The evaluation run's ``id, name, entity, project, url, group`` (only those known).

    ``path`` None falls back to ``$FAST_TO_SOTA_WANDB_INFO``. A file that does not exist
    gives ``{"_warning": "<path>: ..."}`` (plus ``WANDB_RUN_ID`` when set) unless
    ``required``; a file that exists but is malformed is bad input (GateInputError).
    """
    source = path
    if source is None and os.environ.get(ENV_INFO):
        source = Path(os.environ[ENV_INFO])
    info: dict[str, Any] = {}
    if source is not None:
        if not os.path.lexists(source):
            if required:
                raise GateInputError(source, "W&B run info file not found")
            info[WARNING_KEY] = (f"{source}: W&B run info file not found (training may have "
                                 "run without W&B); the gate run is not tied to a W&B run")
        else:
            info.update(_read(source))
    if "id" not in info and os.environ.get("WANDB_RUN_ID"):
        info["id"] = os.environ["WANDB_RUN_ID"]
    return info


def _read(source: Path) -> dict[str, Any]:
    data, _ = read_json(source, "W&B run info", limit=_MAX_BYTES)
    if not isinstance(data, dict):
        raise GateInputError(source, "the W&B run info must be a JSON object")
    if "id" in data and "run_id" in data and data["id"] != data["run_id"]:
        raise GateInputError(source, f"the W&B run info names two runs: id {data['id']!r} and "
                                     f"run_id {data['run_id']!r}")
    if "id" not in data and "run_id" in data:
        data = {**data, "id": data["run_id"]}
    bad = [k for k in FIELDS if data.get(k) is not None and not isinstance(data[k], str)]
    if bad:
        raise GateInputError(source, f"W&B run info fields must be strings: {bad}")
    return {k: data[k] for k in FIELDS if data.get(k)}


def run_path(info: dict[str, Any]) -> str | None:
    """``entity/project/id`` (the parts known), or None without an id."""
    if not info.get("id"):
        return None
    return "/".join(str(info[k]) for k in ("entity", "project", "id") if info.get(k))
