"""The package's shape: imports run one way (cli -> pipelines -> store -> families -> data/core), shared
modules name no U-GAT-IT internals, ``--help`` and ``translate`` import no training code, the CLI's options
are the dataclasses' fields with their defaults, model folders say which family they hold."""

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "ugatit_cli"
#: layer of each top-level part of the package; a module may import its own layer or lower ones only
LAYERS = {"cli": 4, "__main__": 4, "translation": 3, "clustering": 3, "media": 3, "export": 3, "evaluate": 3,
          "train": 3, "demo": 3, "onnx_backend": 3, "quantize": 3, "store": 2, "families": 1, "data": 0, "core": 0,
          "errors": 0}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, at module level?) for every import in the file, lazy ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found += [(n, id(node) in top) for n in [target, *names]]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
    return [(name, at_top) for name, at_top in found if name.startswith("ugatit_cli.")]


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_imports_run_one_way_and_module_level_imports_have_no_cycle():
    known = {module_name(p) for p in sources()}
    edges: dict[str, set[str]] = {}
    wrong = []
    for path in sources():
        name = module_name(path)
        for target, at_top in imports(path):
            while target not in known and "." in target:  # "pkg.module.attr" -> "pkg.module"
                target = target.rpartition(".")[0]
            if target == "ugatit_cli":  # the package root: only __version__ and lazy names
                continue
            mine, theirs = layer(name), layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{name} -> {target}")
            if at_top and target != name:
                edges.setdefault(name, set()).add(target)
    assert not wrong, "imports against the layer order: " + ", ".join(wrong)

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                # a package importing its own submodules at the end is how packages work; anything else is a cycle
                cycle = stack[stack.index(nxt):] + [nxt]
                if not all(cycle[i + 1].startswith(cycle[i] + ".") or cycle[i].startswith(cycle[i + 1] + ".")
                           or cycle[i].rpartition(".")[0] == cycle[i + 1].rpartition(".")[0]
                           for i in range(len(cycle) - 1)):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in list(edges):
        if node not in state:
            visit(node, [node])


#: identifiers and string values particular to U-GAT-IT; shared code may hold them only as values a family
#: hands it (docstrings and comments may cite them as examples)
UGATIT_NAMES = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB", "cam_logit", "heatmap", "testA", "testB",
                "trainA", "trainB", "a2b", "b2a", "UGATITConfig", "UGATITModel", "_params_", "selfie2anime")


def code_tokens(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    tokens = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            tokens.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            tokens.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.arg)):
            tokens.append((node.lineno, getattr(node, "name", None) or node.arg))
        elif isinstance(node, ast.alias):
            tokens.append((node.lineno, node.asname or node.name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            tokens.append((node.lineno, node.value))
    return tokens


def test_shared_modules_name_no_ugatit_internals():
    family = PACKAGE / "families" / "ugatit"
    shared = [p for p in sources() if family not in p.parents and p != PACKAGE / "__init__.py"]  # root: lazy API
    found = [f"{p.relative_to(REPO_ROOT)}:{line}: {text!r}" for p in shared for line, text in code_tokens(p)
             for name in UGATIT_NAMES if name in text]
    assert not found, "\n".join(found)


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_imports_no_torch_and_translate_no_training_code():
    loaded = json.loads(python(
        "import sys, json, contextlib, io\n"
        "from ugatit_cli.cli import app\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: app(['--help'])\n"
        "    except SystemExit: pass\n"
        "print(json.dumps(sorted(sys.modules)))"))
    assert "torch" not in loaded and "ugatit_cli.cli.train" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("onnxruntime", "onnx", "onnxscript")]
    loaded = json.loads(python("import sys, json, ugatit_cli.translation, ugatit_cli.store.sources\n"
                               "print(json.dumps(sorted(sys.modules)))"))
    training = [m for m in loaded if m.startswith(("ugatit_cli.train", "ugatit_cli.data", "torch.distributed.")
                                                  ) or m.endswith((".trainer", ".losses"))]
    assert "ugatit_cli.translation" in loaded and not [m for m in training if m.startswith("ugatit_cli")], training
    assert "onnxruntime" not in loaded  # imported when a session is made, not by translate's module


def test_train_options_are_the_dataclass_fields_with_their_defaults():
    # in a fresh interpreter: the CLI is built from the families registered when it is first imported, and
    # other test modules register families of their own in this process
    code = "import test_layout; test_layout.check_train_options()"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def check_train_options():
    import typer

    from ugatit_cli.cli import app
    from ugatit_cli.families import families, get_family
    from ugatit_cli.families.base import RunConfig, cli_flag
    from ugatit_cli.train import TrainConfig

    family = get_family("ugatit")
    command = typer.main.get_command(app)
    train = command.commands["train"]
    params = {p.name: p for p in train.params if p.param_type_name == "option"}

    def shown(values):  # one default, or each family's when they differ
        if len({repr(v) for v in values.values()}) == 1:
            value = next(iter(values.values()))
            return "none" if value is None else str(value)
        return "; ".join(f"{name}: {value}" for name, value in values.items())

    every = families()
    for f in dataclasses.fields(RunConfig):
        option = params[f.name]
        assert cli_flag(f) in option.opts and option.default is None, f.name  # None: the default applies
        assert option.show_default == shown({n: fam.run_defaults.get(f.name, f.default) for n, fam in every.items()})
    for fam in every.values():
        for f in dataclasses.fields(fam.hyper_params):
            option = params[f.name]
            assert cli_flag(f) in option.opts and option.default is None, f.name
            owners = {n: {g.name: g for g in dataclasses.fields(o.hyper_params)}.get(f.name)
                      for n, o in every.items()}
            want = shown({n: g.default for n, g in owners.items() if g is not None})
            assert option.show_default in (want, f.metadata["cli"].get("show_default")), f.name
    # TrainConfig (the Python API's flat dataclass) has exactly the run settings and the hyper-parameters,
    # with the same defaults
    flat = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    split = {**{f.name: f.default for f in dataclasses.fields(RunConfig)}, **family.run_defaults,
             **{f.name: f.default for f in dataclasses.fields(family.hyper_params)}}
    assert flat == split


def test_a_new_model_folder_records_family_and_format_version(tmp_path):
    from ugatit_cli.families.model_folder import read_model_folder, write_model_folder
    from ugatit_cli.families.ugatit import Generator, UGATITConfig, UGATITModel

    config = UGATITConfig(img_size=32, ch=4, n_res=1, light=True)
    folder = write_model_folder(UGATITModel(config, {"a2b": Generator(config).eval()}), tmp_path / "m")
    data = json.loads((folder / "config.json").read_text())
    assert data["family"] == "ugatit" and data["format_version"] == 1
    assert read_model_folder(folder).config == config
    data["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(data))
    from ugatit_cli.errors import UserError

    with pytest.raises(UserError, match="format_version 99"):
        read_model_folder(folder)


def test_every_public_name_resolves():
    import ugatit_cli

    for name in ugatit_cli.__all__:
        assert getattr(ugatit_cli, name) is not None, name


#: identifiers and string values particular to TUNIT (the guiding network and its EMA copies)
TUNIT_NAMES = ("GuidingNet", "guiding", "G_EMA", "C_EMA", "sty_dim", "model_N.ckpt")


def test_shared_modules_name_no_tunit_internals():
    family = PACKAGE / "families" / "tunit"
    shared = [p for p in sources() if family not in p.parents and p != PACKAGE / "__init__.py"]
    found = [f"{p.relative_to(REPO_ROOT)}:{line}: {text!r}" for p in shared for line, text in code_tokens(p)
             for name in TUNIT_NAMES if name in text]
    assert not found, "\n".join(found)
