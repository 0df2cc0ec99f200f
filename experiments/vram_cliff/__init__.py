"""VRAM cliff: allocator torture (fragmentation) and the batch x context search up to the real OOM."""

from experiments.vram_cliff.config import VramCliffConfig
from experiments.vram_cliff.runner import run

NAME = "vram_cliff"
__all__ = ["NAME", "VramCliffConfig", "run"]
