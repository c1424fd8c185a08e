"""The `mlops` command: the top layer, and the one place for start-up speed."""
