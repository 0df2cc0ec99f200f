"""Typed contracts between the experiments and the warehouse (pydantic models).

One model per document that crosses a package boundary: each experiment's report
(:data:`REPORT_MODELS`, keyed by canonical experiment name), the run metadata, the
fingerprint and the poller's statistics (:mod:`.run`). Analyses and runners build their
reports through these models and the artifacts are written from them
(:func:`report_json`); ingest reads every report back through the same model, strictly
(:func:`read_report`): a missing, renamed or mistyped field is a one-line ValidationError
naming the file and the field, before anything is written.

Older versions are upgraded explicitly by named functions (:mod:`.report`:
``upgrade_unversioned``, ``upgrade_report_v1``; TR122 baselines: :mod:`.tr122`), never
guessed. These modules import pydantic, the standard library and the error tree only.

An analysis that gains a figure adds one field to its experiment's figures model (``name:
float | None`` on a class, ``name=(float | None, ...)`` in a :func:`~.base.model` call); the
writer fills it with null where the analysis leaves it out. Until the field is declared,
that experiment's report fails with the new key named (``checks.error``), so a figure never
reaches the warehouse untyped. Reports already written at the current version lack the new
key and are refused: once such reports exist, adding, renaming or retyping a figure is a new
``REPORT_SCHEMA_VERSION`` whose named upgrade step says what becomes of the old key (as
``upgrade_report_v1`` writes null for what version 1 left out).
"""

from __future__ import annotations

from pydantic import BaseModel

from agents.errors import ValidationError

from .base import Contract, complete, describe, dump, parse
from .baseline import BaselineFigures, BaselineReport
from .heat_soak import HeatSoakFigures, HeatSoakReport
from .joule_curve import JouleCurveFigures, JouleCurveReport
from .report import REPORT_SCHEMA_VERSION, Report, upgrade_report
from .run import Fingerprint, PollerStats, RunMetadata
from .sensor_response import SensorResponseFigures, SensorResponseReport
from .training_coupling import TrainingCouplingFigures, TrainingCouplingReport
from .vram_cliff import VramCliffFigures, VramCliffReport

REPORT_MODELS: dict[str, type[BaseModel]] = {
    "baseline": BaselineReport,
    "instrument_response": SensorResponseReport,
    "vram_cliff": VramCliffReport,
    "joule_curve": JouleCurveReport,
    "heat_soak": HeatSoakReport,
    "training_coupling": TrainingCouplingReport,
}

KNOWN_VERSIONS = (1, REPORT_SCHEMA_VERSION)  # 1: upgraded on read (experiments.contracts.report)
READ_FIX = "re-write the report with this fleetphysics (contracts: experiments/contracts/)"


def build_report(name: str, figures: dict | None, simulated: bool, checks: dict | None = None,
                 quality: dict | None = None, **extra) -> Report:
    """The report of experiment ``name`` from what its analysis produced (the writer's
    side: absent nullable figures become null; anything else wrong raises pydantic's
    ValidationError, a bug in the analysis rather than bad input)."""
    model = REPORT_MODELS[name]
    doc = {"experiment": name, "schema_version": REPORT_SCHEMA_VERSION, "simulated": simulated,
           "figures": figures, "quality": quality or {}, "checks": checks or {}, **extra}
    return model.from_analysis(doc)


def report_json(report: Report) -> dict:
    """The artifact's JSON document of a report."""
    return dump(report)


def read_report(label: str, doc, expected_name: str | None = None) -> Report:
    """A report read strictly (older versions upgraded by their named steps); a
    ValidationError of one line naming ``label`` and the field otherwise. An experiment
    with no contract is refused."""
    if not isinstance(doc, dict):
        raise ValidationError(f"{label}: document is a {type(doc).__name__}, not a JSON object; {READ_FIX}")
    name = doc.get("experiment")
    model = REPORT_MODELS.get(name) if isinstance(name, str) else None
    if model is None:
        known = ", ".join(REPORT_MODELS)
        raise ValidationError(f"{label}: field experiment is {name!r}, an experiment with no contract; "
                              f"an experiment report is one of {known}")
    if expected_name is not None and name != expected_name:
        raise ValidationError(f"{label}: field experiment is {name!r} but the file is named {expected_name}.json; "
                              "name the file after its experiment")
    version = doc.get("schema_version", 1)
    if version not in KNOWN_VERSIONS or isinstance(version, bool):
        raise ValidationError(f"{label}: field schema_version is {version!r}, not a version this fleetphysics reads "
                              f"({', '.join(map(str, KNOWN_VERSIONS))}); re-write the report with this fleetphysics, "
                              "or upgrade fleetphysics")
    return parse(model, label, upgrade_report(model, doc), READ_FIX)


__all__ = [
    "REPORT_MODELS", "REPORT_SCHEMA_VERSION", "Contract", "Report", "RunMetadata", "Fingerprint", "PollerStats",
    "BaselineFigures", "SensorResponseFigures", "VramCliffFigures", "JouleCurveFigures", "HeatSoakFigures",
    "TrainingCouplingFigures", "build_report", "report_json", "read_report", "complete", "describe", "dump", "parse",
]
