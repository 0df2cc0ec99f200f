"""The base of every contract model, the rule for absent figures, and one-line errors.

A contract is strict when read: every field is required (a figure that is legitimately
absent is written as ``null``, never left out), an unknown key is refused
(``extra="forbid"``), and types are not coerced (``"3"`` is not 3, ``true`` is not 1).
Only the writer completes a document (:func:`complete`): a nullable figure the analysis
did not produce is written as ``null``, so a reader never has to guess what a missing key
meant. A missing non-nullable field is an error on both sides.

This module imports pydantic, the standard library and the error tree only, so the
warehouse may import it.
"""

from __future__ import annotations

import math
import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationError as PydanticValidationError, create_model

from agents.errors import ValidationError


class Contract(BaseModel):
    """A document crossing a package boundary: strict, closed, JSON-safe."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @classmethod
    def from_analysis(cls, data: dict):
        """The model of what an analysis or runner produced (the writer's side): NaN and
        infinities become null, absent nullable figures become null (:func:`complete`), then
        the strict validation of a reader."""
        return cls.model_validate(complete(cls, finite_json(data)))


class OpenRecord(BaseModel):
    """A nested record the warehouse does not read field by field (diagnostics, the model
    shape, per-step rows): any JSON object, kept as written in the raw payload."""

    model_config = ConfigDict(extra="allow", strict=True)


def interval(name: str, unit: str, nullable_value: bool = True, nullable_resolved: bool = False) -> dict[str, tuple]:
    """The fields of a figure with its uncertainty, as ``experiments.analysis.stats.
    with_interval`` names them: ``<name>_<unit>``, ``<name>_se_<unit>``,
    ``<name>_ci_low_<unit>``, ``<name>_ci_high_<unit>``, ``<name>_resolved`` and
    ``<name>_unresolved_reason`` (null when resolved). ``nullable_resolved``: the resolved
    flag is null where the whole figure set is (no data)."""
    suffix = f"_{unit}" if unit else ""
    value = float | None if nullable_value else float
    return {
        f"{name}{suffix}": (value, ...),
        f"{name}_se{suffix}": (float | None, ...),
        f"{name}_ci_low{suffix}": (float | None, ...),
        f"{name}_ci_high{suffix}": (float | None, ...),
        f"{name}_resolved": (bool | None if nullable_resolved else bool, ...),
        f"{name}_unresolved_reason": (str | None, ...),
    }


def model(name: str, module: str, doc: str, **fields) -> type[BaseModel]:
    """A contract model of ``module`` built from ``fields`` ({name: (type, ...)}), for figure
    sets with generated names (:func:`interval`); ``doc`` is its docstring."""
    cls = create_model(name, __base__=Contract, __module__=module, **fields)
    cls.__doc__ = doc
    return cls


# ---------------------------------------------------------------- completing a document


def _nullable(annotation) -> bool:
    return annotation is None or annotation is type(None) or (
        _is_union(annotation) and any(a is type(None) for a in typing.get_args(annotation)))


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _models_in(annotation) -> list:
    """(kind, model) pairs an annotation holds: ("one", M), ("list", M) or ("dict", M)."""
    found = []
    args = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    for arg in args:
        origin = typing.get_origin(arg)
        if isinstance(arg, type) and issubclass(arg, Contract):
            found.append(("one", arg))
        elif origin is list and typing.get_args(arg) and _is_contract(typing.get_args(arg)[0]):
            found.append(("list", typing.get_args(arg)[0]))
        elif origin is dict and len(typing.get_args(arg)) == 2 and _is_contract(typing.get_args(arg)[1]):
            found.append(("dict", typing.get_args(arg)[1]))
    return found


def _is_contract(value) -> bool:
    return isinstance(value, type) and issubclass(value, Contract)


def complete(cls: type[BaseModel], data):
    """``data`` with every nullable field of ``cls`` that it lacks set to None, recursively
    through nested contracts (the writer's rule: an absent figure is written as null)."""
    if not isinstance(data, dict) or not _is_contract(cls):
        return data
    out = dict(data)
    for name, info in cls.model_fields.items():
        key = info.alias or name
        if key not in out:
            if _nullable(info.annotation):
                out[key] = None
            continue
        value = out[key]
        for kind, sub in _models_in(info.annotation):
            if kind == "one" and isinstance(value, dict):
                out[key] = complete(sub, value)
            elif kind == "list" and isinstance(value, list):
                out[key] = [complete(sub, v) for v in value]
            elif kind == "dict" and isinstance(value, dict):
                out[key] = {k: complete(sub, v) for k, v in value.items()}
    return out


def finite_json(value):
    """``value`` with NaN and infinities as None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


# ---------------------------------------------------------------- one-line errors

_WHAT = {
    "missing": "is missing",
    "extra_forbidden": "is not a field of this contract (renamed or misspelt?)",
}


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "tagged-union"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def describe(exc: PydanticValidationError, fix: str) -> str:
    """``field X is missing; <fix>`` for the first error of a pydantic validation (a rename
    shows as a missing field and an unknown one: the missing field is named first, then
    the unknown one)."""
    errors = exc.errors(include_url=False)
    missing = [e for e in errors if e["type"] == "missing"]
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    first = (missing or extra or errors)[0]
    what = _WHAT.get(first["type"])
    if what is None:
        shown = repr(first.get("input"))
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        what = f"is {shown}: {first['msg'].lower()}"
    text = f"field {_path(first['loc'])} {what}"
    if missing and extra:
        text += f" (and {_path(extra[0]['loc'])} is not a field: a renamed key?)"
    more = len(errors) - 1 - (1 if missing and extra else 0)
    if more > 0:
        text += f" (+{more} more)"
    return f"{text}; {fix}"


def parse(cls: type[BaseModel], label: str, data, fix: str):
    """``cls`` validated from ``data`` (a reader's strict validation); a ValidationError
    (exit 2) of one line naming ``label`` (the file) and the first bad field otherwise."""
    try:
        return cls.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(" ".join(f"{label}: {describe(exc, fix)}".split())) from None


def dump(instance: BaseModel) -> dict:
    """The JSON document of a contract (what is written to the artifact)."""
    return instance.model_dump(mode="json", by_alias=True)

