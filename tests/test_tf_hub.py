"""`--model selfie2anime`: the official TF checkpoint fetched from the Hub by byte ranges, converted once.

A local stand-in for the Hub (tests/hub_server.py) serves the small official-TF fixture under the real
repo id and folder names, so the registry entry itself is exercised through real huggingface_hub code.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import LocalHub, repo_from_folder
from tf_fixtures import OFFICIAL_FOLDER, assert_matches_official, tf_fixture

import ugatit_cli
from ugatit_cli.errors import UserError
from ugatit_cli.families.ugatit.importers.tf_checkpoint import open_local_checkpoint
from ugatit_cli.families.ugatit.importers.tf_convert import generator_tensor_names
from ugatit_cli.families.ugatit.importers.tf_hub import SELFIE2ANIME, HubTFCheckpoint, converted_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def fixture():
    fixture = tf_fixture("full")
    # The fixture was saved under the release's own folder and file names.
    assert (fixture.checkpoint_dir.name, fixture.prefix) == (SELFIE2ANIME.folder, SELFIE2ANIME.prefix)
    return fixture


@pytest.fixture
def repo_files(fixture):
    return repo_from_folder(fixture.checkpoint_dir, under=OFFICIAL_FOLDER)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "hf-cache"


def serve(monkeypatch, cache, files) -> LocalHub:
    hub = LocalHub({SELFIE2ANIME.repo_id: files})
    hub.patch_huggingface_hub(monkeypatch, cache)
    return hub


def weights_bytes(fixture, direction: str) -> int:
    entries = open_local_checkpoint(fixture.checkpoint_dir).entries
    return sum(entries[name].size for name in generator_tensor_names(entries, direction))


def data_path(fixture) -> str:
    return f"{OFFICIAL_FOLDER}/{fixture.data_file.name}"


def run_python(code: str, env: dict[str, str], *args: str, **kwargs) -> subprocess.Popen:
    environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)])}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_first_use_fetches_only_one_generator_then_runs_from_the_cache(monkeypatch, cache, fixture, repo_files):
    data = data_path(fixture)
    with serve(monkeypatch, cache, repo_files) as hub:
        generator = ugatit_cli.load_generator("selfie2anime", direction="a2b")
        assert_matches_official(generator, fixture, "a2b")

        served = hub.bytes_served(SELFIE2ANIME.repo_id, data)
        assert served == weights_bytes(fixture, "a2b")  # generator_B's weights, nothing else
        assert served < len(repo_files[data]) / 5  # no discriminators, no Adam slots, no generator_A
        assert all(r.status == 206 for r in hub.requests("resolve") if r.path == data)
        index = f"{OFFICIAL_FOLDER}/{fixture.prefix}.index"
        assert hub.bytes_served(SELFIE2ANIME.repo_id, index) == len(repo_files[index])  # downloaded whole

        # Later uses load the converted folder and send no request at all.
        before = len(hub.log)
        assert_matches_official(ugatit_cli.load_generator("selfie2anime", direction="a2b"), fixture, "a2b")
        assert len(hub.log) == before

        # The other direction is fetched when first asked for: generator_A's bytes only, index not again.
        generator = ugatit_cli.load_generator("selfie2anime", direction="b2a")
        assert_matches_official(generator, fixture, "b2a")
        assert hub.bytes_served(SELFIE2ANIME.repo_id, data) == served + weights_bytes(fixture, "b2a")
        assert hub.bytes_served(SELFIE2ANIME.repo_id, index) == len(repo_files[index])

    root = converted_dir(SELFIE2ANIME, "main")
    assert root.is_relative_to(cache)
    card = (root / "a2b" / "README.md").read_text()
    assert hub.commit in card and "generator_B" in card

    # Offline, in a fresh process, with the server gone: the converted folder is all it needs.
    code = """if True:
        import json, numpy as np, ugatit_cli
        from tf_fixtures import tf_fixture, run_generator
        fixture = tf_fixture("full")
        expected = fixture.expected()
        generator = ugatit_cli.load_generator("selfie2anime", direction="a2b")
        out = run_generator(generator, expected["input_nhwc"])["out"]
        print(json.dumps({"max_error": float(np.abs(out - expected["out_a2b"]).max())}))
    """
    process = run_python(code, {**hub.environ(cache), "HF_HUB_OFFLINE": "1"})
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["max_error"] < 1e-4


def test_interrupted_conversion_leaves_nothing_a_later_run_trusts(monkeypatch, cache, fixture, repo_files):
    data = data_path(fixture)
    with serve(monkeypatch, cache, repo_files) as hub:
        release = hub.hold(data)
        code = "import ugatit_cli; ugatit_cli.load_generator('selfie2anime', direction='a2b')"
        process = run_python(code, hub.environ(cache), start_new_session=True)
        try:
            assert hub.wait_for("resolve", data, timeout=120), "the conversion never asked for the data file"
            os.kill(process.pid, signal.SIGKILL)  # no cleanup code runs: the harshest interruption
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            release.set()

        root = converted_dir(SELFIE2ANIME, "main")
        assert not list(root.rglob("*.safetensors")) and not list(root.rglob("config.json"))

        # The next run starts over, converts and works.
        served_before = hub.bytes_served(SELFIE2ANIME.repo_id, data)
        assert_matches_official(ugatit_cli.load_generator("selfie2anime", direction="a2b"), fixture, "a2b")
        assert hub.bytes_served(SELFIE2ANIME.repo_id, data) - served_before == weights_bytes(fixture, "a2b")


def test_corrupted_download_is_rejected_and_not_cached(monkeypatch, cache, fixture, repo_files):
    entries = open_local_checkpoint(fixture.checkpoint_dir).entries
    victim = entries["generator_B/adaptive_resblock2/res1/conv_0/conv2d/kernel"]
    data = data_path(fixture)
    corrupted = bytearray(repo_files[data])
    corrupted[victim.offset + 7] ^= 0x40
    with serve(monkeypatch, cache, {**repo_files, data: bytes(corrupted)}):
        with pytest.raises(UserError, match=f"{victim.name} fails its crc32c check"):
            ugatit_cli.load_generator("selfie2anime", direction="a2b")
    assert not converted_dir(SELFIE2ANIME, "main").exists()


def test_wrong_names_are_reported_with_what_the_folder_holds(monkeypatch, cache, repo_files):
    wrong = HubTFCheckpoint(SELFIE2ANIME.repo_id, SELFIE2ANIME.folder, "UGATIT.model-999")
    with serve(monkeypatch, cache, repo_files):
        with pytest.raises(UserError, match=r"no UGATIT.model-999.index \(the folder holds .*UGATIT.model-1000000"):
            wrong.resolve(("a2b",))
        with pytest.raises(UserError, match="no such folder"):
            HubTFCheckpoint(SELFIE2ANIME.repo_id, "elsewhere", SELFIE2ANIME.prefix).resolve(("a2b",))


def test_offline_before_any_conversion_says_so(monkeypatch, cache, repo_files):
    with serve(monkeypatch, cache, repo_files) as hub:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
            ugatit_cli.load_generator("selfie2anime", direction="a2b")
        assert not hub.requests("resolve")


def test_ugatit_translate_with_model_selfie2anime_downloads_converts_then_runs_offline(tmp_path, cache, repo_files):
    """The README's first command, through the real CLI in fresh processes: the first run fetches and converts
    generator_B from the (stand-in) Hub, a second run with HF_HUB_OFFLINE=1 and the server gone reuses it."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.effect_noise((150, 120), 40).convert("RGB").save(photos / "me.jpg")
    Image.linear_gradient("L").convert("RGB").save(photos / "gradient.png")

    def translate(env: dict[str, str], output: Path) -> dict:
        process = run_python("from ugatit_cli.cli.app import main; main()", env, "translate", str(photos),
                             "--model", "selfie2anime", "--output", str(output), "--json")
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert "fetching" not in stderr  # --json: no progress bars, not even the first download's
        return json.loads(stdout)

    with LocalHub({SELFIE2ANIME.repo_id: repo_files}) as hub:
        first = translate(hub.environ(cache), tmp_path / "anime")
        assert {r.path.rsplit("/", 1)[-1] for r in hub.requests("resolve")} == {
            f"{SELFIE2ANIME.prefix}.index", f"{SELFIE2ANIME.prefix}.data-00000-of-00001"}
    second = translate({**hub.environ(cache), "HF_HUB_OFFLINE": "1"}, tmp_path / "anime-offline")

    assert first["counts"] == second["counts"] == {"done": 2, "skipped": 0, "failed": 0}
    for online, offline in zip(first["done"], second["done"], strict=True):
        image = Image.open(online["output"])
        assert image.size == (128, 128)  # the fixture model's training size
        assert image.tobytes() == Image.open(offline["output"]).tobytes()
