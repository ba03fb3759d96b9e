"""TTC step logs: ``<prefix>_ttc_step_logs.json`` or the Lightning ``details.ttc_step_logs``.

universal-simulator writes one entry per TTC step: ``{"step", "rewards", "totals",
"chosen", "beam_width", "horizon", "component_<k>", ...}``. ``step`` is the evaluator's
*batch* index, so with ``ttc.steps = 2`` two entries share it: entries are kept in log
order and numbered within their batch. The candidate is chosen by ``totals`` (the
lookahead total, ``chosen = argmax(totals)``), not by ``rewards``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gates.inputs.files import InputProblem, decode_text, json_kind, line_of, number, read_regular


@dataclass(frozen=True)
class TTCStep:
    """One validated entry: batch ``step``, its TTC step within the batch, candidates."""

    step: float
    rewards: tuple[float, ...]
    chosen: int
    beam_width: int | None = None
    horizon: int | None = None
    totals: tuple[float, ...] | None = None  # None: an older log without totals
    ttc_step: int = 0  # position among the entries sharing ``step``

    @property
    def chosen_reward(self) -> float:
        return self.rewards[self.chosen]

    @property
    def scores(self) -> tuple[float, ...]:
        """What the candidate was chosen by: the totals, else (older logs) the rewards."""
        return self.totals if self.totals is not None else self.rewards

    @property
    def chosen_total(self) -> float:
        return self.scores[self.chosen]

    @property
    def mean_reward(self) -> float:
        # math.fsum: exact, and no numpy "mean of empty slice" path (rewards are non-empty).
        return math.fsum(self.rewards) / len(self.rewards)

    @property
    def label(self) -> str:
        return f"batch {self.step:g}, TTC step {self.ttc_step}"


def read_ttc_log(path: Path) -> list[TTCStep]:
    """Validated entries of a TTC step-log file; a bad entry names its line."""
    text = decode_text(path, read_regular(path, "TTC step log"), "TTC step log")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputProblem(path, f"invalid JSON ({exc.msg})", exc.lineno) from None
    except RecursionError:
        raise InputProblem(path, "nested too deeply to be read") from None
    if not isinstance(data, list):
        start = len(text) - len(text.lstrip())
        raise InputProblem(path, f"expected a list of step entries, got a JSON "
                                 f"{json_kind(data)}", line_of(text, start))
    if not data:
        raise InputProblem(path, "the list of steps is empty", 1)
    entries = [(start, end, entry) for start, end, entry in _array_items(text)]

    def where(position: int, key: str | None) -> int:
        start, end, _ = entries[position]
        found = text.find(f'"{key}"', start, end) if key else -1
        return line_of(text, found if found >= 0 else start)

    return _numbered([_entry(path, position, entry, lambda k, p=position: where(p, k))
                      for position, (_, _, entry) in enumerate(entries)])


def ttc_steps(source: Path | str, entries: Sequence[Any]) -> list[TTCStep]:
    """Validated entries already parsed (the Lightning report's ``details``)."""
    if not entries:
        raise InputProblem(source, "the list of TTC steps is empty")
    return _numbered([_entry(source, i, e, lambda _k: None) for i, e in enumerate(entries)])


def _numbered(steps: list[TTCStep]) -> list[TTCStep]:
    seen: dict[float, int] = {}
    out = []
    for s in steps:
        index = seen.get(s.step, 0)
        seen[s.step] = index + 1
        out.append(TTCStep(s.step, s.rewards, s.chosen, s.beam_width, s.horizon, s.totals,
                           index))
    return out


def _array_items(text: str) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) of each element of a top-level JSON array already known valid."""
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")

    def skip(pos: int) -> int:
        match = space.match(text, pos)
        return match.end() if match else pos

    pos = skip(skip(0) + 1)  # past "["
    while pos < len(text) and text[pos] != "]":
        value, end = decoder.raw_decode(text, pos)
        yield pos, end, value
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)


def _entry(path: Path | str, position: int, entry: Any, where: Any) -> TTCStep:
    def fail(key: str | None, problem: str) -> InputProblem:
        return InputProblem(path, f"step entry {position}: {problem}", where(key))

    if not isinstance(entry, dict):
        raise fail(None, f"expected an object, got a JSON {json_kind(entry)}")
    step = entry.get("step", position)
    step_number = number(step)
    if step_number is None or not math.isfinite(step_number):
        raise fail("step", f"step must be a number, got {step!r}")
    rewards = _scores(entry, "rewards", fail)
    totals = _scores(entry, "totals", fail) if "totals" in entry else None
    if totals is not None and len(totals) != len(rewards):
        raise fail("totals", f"{len(totals)} totals for {len(rewards)} rewards")
    chosen = entry.get("chosen")
    if isinstance(chosen, bool) or not isinstance(chosen, int):
        raise fail("chosen", f"chosen must be a candidate index, got {chosen!r}")
    if not 0 <= chosen < len(rewards):
        raise fail("chosen", f"chosen={chosen} is out of range for {len(rewards)} rewards "
                             f"(valid: 0..{len(rewards) - 1})")

    def optional_int(key: str) -> int | None:
        value = entry.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return TTCStep(step=step_number, rewards=rewards, chosen=chosen,
                   beam_width=optional_int("beam_width"), horizon=optional_int("horizon"),
                   totals=totals)


def _scores(entry: dict[str, Any], key: str, fail: Any) -> tuple[float, ...]:
    values = entry.get(key)
    if not isinstance(values, list) or not values:
        raise fail(key, f"{key} must be a non-empty list of numbers")
    out = []
    for index, value in enumerate(values):
        score = number(value)
        if score is None or not math.isfinite(score):
            raise fail(key, f"{key}[{index}] is {value!r}, not a finite number")
        out.append(score)
    return tuple(out)
