"""``ugatit models``: the registered model names of every family and where each comes from."""

import json

import typer
from rich.table import Table

from .app import app, console, family_help


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    """List the registered model names and where each one comes from."""
    from ..store.registry import registered_models

    named = registered_models()
    if as_json:
        rows = [{"name": m.name, "family": m.family, "description": m.description, "origin": m.origin}
                for m in named.values()]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "description", "origin", title="Registered models")
    for m in named.values():
        table.add_row(m.name, m.description, m.origin)
    console.print(table)
    console.print("--model also takes a Hub repo id (user/name), a model folder, a training run folder, "
                  f"or an official checkpoint ({family_help('model')}).", highlight=False)
