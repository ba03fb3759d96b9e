"""Which W&B run the evaluation logged to, from ``--wandb-info``,
``FAST_TO_SOTA_WANDB_INFO`` or ``WANDB_RUN_ID``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gates.errors import GateInputError

ENV_INFO = "FAST_TO_SOTA_WANDB_INFO"
FIELDS = ("id", "name", "entity", "project", "url", "group")


def load_run_info(path: Path | None) -> dict[str, Any]:
    """The evaluation run's ``{"id", "name", "entity", "project", "url"}``; {} if unknown."""
    source = path or (Path(os.environ[ENV_INFO]) if os.environ.get(ENV_INFO) else None)
    info: dict[str, Any] = {}
    if source is not None:
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GateInputError(source, "W&B run info file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GateInputError(source, f"W&B run info is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise GateInputError(source, "W&B run info must be a JSON object")
        bad = [k for k in FIELDS if k in data and data[k] is not None
               and not isinstance(data[k], str)]
        if bad:
            raise GateInputError(source, f"W&B run info fields must be strings: {bad}")
        info = {k: data[k] for k in FIELDS if data.get(k)}
    if "id" not in info and os.environ.get("WANDB_RUN_ID"):
        info["id"] = os.environ["WANDB_RUN_ID"]
    return info


def run_path(info: dict[str, Any]) -> str | None:
    if not info.get("id"):
        return None
    return "/".join(str(info[k]) for k in ("entity", "project", "id") if info.get(k))
