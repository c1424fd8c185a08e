"""Registry: every MLflow read and write (versions, aliases and their history, logged models)."""
