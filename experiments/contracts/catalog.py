"""Every experiment this project knows, as plain data (no runner code, nothing of ours imported).

One :class:`Experiment` per experiment, in the order the suite runs them (an idle baseline
before any load, the heat soak last): its canonical name, the other names older artifacts and
imports used for it, its display title, the warehouse tables its report fills and the tables
it writes as artifacts beside the report, the figures the fleet table shows and its dashboard
page. The warehouse, the dashboard and the CLI read this; ``experiments/registry.py`` adds the
runner side (config class, runner, analysis).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """An experiment's dashboard page (``dashboard/app_pages/<file>``)."""

    file: str
    icon: str
    position: int  # its place among the experiment pages of the navigation
    title: str | None = None  # None: the experiment's title

    @property
    def url_path(self) -> str:
        """The page's URL path: its file stem, with dashes."""
        return self.file.removesuffix(".py").replace("_", "-")


@dataclass(frozen=True)
class Experiment:
    """One experiment as its consumers see it."""

    name: str
    title: str
    aliases: tuple[str, ...] = ()  # other names of it in stored or imported results
    tables: tuple[str, ...] = ()  # typed warehouse tables its report fills
    artifacts: tuple[str, ...] = ()  # tables it writes as ``<table>.parquet`` beside the report
    default: bool = True  # runs when no --experiments subset is given
    uses_model: bool = False  # --model and --dtype apply to it
    analyzable: bool = False  # `fleetphysics analyze` can compute it from a stored trace
    headline: tuple[tuple[str, tuple[str, ...]], ...] = ()  # fleet-table column -> figure paths, first present wins
    page: Page | None = None

    @property
    def spellings(self) -> tuple[str, ...]:
        """The canonical name, then its aliases."""
        return (self.name, *self.aliases)

    @property
    def page_title(self) -> str | None:
        """The title of its dashboard page (None without one)."""
        return None if self.page is None else self.page.title or self.title


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "baseline", "Idle baseline", aliases=("idle_baseline",), tables=("baselines",), analyzable=True,
        headline=(("idle_w", ("mean_robust_w",)), ("idle_sem_w", ("sem_eff_w",)), ("fake_idle", ("fake_idle",))),
        page=Page("baselines.py", ":material/bolt:", 0, title="Baselines"),
    ),
    Experiment(
        "instrument_response", "Sensor response", aliases=("sensor_response",), tables=("instrument_response",),
        analyzable=True,
        headline=(("update_period_ms", ("power_instant_w.update_period_ms", "power_w.update_period_ms")),
                  ("rise_ms", ("power_instant_w.rise_ms", "power_w.rise_ms"))),
        page=Page("sensor_response.py", ":material/sensors:", 4),
    ),
    Experiment(
        "vram_cliff", "VRAM cliff", tables=("vram_cliff", "vram_cliff_points", "vram_cliff_probes"), uses_model=True,
        headline=(("vram_cliff", ("max_context_batch1", "max_context")),),
        page=Page("vram_cliff.py", ":material/memory:", 2),
    ),
    Experiment(
        "joule_curve", "Joule curve", aliases=("energy_per_token",), tables=("joule_curve", "joule_fit"),
        artifacts=("events",), uses_model=True,
        headline=(("j_per_token", ("j_per_token_batch1", "j_per_token")),),
        page=Page("joule_curve.py", ":material/battery_charging_full:", 3),
    ),
    Experiment(
        "heat_soak", "Heat soak", aliases=("thermal_equilibrium",), tables=("heat_soak", "heat_soak_series"),
        analyzable=True,
        headline=(("tau_s", ("tau_s",)), ("t_inf_c", ("t_inf_c",)), ("equilibrium", ("equilibrium",))),
        page=Page("heat_soak.py", ":material/thermostat:", 1),
    ),
    Experiment(
        "training_coupling", "Training coupling", tables=("training_coupling", "training_steps", "rle_series"),
        default=False, page=Page("training_coupling.py", ":material/model_training:", 5),
    ),
)


def names(default_only: bool = False) -> tuple[str, ...]:
    """Canonical names in suite order (``default_only``: those a run without a subset runs)."""
    return tuple(e.name for e in EXPERIMENTS if e.default or not default_only)


def find(name: str) -> Experiment | None:
    """The experiment called ``name`` (canonical or alias), or None."""
    return next((e for e in EXPERIMENTS if name in e.spellings), None)


def canonical(name: str) -> str | None:
    """The canonical name of ``name`` (itself or an alias), or None for an unknown name."""
    found = find(name)
    return None if found is None else found.name


def spellings(name: str) -> tuple[str, ...]:
    """Every name experiment ``name`` is stored under (for SQL ``IN`` lists); () when unknown."""
    found = find(name)
    return () if found is None else found.spellings


def alias_map() -> dict[str, str]:
    """Every spelling (canonical names and aliases) -> canonical name."""
    return {s: e.name for e in EXPERIMENTS for s in e.spellings}


def pages() -> tuple[Experiment, ...]:
    """The experiments with a dashboard page, in navigation order."""
    return tuple(sorted((e for e in EXPERIMENTS if e.page is not None), key=lambda e: e.page.position))


def headline(reports: dict) -> dict:
    """The fleet table's figures from one device's reports ({name: report}; missing: None).

    A path ``a.b`` reads ``report["figures"]["a"]["b"]``; the first path present (not None)
    gives the column's value.
    """
    out = {}
    for e in EXPERIMENTS:
        figures = (reports.get(e.name) or {}).get("figures") or {}
        for column, paths in e.headline:
            out[column] = next((v for v in (_at(figures, p) for p in paths) if v is not None), None)
    return out


def _at(doc: dict, path: str):
    for key in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc
