"""argparse types for numeric options: finite, in range, or one line and exit 2.

``type=float`` accepts ``nan``, ``inf``, ``0`` and ``-1``, which turn a limit off or into a
traceback further down (``--timeout-s 0`` ran without a limit, ``--lock-timeout-s nan``
waited forever). Every numeric option of ``fleetphysics`` takes one of these instead; argparse
turns the ArgumentTypeError into ``fleetphysics: error: argument --timeout-s: ...`` and
exit 2.

Old spellings of renamed options (``--profile`` for ``--preset``, say) stay accepted through
:func:`add_deprecated_alias`: hidden from ``--help``, they set the new option's value and
print one deprecation line on stderr. A leaf module: it imports nothing of ours.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable


def _describe(low, high, low_open: bool) -> str:
    if high is None:
        return f"> {low:g}" if low_open else f">= {low:g}"
    return f"from {low:g} to {high:g}" if not low_open else f"> {low:g} and <= {high:g}"


def number(kind: type = float, low: float = 0.0, high: float | None = None,
           low_open: bool = True) -> Callable[[str], float | int]:
    """An argparse ``type`` for a finite ``kind`` (float or int) above ``low`` (or at least
    ``low`` when ``low_open`` is false) and at most ``high``."""
    wanted = "a whole number" if kind is int else "a number"
    rule = _describe(low, high, low_open)

    def parse(text: str):
        try:
            value = kind(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}; pass {wanted} {rule}") from None
        if not math.isfinite(value) or (value <= low if low_open else value < low) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; pass {wanted} {rule}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_float = number(float)
positive_int = number(int)
non_negative_int = number(int, 0, low_open=False)


def number_list(item: Callable[[str], float | int]) -> Callable[[str], list]:
    """An argparse ``type`` for a comma-separated list (``16,32,64``), each value parsed and
    checked by ``item`` (one of the types above)."""

    def parse(text: str) -> list:
        values = [item(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} names no value; pass one or more, comma-separated")
        return values

    parse.__name__ = f"list of {item.__name__}"
    return parse


positive_int_list = number_list(positive_int)


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and prints one
    line on stderr naming the new spelling (a note, never an error)."""

    def __init__(self, option_strings, dest, new_flag: str = "", **kwargs) -> None:
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if option_string is None and values is None:
            return  # an old positional that was not given
        old = option_string or f"the positional {self.metavar or self.dest}"
        print(f"fleetphysics: note: {old} is deprecated; use {self.new_flag} (accepted for now)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: argparse.Action, **kwargs) -> argparse.Action:
    """Accept ``old`` (an option string like ``--profile``) as a hidden spelling of the option
    ``new`` (the action ``add_argument`` returned): same dest, type and choices."""
    kwargs.setdefault("type", new.type)
    kwargs.setdefault("choices", new.choices)
    kwargs.setdefault("metavar", new.metavar)
    return parser.add_argument(old, dest=new.dest, action=DeprecatedAlias, new_flag=new.option_strings[0],
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
