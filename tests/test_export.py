"""``ugatit export``: model folders, official checkpoints, ONNX, float16 storage and pushing to the Hub.

Real files throughout: models written with safetensors/torch.save, the official TF fixture, ONNX graphs run
by onnxruntime, and uploads through huggingface_hub to the local Hub stand-in (tests/hub_server.py).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, constants
from safetensors import safe_open
from test_loading import write_official_checkpoint
from typer.testing import CliRunner

import ugatit_cli
from ugatit_cli.cli.app import app
from ugatit_cli.errors import UserError
from ugatit_cli.export import ONNX_OPSET, export_model, push_model_folder
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit import Generator, UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel

REPO_ROOT = Path(__file__).resolve().parents[1]


def random_model(size=32, light=False, variant="pytorch", n_res=1, seed=0, directions=("a2b", "b2a")):
    """Generators with every parameter random (rho in [0, 1]), so no code path hides behind an identity init."""
    torch.manual_seed(seed)
    config = UGATITConfig(img_size=size, ch=4, n_res=4 if variant == "tf" else n_res, light=light, variant=variant)
    generators = {}
    for direction in directions:
        generator = Generator(config).eval()
        with torch.no_grad():
            for name, param in generator.named_parameters():
                param.copy_(torch.rand_like(param) if name.endswith("rho") else param + 0.1 * torch.randn_like(param))
        generators[direction] = generator
    return UGATITModel(config, generators)


def batch(n, size=32, seed=1):
    torch.manual_seed(seed)
    return torch.rand(n, 3, size, size) * 2 - 1


def run(generator, x):
    with torch.no_grad():
        return generator(x)


def assert_same_outputs(ours, theirs, atol=0.0):
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "ugatit_cli", "export", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


# --- safetensors model folders --------------------------------------------------------------------------

def test_cli_exports_a_model_folder_that_reproduces_it_with_a_hub_card(tmp_path):
    model = random_model()
    source = write_model_folder(model, tmp_path / "source")
    result = cli(source, "--output", tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    out = Path(report["folder"])
    assert sorted(report["files"]) == ["README.md", "config.json", "generator_a2b.safetensors",
                                       "generator_b2a.safetensors"]
    assert report["weights_dtype"] == "float32" and report["opset"] is None
    assert {name: (out / name).stat().st_size for name in report["files"]} == report["files"]
    x = batch(2)
    for direction in ("a2b", "b2a"):
        assert_same_outputs(run(ugatit_cli.load_generator(out, direction), x), run(model.generators[direction], x))

    config = json.loads((out / "config.json").read_text())
    assert UGATITConfig.from_dict(config) == model.config and config["weights_dtype"] == "float32"
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "ugatit-cli" and card.data.license == "mit"
    assert card.data.pipeline_tag == "image-to-image" and "u-gat-it" in card.data.tags
    assert "| `img_size` | `32` |" in card.text and "ugatit translate photos/ --model" in card.text
    assert "Exported by ugatit-cli" in card.text and str(tmp_path) not in card.text  # no local paths published


def test_model_card_carries_training_config_and_metrics(tmp_path):
    model = random_model(directions=("b2a",))
    model.card = {"training": {"iterations": 1000, "lr": 0.0001, "light": False}, "metrics": {"KID x 100": 1.23},
                  "source": "Trained with `ugatit train`."}
    folder = write_model_folder(model, tmp_path / "m", model_id="someone/horse2zebra", title="horse2zebra")
    card = ModelCard.load(folder / "README.md")
    assert card.text.count("# horse2zebra") == 1
    assert "| `iterations` | `1000` |" in card.text and "| `lr` | `0.0001` |" in card.text
    assert "| KID x 100 | 1.23 |" in card.text and "Trained with `ugatit train`." in card.text
    # the usage lines name the repo and a direction the folder has
    assert "--model someone/horse2zebra --direction b2a" in card.text
    assert "`generator_b2a.safetensors`" in card.text and "generator_a2b" not in card.text


def test_cli_exports_one_direction_of_an_official_pytorch_checkpoint(tmp_path):
    model = random_model(size=64)
    checkpoint = tmp_path / "horse2zebra_params_0001000.pt"
    write_official_checkpoint(checkpoint, model)  # all six networks, as the official code saves them
    result = cli(checkpoint, "--output", tmp_path / "out", "--direction", "b2a", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "generator_b2a.safetensors"]
    with safe_open(out / "generator_b2a.safetensors", "pt") as weights:  # generator only: no D, no optimizer
        assert set(weights.keys()) == set(model.generators["b2a"].state_dict())
    x = batch(2, size=64)
    assert_same_outputs(run(ugatit_cli.load_generator(out, "b2a"), x), run(model.generators["b2a"], x))
    assert "official U-GAT-IT PyTorch checkpoint `horse2zebra_params_0001000.pt`" in (out / "README.md").read_text()


def test_cli_exports_the_official_tf_checkpoint(tmp_path):
    from tf_fixtures import assert_matches_official, tf_fixture

    fixture = tf_fixture("full")
    result = cli(fixture.index_file, "--output", tmp_path / "out", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""  # --quiet silences the checkpoint reader's progress too
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["variant"], config["img_size"], config["ch"], config["light"]) == ("tf", 128, 4, False)
    for direction in ("a2b", "b2a"):
        assert_matches_official(ugatit_cli.load_generator(tmp_path / "out", direction), fixture, direction)
    assert "official TensorFlow U-GAT-IT checkpoint" in (tmp_path / "out" / "README.md").read_text()


def test_half_stores_float16_at_half_the_size_and_stays_close(tmp_path):
    model = random_model(size=64)
    source = write_model_folder(model, tmp_path / "source")
    full = export_model(source, tmp_path / "fp32", show_progress=False)
    half = export_model(source, tmp_path / "fp16", half=True, show_progress=False)
    name = "generator_a2b.safetensors"
    assert half.weights_dtype == "float16"
    assert 0.49 < half.files[name] / full.files[name] < 0.51
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["weights_dtype"] == "float16"
    with safe_open(tmp_path / "fp16" / name, "pt") as weights:
        assert weights.metadata()["dtype"] == "float16"
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}
    loaded = ugatit_cli.load_generator(tmp_path / "fp16", "a2b")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    x = batch(2, size=64)
    ours, theirs = run(loaded, x), run(model.generators["a2b"], x)
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=2e-2)  # images in [-1, 1]
    assert (ours[0] - theirs[0]).abs().mean() < 2e-3
    assert "**float16**" in (tmp_path / "fp16" / "README.md").read_text()


# --- ONNX -----------------------------------------------------------------------------------------------

def onnx_outputs(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["image", "cam_logit", "heatmap"]
    return [torch.from_numpy(o) for o in session.run(None, {"input": x.numpy()})]


@pytest.mark.parametrize("variant,light,half", [("pytorch", False, False), ("pytorch", True, True),
                                                ("tf", False, True)])  # TF light: the official fixture below
def test_onnx_matches_pytorch_at_any_batch_size(tmp_path, variant, light, half, monkeypatch):
    """Both directions, each graph against its own generator: the two share one trace (the same Generator
    class and config), each with its own weights."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    import onnx

    import ugatit_cli.export as exporter

    traces = []
    real_trace = exporter._trace
    monkeypatch.setattr(exporter, "_trace", lambda *a: traces.append(a[0]) or real_trace(*a))
    model = random_model(light=light, variant=variant, seed=3)
    source = write_model_folder(model, tmp_path / "source")
    result = export_model(source, tmp_path / "onnx", format="onnx", half=half, show_progress=False)
    assert len(traces) == 1  # b2a reused a2b's trace
    names = [f"generator_{d}.onnx" for d in ("a2b", "b2a")]
    assert result.opset == ONNX_OPSET and sorted(result.files) == ["README.md", "config.json", *names]
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert config["onnx"]["opset"] == ONNX_OPSET and config["weights_dtype"] == ("float16" if half else "float32")
    if half:  # the weights the files store: float16-rounded
        write_model_folder(UGATITModel(model.config, model.generators, weights_dtype="float16"), tmp_path / "h")
    for direction, name in zip(("a2b", "b2a"), names, strict=True):
        path = tmp_path / "onnx" / name
        graph = onnx.load(path)
        assert graph.opset_import[0].version == ONNX_OPSET
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch dimension
        # The reference is the PyTorch generator with the weights the file stores (float16-rounded under --half).
        reference = model.generators[direction]
        if half:  # the weights stored as float16; float32 is left only for tiny constants derived from them (1 - rho)
            halves = {t.name for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
            stored = {f"{k}.float16" for k in reference.state_dict()}
            assert "FC.0.weight.float16" in halves and halves <= stored
            assert all(int(np.prod(t.dims)) <= 64 for t in graph.graph.initializer
                       if t.data_type == onnx.TensorProto.FLOAT)
            reference = ugatit_cli.load_generator(tmp_path / "h", direction)
        for n in (1, 3):  # one exported file, two batch sizes
            x = batch(n, seed=n)
            assert_same_outputs(onnx_outputs(path, x), run(reference, x), atol=1e-4)
        if light:  # and, as in PyTorch, any image size that is a multiple of 4
            x = torch.rand(2, 3, 48, 64) * 2 - 1
            assert_same_outputs(onnx_outputs(path, x), run(reference, x), atol=1e-4)
    x = batch(2)  # the directions' weights differ, and so do their graphs' outputs
    a2b, b2a = (onnx_outputs(tmp_path / "onnx" / name, x)[0] for name in names)
    assert (a2b - b2a).abs().max() > 1e-2


def test_onnx_without_the_extra_is_one_clear_sentence(tmp_path, monkeypatch):
    source = write_model_folder(random_model(), tmp_path / "source")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what an install without the extra looks like
    with pytest.raises(UserError, match=r'pip install "ugatit-cli\[onnx\]"'):
        export_model(source, tmp_path / "out", format="onnx", show_progress=False)
    assert not (tmp_path / "out").exists()


# --- pushing to the Hub ---------------------------------------------------------------------------------

def test_cli_pushes_to_the_hub_and_the_repo_loads_back(tmp_path, monkeypatch):
    from hub_server import LocalHub

    model = random_model()
    source = write_model_folder(model, tmp_path / "source")
    with LocalHub({}, tokens={"hf_alice_write": "alice"}) as hub:
        env = hub.environ(tmp_path / "cli-cache") | {"HF_TOKEN": "hf_alice_write"}
        result = cli(source, "--output", tmp_path / "out", "--push-to-hub", "alice/tiny-ugatit", "--private",
                     "--half", "--json", env=env)
        assert result.returncode == 0, result.stderr
        pushed = json.loads(result.stdout)["pushed"]
        assert pushed["repo_id"] == "alice/tiny-ugatit" and pushed["branch"] == "main"
        assert pushed["commit_url"].endswith(hub.heads[("alice/tiny-ugatit", "main")])
        assert "alice/tiny-ugatit" in hub.private
        # the weights went through LFS, the small files inline in the commit
        assert hub.bytes_received("lfs-upload") == sum(
            (tmp_path / "out" / f"generator_{d}.safetensors").stat().st_size for d in ("a2b", "b2a"))
        assert hub.files("alice/tiny-ugatit") == {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
        card = hub.files("alice/tiny-ugatit")["README.md"].decode()
        assert "--model alice/tiny-ugatit" in card

        hub.patch_huggingface_hub(monkeypatch, tmp_path / "cache")
        monkeypatch.setenv("HF_TOKEN", "hf_alice_write")  # private: only its owner reads it
        x = batch(2)
        for direction in ("a2b", "b2a"):
            loaded = ugatit_cli.load_generator("alice/tiny-ugatit", direction)
            reference = ugatit_cli.load_generator(tmp_path / "out", direction)
            assert_same_outputs(run(loaded, x), run(reference, x))
            assert_same_outputs(run(loaded, x), run(model.generators[direction], x), atol=2e-2)
        # a Hub repo is a SOURCE like any other; the new card links back to it
        again = export_model("alice/tiny-ugatit", tmp_path / "again", show_progress=False)
        assert ModelCard.load(again.folder / "README.md").data.base_model == "alice/tiny-ugatit"
        assert_same_outputs(run(ugatit_cli.load_generator(again.folder, "b2a"), x),
                            run(ugatit_cli.load_generator(tmp_path / "out", "b2a"), x))

        monkeypatch.delenv("HF_TOKEN")
        hub.patch_huggingface_hub(monkeypatch, tmp_path / "anonymous-cache")
        with pytest.raises(UserError, match="no such model on the Hugging Face Hub"):
            ugatit_cli.load_generator("alice/tiny-ugatit", "a2b")


def test_push_to_a_new_branch_of_an_existing_repo(tmp_path, monkeypatch):
    from hub_server import LocalHub

    first, second = random_model(seed=0), random_model(seed=1)
    folders = [write_model_folder(m, tmp_path / f"m{i}") for i, m in enumerate((first, second))]
    with LocalHub({}, tokens={"hf_alice_write": "alice"}) as hub:
        hub.patch_huggingface_hub(monkeypatch, tmp_path / "cache")
        push_model_folder(folders[0], "alice/m", token="hf_alice_write")
        push_model_folder(folders[1], "alice/m", branch="v2", token="hf_alice_write")
        x = batch(1)
        main = ugatit_cli.load_generator("alice/m", "a2b")
        v2 = ugatit_cli.load_generator("alice/m", "a2b", revision="v2")
    assert_same_outputs(run(main, x), run(first.generators["a2b"], x))
    assert_same_outputs(run(v2, x), run(second.generators["a2b"], x))


def test_push_errors_are_one_clear_line(tmp_path, monkeypatch):
    from hub_server import LocalHub

    folder = write_model_folder(random_model(), tmp_path / "m")
    one_file = write_model_folder(random_model(directions=("a2b",)), tmp_path / "a2b")
    with LocalHub({}, tokens={"hf_alice_write": "alice"}) as hub:
        hub.patch_huggingface_hub(monkeypatch, tmp_path / "cache")
        monkeypatch.delenv("HF_TOKEN", raising=False)  # and HF_HOME is an empty folder: no login file
        with pytest.raises(UserError, match="needs a token: set HF_TOKEN or run `hf auth login`"):
            push_model_folder(folder, "alice/m")
        with pytest.raises(UserError, match="needs a token"):  # found before exporting anything
            export_model(folder, tmp_path / "not-written", repo_id="alice/m", show_progress=False)
        assert not (tmp_path / "not-written").exists()
        with pytest.raises(UserError, match=r"rejected the token \(401"):
            push_model_folder(folder, "alice/m", token="hf_wrong")
        with pytest.raises(UserError, match=r"bob/m: no write access \(403"):
            push_model_folder(folder, "bob/m", token="hf_alice_write")
        monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
        with pytest.raises(UserError, match=r"bob/m: no write access .* \(the export itself is complete in .*out\)"):
            export_model(folder, tmp_path / "out", repo_id="bob/m", show_progress=False)
        assert (tmp_path / "out" / "generator_a2b.safetensors").is_file()
        assert hub.commits == []

        # the network goes down in the middle of the upload: after the commit was prepared, before the LFS PUTs
        import huggingface_hub.utils._http as hub_http

        monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)  # skip the library's retry back-off
        dead = f"http://127.0.0.1:{free_port()}"
        hub.lfs_upload_base = dead  # the LFS batch answer now sends uploads to a closed port
        with pytest.raises(UserError, match="alice/m: could not reach .*Connection refused"):
            push_model_folder(one_file, "alice/m", token="hf_alice_write")
        assert hub.commits == []
    # nothing listens at the endpoint at all
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    with pytest.raises(UserError, match=f"alice/m: could not reach {dead}"):
        push_model_folder(folder, "alice/m", token="hf_alice_write")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- refusing and failing cleanly -----------------------------------------------------------------------

def test_refuses_to_overwrite_unless_asked(tmp_path):
    source = write_model_folder(random_model(seed=0), tmp_path / "source")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(source), "--output", str(out)])
    assert result.exit_code == 2 and "not empty (pass --overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # --overwrite replaces only a folder this tool wrote (issue 9): keep.txt is the user's
    result = runner.invoke(app, ["export", str(source), "--output", str(out), "--overwrite", "--quiet"])
    assert result.exit_code == 2 and "keep.txt" in result.output
    (out / "keep.txt").unlink()
    write_model_folder(random_model(seed=1), out, overwrite=True)
    result = runner.invoke(app, ["export", str(source), "--output", str(out), "--overwrite", "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "source"]  # no temporary folder left


@pytest.mark.parametrize("make_source,code,message", [
    (lambda d: d / "absent", 2, "no such file or folder"),  # a path, not a Hub id: no Hub message
    (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", 2, "not a recognised model"),
    # a MODEL that cannot be read: nothing could start, exit 2 (README "Exit status"; 0.1.0 said 1 here)
    (lambda d: (d / "x_params_latest.pt").write_bytes(b"garbage") and d / "x_params_latest.pt", 2,
     "not a readable PyTorch checkpoint"),
])
def test_bad_sources_are_one_line_without_a_traceback(tmp_path, make_source, code, message):
    source = make_source(tmp_path)
    result = CliRunner().invoke(app, ["export", str(source), "--output", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == code, result.output
    assert result.output.strip().count("\n") == 0 and message in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # a clean exit
    assert not (tmp_path / "out").exists()


def test_push_options_without_a_push_are_a_usage_error(tmp_path):
    source = write_model_folder(random_model(), tmp_path / "source")
    result = CliRunner().invoke(app, ["export", str(source), "--output", str(tmp_path / "out"), "--branch", "v2"])
    assert result.exit_code == 2 and "add --push-to-hub REPO_ID" in result.output
    assert not (tmp_path / "out").exists()


def test_another_familys_export_option_is_a_usage_error_before_loading(tmp_path):
    source = write_model_folder(random_model(), tmp_path / "source")
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(app, ["export", str(source), "--output", str(tmp_path / "out"), "--style-data",
                                      str(tmp_path / "images")])
    assert result.exit_code == 2 and "--style-data does not apply to exporting U-GAT-IT models" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_source_through_the_real_cli(tmp_path):
    result = cli(tmp_path / "absent", "--output", tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_cli_exports_the_official_tf_checkpoint_to_onnx(tmp_path):
    """The light TF fixture through the CLI to ONNX: onnxruntime reproduces the official TF graph's outputs,
    at batch sizes 1 and 3 and at other image sizes."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from tf_fixtures import ATOL, tf_fixture

    fixture = tf_fixture("light")
    result = cli(fixture.checkpoint_dir, "--output", tmp_path / "out", "--format", "onnx", "--direction", "a2b")
    assert result.returncode == 0, result.stderr
    assert f"ONNX opset {ONNX_OPSET}" in result.stdout
    expected = fixture.expected()
    x = torch.from_numpy(expected["input_nhwc"]).permute(0, 3, 1, 2).repeat(3, 1, 1, 1)  # batch 3
    image, cam_logit, heatmap = onnx_outputs(tmp_path / "out" / "generator_a2b.onnx", x)
    for i in range(3):
        np.testing.assert_allclose(image[i].permute(1, 2, 0).numpy(), expected["out_a2b"][0], rtol=0, atol=ATOL)
        np.testing.assert_allclose(cam_logit[i : i + 1].numpy(), expected["cam_a2b"], rtol=0, atol=ATOL)
        np.testing.assert_allclose(heatmap[i, 0].numpy(), expected["heatmap_a2b"], rtol=0, atol=ATOL)
    # a light model: any size that is a multiple of 4, as in PyTorch
    x = batch(2, size=64)[:, :, :, :48]
    reference = ugatit_cli.load_generator(fixture.checkpoint_dir, "a2b")
    assert_same_outputs(onnx_outputs(tmp_path / "out" / "generator_a2b.onnx", x), run(reference, x), atol=1e-4)
