"""The envelope every experiment report shares, and its schema versions.

A report is ``{"experiment", "schema_version", "simulated", "figures", "quality", "checks",
"source", "raw"}`` plus what an experiment adds (``probes``, ``steps``). ``figures`` is the
experiment's own contract, or ``null`` when the experiment failed (``checks.error`` says
why). ``quality`` repeats the figures' quality flags for a reader of the JSON alone; the
warehouse reads them from the figures.

Versions (``REPORT_SCHEMA_VERSION``):

* 1: what fleetphysics wrote before the contracts: the same keys, but an absent figure was
  left out rather than written as null, and a failed experiment had ``figures: {}``.
  An artifact without ``schema_version`` is version 1.
* 2: the contracts: every field present (null when absent), ``figures: null`` when failed,
  and every memory figure named in MiB (``capacity_mib``, ``peak_allocated_mib``, ...):
  version 1 wrote the same MiB values as ``*_mb``.

:func:`upgrade_report` upgrades an older version explicitly, one named step per version;
nothing else is ever guessed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from .base import Contract, complete

REPORT_SCHEMA_VERSION = 2


class Report(Contract):
    """Fields of every report; each experiment narrows ``experiment``, ``figures`` and ``checks``."""

    experiment: str
    schema_version: Literal[2]
    simulated: bool
    quality: dict[str, Any]
    source: Literal["analyze", "tr122"] | None  # None: the suite's own report
    raw: dict[str, Any] | None  # an imported file's own document (TR122's baseline.json)

    def overall_quality(self) -> str | None:
        """The one quality word stored beside the payload (``experiment_results.quality``)."""
        return None


class Checks(Contract):
    """A report's checks: each experiment adds its own (null: the check did not run)."""

    error: str | None  # the experiment raised: its one-line error, and figures is null


def upgrade_unversioned(doc: dict) -> dict:
    """A report without ``schema_version`` is this project's version 1 (the same keys)."""
    return {**doc, "schema_version": 1}


def mib_names(value):
    """``value`` with every key ending in ``_mb`` (version 1's name of a MiB figure) ending in
    ``_mib``, at any depth; a key whose ``_mib`` name is also present is left for the model
    to refuse."""
    if isinstance(value, list):
        return [mib_names(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, v in value.items():
        new = key[:-3] + "_mib" if isinstance(key, str) and key.endswith("_mb") and key[:-3] + "_mib" not in value else key
        out[new] = mib_names(v)
    return out


def upgrade_report_v1(model: type[BaseModel], doc: dict) -> dict:
    """Version 1 -> 2: memory figures renamed ``*_mb`` -> ``*_mib`` (same values), absent
    figures (left out by version 1) written as null, and a failed experiment's empty
    ``figures`` as null. Other renamed or mistyped keys are not repaired."""
    out = mib_names(dict(doc))
    checks = out.get("checks")
    if out.get("figures") == {} and isinstance(checks, dict) and checks.get("error") is not None:
        out["figures"] = None
    out["schema_version"] = 2
    return complete(model, out)


def upgrade_report(model: type[BaseModel], doc) -> object:
    """``doc`` at the current version: each older version upgraded by its named step. A
    version this fleetphysics does not know is left as it is (the model then refuses it)."""
    if not isinstance(doc, dict):
        return doc
    if "schema_version" not in doc:
        doc = upgrade_unversioned(doc)
    if doc.get("schema_version") == 1 and not isinstance(doc.get("schema_version"), bool):
        doc = upgrade_report_v1(model, doc)
    return doc
