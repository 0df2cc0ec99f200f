"""Helpers shared by the analysis tests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def frame(r: dict, t: np.ndarray) -> pd.DataFrame:
    """A rendered trace (agents.physics.render_trace) as a trace table, truth columns dropped."""
    df = pd.DataFrame({k: v for k, v in r.items() if not k.startswith("true_") and k != "floor"})
    df.insert(0, "t_ns", np.asarray(t, dtype=np.int64))
    return df


def assert_plain(obj):
    """Only JSON-safe python types, no NaN."""
    json.dumps(obj, allow_nan=False)
    if isinstance(obj, dict):
        for v in obj.values():
            assert_plain(v)
    elif isinstance(obj, list):
        for v in obj:
            assert_plain(v)
    else:
        assert obj is None or type(obj) in (str, int, float, bool), type(obj)
