"""``ugatit demo``: the real command serving on a free port, driven by ``gradio_client`` (the API a Space
exposes) and by a real headless Chromium; every result must equal what ``ugatit translate`` writes for the
same photo. Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); without it the
browser test skips and says why.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ugatit_cli.hub import UGATITModel, write_model_folder
from ugatit_cli.model import Generator, UGATITConfig

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_folder(root: Path) -> Path:
    config = UGATITConfig(img_size=32, ch=4, n_res=1, light=True)
    torch.manual_seed(0)
    generators = {d: Generator(config) for d in ("a2b", "b2a")}
    for generator in generators.values():  # rho away from its init so LIN/AdaLIN mixes both statistics
        for name, param in generator.named_parameters():
            if name.endswith("rho"):
                param.data.uniform_(0.2, 0.8)
    return write_model_folder(UGATITModel(config, generators), root)


def _photo(path: Path) -> Path:
    """A real photo: scikit-image's astronaut (bundled with the package) as a JPEG; a made one without it."""
    try:
        from skimage.data import astronaut

        pixels = astronaut()[::4, ::4]  # 128 x 128: a real photo, small enough for a fast test
    except ImportError:
        y, x = np.mgrid[0:96, 0:128]
        noise = np.random.default_rng(0).normal(0, 20, (96, 128, 3))
        pixels = (np.stack([x * 2, y * 2, x + y], axis=-1) + noise).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)
    return path


def _env(tmpdir: Path) -> dict[str, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GRADIO_TEMP_DIR", None)
    return env


def _translate_cli(photo: Path, model: Path, out: Path, direction: str = "a2b") -> tuple[Path, Path]:
    """``ugatit translate --heatmap`` of ``photo``: (translation PNG, heatmap PNG)."""
    result = subprocess.run([sys.executable, "-m", "ugatit_cli", "translate", str(photo), "--model", str(model),
                             "--output", str(out), "--direction", direction, "--heatmap", "--quiet"],
                            capture_output=True, text=True, timeout=300, env=_env(out.parent))
    assert result.returncode == 0, result.stderr
    return out / f"{photo.stem}.png", out / f"{photo.stem}_heatmap.png"


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


class DemoServer:
    """``python -m ugatit_cli demo`` in a subprocess with its own TMPDIR, until ``stop()``."""

    def __init__(self, models: list[Path], tmpdir: Path):
        self.port = _free_port()
        self.tmpdir = tmpdir
        self.log = tmpdir.parent / f"demo-{self.port}.log"
        args = [a for m in models for a in ("--model", str(m))]
        with self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "ugatit_cli", "demo", *args, "--port",
                                             str(self.port), "--device", "cpu"],
                                            stdout=log, stderr=subprocess.STDOUT, env=_env(tmpdir))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ugatit demo exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"ugatit demo did not answer within {START_TIMEOUT_S} s: {self.log.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    model = _model_folder(root / "model")
    photo = _photo(root / "astronaut.jpg")
    tmpdir = root / "server-tmp"
    tmpdir.mkdir()
    server = DemoServer([model], tmpdir)
    try:
        yield server, model, photo
    finally:
        server.stop()


def test_gradio_client_gets_what_ugatit_translate_writes(served, tmp_path):
    server, model, photo = served
    assert "Running on local URL:  http://127.0.0.1:" in server.log.read_text()  # bound to 127.0.0.1
    client = gradio_client.Client(server.url, download_files=str(tmp_path / "client"), verbose=False)
    for direction in ("a2b", "b2a"):
        translation, heatmap, download = client.predict(gradio_client.handle_file(str(photo)), str(model),
                                                        direction, api_name="/translate")
        expected, expected_heatmap = _translate_cli(photo, model, tmp_path / f"cli-{direction}", direction)
        assert Path(translation).read_bytes() == expected.read_bytes()
        assert Path(download).read_bytes() == expected.read_bytes()
        assert Path(heatmap).read_bytes() == expected_heatmap.read_bytes()
    assert not np.array_equal(_pixels(tmp_path / "cli-a2b" / "astronaut.png"),
                              _pixels(tmp_path / "cli-b2a" / "astronaut.png"))  # the direction was honoured


def test_two_clients_at_once_queue_and_both_get_their_result(served, tmp_path):
    server, model, photo = served
    flipped = tmp_path / "flipped.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    clients = [gradio_client.Client(server.url, download_files=str(tmp_path / f"c{i}"), verbose=False)
               for i in range(2)]
    inputs = [photo, flipped]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: clients[i].predict(gradio_client.handle_file(str(inputs[i])), str(model),
                                                             "a2b", api_name="/translate"), range(2)))
    for source, (translation, _, _) in zip(inputs, results, strict=True):
        expected, _ = _translate_cli(source, model, tmp_path / f"cli-{source.stem}")
        np.testing.assert_array_equal(_pixels(Path(translation)), _pixels(expected))


def test_bad_uploads_get_the_reason_translate_gives(served, tmp_path):
    from test_translate import _png_claiming  # a PNG header claiming 30000 x 30000 pixels

    server, model, _ = served
    client = gradio_client.Client(server.url, download_files=str(tmp_path / "client"), verbose=False)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(30000, 30000))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path, reason in ((bomb, "decompression-bomb limit"), (text, "not an image file")):
        with pytest.raises(gradio_client.exceptions.AppError, match=reason):
            client.predict(gradio_client.handle_file(str(path)), str(model), "a2b", api_name="/translate")


def test_browser_upload_click_and_read_back(served, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip("no Chromium at /usr/bin/chromium (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with Playwright")
    server, model, photo = served
    expected, expected_heatmap = _translate_cli(photo, model, tmp_path / "cli")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(server.url, wait_until="domcontentloaded")
            page.locator("#ugatit-input input[type=file]").set_input_files(str(photo))
            page.locator("#ugatit-input img").first.wait_for(timeout=60_000)  # the upload is shown
            page.locator("#ugatit-translate").click()
            result = page.locator("#ugatit-output img").first
            result.wait_for(timeout=120_000)
            heat = page.locator("#ugatit-heatmap img").first
            heat.wait_for(timeout=60_000)
            shown = page.request.get(result.get_attribute("src")).body()
            shown_heatmap = page.request.get(heat.get_attribute("src")).body()
            with page.expect_download(timeout=60_000) as download_info:
                page.locator("#ugatit-download").click()
            downloaded = tmp_path / "downloaded.png"
            download_info.value.save_as(downloaded)
        finally:
            browser.close()
    assert shown == expected.read_bytes()
    assert shown_heatmap == expected_heatmap.read_bytes()
    assert downloaded.read_bytes() == expected.read_bytes()


def test_stopping_removes_every_file_the_server_wrote(tmp_path):
    """Uploads and results live in one temporary folder that is gone when the server stops; nothing else in
    TMPDIR is left behind."""
    model = _model_folder(tmp_path / "model")
    photo = _photo(tmp_path / "photo.jpg")
    tmpdir = tmp_path / "server-tmp"
    tmpdir.mkdir()
    server = DemoServer([model], tmpdir)
    try:
        client = gradio_client.Client(server.url, download_files=str(tmp_path / "client"), verbose=False)
        client.predict(gradio_client.handle_file(str(photo)), str(model), "a2b", api_name="/translate")
        written = [p for p in tmpdir.rglob("*") if p.is_file()]
        assert any(p.name == "photo.jpg" for p in written)  # the upload, inside the server's TMPDIR
        assert all(re.match(r"ugatit-demo-", p.relative_to(tmpdir).parts[0]) for p in written), written
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
    assert list(tmpdir.iterdir()) == []


def test_uploads_over_the_size_limit_are_refused(tmp_path, monkeypatch):
    import httpx

    import ugatit_cli.demo as demo_module
    from ugatit_cli.demo import build_app

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    model = _model_folder(tmp_path / "model")
    photo = _photo(tmp_path / "photo.png")
    size = photo.stat().st_size
    app = build_app([str(model)], device="cpu", max_file_size=size - 1)
    try:
        app.launch(server_port=_free_port(), prevent_thread_lock=True, quiet=True)
        assert app.server_name == "127.0.0.1"
        client = gradio_client.Client(app.local_url, download_files=str(tmp_path / "client"), verbose=False)
        with pytest.raises(ValueError, match=f"exceeds the maximum file size of {size - 1} bytes"):  # client side
            client.predict(gradio_client.handle_file(str(photo)), str(model), "a2b", api_name="/translate")
        with photo.open("rb") as f:  # the server refuses it too, while it streams in
            answer = httpx.post(app.local_url.rstrip("/") + "/gradio_api/upload", files={"files": f}, timeout=60)
        assert answer.status_code == 413, answer.text
        assert not [p for p in app.ugatit_workspace.root.rglob("*") if p.is_file()]
    finally:
        app.close()
        app.ugatit_workspace.remove()
    assert not app.ugatit_workspace.root.exists()
    assert not Path(demo_module.__file__).with_suffix(".pyi").exists()  # Gradio writes stubs for subclasses


def test_missing_model_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ugatit_cli", "demo", "--model", str(tmp_path / "nothing"),
                             "--port", str(_free_port())], capture_output=True, text=True, timeout=300,
                            env=_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nothing" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_gradio_the_hint_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from ugatit_cli import demo
    from ugatit_cli.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    with pytest.raises(UserError, match=re.escape('pip install "ugatit-cli[demo]"')):
        demo.build_app([str(tmp_path)])
