"""TR122 packs' baseline.json upgraded into the baseline contract, by one named function.

A TR122 pack (``warehouse/importers/tr122.py`` reads it) carries its idle baseline as
TR122's section 3.3 keys (``idle_watts_mean_robust``, ``fake_idle_flag``, ...), and a pack
that fleetphysics exported adds the warehouse's column names. The importer picks each
figure's value by its documented key table; this function maps those figures onto
:class:`~experiments.contracts.baseline.BaselineFigures` and leaves what a pack does not
record null. A value of the wrong type or a quality word outside the contract's is refused
with the field named, never repaired.
"""

from __future__ import annotations

from .base import complete, parse
from .baseline import BaselineReport
from .report import REPORT_SCHEMA_VERSION

# the importer's figure names (warehouse columns) -> the contract's figure
TR122_FIGURES = {
    "idle_robust_w": "mean_robust_w", "idle_sem_w": "sem_eff_w", "idle_mean_w": "mean_all_w",
    "idle_median_w": "median_w", "idle_std_w": "std_w", "floor_w": "floor_w", "floor_fraction": "floor_fraction",
    "fake_idle": "fake_idle", "idle_temp_c": "idle_temp_c", "util_p95": "util_p95", "min_w": "min_w",
    "max_w": "max_w", "n_samples": "n", "window_s": "window_s", "field": "field",
}


def baseline_report_from_tr122(label: str, figures: dict, quality: str | None, raw: dict,
                               simulated: bool) -> BaselineReport:
    """The baseline report of a TR122 pack: ``figures`` by the importer's names
    (:data:`TR122_FIGURES`), ``quality`` lowercased (null: ``no_data``), ``raw`` the pack's
    own document (kept in the report). A value the contract refuses is a one-line
    ValidationError naming ``label`` (the pack's file) and the figure."""
    mapped = {TR122_FIGURES[k]: v for k, v in figures.items() if k in TR122_FIGURES}
    mapped.setdefault("field", "power_w")  # TR122 records the averaged power field only
    mapped["quality"] = quality if quality is not None else "no_data"
    doc = {"experiment": "baseline", "schema_version": REPORT_SCHEMA_VERSION, "simulated": simulated,
           "figures": mapped, "quality": {"quality": mapped["quality"]}, "checks": {}, "source": "tr122", "raw": raw}
    return parse(BaselineReport, label, complete(BaselineReport, doc),
                 "fix that value in the pack's baseline.json (TR122 section 3.3)")
