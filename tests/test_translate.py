"""``ugatit translate`` and ``ugatit_cli.translate``: real images through Pillow, real tiny model folders.

Outputs are compared with the generator run by hand on the official preprocessing. Bit-exact comparisons
use batches of one: another batch size (or memory layout) changes the float rounding of the convolutions,
which may move a few values by one level (checked separately).
"""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

import ugatit_cli
from ugatit_cli.cli.app import _UserErrorsAsExitCodes, app
from ugatit_cli.core.files import OUTPUT_MARK
from ugatit_cli.core.images import BadImageError, image_to_tensor, open_rgb, tensor_to_image
from ugatit_cli.core.images import jet_image as heatmap_to_image
from ugatit_cli.errors import UserError
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit import Generator, UGATITConfig
from ugatit_cli.families.ugatit.family import UGATITModel


def _model_folder(root: Path, config: UGATITConfig) -> Path:
    torch.manual_seed(0)
    generators = {d: Generator(config) for d in ("a2b", "b2a")}
    for generator in generators.values():  # rho away from its init so LIN/AdaLIN mixes both statistics
        for name, param in generator.named_parameters():
            if name.endswith("rho"):
                param.data.uniform_(0.2, 0.8)
    return write_model_folder(UGATITModel(config, generators), root)


@pytest.fixture(scope="module")
def light_model(tmp_path_factory) -> Path:
    return _model_folder(tmp_path_factory.mktemp("models") / "light", UGATITConfig(img_size=32, ch=4, n_res=1,
                                                                                   light=True))


@pytest.fixture(scope="module")
def full_model(tmp_path_factory) -> Path:
    return _model_folder(tmp_path_factory.mktemp("models") / "full", UGATITConfig(img_size=32, ch=4, n_res=1))


def natural_image(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth gradients plus noise: what photos look like to a resize filter."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 64], axis=-1)
    noisy = base + rng.normal(0, 20, base.shape)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "RGB")


def by_hand(model_dir: Path, img: Image.Image, direction: str = "a2b", size: int = 32):
    """The generator on the official preprocessing of one image: (RGB image, heatmap tensor)."""
    generator = ugatit_cli.load_generator(model_dir, direction=direction)
    with torch.inference_mode():
        image, _, heatmap = generator(image_to_tensor(img, size)[None])
    return tensor_to_image(image[0]), heatmap[0]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def leftovers(folder: Path) -> list[Path]:
    """Temporaries: hidden or .tmp names (the mark of a results folder is no temporary)."""
    return [p for p in folder.rglob("*") if p.name != OUTPUT_MARK and (p.name.startswith(".") or p.suffix == ".tmp")]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ugatit_cli", "translate", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_output_equals_the_generator_by_hand(tmp_path, full_model):
    src = tmp_path / "in"
    src.mkdir()
    photo = natural_image((50, 40), seed=1)
    photo.save(src / "photo.jpg", quality=95)
    out = tmp_path / "out"
    result = run_cli(str(src / "photo.jpg"), "--model", str(full_model), "--output", str(out), "--batch-size", "1",
                     "--heatmap", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
    expected, heatmap = by_hand(full_model, open_rgb(src / "photo.jpg"))
    np.testing.assert_array_equal(pixels(out / "photo.png"), np.asarray(expected))
    np.testing.assert_array_equal(pixels(out / "photo_heatmap.png"), np.asarray(heatmap_to_image(heatmap, (32, 32))))
    # the results and the mark that keeps them out of later recursive reads: nothing else
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARK, "photo.png", "photo_heatmap.png"]


def test_b2a_uses_the_other_generator(tmp_path, light_model):
    natural_image((40, 40), seed=2).save(tmp_path / "x.png")
    report = ugatit_cli.translate(tmp_path / "x.png", light_model, output=tmp_path / "out", direction="b2a",
                                  batch_size=1, progress=False)
    assert report.exit_code == 0 and len(report.done) == 1
    b2a, _ = by_hand(light_model, natural_image((40, 40), seed=2), "b2a")
    a2b, _ = by_hand(light_model, natural_image((40, 40), seed=2), "a2b")
    np.testing.assert_array_equal(pixels(tmp_path / "out" / "x.png"), np.asarray(b2a))
    assert not np.array_equal(np.asarray(a2b), np.asarray(b2a))


def test_batches_of_mixed_sizes_match_single_images(tmp_path, light_model):
    src = tmp_path / "in"
    src.mkdir()
    sizes = [(31, 45), (64, 48), (32, 32), (17, 90), (40, 41)]
    for i, size in enumerate(sizes):
        natural_image(size, seed=i).save(src / f"{i}.png")
    threads = torch.get_num_threads()
    report = ugatit_cli.translate(src, light_model, output=tmp_path / "out", batch_size=3, workers=2, progress=False)
    assert len(report.done) == len(sizes) and report.images_per_second > 0
    assert [t.source.name for t in report.done] == [f"{i}.png" for i in range(len(sizes))]  # input order
    assert torch.get_num_threads() == threads  # the model streams' thread setting is undone
    for i in range(len(sizes)):
        expected, _ = by_hand(light_model, natural_image(sizes[i], seed=i))
        diff = np.abs(pixels(tmp_path / "out" / "in" / f"{i}.png") - np.asarray(expected))
        # another batch size may round a handful of values the other way, never further
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, light_model, monkeypatch):
    import errno
    import tempfile

    natural_image((20, 24), 0).save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()

    def read_only(*args, **kwargs):  # what mkstemp meets in a read-only mount (root ignores chmod)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(UserError) as caught:
        ugatit_cli.translate(tmp_path / "a.png", light_model, output=out, progress=False)
    assert str(caught.value) == f"{out}: cannot write in the output folder (Read-only file system)"
    assert list(out.iterdir()) == []


def test_folders_recurse_keeping_relative_paths_and_globs_match(tmp_path, light_model):
    src = tmp_path / "photos"
    (src / "trip" / "day1").mkdir(parents=True)
    natural_image((20, 24), 0).save(src / "a.png")
    natural_image((24, 20), 1).save(src / "trip" / "b.jpg")
    natural_image((30, 30), 2).save(src / "trip" / "day1" / "c.webp")
    (src / "notes.txt").write_text("not an image name, not an input")
    report = ugatit_cli.translate(str(src), light_model, output=tmp_path / "out", progress=False)
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    # a folder's results keep its name, then the paths inside it (the same with any number of inputs)
    assert written == ["photos/a.png", "photos/trip/b.png", "photos/trip/day1/c.png"] and report.exit_code == 0

    again = ugatit_cli.translate(src, light_model, output=src / "translated", progress=False)
    rerun = ugatit_cli.translate(src, light_model, output=src / "translated", progress=False)
    assert len(again.done) == 3 and not rerun.done  # its own outputs are no inputs: skipped, and said so
    assert sorted(s.reason.split(" (")[0] for s in rerun.skipped) == ["a folder of earlier ugatit results"] + [
        "output exists"] * 3
    # a folder that already held the user's own images, given as --output, is not marked: still an input later
    own = src / "trip" / "day1"
    ugatit_cli.translate(src / "a.png", light_model, output=own, progress=False)
    assert not (own / OUTPUT_MARK).exists() and (own / "a.png").is_file()
    later = ugatit_cli.translate(src / "trip", light_model, output=tmp_path / "later", progress=False)
    assert sorted(t.source.name for t in later.done) == ["a.png", "b.jpg", "c.webp"]

    report = ugatit_cli.translate([str(src / "**" / "*.jpg"), str(src / "*.png")], light_model,
                                  output=tmp_path / "globbed", progress=False)
    # a glob's matches keep their paths after the pattern's fixed folders
    written = sorted(p.relative_to(tmp_path / "globbed").as_posix() for p in (tmp_path / "globbed").rglob("*.png"))
    assert written == ["a.png", "trip/b.png"]
    assert sorted(t.source.name for t in report.done) == ["a.png", "b.jpg"]


def test_same_stem_in_one_folder_keeps_both(tmp_path, light_model):
    natural_image((20, 20), 0).save(tmp_path / "a.png")
    natural_image((20, 20), 1).save(tmp_path / "a.jpg")
    report = ugatit_cli.translate([tmp_path / "a.png", tmp_path / "a.jpg"], light_model, output=tmp_path / "out",
                                  progress=False)
    assert report.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.jpg.png", "a.png.png"]


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, light_model):
    natural_image((20, 20), 0).save(tmp_path / "a.png")
    natural_image((20, 20), 1).save(tmp_path / "b.png")
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (5, 5), "red").save(out / "a.png")  # the user's file: must survive a plain run

    report = ugatit_cli.translate([tmp_path / "a.png", tmp_path / "b.png"], light_model, output=out,
                                  progress=False)
    assert [s.output for s in report.skipped] == [out / "a.png"] and len(report.done) == 1
    assert Image.open(out / "a.png").size == (5, 5) and report.exit_code == 0

    report = ugatit_cli.translate([tmp_path / "a.png"], light_model, output=out, heatmap=True, progress=False)
    assert report.done[0].heatmap == out / "a_heatmap.png" and (out / "a_heatmap.png").exists()
    assert Image.open(out / "a.png").size == (5, 5)  # only the missing heatmap was written

    report = ugatit_cli.translate([tmp_path / "a.png"], light_model, output=out, overwrite=True, progress=False)
    assert len(report.done) == 1 and Image.open(out / "a.png").size == (32, 32)


def test_keep_size_scales_back_to_the_oriented_input(tmp_path, light_model):
    img = natural_image((40, 20), 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    ugatit_cli.translate(tmp_path / "rotated.jpg", light_model, output=tmp_path / "square", progress=False)
    report = ugatit_cli.translate(tmp_path / "rotated.jpg", light_model, output=tmp_path / "kept", keep_size=True,
                                  progress=False)
    kept = Image.open(report.done[0].output)
    assert kept.size == (20, 40)  # displayed (EXIF-rotated) width x height
    square = Image.open(tmp_path / "square" / "rotated.png")
    assert square.size == (32, 32)
    expected = square.convert("RGB").resize((20, 40), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(kept), np.asarray(expected))


def test_size_of_light_and_full_models(tmp_path, light_model, full_model):
    natural_image((30, 30), 0).save(tmp_path / "a.png")
    report = ugatit_cli.translate(tmp_path / "a.png", light_model, output=tmp_path / "out", size=48, progress=False)
    assert Image.open(report.done[0].output).size == (48, 48)
    with pytest.raises(UserError, match="training size 32"):
        ugatit_cli.translate(tmp_path / "a.png", full_model, output=tmp_path / "full", size=48, progress=False)
    with pytest.raises(UserError, match="multiple of 4"):
        ugatit_cli.translate(tmp_path / "a.png", light_model, output=tmp_path / "bad", size=30, progress=False)


def test_bf16_on_cpu_is_close_to_fp32(tmp_path, light_model):
    natural_image((40, 30), 4).save(tmp_path / "a.png")
    for precision in ("fp32", "bf16"):
        ugatit_cli.translate(tmp_path / "a.png", light_model, output=tmp_path / precision, precision=precision,
                             device="cpu", progress=False)
    diff = np.abs(pixels(tmp_path / "bf16" / "a.png") - pixels(tmp_path / "fp32" / "a.png"))
    assert diff.mean() < 3 and diff.max() < 40


def test_a_loaded_generator_is_used_where_it_is(tmp_path, light_model):
    natural_image((20, 20), 0).save(tmp_path / "a.png")
    generator = ugatit_cli.load_generator(light_model, direction="b2a")
    report = ugatit_cli.translate([tmp_path / "a.png"], generator, output=tmp_path / "out", device=None,
                                  batch_size=1, progress=False)
    expected, _ = by_hand(light_model, natural_image((20, 20), 0), "b2a")
    np.testing.assert_array_equal(pixels(report.done[0].output), np.asarray(expected))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming a huge image: Pillow refuses it from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def _bad_corpus(src: Path) -> tuple[dict[str, str], list[str]]:
    """Write every kind of awkward input; return (bad file -> expected reason fragment, files that must work)."""
    src.mkdir()
    natural_image((30, 20), 0).save(src / "good.png")
    natural_image((30, 20), 1).convert("CMYK").save(src / "cmyk.jpg")
    sixteen = (np.asarray(natural_image((20, 20), 2).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen.astype(np.uint16)).save(src / "sixteen_bit.png")
    assert Image.open(src / "sixteen_bit.png").mode.startswith("I")
    palette = natural_image((20, 20), 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(src / "palette_transparent.png", transparency=0)
    frames = [natural_image((24, 24), 4 + i).convert("P") for i in range(2)]
    frames[0].save(src / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    frames[0].convert("RGB").save(src / "first_frame.png")

    (src / "empty.png").write_bytes(b"")
    good = (src / "good.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "text.jpg").write_text("this is not a JPEG")
    (src / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    os.symlink(src / "gone.png", src / "broken_link.png")
    bad = {"empty.png": "empty file", "truncated.png": "truncated", "text.jpg": "not an image file",
           "bomb.png": "decompression-bomb", "broken_link.png": "broken symbolic link"}
    works = ["good", "cmyk", "sixteen_bit", "palette_transparent", "animated", "first_frame"]
    return bad, works


def test_bad_inputs_are_named_and_the_rest_translated(tmp_path, light_model):
    src = tmp_path / "in"
    bad, works = _bad_corpus(src)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("nothing to see")
    out = tmp_path / "out"
    result = run_cli(str(src), str(tmp_path / "no_images"), str(tmp_path / "missing.png"), "--model",
                     str(light_model), "--output", str(out), "--batch-size", "1", "--json")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    reasons = {Path(f["input"]).name: f["reason"] for f in summary["failed"]}
    assert set(reasons) == {*bad, "no_images", "missing.png"}
    for name, fragment in bad.items():
        assert fragment in reasons[name], (name, reasons[name])
        assert f"{src / name}: {reasons[name]}" in result.stderr  # one line per bad file on stderr
    assert "folder contains no images" in reasons["no_images"] and "no such file" in reasons["missing.png"]
    assert summary["counts"] == {"done": len(works), "skipped": 0, "failed": len(bad) + 2}

    translated = out / "in"  # several inputs: each folder's name is kept as a prefix
    assert sorted(p.stem for p in translated.iterdir()) == sorted(works)
    assert not leftovers(out)
    np.testing.assert_array_equal(pixels(translated / "animated.png"), pixels(translated / "first_frame.png"))
    expected, _ = by_hand(light_model, open_rgb(src / "cmyk.jpg"))
    np.testing.assert_array_equal(pixels(translated / "cmyk.png"), np.asarray(expected))


runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model"], "no such file, registered model"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--precision", "fp16", "--device", "cpu"], "fp16 autocast needs a GPU"),
    (["--precision", "fp8"], "'fp8' is not one of 'fp32', 'bf16', 'fp16'"),  # choices, in the same one line
    (["--direction", "sideways"], "unknown direction"),
    (["--size", "48"], "training size 32"),
    (["--batch-size", "0"], "batch size must be at least 1"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, full_model, args, message):
    natural_image((20, 20), 0).save(tmp_path / "a.png")
    args = ["--model", str(full_model), *args] if "--model" not in args else args
    result = runner.invoke(app, ["translate", str(tmp_path / "a.png"), "--output", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error:"), result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_output_that_is_a_file_is_a_usage_error(tmp_path, light_model):
    natural_image((20, 20), 0).save(tmp_path / "a.png")
    result = runner.invoke(app, ["translate", str(tmp_path / "a.png"), "--model", str(light_model), "--output",
                                 str(tmp_path / "a.png")])
    assert result.exit_code == 2 and "is not a folder" in result.stderr


def test_summary_and_quiet(tmp_path, light_model):
    natural_image((20, 20), 0).save(tmp_path / "a.png")
    args = ["translate", str(tmp_path / "a.png"), "--model", str(light_model), "--output", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Translated 1 image " in result.stderr and result.stdout == ""
    result = runner.invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0 and result.stderr == "" and result.stdout == ""  # skipped, silently
    result = runner.invoke(app, [*args, "--json"])
    assert json.loads(result.stdout)["counts"] == {"done": 0, "skipped": 1, "failed": 0}


def test_every_command_turns_user_errors_into_one_line_and_their_exit_code():
    other = typer.Typer(cls=_UserErrorsAsExitCodes)

    @other.command()
    def usage() -> None:
        raise UserError("no such thing as [red]this[/red]")

    @other.command()
    def bad_file() -> None:
        raise BadImageError("x.png", "empty file (0 bytes)")

    result = runner.invoke(other, ["usage"])
    assert result.exit_code == 2 and result.stderr == "error: no such thing as [red]this[/red]\n"
    result = runner.invoke(other, ["bad-file"])
    assert result.exit_code == 1 and result.stderr == "error: x.png: empty file (0 bytes)\n"
