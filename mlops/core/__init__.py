"""Core: the config schema, errors, settings, data loading, the data contract, validation and features."""
