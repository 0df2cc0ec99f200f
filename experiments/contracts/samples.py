"""The smallest valid document of a contract with the values given: for benchmarks and
tests that write reports by hand (a real report comes from its analysis).

Every field the values leave out is null where the contract allows it, else the type's
zero (0, 0.0, false, "", [], {}, a Literal's first word, a nested contract's own minimal
document). A key the contract does not have is kept, so the contract refuses it.
"""

from __future__ import annotations

import typing

from .base import finite_json, _is_contract, _is_union, _models_in, _nullable, dump
from .report import REPORT_SCHEMA_VERSION


def minimal(cls, values: dict | None = None) -> dict:
    """A document of contract ``cls``: ``values`` (nested dicts and lists of dicts filled the
    same way), the rest minimal."""
    values = dict(values or {})
    out = {}
    for name, info in cls.model_fields.items():
        if name in values:
            out[name] = _fill(info.annotation, values.pop(name))
        elif not info.is_required():
            continue
        elif _nullable(info.annotation):
            out[name] = None
        else:
            out[name] = _zero(info.annotation)
    return out | values


def _fill(annotation, value):
    for kind, sub in _models_in(annotation):
        if kind == "one" and isinstance(value, dict):
            return minimal(sub, value)
        if kind == "list" and isinstance(value, list):
            return [minimal(sub, v) if isinstance(v, dict) else v for v in value]
        if kind == "dict" and isinstance(value, dict):
            return {k: minimal(sub, v) if isinstance(v, dict) else v for k, v in value.items()}
    return value


def _zero(annotation):
    if _is_union(annotation):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)[0]
    if _is_contract(annotation):
        return minimal(annotation)
    zeros = {bool: False, int: 0, float: 0.0, str: "", list: [], dict: {}}
    return zeros.get(origin or annotation)


def sample_report(name: str, figures: dict | None = None, simulated: bool = True, **top) -> dict:
    """A valid report of experiment ``name`` (its JSON document) with these figures and
    top-level fields (``checks``, ``probes``, ``quality``, ...), the rest minimal; NaN is null."""
    from . import REPORT_MODELS

    model = REPORT_MODELS[name]
    doc = minimal(model, finite_json({"experiment": name, "schema_version": REPORT_SCHEMA_VERSION,
                                  "simulated": simulated, "figures": figures if figures is not None else {}, **top}))
    return dump(model.model_validate(doc))
