"""Simulated units: a board's nominal physics, and each unit's own constants.

A board profile gives nominal physics and its ``unit_spread``; every simulated unit draws
its own value of each spread field uniformly within nominal * (1 +- spread), from a hash
of (board, host, slot): the same unit always gets the same constants, in any process.

A spec can carry unit overrides that model a fault on one unit, e.g.
``sim:h100-sxm?idle_power_w=95&ambient_c=38``: the override replaces the drawn value.
Whatever its constants, a unit presents itself as its board (profile hash, reported power
limit, VRAM, temperature thresholds), so it stays in the board's comparability group, as a
faulty real unit does: a power-capped unit (``power_limit_w=400`` on a 700 W board) caps
its power below the limit it reports.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from urllib.parse import parse_qsl

from agents.errors import ConfigError
from agents.profiles import Profile, load_profile

_NOT_OVERRIDABLE = {"name", "description", "unit_spread"}


def split_target(target: str) -> tuple[str, dict]:
    """``h100-sxm?idle_power_w=95`` -> (``h100-sxm``, {"idle_power_w": 95.0}); raises ConfigError."""
    board, _, query = str(target).partition("?")
    overrides: dict = {}
    if not query:
        return board, overrides
    fields = Profile.model_fields
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in fields or key in _NOT_OVERRIDABLE:
            raise ConfigError(f"device spec sim:{target}: {key!r} is not a unit field; use profile fields such as "
                              "idle_power_w, ambient_c, thermal_resistance_c_per_w, power_limit_w")
        kind = fields[key].annotation
        try:
            overrides[key] = _parse_bool(value) if kind is bool else float(value)
        except ValueError:
            raise ConfigError(f"device spec sim:{target}: {key}={value!r} is not a number; write e.g. {key}=95") from None
    if "?" in query or not overrides:
        raise ConfigError(f"device spec sim:{target}: write overrides as ?field=value&field=value")
    return board, overrides


def _parse_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(value)


def _uniform(*parts) -> float:
    """A uniform draw in [0, 1) from a hash of ``parts`` (stable across processes)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def draw_unit(board: Profile, host_id: str, slot: int) -> Profile:
    """The board's unit at (host, slot): each ``unit_spread`` field drawn within its spread."""
    update = {key: getattr(board, key) * (1.0 + spread * (2.0 * _uniform(board.name, host_id, slot, key) - 1.0))
              for key, spread in sorted(board.unit_spread.items()) if spread > 0}
    return board.model_copy(update=update) if update else board


def unit_profile(target: str, host_id: str, slot: int) -> tuple[Profile, Profile]:
    """(the unit's own profile, its board's nominal profile) for a spec target."""
    name, overrides = split_target(target)
    board = load_profile(name)
    unit = draw_unit(board, host_id, slot)
    if overrides:
        try:
            unit = Profile(**(unit.model_dump() | overrides))
        except ValueError as exc:
            first = str(exc).splitlines()
            why = first[2].strip().removeprefix("Value error, ") if len(first) > 2 else str(exc)
            raise ConfigError(f"device spec sim:{target}: the unit would break a profile rule ({why})") from None
    return unit, board


def board_name(target: str) -> str:
    """The board a spec target names, without its overrides (for host names)."""
    return split_target(target)[0]


def present_as_board(device, board: Profile):
    """Make a simulated unit report its board's identity (hook for agents/factory.py)."""
    info = device.info
    device._info = replace(info, vram_total_mib=board.vram_total_mib, power_limit_w=board.power_limit_w,
                           default_power_limit_w=board.power_limit_w, slowdown_temp_c=board.slowdown_temp_c,
                           shutdown_temp_c=board.shutdown_temp_c,
                           extra={**info.extra, "profile_sha256": board.content_sha256()})
    return device
