"""tokenjoule: measure, model and reduce the energy of LLM inference."""

__version__ = "0.1.0"
