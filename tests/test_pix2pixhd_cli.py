"""pix2pixHD through the real ``ugatit`` CLI: train, resume, translate (a run, an official checkpoint), export
(safetensors and ONNX) and eval, on a tiny dataset in the official layout."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pix2pixhd_reference import RefGlobal, ref_onehot_edges

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT),
                                                                           os.environ.get("PYTHONPATH", "")])}
TINY = ("--arch", "pix2pixhd", "--label-nc", "4", "--ngf", "4", "--n-downsample-global", "2", "--n-blocks-global",
        "1", "--ndf", "8", "--num-d", "1", "--no-vgg-loss", "--resize-or-crop", "none", "--workers", "0", "--quiet")


def ugatit(*args, ok=True):
    done = subprocess.run([sys.executable, "-m", "ugatit_cli", *map(str, args)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def _pair(root, phase, name, size, seed):
    w, h = size
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 2:] = 1 + seed % 2  # ids 0..3
    labels[h // 2:, :] += 1
    for folder in ("label", "img", "inst"):
        (root / f"{phase}_{folder}").mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels, mode="L").save(root / f"{phase}_label" / f"{name}_gtFine_labelIds.png")
    inst = labels.astype(np.uint16) * 1000 + 1
    Image.fromarray(inst).save(root / f"{phase}_inst" / f"{name}_gtFine_instanceIds.png")
    photo = np.stack([labels * 60, 255 - labels * 50, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    Image.fromarray(photo).save(root / f"{phase}_img" / f"{name}_leftImg8bit.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("p2phd-data")
    for i in range(3):
        _pair(root, "train", f"city_{i:06d}", (32, 32), i)
    for i in range(2):
        _pair(root, "test", f"town_{i:06d}", (38, 26), 10 + i)
    return root


def test_train_resume_translate_export_eval(data, tmp_path):
    run = tmp_path / "run"
    ugatit("train", data, *TINY, "--iterations", "2", "--save-every", "2", "--sample-every", "2", "--output", run)
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "pix2pixhd" and config["train"]["label_nc"] == 4
    assert sorted(p.name for p in (run / "samples").iterdir())
    assert config["train"]["niter_decay"] == 1  # the default (half of --iterations), recorded at the start
    done = ugatit("train", data, "--resume", "--output", run, "--iterations", "4", "--json")
    resumed = json.loads(done.stdout)
    assert resumed["iteration"] == 4
    # a longer --iterations keeps the run's decay length (not half of the new length), and says so
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert "--iterations changed from 2 to 4: the learning rate decays over the last 1 iterations" in said
    assert json.loads((run / "config.json").read_text())["train"]["niter_decay"] == 1
    straight = tmp_path / "straight"  # the same schedule in one go
    ugatit("train", data, *TINY, "--iterations", "4", "--niter-decay", "1", "--save-every", "2", "--sample-every",
           "4", "--output", straight)
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoints" / "step_00000004" / "netG.safetensors"))
    b = load_file(str(straight / "checkpoints" / "step_00000004" / "netG.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"G_GAN", "G_GAN_Feat", "D_real", "D_fake"} <= set(log[-1])

    # translate the test label maps with the run: one photo each, at the size rounded to multiples of 4
    out = tmp_path / "out"
    ugatit("translate", data / "test_label", "--model", run, "--instance-maps", data / "test_inst", "--output", out,
           "--quiet")
    made = sorted(out.glob("test_label/*.png"))  # a folder argument keeps its name (the stable layout)
    assert [p.name for p in made] == ["town_000000_gtFine_labelIds.png", "town_000001_gtFine_labelIds.png"]
    assert Image.open(made[0]).size == (40, 24)  # 38 x 26: round(9.5) = 10, round(6.5) = 6 (halves to even)
    missing = ugatit("translate", data / "test_label", "--model", run, "--output", tmp_path / "o2", ok=False)
    assert missing.returncode == 2 and "--instance-maps" in missing.stderr and "Traceback" not in missing.stderr

    # export: a model folder of the family, and ONNX that computes the same image
    folder = tmp_path / "exported"
    ugatit("export", run, "--output", folder, "--quiet")
    assert json.loads((folder / "config.json").read_text())["family"] == "pix2pixhd"
    card = (folder / "README.md").read_text()
    assert "--instance-maps instance_maps/" in card and "multiple of 4" in card
    onnx_dir = tmp_path / "onnx"
    ugatit("export", run, "--output", onnx_dir, "--format", "onnx", "--quiet")
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "generator.onnx"))
    label = np.zeros((1, 1, 24, 40), np.float32)
    label[..., 20:] = 2
    inst = label * 1000
    (image,) = session.run(None, {"label": label, "inst": inst})
    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(folder)
    with torch.no_grad():
        expected = model.nets["netG"](ref_onehot_edges(torch.from_numpy(label), torch.from_numpy(inst), 4))
    np.testing.assert_allclose(image, expected.numpy(), atol=1e-4)

    # eval: KID/FID against test_img/ plus PSNR and SSIM per pair
    from ugatit_cli.evaluate.features import random_inception_weights

    weights = random_inception_weights(tmp_path / "inception.pth")
    report = json.loads(ugatit("eval", data, "--model", folder, "--kid", "--fid", "--json", "--inception-weights",
                               weights, "--device", "cpu", "--kid-subsets", "3", "--quiet").stdout)
    (result,) = report["results"]
    assert result["fake_images"] == result["real_images"] == 2 and result["fid"] is not None
    paired = result["paired"]
    assert paired["pairs"] == 2 and 0 < paired["psnr_mean"] < 60 and -1 <= paired["ssim_mean"] <= 1


def test_bad_label_ids_are_named_before_training(data, tmp_path):
    at = TINY.index("--label-nc") + 1
    args = [*TINY[:at], "3", *TINY[at + 1:]]  # --label-nc 3: the maps hold id 3
    done = ugatit("train", data, *args, "--iterations", "1", "--output", tmp_path / "run", ok=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "train_label/city_000001_gtFine_labelIds.png: label ids 0..3 but label_nc is 3" in done.stderr
    assert not (tmp_path / "run").exists()  # nothing left that would block the corrected command


def test_every_problem_of_the_data_is_listed_in_one_run(tmp_path):
    root = tmp_path / "data"
    for i in range(8):
        _pair(root, "train", f"city_{i:06d}", (32, 32), i)
    _pair(root, "test", "town_000000", (32, 32), 20)
    labels = root / "train_label"
    Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(labels / "city_000001_gtFine_labelIds.png")
    Image.fromarray(np.full((32, 32), 5, np.uint8), mode="L").save(labels / "city_000002_gtFine_labelIds.png")
    Image.new("RGB", (48, 32)).save(root / "train_img" / "city_000003_leftImg8bit.png")  # not its label's size
    (root / "train_inst" / "city_000004_gtFine_instanceIds.png").unlink()  # a label map without instance map
    (root / "train_img" / "city_000005_leftImg8bit.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(np.full((32, 32), 9, np.uint8), mode="L").save(root / "test_label" /
                                                                   "town_000000_gtFine_labelIds.png")
    done = ugatit("train", root, *TINY, "--iterations", "1", "--output", tmp_path / "run", ok=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    said = done.stderr
    assert said.count("error:") == 1 and "6 problem(s) in the data" in said, said
    block = [line.strip() for line in said.splitlines()]
    for kind, files in (("files without a partner (1):", ["train_label/city_000004_gtFine_labelIds.png: no partner "
                                                          "in train_inst/"]),
                        ("unreadable files (1):", ["train_img/city_000005_leftImg8bit.png: not an image file Pillow "
                                                   "can read"]),
                        ("sizes that differ from the label map's (1):", [
                            "train_img/city_000003_leftImg8bit.png: 48x32 but its label map "
                            "train_label/city_000003_gtFine_labelIds.png is 32x32"]),
                        ("label ids >= label_nc (3):", [
                            "train_label/city_000001_gtFine_labelIds.png: label ids 7..7 but label_nc is 4",
                            "train_label/city_000002_gtFine_labelIds.png: label ids 5..5 but label_nc is 4",
                            "test_label/town_000000_gtFine_labelIds.png: label ids 9..9 but label_nc is 4"])):
        at = block.index(kind)
        assert block[at + 1:at + 1 + len(files)] == files, said
    assert not (tmp_path / "run").exists()


def test_bad_instance_maps_matter_only_to_settings_that_use_them(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        _pair(root, "train", f"city_{i:06d}", (32, 32), i)
    (root / "train_inst" / "city_000000_gtFine_instanceIds.png").unlink()
    (root / "train_inst" / "city_000001_gtFine_instanceIds.png").write_bytes(b"")
    done = ugatit("train", root, *TINY, "--iterations", "1", "--output", tmp_path / "run", ok=False)
    assert done.returncode == 2 and "2 problem(s) in the data" in done.stderr, done.stderr
    assert "train_inst/city_000001_gtFine_instanceIds.png: not an image file Pillow can read" in done.stderr
    ugatit("train", root, *TINY, "--no-instance", "--iterations", "1", "--output", tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "data.json").read_text())["train"]
    assert len(recorded["label"]) == len(recorded["image"]) == 3  # every pair trains; no instance maps used


def test_settings_that_do_not_fit_the_run_length_are_one_line_before_training(data, tmp_path):
    # new runs: every training setting is checked before the run folder is made
    for option, said in ((["--niter-decay", "3"], "--niter-decay 3 is longer than --iterations 2: pass "
                                                  "--niter-decay 2 or less, or --iterations 3 or more"),
                         (["--num-d", "20"], "num_D must be in [1, 8], got 20")):
        done = ugatit("train", data, *TINY, "--iterations", "2", *option, "--output", tmp_path / "new", ok=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert said in " ".join(done.stderr.split()) and not (tmp_path / "new").exists(), done.stderr
    # a run interrupted early, resumed with a total below the decay it recorded at its start (half of 1000)
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "ugatit_cli", "train", str(data), *TINY, "--iterations",
                                "1000", "--save-every", "500", "--output", str(run)], env=ENV, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "log.jsonl").is_file() and (run / "log.jsonl").stat().st_size > 0):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        process.kill()
    done_at = int((run / "checkpoints" / "latest").read_text().strip().removeprefix("step_"))
    assert 0 < done_at < 499 and json.loads((run / "config.json").read_text())["train"]["niter_decay"] == 500
    done = ugatit("train", data, "--resume", "--output", run, "--iterations", done_at + 1, ok=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert (f"{run}: --niter-decay 500 (the run's, recorded when it started) is longer than --iterations "
            f"{done_at + 1}: pass --niter-decay {done_at + 1} or less, or --iterations 500 or more"
            ) in " ".join(done.stderr.split())
    assert json.loads((run / "config.json").read_text())["train"]["iterations"] == 1000  # nothing rewritten
    done = ugatit("train", data, "--resume", "--output", run, "--iterations", done_at + 1, "--niter-decay", 1,
                  "--json")
    assert json.loads(done.stdout)["iteration"] == done_at + 1  # what the line said to pass trains on


def test_official_checkpoint_as_model_equals_the_official_forward(data, tmp_path):
    ckpt = tmp_path / "checkpoints" / "label2city"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    ref = RefGlobal(4 + 1, 3, 4, 2, 1).eval()
    for p in ref.parameters():
        p.data.normal_(0, 0.1)
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, ckpt / "latest_net_G.pth")
    lines = ["------------ Options -------------", "label_nc: 4", "n_blocks_global: 1", "n_downsample_global: 2",
             "ngf: 4", "netG: global", "no_instance: False", "instance_feat: False", "label_feat: False",
             "-------------- End ----------------"]
    (ckpt / "opt.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    ugatit("translate", data / "test_label" / "town_000000_gtFine_labelIds.png", "--model", ckpt,
           "--instance-maps", data / "test_inst", "--output", out, "--quiet")
    got = np.asarray(Image.open(out / "town_000000_gtFine_labelIds.png")).astype(int)
    label = Image.open(data / "test_label" / "town_000000_gtFine_labelIds.png").resize((40, 24), Image.NEAREST)
    inst = Image.open(data / "test_inst" / "town_000000_gtFine_instanceIds.png").resize((40, 24), Image.NEAREST)
    x = ref_onehot_edges(torch.from_numpy(np.array(label, np.int64))[None, None],
                         torch.from_numpy(np.array(inst, np.int64))[None, None], 4)
    with torch.no_grad():
        official = ((ref(x)[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).clip(0, 255).astype(np.uint8)  # tensor2im
    assert np.abs(got - official.astype(int)).max() <= 1
    without_opt = tmp_path / "bare"
    without_opt.mkdir()
    (without_opt / "latest_net_G.pth").write_bytes((ckpt / "latest_net_G.pth").read_bytes())
    asked = ugatit("translate", data / "test_label", "--model", without_opt / "latest_net_G.pth", "--output",
                   tmp_path / "o3", ok=False)
    assert asked.returncode == 2 and "--label-nc" in asked.stderr

    # --init-from: a run that starts from the official generator
    run = tmp_path / "from-official"
    ugatit("train", data, *TINY, "--iterations", "1", "--save-every", "1", "--sample-every", "1", "--output", run,
           "--init-from", ckpt / "latest_net_G.pth", "--lr", "1e-12")
    from safetensors.torch import load_file

    trained = load_file(str(run / "checkpoints" / "step_00000001" / "netG.safetensors"))
    torch.testing.assert_close(trained["model.1.weight"], ref.state_dict()["model.1.weight"], rtol=0, atol=1e-9)
