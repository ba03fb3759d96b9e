"""The evaluation's configuration (``<prefix>.config.yaml``, written by the evaluator with
``yaml.safe_dump``), read back with PyYAML's ``safe_load``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gates.inputs.files import InputProblem, decode_text, read_regular


def read_config(path: Path) -> dict[str, Any]:
    """The configuration mapping (empty for an empty file); a YAML error names its line."""
    text = decode_text(path, read_regular(path, "configuration"), "configuration")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputProblem(path, f"invalid YAML ({problem})", line) from None
    except RecursionError:
        raise InputProblem(path, "invalid YAML (nested too deeply)") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InputProblem(path, f"expected a mapping of settings, got a "
                                 f"{type(data).__name__}", 1)
    return dict(data)
