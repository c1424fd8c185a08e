"""Core of the MLOps system: config schema, settings, pure pipeline functions and the CLI."""

__version__ = "0.1.0"
