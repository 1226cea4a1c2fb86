"""Entrypoints that the CLI and the REST service run: ``python -m jobs.<name>``."""
