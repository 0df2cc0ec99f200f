"""Instrument response: a square wave of load, analysed per power field."""

from experiments.instrument_response.config import InstrumentResponseConfig
from experiments.instrument_response.runner import run

NAME = "instrument_response"
__all__ = ["NAME", "InstrumentResponseConfig", "run"]
