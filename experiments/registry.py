"""Every experiment the suite can run, with the code that runs and reports it.

One :class:`Registered` per experiment, keyed by its canonical name in the catalog's order
(``experiments/contracts/catalog.py``, which says what the experiment is to its consumers).
Here is where its code lives: its config class (a pydantic model with ``for_profile(preset)``),
its runner (``run(ctx, config) -> dict``, the raw result), its analysis
(``analyse(inputs) -> Analysis``, the report and the tables it writes beside it) and its plot
(``plot(inputs)``, the PNGs of `fleetphysics plot`), as
``"module:attribute"`` paths imported on first use, so that reading the registry (the CLI's
help, a Ray host starting up) imports no runner, torch or pandas.

The suite, the reports, the job driver and the CLI ask this module for names and code; adding
an experiment is one package under ``experiments/``, one entry in the catalog and here, and one
migration for its tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

from agents.errors import ConfigError
from experiments.contracts import catalog


def load(path: str):
    """The attribute a ``"module:attribute"`` path names (imports the module)."""
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)


@dataclass(frozen=True)
class Registered:
    """One experiment: its catalog entry and where its code lives."""

    entry: catalog.Experiment
    config_path: str
    runner_path: str
    analysis_path: str
    plot_path: str | None = None

    @property
    def name(self) -> str:
        """Its canonical name."""
        return self.entry.name

    @property
    def report_model(self) -> type:
        """The pydantic model of its report, the contract between its analysis and every
        consumer (``REPORT_MODELS`` of experiments/contracts)."""
        from experiments.contracts import REPORT_MODELS

        return REPORT_MODELS[self.name]

    @property
    def config_class(self) -> type:
        """Its config model (pydantic, with ``for_profile(preset)``)."""
        return load(self.config_path)

    @property
    def runner(self):
        """``run(ctx, config) -> dict``: the experiment's workload on one device."""
        return load(self.runner_path)

    @property
    def analysis(self):
        """``analyse(inputs) -> Analysis``: its report from the runner's result and the trace."""
        return load(self.analysis_path)

    @property
    def plot(self):
        """``plot(inputs)``: its PNG figures for `fleetphysics plot` (None: it draws none)."""
        return None if self.plot_path is None else load(self.plot_path)

    def preset(self, profile: str):
        """Its config for a run preset (smoke, quick, full)."""
        return self.config_class.for_profile(profile)


def _package(name: str, config_class: str) -> Registered:
    """An experiment laid out as the built-in ones are: ``experiments/<name>/`` with
    ``config.py`` (``config_class``) and ``runner.py`` (``run``), analysed by
    ``experiments.reports.analyse_<name>`` and drawn by ``experiments.plots.plot_<name>``."""
    entry = catalog.find(name)
    if entry is None or entry.name != name:
        raise KeyError(f"{name!r} is not a canonical name in experiments/contracts/catalog.py")
    return Registered(entry, f"experiments.{name}.config:{config_class}", f"experiments.{name}.runner:run",
                      f"experiments.reports:analyse_{name}", f"experiments.plots:plot_{name}")


REGISTRY: dict[str, Registered] = {r.name: r for r in (
    _package("baseline", "BaselineConfig"),
    _package("instrument_response", "InstrumentResponseConfig"),
    _package("vram_cliff", "VramCliffConfig"),
    _package("joule_curve", "JouleCurveConfig"),
    _package("heat_soak", "HeatSoakConfig"),
    _package("training_coupling", "TrainingCouplingConfig"),
)}


def names(default_only: bool = False) -> tuple[str, ...]:
    """Registered names in suite order (``default_only``: those a run without a subset runs)."""
    return tuple(n for n, r in REGISTRY.items() if r.entry.default or not default_only)


def model_names() -> tuple[str, ...]:
    """The experiments ``--model`` and ``--dtype`` apply to."""
    return tuple(n for n, r in REGISTRY.items() if r.entry.uses_model)


def get(name: str) -> Registered:
    """The registered experiment ``name`` (a ConfigError naming the choices when unknown)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; choose from {', '.join(names())}") from None


def parse(text: str | None, flag: str = "--experiments") -> tuple[str, ...]:
    """A comma-separated subset in suite order (empty: the default suite); an unknown name is bad input."""
    if not text or not text.strip():
        return names(default_only=True)
    wanted = [n.strip() for n in text.split(",") if n.strip()]
    for n in wanted:
        if n not in REGISTRY:
            raise ConfigError(f"{flag}: unknown experiment {n!r}; choose from {', '.join(names())}")
    return tuple(n for n in names() if n in wanted)


def help_text() -> str:
    """The ``--experiments`` help line: the choices and the default suite."""
    defaults = names(default_only=True)
    extra = [n for n in names() if n not in defaults]
    note = f"; {', '.join(extra)} only when named" if extra else ""
    return f"comma-separated subset of {', '.join(defaults)} (default: all of them){note}"
