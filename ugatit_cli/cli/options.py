"""Command-line options made from dataclass fields and family declarations, so that the CLI and the
library never disagree on a name, a type or a default.

``ugatit train``: every field of :class:`~ugatit_cli.families.base.RunConfig` (panel "Run") and of each
family's ``hyper_params`` (one help panel per family) that was declared with ``families.base.option``.
``ugatit translate``: each family's ``translate_options``. Every such option defaults to None ("not
given"): the family's dataclass default applies, and the help shows it.
"""

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import typer

from ..families.base import Family, RunConfig, cli_flag

RUN_PANEL = "Run (every --arch)"


@dataclasses.dataclass
class Generated:
    """One generated option: its Python name, where it applies and how it is declared."""

    name: str
    families: list[str]
    parameter: inspect.Parameter


def _panel(families: list[Family], arch: bool = True) -> str:
    titles = ", ".join(f.title for f in families)
    return f"{titles} (--arch {'|'.join(f.name for f in families)})" if arch else f"{titles} models"


def _shown(values: dict[str, Any]) -> str:
    distinct = {repr(v) for v in values.values()}
    if len(distinct) == 1:
        value = next(iter(values.values()))
        return "none" if value is None else str(value)
    return "; ".join(f"{name}: {value}" for name, value in values.items())


def _bool_decl(flag: str, negative: str | None) -> str:
    return f"{flag}/{negative}" if negative else flag


def _option(name: str, annotation: Any, flag: str, negative: str | None, help: str, panel: str,
            show_default: str | None) -> inspect.Parameter:
    is_bool = annotation in (bool, bool | None)
    decl = _bool_decl(flag, negative) if is_bool else flag
    kind = bool if is_bool else _plain(annotation)
    info = typer.Option(None, decl, help=help, rich_help_panel=panel, show_default=show_default or False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind | None)


def _plain(annotation: Any) -> Any:
    """``float | None`` -> ``float``: the generated options are all optional already."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if args and type(None) in getattr(annotation, "__args__", ()) else annotation


def _resolved_types(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def train_options(families: dict[str, Family]) -> list[Generated]:
    """The run options, then each family's hyper-parameters (a field several families share is one option,
    in a panel naming them all; its shown default lists each family's when they differ)."""
    generated = []
    run_types = _resolved_types(RunConfig)
    for f in dataclasses.fields(RunConfig):
        meta = f.metadata.get("cli")
        if meta is None:
            continue
        defaults = {name: fam.run_defaults.get(f.name, f.default) for name, fam in families.items()}
        generated.append(Generated(f.name, list(families), _option(
            f.name, run_types[f.name], cli_flag(f), meta.get("negative"), meta.get("help", ""), RUN_PANEL,
            meta.get("show_default") or _shown(defaults))))
    owners: dict[str, list[tuple[Family, dataclasses.Field, Any]]] = {}
    for family in families.values():
        types = _resolved_types(family.hyper_params)
        for f in dataclasses.fields(family.hyper_params):
            if "cli" in f.metadata:
                owners.setdefault(f.name, []).append((family, f, types[f.name]))
    run_names = {f.name for f in dataclasses.fields(RunConfig)}
    for name, entries in owners.items():
        if name in run_names:
            raise ValueError(f"hyper-parameter {name!r} of {entries[0][0].name} shadows a run setting")
        family, f, annotation = entries[0]
        meta = f.metadata["cli"]
        defaults = {fam.name: _default(field) for fam, field, _ in entries}
        generated.append(Generated(name, [fam.name for fam, _, _ in entries], _option(
            name, annotation, cli_flag(f), meta.get("negative"), meta.get("help", ""),
            _panel([fam for fam, _, _ in entries]), meta.get("show_default") or _shown(defaults))))
    return generated


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def translate_options(families: dict[str, Family], kind: str = "translate_options") -> list[Generated]:
    """Each family's extra translate options (one option per name, in a panel naming its families);
    ``kind="export_options"``: its export options."""
    owners: dict[str, list[tuple[Family, Any]]] = {}
    for family in families.values():
        for opt in getattr(family, kind):
            owners.setdefault(opt.name, []).append((family, opt))
    generated = []
    for name, entries in owners.items():
        opt = entries[0][1]
        annotation = bool if opt.type is bool else opt.type
        panel = _panel([f for f, _ in entries], arch=False)
        parameter = _option(name, annotation, opt.cli_flag, None, opt.help, panel, None)
        if opt.metavar:
            parameter.default.metavar = opt.metavar
        generated.append(Generated(name, [f.name for f, _ in entries], parameter))
    return generated


def with_options(func: Callable[..., Any], generated: Iterable[Generated]) -> Callable[..., Any]:
    """``func`` (whose last parameter is ``options: dict``) with the generated options added to its
    signature; their values reach ``func`` in ``options`` (None: not given)."""
    generated = list(generated)
    signature = inspect.signature(func)
    static = [p for p in signature.parameters.values() if p.name != "options"]
    taken = {p.name for p in static}
    extra = [g.parameter for g in generated if g.name not in taken]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        options = {p.name: kwargs.pop(p.name) for p in extra}
        return func(**kwargs, options=options)

    command.__signature__ = signature.replace(parameters=[*static, *extra])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in [*static, *extra]
                               if p.annotation is not inspect.Parameter.empty}
    return command


def applies(generated: Iterable[Generated], family: Family, options: dict[str, Any]) -> None:
    """UserError for a given option that the family does not have."""
    from ..errors import UserError

    for g in generated:
        value = options.get(g.name)
        if value is not None and value is not False and family.name not in g.families:
            flag = g.parameter.default.param_decls[0].split("/")[0] if g.parameter.default.param_decls else g.name
            raise UserError(f"{flag} does not apply to --arch {family.name} ({family.title})")


__all__ = ["Generated", "applies", "train_options", "translate_options", "with_options"]
