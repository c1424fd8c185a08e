"""Errors a user can cause. Each carries one sentence: what, where, what to do."""


class MLOpsError(Exception):
    """Base for user-facing errors: the CLI prints the message alone and exits non-zero."""

    exit_code = 2


class ConfigError(MLOpsError):
    """The config file is missing, malformed or has an invalid field."""


class DataError(MLOpsError):
    """The data cannot be read or breaks the data contract structurally."""

    exit_code = 3


class RegistryError(MLOpsError):
    """The model registry does not hold what was asked for."""

    exit_code = 4


class SettingsError(ConfigError):
    """An environment variable the project reads holds a value it cannot use."""
