"""kdstream: a streaming recommender with continual distillation."""

__version__ = "0.1.0"
__all__ = ["__version__"]
