"""Inference engines behind one small protocol, imported lazily by name."""

from tokenjoule.engines.base import Engine, GenerationResult, get_engine

__all__ = ["Engine", "GenerationResult", "get_engine"]
