"""The ``ugatit`` command line: thin Typer commands over the library functions."""

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="U-GAT-IT image-to-image translation.")


def main() -> None:
    app()
