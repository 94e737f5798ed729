"""Experiment settings checked against their declared types and ranges, before any work.

A config field's type hint is its contract, read once here for every experiment: `int`, `float`
(always finite), `bool`, `str`, `Literal[...]` choices, `list[...]`, `X | None`, and
`Annotated[X, constraint, ...]` for what a type cannot say: `Range` (numbers), `NonZero`
(numbers), `NonEmpty` (lists, text), a built-in `range` (integers, for a module that imports
nothing of steerscope, e.g. the registry's seed), and what only the loaded model can say:
`ModelLayer` (a layer index: >= 0 before the model is loaded, below its layer count right after)
and `ModelPositions` (a token count: below the model's positions, `max_position_embeddings`, right
after). A value that breaks the contract is an `InputError` naming the setting, the value and what
is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from steerscope.errors import InputError


@dataclass(frozen=True)
class Range:
    """A number in [low, high]; a None end is unbounded, an open end is excluded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class NonZero:
    """A number other than 0."""

    def admits(self, value: float) -> bool:
        return value != 0

    def __str__(self) -> str:
        return "other than 0"


@dataclass(frozen=True)
class NonEmpty:
    """A list with at least one item, or text with at least one character."""

    def admits(self, value: list | str) -> bool:
        return len(value) > 0

    def __str__(self) -> str:
        return "that is not empty"


@dataclass(frozen=True)
class ModelLayer:
    """An index of one of the model's layers: checked >= 0 with the other settings, and below the
    loaded model's layer count by `check_layers`, before any forward pass."""

    def admits(self, value: int) -> bool:
        return value >= 0


@dataclass(frozen=True)
class ModelPositions:
    """A number of token positions (a window, tokens to generate): checked with its other
    constraints, and below the loaded model's positions by `check_model_limits`, before any
    forward pass (a RoPE model runs past them without an error, on positions it never learnt)."""

    def admits(self, value: int) -> bool:
        return True

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True)
class Generated(ModelPositions):
    """Tokens generated after a prompt: also added to the prompt lengths of the user's records
    when they are checked against the model's positions (`steerscope.limits`)."""


#: A count of things: an integer >= 1.
Count = Annotated[int, Range(1)]
#: A layer index of the model the experiment runs on.
Layer = Annotated[int, ModelLayer()]
#: Tokens to generate after a prompt.
NewTokens = Annotated[int, Range(1), Generated()]
#: Tokens of one text window read by the model (a BOS included).
Window = Annotated[int, Range(2), ModelPositions()]

_SINGULAR = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
_PLURAL = {int: "integers", float: "finite numbers", bool: "true/false values", str: "strings"}


class _Mismatch(Exception):
    """A value that does not fit its declared type; `detail` says which part, for lists."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


def _split(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the bare type, its constraints) of a possibly `Annotated` hint."""
    if typing.get_origin(hint) is Annotated:
        bare, *constraints = typing.get_args(hint)
        return bare, tuple(constraints)
    return hint, ()


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def describe(hint: Any, plural: bool = False) -> str:
    """What a hint admits, in words: `Annotated[int, Range(1)] | None` -> "an integer >= 1 or None"."""
    bare, constraints = _split(hint)
    if _is_union(bare):
        options = [describe(arg, plural) for arg in typing.get_args(bare) if arg is not type(None)]
        return " or ".join(options) + (" or None" if type(None) in typing.get_args(bare) else "")
    if typing.get_origin(bare) is Literal:
        choices = ", ".join(repr(choice) for choice in typing.get_args(bare))
        return f"{'values each' if plural else ''} one of {choices}".strip()
    if typing.get_origin(bare) is list:
        (item,) = typing.get_args(bare)
        non_empty = "non-empty " if any(isinstance(c, NonEmpty) for c in constraints) else ""
        return f"{'' if plural else 'a '}{non_empty}list{'s' if plural else ''} of {describe(item, True)}"
    if bare not in _SINGULAR:
        raise TypeError(
            f"setting type {hint!r} is not supported; use {', '.join(t.__name__ for t in _SINGULAR)}"
        )
    words = (_PLURAL if plural else _SINGULAR)[bare]
    for constraint in constraints:
        if isinstance(constraint, ModelLayer):
            words = f"layer indices ({words} >= 0)" if plural else f"a layer index ({words} >= 0)"
        elif _text(constraint):
            words = f"{words} {_text(constraint)}"
    return words


def _text(constraint: Any) -> str:
    """What a constraint admits, in words ("" when nothing needs saying before the model loads)."""
    if isinstance(constraint, range):
        return f"in [{constraint.start}, {constraint.stop - 1}]"
    return str(constraint)


def _admits(constraint: Any, value: Any) -> bool:
    return value in constraint if isinstance(constraint, range) else constraint.admits(value)


def _coerce(hint: Any, value: Any) -> Any:
    """`value` as the type `hint` declares (an int where a float is declared becomes a float, a
    tuple where a list is declared a list), or `_Mismatch`."""
    bare, constraints = _split(hint)
    if _is_union(bare):
        for option in typing.get_args(bare):
            if option is type(None) and value is None:
                return None
            if option is not type(None):
                try:
                    return _coerce(option, value)
                except _Mismatch as mismatch:
                    if mismatch.detail:
                        raise
        raise _Mismatch()
    if typing.get_origin(bare) is Literal:
        if not any(type(value) is type(choice) and value == choice for choice in typing.get_args(bare)):
            raise _Mismatch()
        result = value
    elif typing.get_origin(bare) is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch()
        (item,) = typing.get_args(bare)
        result = []
        for index, element in enumerate(value):
            try:
                result.append(_coerce(item, element))
            except _Mismatch:
                raise _Mismatch(f"item {index} is {element!r}") from None
    elif bare is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch()
        try:
            result = float(value)
        except OverflowError:
            raise _Mismatch() from None
        if not math.isfinite(result):
            raise _Mismatch()
    elif bare is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch()
        result = value
    elif bare in (bool, str):
        if not isinstance(value, bare):
            raise _Mismatch()
        result = value
    else:
        raise TypeError(f"setting type {hint!r} is not supported")
    if not all(_admits(constraint, result) for constraint in constraints):
        raise _Mismatch()
    return result


def declared_types(config: type) -> dict[str, Any]:
    """{field name: its type hint, constraints included} of a settings dataclass."""
    hints = typing.get_type_hints(config, include_extras=True)
    return {field.name: hints[field.name] for field in dataclasses.fields(config) if field.init}


def check_settings(owner: str, config: type, settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` checked against the fields of `config` and converted to their declared types;
    an unknown name (with the closest valid ones) or a value its field does not admit is an
    `InputError` prefixed with `owner` (the experiment's name)."""
    declared = declared_types(config)
    unknown = [name for name in settings if name not in declared]
    if unknown:
        named = []
        for name in unknown:
            close = " or ".join(repr(match) for match in difflib.get_close_matches(name, declared, n=3))
            named.append(f"{name!r}" + (f" (did you mean {close}?)" if close else ""))
        plural = "s" if len(unknown) > 1 else ""
        raise InputError(
            f"{owner}: unknown setting{plural} {', '.join(named)}; valid: {', '.join(sorted(declared))}"
        )
    checked = {}
    for name, value in settings.items():
        try:
            checked[name] = _coerce(declared[name], value)
        except _Mismatch as mismatch:
            detail = f" ({mismatch.detail})" if mismatch.detail else ""
            raise InputError(
                f"{owner}: {name} must be {describe(declared[name])}, got {value!r}{detail}"
            ) from None
    return checked


def _marked_values(hint: Any, value: Any, marker: type) -> list[int]:
    """The values in `value` its declared type marks with the constraint class `marker`."""
    bare, constraints = _split(hint)
    if value is None:
        return []
    if any(isinstance(c, marker) for c in constraints):
        return [value]
    if _is_union(bare):
        return [v for option in typing.get_args(bare) for v in _marked_values(option, value, marker)]
    if typing.get_origin(bare) is list:
        (item,) = typing.get_args(bare)
        return [v for element in value for v in _marked_values(item, element, marker)]
    return []


def marked_settings(config: Any, marker: type) -> dict[str, list[int]]:
    """{setting: its values marked with `marker`} of a config, for the settings that have any."""
    found = {
        name: _marked_values(hint, getattr(config, name), marker)
        for name, hint in declared_types(type(config)).items()
    }
    return {name: values for name, values in found.items() if values}


def check_model_limits(owner: str, config: Any, n_layers: int, n_positions: int | None, model: str) -> None:
    """Every `ModelLayer` setting of `config` below `n_layers` and every `ModelPositions` setting
    below `n_positions` (None: the model declares none), the limits of `model`."""
    limits = [(ModelLayer, n_layers, "layer", f"{model} has layers 0-{n_layers - 1}")]
    if n_positions is not None:
        limits.append((ModelPositions, n_positions, "value", f"{model} has {n_positions} positions"))
    for marker, limit, noun, has in limits:
        for name, values in marked_settings(config, marker).items():
            outside = [v for v in values if v >= limit]
            if outside:
                value = getattr(config, name)
                which = "" if outside == [value] else f" ({noun} {outside[0]})"
                raise InputError(f"{owner}: {name}={value!r}{which} is out of range: {has}")
