"""Where `DateParts` lived before the core moved to `mlops.core`: models registered then name this path."""

from mlops.core.features import DateParts

__all__ = ["DateParts"]
