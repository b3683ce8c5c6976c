"""The ``ugatit`` command line: thin Typer commands over the library functions."""

from .app import app, main

__all__ = ["app", "main"]
