"""``ugatit demo``: the real command serving on a free port, driven by ``gradio_client`` (the API a Space
exposes) and by a real headless Chromium; every result must equal what ``ugatit translate`` writes for the
same file. U-GAT-IT (directions and its attention map) and pix2pixHD (a label map with its instance map) go
through the same page, whose controls come from the families. Chromium comes from Debian's ``chromium``
package (``.ci/run`` installs it); without it the browser test skips and says why.
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

from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig
from ugatit_cli.families.pix2pixhd.family import Pix2PixHDModel
from ugatit_cli.families.pix2pixhd.networks import build_generator
from ugatit_cli.families.ugatit import Generator, UGATITConfig, UGATITModel

gradio_client = pytest.importorskip("gradio_client")
pytest.importorskip("gradio")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
START_TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ugatit_model(root: Path) -> Path:
    config = UGATITConfig(img_size=32, ch=4, n_res=1, light=True)
    torch.manual_seed(0)
    generators = {d: Generator(config) for d in ("a2b", "b2a")}
    for generator in generators.values():  # rho away from its init so LIN/AdaLIN mixes both statistics
        for name, param in generator.named_parameters():
            if name.endswith("rho"):
                param.data.uniform_(0.2, 0.8)
    return write_model_folder(UGATITModel(config, generators), root)


def _pix2pixhd_model(root: Path) -> Path:
    """A tiny pix2pixHD generator that takes label maps (4 classes) and instance maps."""
    config = Pix2PixHDConfig(label_nc=4, ngf=4, n_downsample_global=2, n_blocks_global=1)
    torch.manual_seed(1)
    return write_model_folder(Pix2PixHDModel(config, {"netG": build_generator(config).eval()}), root)


def _label_and_instance_maps(folder: Path) -> tuple[Path, Path]:
    """A label map (ids 0..3, mode L) and its instance map (16-bit ids), 40 x 28 (not a multiple of the
    generator's 4: the official test sizing rounds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.zeros((28, 40), np.uint8)
    labels[:, 20:] = 1
    labels[14:, :] += 2
    Image.fromarray(labels, mode="L").save(folder / "street.png")
    instances = labels.astype(np.uint16) * 1000 + 1
    instances[:, 30:] += 7  # a second instance of the same class: an edge the label map does not have
    Image.fromarray(instances).save(folder / "street_instances.png")
    return folder / "street.png", folder / "street_instances.png"


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
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("GRADIO_TEMP_DIR", None)
    return env


def _translate_cli(source: Path, model: Path, out: Path, *args: str) -> Path:
    """``ugatit translate`` of one file into ``out``; the folder of its outputs."""
    result = subprocess.run([sys.executable, "-m", "ugatit_cli", "translate", str(source), "--model", str(model),
                             "--output", str(out), "--quiet", *args],
                            capture_output=True, text=True, timeout=300, env=_env(out.parent))
    assert result.returncode == 0, result.stderr
    return out


def _translate(source: Path, model: Path, out: Path, **options) -> Path:
    """What ``ugatit translate`` writes (the function behind it, in this process: faster than a new one)."""
    from ugatit_cli.translation import translate

    report = translate([source], str(model), output=out, device="cpu", progress=False, **options)
    assert not report.failed, report.failed
    return out


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

    def client(self, folder: Path):
        return gradio_client.Client(self.url, download_files=str(folder), verbose=False)

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
    ugatit = _ugatit_model(root / "ugatit")
    p2p = _pix2pixhd_model(root / "p2p")
    photo = _photo(root / "astronaut.jpg")
    tmpdir = root / "server-tmp"
    tmpdir.mkdir()
    server = DemoServer([ugatit, p2p], tmpdir)
    try:
        yield server, ugatit, p2p, photo
    finally:
        server.stop()


def test_the_api_is_made_of_the_families_options(served):
    server, *_ = served
    info = server.client(server.tmpdir.parent / "info").view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/translate"]
    names = [p["parameter_name"] for p in endpoint["parameters"]]
    # U-GAT-IT's heatmap switch adds an output, so the page turns it on rather than asking
    assert names[:3] == ["image", "model", "direction"] and "heatmap" not in names
    assert {"instance_maps", "feature_clusters"} <= set(names)  # pix2pixHD's options, from its TranslateOptions
    assert [r["label"] for r in endpoint["returns"]][:2] == ["Translation", "Heatmap"]


def test_gradio_client_gets_what_ugatit_translate_writes(served, tmp_path):
    server, model, _, photo = served
    assert "Running on local URL:  http://127.0.0.1:" in server.log.read_text()  # bound to 127.0.0.1
    client = server.client(tmp_path / "client")
    for direction in ("a2b", "b2a"):
        translation, heatmap, download = client.predict(image=gradio_client.handle_file(str(photo)),
                                                        model=str(model), direction=direction, api_name="/translate")
        expected = (_translate_cli(photo, model, tmp_path / f"cli-{direction}", "--direction", direction, "--heatmap")
                    if direction == "a2b" else  # the command once; the function behind it otherwise (faster)
                    _translate(photo, model, tmp_path / f"cli-{direction}", direction=direction, heatmap=True))
        assert Path(translation).read_bytes() == (expected / "astronaut.png").read_bytes()
        assert Path(download).read_bytes() == (expected / "astronaut.png").read_bytes()
        assert Path(heatmap).read_bytes() == (expected / "astronaut_heatmap.png").read_bytes()
    assert not np.array_equal(_pixels(tmp_path / "cli-a2b" / "astronaut.png"),
                              _pixels(tmp_path / "cli-b2a" / "astronaut.png"))  # the direction was honoured


def test_pix2pixhd_label_map_and_instance_map_through_gradio_client(served, tmp_path):
    server, _, model, _ = served
    label, instances = _label_and_instance_maps(tmp_path / "maps")
    client = server.client(tmp_path / "client")
    translation, heatmap, download = client.predict(
        image=gradio_client.handle_file(str(label)), model=str(model),
        instance_maps=gradio_client.handle_file(str(instances)), api_name="/translate")
    inst_dir = tmp_path / "inst"
    inst_dir.mkdir()
    shutil.copyfile(instances, inst_dir / "street.png")  # translate finds it by the label map's name
    expected = _translate(label, model, tmp_path / "cli", instance_maps=inst_dir) / "street.png"
    assert Path(translation).read_bytes() == expected.read_bytes() == Path(download).read_bytes()
    assert heatmap is None  # pix2pixHD has no second output
    assert _pixels(expected).shape == (28, 40, 3)
    without = _translate(label, model, tmp_path / "cli-no-inst", instance_maps=tmp_path / "maps")
    assert not np.array_equal(_pixels(expected), _pixels(without / "street.png"))  # the instance map counted
    with pytest.raises(gradio_client.exceptions.AppError, match="takes instance maps"):
        client.predict(image=gradio_client.handle_file(str(label)), model=str(model), api_name="/translate")


def test_the_face_option_is_translate_faces(served, tmp_path):
    pytest.importorskip("cv2", reason="the face option needs OpenCV (the faces extra)")
    from real_photos import astronaut

    server, model, _, _ = served
    photo = tmp_path / "astronaut.jpg"
    astronaut().resize((256, 256)).save(photo, quality=92)  # the face is 55 px wide: found
    translation, _, _ = server.client(tmp_path / "client").predict(
        image=gradio_client.handle_file(str(photo)), model=str(model), direction="b2a", faces=True,
        api_name="/translate")
    expected = _translate(photo, model, tmp_path / "cli", direction="b2a", faces="composite") / "astronaut.png"
    whole = _translate(photo, model, tmp_path / "whole", direction="b2a") / "astronaut.png"
    assert Path(translation).read_bytes() == expected.read_bytes()
    assert _pixels(expected).shape == (256, 256, 3) and _pixels(whole).shape == (32, 32, 3)  # pasted into the photo


def test_two_clients_at_once_queue_and_both_get_their_result(served, tmp_path):
    server, model, _, photo = served
    flipped = tmp_path / "flipped.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    clients = [server.client(tmp_path / f"c{i}") for i in range(2)]
    inputs = [photo, flipped]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: clients[i].predict(image=gradio_client.handle_file(str(inputs[i])),
                                                             model=str(model), direction="a2b",
                                                             api_name="/translate"), range(2)))
    for source, (translation, _, _) in zip(inputs, results, strict=True):
        expected = _translate(source, model, tmp_path / f"cli-{source.stem}") / f"{source.stem}.png"
        np.testing.assert_array_equal(_pixels(Path(translation)), _pixels(expected))


def test_bad_uploads_get_the_reason_translate_gives(served, tmp_path):
    from test_translate import _png_claiming  # a PNG header claiming 30000 x 30000 pixels

    server, model, _, _ = served
    client = server.client(tmp_path / "client")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(30000, 30000))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path, reason in ((bomb, "decompression-bomb limit"), (text, "not an image file")):
        with pytest.raises(gradio_client.exceptions.AppError, match=reason):
            client.predict(image=gradio_client.handle_file(str(path)), model=str(model), direction="a2b",
                           api_name="/translate")


def test_browser_upload_click_and_read_back(served, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip("no Chromium at /usr/bin/chromium (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with Playwright")
    server, model, _, photo = served
    expected = _translate(photo, model, tmp_path / "cli", heatmap=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(server.url, wait_until="domcontentloaded")
            page.locator("#input input[type=file]").set_input_files(str(photo))
            page.locator("#input img").first.wait_for(timeout=60_000)  # the upload is shown
            page.locator("#translate").click()
            result = page.locator("#output img").first
            result.wait_for(timeout=120_000)
            heat = page.locator("#output-heatmap img").first
            heat.wait_for(timeout=60_000)
            shown = page.request.get(result.get_attribute("src")).body()
            shown_heatmap = page.request.get(heat.get_attribute("src")).body()
            with page.expect_download(timeout=60_000) as download_info:
                page.locator("#download").click()
            downloaded = tmp_path / "downloaded.png"
            download_info.value.save_as(downloaded)
        finally:
            browser.close()
    assert shown == (expected / "astronaut.png").read_bytes()
    assert shown_heatmap == (expected / "astronaut_heatmap.png").read_bytes()
    assert downloaded.read_bytes() == (expected / "astronaut.png").read_bytes()


def test_stopping_removes_every_file_the_server_wrote(tmp_path):
    """Uploads and results live in one temporary folder that is gone when the server stops; nothing else in
    TMPDIR is left behind."""
    model = _ugatit_model(tmp_path / "model")
    photo = _photo(tmp_path / "photo.jpg")
    tmpdir = tmp_path / "server-tmp"
    tmpdir.mkdir()
    server = DemoServer([model], tmpdir)
    try:
        client = server.client(tmp_path / "client")
        client.predict(image=gradio_client.handle_file(str(photo)), model=str(model), direction="a2b",
                       api_name="/translate")
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
    model = _ugatit_model(tmp_path / "model")
    photo = _photo(tmp_path / "photo.png")
    size = photo.stat().st_size
    app = build_app([str(model)], device="cpu", max_file_size=size - 1)
    try:
        app.launch(server_port=_free_port(), prevent_thread_lock=True, quiet=True)
        assert app.server_name == "127.0.0.1"
        client = gradio_client.Client(app.local_url, download_files=str(tmp_path / "client"), verbose=False)
        with pytest.raises(ValueError, match=f"exceeds the maximum file size of {size - 1} bytes"):  # client side
            client.predict(image=gradio_client.handle_file(str(photo)), model=str(model), direction="a2b",
                           api_name="/translate")
        with photo.open("rb") as f:  # the server refuses it too, while it streams in
            answer = httpx.post(app.local_url.rstrip("/") + "/gradio_api/upload", files={"files": f}, timeout=60)
        assert answer.status_code == 413, answer.text
        assert not [p for p in app.ugatit_workspace.root.rglob("*") if p.is_file()]
    finally:
        app.close()
    assert not app.ugatit_workspace.root.exists()
    assert not Path(demo_module.__file__).with_suffix(".pyi").exists()  # Gradio writes stubs for subclasses


def test_a_one_direction_export_offers_its_direction_locally_and_from_the_hub(tmp_path, monkeypatch):
    from hub_server import LocalHub, repo_from_folder

    from ugatit_cli.demo import load_models

    full = _ugatit_model(tmp_path / "full")
    half = tmp_path / "half"
    shutil.copytree(full, half)
    (half / "generator_b2a.safetensors").unlink()
    with LocalHub({"alice/half": repo_from_folder(half)}) as hub:
        hub.patch_huggingface_hub(monkeypatch, tmp_path / "hub-cache")
        loaded = load_models({"local": half, "hub": "alice/half"}, device="cpu")
    for entry in loaded.values():
        assert entry.directions == ["a2b"] and set(entry.unavailable) == {"b2a"}
        assert list(entry.model.nets) == ["a2b"]


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
