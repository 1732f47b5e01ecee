"""The ``llamonitor`` command line (``llamonitor --help``)."""

from llamonitor.cli._app import cli, main

__all__ = ["cli", "main"]
