"""What a hyperparameter accepts (`Spec`), and the dataclass field that carries one
(`_hp`): the schema's building blocks, read by `hyperparameters`."""

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def is_real(x: Any) -> bool:
    """A real number (Python or numpy) that is not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a hyperparameter accepts.

    kind: "float", "int", "bool", "choice" or "list" (a per-cycle list of numbers > 0).
    low, high, low_open, high_open: the interval of a number ("float", "int").
    choices: the allowed strings of a "choice".
    null: what None means when None is allowed (e.g. "no clipping"); None: not allowed.
    """

    kind: str
    description: str
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    choices: tuple[str, ...] = ()
    null: str | None = None

    def allowed(self) -> str:
        """The allowed values in words, as error messages and docs/hyperparameters.md state them."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        if self.kind == "list":
            numbers_ = "N numbers > 0"
            return f"null ({self.null}) or {numbers_}" if self.null else f"a list of {numbers_}"
        words = self._interval("an integer" if self.kind == "int" else "a number")
        return f"null ({self.null}) or {words}" if self.null else words

    def _interval(self, noun: str) -> str:
        if math.isinf(self.high):
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"

    def contains(self, number: float) -> bool:
        """Whether a finite number lies in [low, high] with the open ends excluded."""
        above = number > self.low if self.low_open else number >= self.low
        below = number < self.high if self.high_open else number <= self.high
        return math.isfinite(number) and above and below

    def coerce(self, name: str, value: Any) -> Any:
        """`value` type- and range-checked as hyperparameter `name`; ValueError naming it."""
        bad = ValueError(f"hyperparameter {name!r} must be {self.allowed()}, got {value!r}.")
        if value is None and self.null is not None:
            return None
        if self.kind == "bool":
            if not isinstance(value, bool | np.bool_):
                raise bad
            return bool(value)
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise bad
            return str(value)
        if self.kind == "list":
            if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
                raise bad
            if not all(is_real(x) and math.isfinite(x) and x > 0 for x in value):
                raise bad
            return tuple(float(x) for x in value)  # Lengths: schedules.check_plan_settings.
        if not is_real(value):
            raise bad
        try:
            number = float(value)
        except OverflowError:  # An int beyond float range (10**400) is out of every range.
            raise bad from None
        if not self.contains(number) or (self.kind == "int" and number != int(value)):
            raise bad
        return int(value) if self.kind == "int" else number


def _hp(default: Any, kind: str, description: str, **spec: Any) -> Any:
    return dataclasses.field(default=default, metadata={"spec": Spec(kind, description, **spec)})


_POSITIVE = {"low": 0.0, "low_open": True}
_UNIT_OPEN = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}
_UNIT_HALF_OPEN = {"low": 0.0, "high": 1.0}
_UNIT_UPPER = {"low": 0.0, "high": 1.0, "low_open": True, "high_open": False}


def _markdown_value(value: Any) -> str:
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"


def markdown_table(specs: Mapping[str, Spec], defaults: Mapping[str, Any]) -> str:
    """The table of docs/hyperparameters.md: name, default, allowed values, meaning."""
    rows = ["| name | default | allowed values | meaning |", "| --- | --- | --- | --- |"]
    for name, spec in specs.items():
        rows.append(
            f"| `{name}` | {_markdown_value(defaults[name])} | {spec.allowed()} "
            f"| {spec.description} |"
        )
    return "\n".join(rows)
