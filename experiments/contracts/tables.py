"""The tables experiments write as Parquet artifacts beside their reports: names and columns.

A leaf contract (pyarrow and the standard library only, no runner code): the experiments
write these files at analysis time, with the settings the analysis really used, and the
warehouse only loads and validates them, never recomputes them. A file lies in the device
dir as ``<name>.parquet``; every column below is present with its type (values may be null
where the analysis had nothing to say).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class ArtifactTable:
    """One table an experiment writes: ``<name>.parquet`` in the device dir."""

    name: str
    experiment: str
    schema: pa.Schema
    key: tuple[str, ...]  # columns whose values are unique per row
    about: str

    @property
    def file_name(self) -> str:
        """The file's name in the device dir."""
        return f"{self.name}.parquet"


TRAINING_STEPS = ArtifactTable(
    "training_coupling_steps", "training_coupling",
    pa.schema([
        ("step", pa.int64()),
        ("t_start_ns", pa.int64()),  # host monotonic clock of the trace (after clock_offset_ns)
        ("t_end_ns", pa.int64()),
        ("loss", pa.float64()),
        ("grad_norm", pa.float64()),  # before clipping
        ("lr", pa.float64()),
        ("lr_spike", pa.bool_()),
        ("load_level", pa.float64()),  # declared level of the step (simulated devices)
        ("energy_j", pa.float64()),  # device counter at the step's ends
        ("energy_trace_j", pa.float64()),  # mean power x duration
        ("aligned", pa.bool_()),  # a good trace read falls inside the step
        ("n_samples", pa.int64()),
        ("power_w", pa.float64()),
        ("temp_c", pa.float64()),
        ("temp_slope_c_per_s", pa.float64()),
        ("rle", pa.float64()),
        ("collapse", pa.bool_()),
        ("spike", pa.bool_()),  # grad_norm above its rolling median + k MAD
    ]),
    ("step",),
    "one row per training step: the runner's columns and the coupling analysis' per-step figures",
)

RLE_SERIES = ArtifactTable(
    "training_coupling_rle", "training_coupling",
    pa.schema([
        ("t_ns", pa.int64()),  # bin start, host monotonic clock
        ("t_s", pa.float64()),  # seconds since the first bin
        ("n_reads", pa.int64()),
        ("util_pct", pa.float64()),
        ("power_w", pa.float64()),
        ("temp_c", pa.float64()),
        ("a_load", pa.float64()),  # power / power limit
        ("dtdt_c_per_s", pa.float64()),
        ("t_sustain_s", pa.float64()),
        ("rle", pa.float64()),
        ("gated", pa.bool_()),
        ("collapse", pa.bool_()),
        ("collapse_start", pa.bool_()),
    ]),
    ("t_ns",),
    "RLE and its collapse detector in the analysis' 1 s bins of the whole trace",
)

TABLES: dict[str, ArtifactTable] = {t.name: t for t in (TRAINING_STEPS, RLE_SERIES)}


def tables_of(experiment: str) -> tuple[ArtifactTable, ...]:
    """The tables an experiment's report comes with (empty for an experiment without any)."""
    return tuple(t for t in TABLES.values() if t.experiment == experiment)


def empty(table: ArtifactTable) -> pa.Table:
    """A table with the columns and no rows (what an analysis that computed nothing writes)."""
    return table.schema.empty_table()
