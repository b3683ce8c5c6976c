"""``ugatit translate --faces`` and video inputs through the real CLI (``python -m ugatit_cli translate``), with a
tiny model folder, real photos from pip packages and clips made from them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cv2")
pytest.importorskip("av")
pytest.importorskip("skimage")
pytest.importorskip("matplotlib")

import clips  # noqa: E402
import real_photos as rp  # noqa: E402

from ugatit_cli.core.faces import FaceDetector, feather_mask  # noqa: E402
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit import Generator, UGATITConfig  # noqa: E402
from ugatit_cli.families.ugatit.family import UGATITModel  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = UGATITConfig(img_size=32, ch=4, n_res=1, light=True)
    return write_model_folder(UGATITModel(config, {d: Generator(config) for d in ("a2b", "b2a")}),
                              tmp_path_factory.mktemp("models") / "tiny")


def ugatit(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ugatit_cli", "translate", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _photos(folder: Path) -> None:
    folder.mkdir()
    rp.astronaut().save(folder / "astronaut.png")
    rp.two_faces()[0].save(folder / "friends.png")
    rp.face_free("rocket").save(folder / "rocket.jpg")
    clips.write_clip(folder / "clip.mp4", clips.pan(rp.astronaut(), 4, (96, 64)))


def test_faces_composite_on_photos_and_clips_in_one_folder(tmp_path, model):
    _photos(tmp_path / "in")
    run = ugatit("in", "--model", model, "--faces", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["counts"] == {"done": 3, "skipped": 1, "failed": 0}
    assert report["skipped"][0]["input"].endswith("rocket.jpg") and report["skipped"][0]["reason"] == "no face found"
    out = tmp_path / "translated" / "in"  # a folder argument keeps its name (the stable layout)
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "clip.mp4", "friends.png"]
    # composite: the photo's size; every pixel outside the feathered face squares is the photo's own
    photo = Image.open(tmp_path / "in" / "friends.png").convert("RGB")
    result = np.asarray(Image.open(out / "friends.png").convert("RGB"))
    source = np.asarray(photo)
    assert result.shape == source.shape
    inside = np.zeros(source.shape[:2], bool)
    for box in FaceDetector().detect(photo):
        from ugatit_cli.core.faces import square_crop

        x, y, side = square_crop(box, photo.size)
        inside[y:y + side, x:x + side] |= feather_mask(side) > 0
    assert inside.sum() > 0 and (result[~inside] == source[~inside]).all()
    assert (result[inside] != source[inside]).any(axis=-1).mean() > 0.5
    video = clips.read_clip(out / "clip.mp4")
    assert len(video["frames"]) == 4 and video["frames"][0].shape == (64, 96, 3) and video["audio_codec"] == "aac"


def test_faces_crops_with_heatmaps(tmp_path, model):
    _photos(tmp_path / "in")
    (tmp_path / "in" / "clip.mp4").unlink()
    run = ugatit("in/astronaut.png", "in/friends.png", "--model", model, "--faces", "crops", "--heatmap",
                 "--face-scale", "1.5", "--min-face", "60", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in (tmp_path / "translated").glob("*.png"))
    assert names == ["astronaut_face0.png", "astronaut_face0_heatmap.png", "friends_face0.png",
                     "friends_face0_heatmap.png", "friends_face1.png", "friends_face1_heatmap.png"]
    with Image.open(tmp_path / "translated" / "friends_face1.png") as crop:
        assert crop.size == (32, 32)
    assert "Translated 2" in run.stderr


def test_videos_with_a_bad_clip_crf_and_codec(tmp_path, model):
    folder = tmp_path / "clips"
    folder.mkdir()
    clips.write_clip(folder / "pan.mov", clips.pan(rp.grace_hopper(), 5, (64, 48)), fmt="mov")
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    run = ugatit("clips", "--model", model, "--crf", "30", "--codec", "mpeg4", cwd=tmp_path)
    assert run.returncode == 1
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {Path('clips') / 'broken.mp4'}: truncated, corrupt or not a video file (FFmpeg found invalid data)"]
    assert sorted(p.name for p in (tmp_path / "translated" / "clips").iterdir()) == ["pan.mp4"]
    video = clips.read_clip(tmp_path / "translated" / "clips" / "pan.mp4")
    assert video["codec"] == "mpeg4" and len(video["frames"]) == 5 and video["frames"][0].shape == (48, 64, 3)
    again = ugatit("clips/*.mov", "--model", model, "--json", "--output", "translated/clips", cwd=tmp_path)  # a glob
    # keeps the paths after its fixed folders: pan.mp4, found again
    assert json.loads(again.stdout)["skipped"][0]["reason"].startswith("output exists")


def test_bad_face_options_are_usage_errors(tmp_path, model):
    rp.astronaut().save(tmp_path / "a.png")
    run = ugatit("a.png", "--model", model, "--faces", "--face-scale", "0.5", cwd=tmp_path)
    assert run.returncode == 2 and "--face-scale must be at least 1" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_missing_extra_is_one_line_with_the_install_hint(tmp_path, model, monkeypatch):
    from typer.testing import CliRunner

    from ugatit_cli.cli import app

    rp.astronaut().save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv-python-headless were not installed
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "a.png"), "--model", str(model), "--faces",
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == 'error: face detection needs OpenCV: pip install "ugatit-cli[faces]"'
    assert not (tmp_path / "out").exists()
