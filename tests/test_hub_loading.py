"""Loading from the Hub: through a pre-filled huggingface_hub cache in offline mode."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit import Generator, UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> None:
    """Lay out ``folder`` as huggingface_hub's cache does after a download (snapshots + refs)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / revision).write_text(COMMIT)


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)


def test_hub_repo_loads_from_a_prefilled_cache_offline(tmp_path):
    torch.manual_seed(0)
    config = UGATITConfig(img_size=32, ch=4, n_res=1)
    generator = Generator(config).eval()
    folder = write_model_folder(UGATITModel(config, {"a2b": generator}), tmp_path / "model")
    cache = tmp_path / "hub-cache"
    fill_cache(cache, "someone/tiny-ugatit", folder)
    x = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(generator(x)[0], tmp_path / "expected.pt")

    code = f"""
import torch, ugatit_cli
g = ugatit_cli.load_generator("someone/tiny-ugatit", direction="a2b")
x = torch.load({str(tmp_path / 'x.pt')!r})
with torch.no_grad():
    torch.testing.assert_close(g(x)[0], torch.load({str(tmp_path / 'expected.pt')!r}), rtol=0, atol=0)
print("ok")
"""
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_repo_offline_is_one_clear_line(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = run_python("import ugatit_cli; ugatit_cli.load_generator('someone/absent')", env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "someone/absent" in last and "HF_HUB_OFFLINE" in last


# --- over HTTP, against the local Hub stand-in -------------------------------------------------------

def served_model(tmp_path):
    from hub_server import repo_from_folder

    torch.manual_seed(0)
    config = UGATITConfig(img_size=32, ch=4, n_res=1)
    model = UGATITModel(config, {"a2b": Generator(config).eval(), "b2a": Generator(config).eval()})
    folder = write_model_folder(model, tmp_path / "model")
    return model, {"someone/tiny-ugatit": repo_from_folder(folder)}


def test_hub_repo_downloads_only_the_direction_used_then_works_offline(tmp_path, monkeypatch):
    from hub_server import LocalHub
    from huggingface_hub import constants

    import ugatit_cli

    model, repos = served_model(tmp_path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with LocalHub(repos) as hub:
        hub.patch_huggingface_hub(monkeypatch, tmp_path / "cache")
        generator = ugatit_cli.load_generator("someone/tiny-ugatit", direction="b2a")
        pinned = ugatit_cli.load_generator("someone/tiny-ugatit", direction="b2a", revision=hub.commit)
        assert hub.bytes_served("someone/tiny-ugatit", "generator_b2a.safetensors") > 0
        assert hub.bytes_served("someone/tiny-ugatit", "generator_a2b.safetensors") == 0
    with torch.no_grad():
        torch.testing.assert_close(generator(x)[0], model.generators["b2a"](x)[0], rtol=0, atol=0)
        torch.testing.assert_close(pinned(x)[0], model.generators["b2a"](x)[0], rtol=0, atol=0)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the server is gone; the cache must suffice
    again = ugatit_cli.load_generator("someone/tiny-ugatit", direction="b2a")
    with torch.no_grad():
        torch.testing.assert_close(again(x)[0], model.generators["b2a"](x)[0], rtol=0, atol=0)


def test_hub_errors_are_one_clear_line(tmp_path, monkeypatch):
    from hub_server import LocalHub

    from ugatit_cli.errors import UserError
    from ugatit_cli.store.sources import resolve_model

    _, repos = served_model(tmp_path)
    with LocalHub(repos) as hub:
        hub.patch_huggingface_hub(monkeypatch, tmp_path / "cache")
        with pytest.raises(UserError, match="no such model on the Hugging Face Hub"):
            resolve_model("someone/absent")
        with pytest.raises(UserError, match="revision 'v9' not found"):
            resolve_model("someone/tiny-ugatit", revision="v9")
    # nothing listens on the endpoint: a network failure, not a traceback
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    import huggingface_hub.utils._http as hub_http
    from huggingface_hub import constants

    monkeypatch.setattr(hub_http.time, "sleep", lambda seconds: None)  # skip the library's retry back-off
    monkeypatch.setattr(constants, "ENDPOINT", dead_url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead_url + "/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(UserError, match=f"{dead_url} cannot be reached"):
        resolve_model("someone/tiny-ugatit")


def test_a_mistyped_local_path_is_no_such_folder_not_a_hub_error(tmp_path, monkeypatch):
    """``--model runs/nonexist`` beside a runs/ folder (or a path with ./, ~ or several parts) is a local path
    the user mistyped: say there is no such folder, not that the Hub cannot be reached."""
    from PIL import Image
    from typer.testing import CliRunner

    from ugatit_cli.cli.app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    for model in ("runs/nonexist", "./nonexist", "runs/deep/nonexist"):
        result = CliRunner().invoke(app, ["translate", "in.png", "--model", model, "--output", "out"])
        assert result.exit_code == 2, result.output
        said = " ".join(result.stderr.split())
        assert f"{model}: no such file or folder" in said and "Hugging Face" not in said, said
