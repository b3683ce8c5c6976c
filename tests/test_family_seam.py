"""The proof of the model-family seam: a family defined entirely in this module (a 1x1-convolution network
that learns the identity, with its own config and hyper-parameters) trains, resumes, translates, exports
(safetensors and ONNX) and is evaluated through the real ``ugatit`` CLI, with no edit anywhere else.

The CLI runs in subprocesses (``python -m ugatit_cli``); they see the family through the documented plugin
variable ``UGATIT_FAMILIES=test_family_seam:FAMILY``. In this process it is registered with one call,
``register_family(FAMILY)``.
"""

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ugatit_cli.core.nets import ema_copy, update_ema, wrap_for_training
from ugatit_cli.errors import UserError
from ugatit_cli.families.base import (
    EvalPair,
    Family,
    Model,
    OnnxIO,
    TranslateOption,
    Translator,
    option,
    register_family,
)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# --- the family ----------------------------------------------------------------------------------------------


@dataclass
class TinyConfig:
    img_size: int = 16
    gain: float = 0.5

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**{k: v for k, v in data.items() if k in ("img_size", "gain")})

    def default_size(self):
        return self.img_size

    def check_size(self, size):
        if size is None:
            return self.img_size
        if size % 4 or size < 16:
            raise UserError(f"size must be a multiple of 4 and at least 16, got {size}")
        return size


@dataclass
class TinyHyper:
    size: int = option(16, help="Image size.")
    gain: float = option(0.5, help="Initial gain of the 1x1 convolution.")
    lr: float = option(0.05, help="Adam learning rate.")


class TinyNet(nn.Module):
    """out = hardtanh(W x + b) per pixel, W initialised to gain * I: learns the identity."""

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1) * config.gain)
            self.conv.bias.zero_()

    def forward(self, x):
        return nn.functional.hardtanh(self.conv(x))


class TinyTranslator(Translator):
    def __init__(self, net, size, native=False, torch_only=False):
        self.net, self._size, self.native, self.torch_only = net, size, native, torch_only

    def can_feed_onnx(self, input_names):
        return not self.torch_only

    @property
    def size(self):
        return self._size

    def modules(self):
        return [self.net]

    def read(self, source):
        if not self.native:
            return super().read(source)
        img = Image.open(source).convert("RGB")  # each image at its own size, cut to multiples of 4
        w, h = img.size
        return {"pixels": np.asarray(img.crop((0, 0, w - w % 4, h - h % 4)))}, img.size

    def forward(self, x, extras):
        return {"image": self.net(x)}


class TinyTrainer:
    def __init__(self, run, hyper, device, distributed):
        self.device, self.lr, self.iteration = device, hyper.lr, 0
        self.nets = {"net": TinyNet(TinyConfig(hyper.size, hyper.gain)).to(device)}
        self.decay = run.ema
        self.ema = {"net": ema_copy(self.nets["net"])} if run.ema is not None else None
        self.optim = torch.optim.Adam(self.nets["net"].parameters(), lr=hyper.lr)
        self.step_net = wrap_for_training(self.nets["net"], device, distributed=distributed, compile=run.compile)

    def train_step(self, batch):
        (x,) = batch
        x = x.to(self.device)
        loss = (self.step_net(x) - x).abs().mean()
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        if self.ema is not None:
            update_ema(self.ema, self.nets, self.decay)
        self.iteration += 1
        return {"loss": loss.item(), "lr": self.lr}

    def sample_grids(self, batch):
        with torch.no_grad():
            out = self.nets["net"](batch.to(self.device))
        tiles = torch.cat([batch, out.cpu()], dim=2)  # inputs above outputs
        pixels = ((tiles.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
        return {"identity": Image.fromarray(np.concatenate(list(pixels.numpy()), axis=1))}

    def state_dict(self):
        return {"iteration": self.iteration, "nets": {k: v.state_dict() for k, v in self.nets.items()},
                "ema": None if self.ema is None else {k: v.state_dict() for k, v in self.ema.items()},
                "optim": self.optim.state_dict()}

    def load_state_dict(self, state, source="checkpoint"):
        self.nets["net"].load_state_dict(state["nets"]["net"])
        if self.ema is not None:
            self.ema["net"].load_state_dict(state["ema"]["net"])
        self.optim.load_state_dict(state["optim"])
        self.iteration = int(state["iteration"])

    def load_official(self, path):
        raise UserError(f"{path}: the tiny family has no official checkpoints")


class TinyFamily(Family):
    name = "tiny"
    title = "Tiny identity"
    model_config = TinyConfig
    hyper_params = TinyHyper
    run_defaults = {"iterations": 10, "save_every": 5, "sample_every": 5}
    data_layout = "train/ (and test/ for eval)"
    trained_nets = {"net": "net"}
    translate_options = (TranslateOption("native", bool, "Run each image at its own size."),
                         TranslateOption("torch_only", bool, "Compute something the ONNX graph cannot be fed."))

    def weight_files(self, config):
        return {"net": "net.safetensors"}

    def keys_for(self, directions):
        if directions:
            raise UserError("the tiny family has no directions")
        return ("net",)

    def build_net(self, config, key):
        return TinyNet(config)

    def translator(self, model, direction, size, options):
        return TinyTranslator(model.nets["net"], model.config.check_size(size), bool(options.get("native")),
                              bool(options.get("torch_only")))

    def onnx_io(self, model, key):
        example = torch.zeros(2, 3, model.config.img_size, model.config.img_size)
        return OnnxIO(model.nets[key], (example,), ("input",), ("image",),
                      {"input": {0: "batch", 2: "height", 3: "width"}})

    def eval_pairs(self, data_dir, directions):
        return [EvalPair("identity", Path(data_dir) / "test", Path(data_dir) / "test")]

    def scan_data(self, data_dir):
        from ugatit_cli.data.streams import scan_folders

        return scan_folders(data_dir, {"X": "train"}, {"X": "test"}, self.data_layout)

    def loader(self, data, run, hyper, start, stop, rank, world_size, pin_memory):
        from ugatit_cli.data.streams import TrainingStreams, training_loader

        streams = TrainingStreams(data.train, hyper.size, run.batch_size, run.seed, rank, world_size)
        return training_loader(streams, start, stop, run.workers, pin_memory=pin_memory)

    def sample_batch(self, data, hyper):
        from ugatit_cli.data.streams import sample_images

        return sample_images(data.train["X"], hyper.size, 2)

    def model_config_for(self, hyper):
        return TinyConfig(hyper.size, hyper.gain)

    def trainer(self, run, hyper, device, distributed):
        return TinyTrainer(run, hyper, device, distributed)


FAMILY = TinyFamily()

# --- the proof -----------------------------------------------------------------------------------------------

PLUGIN_ENV = {**os.environ, "UGATIT_FAMILIES": "test_family_seam:FAMILY", "OMP_NUM_THREADS": "1",
              "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}


def ugatit(*args, ok=True):
    done = subprocess.run([sys.executable, "-m", "ugatit_cli", *map(str, args)], env=PLUGIN_ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    for folder, count in (("train", 6), ("test", 4)):
        (root / folder).mkdir()
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")
    return root


def run_net(folder_or_run, x):
    """The tiny network as the store loads it, applied here."""
    from ugatit_cli.store.sources import resolve_model

    register_family(FAMILY)  # the one call, for this process
    model = resolve_model(folder_or_run)
    assert isinstance(model, Model) and model.family is FAMILY
    with torch.no_grad():
        return model.nets["net"](x)


def test_a_family_defined_here_trains_resumes_translates_exports_and_evaluates_through_the_cli(data, tmp_path):
    help_text = ugatit("train", "--help").stdout
    assert "Tiny identity (--arch tiny)" in help_text and "--gain" in help_text

    # train 4 iterations, then resume to 8; a straight 8-iteration run ends with the same weights
    run = tmp_path / "run"
    common = ("--arch", "tiny", "--workers", "0", "--save-every", "2", "--sample-every", "4", "--quiet")
    ugatit("train", data, *common, "--iterations", "4", "--output", run, "--ema", "0.5", "--gain", "0.8")
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "tiny" and config["format_version"] == 1 and config["train"]["gain"] == 0.8
    assert (run / "samples" / "identity_00000004.png").is_file()
    resumed = json.loads(ugatit("train", data, "--resume", "--output", run, "--iterations", "8", "--json").stdout)
    assert resumed["iteration"] == 8
    straight = tmp_path / "straight"
    ugatit("train", data, *common, "--iterations", "8", "--output", straight, "--ema", "0.5", "--gain", "0.8")
    from safetensors.torch import load_file

    for name in ("net", "ema_net"):
        a = load_file(str(run / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        b = load_file(str(straight / "checkpoints" / "step_00000008" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()][-1] == 8
    # a U-GAT-IT option does not apply to this family: one line, exit 2
    wrong = ugatit("train", data, "--arch", "tiny", "--light", "--output", tmp_path / "x", ok=False)
    assert wrong.returncode == 2 and "--light does not apply to --arch tiny" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    typo = ugatit("train", data, "--arch", "tinny", "--output", tmp_path / "x", ok=False)
    assert typo.returncode == 2 and "unknown model family 'tinny'; did you mean 'tiny'?" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()

    # translate from the run (its EMA network), then from a safetensors export: the same pixels
    image = data / "test" / "0.png"
    ugatit("translate", image, "--model", run, "--output", tmp_path / "from-run", "--quiet")
    folder = tmp_path / "export"
    ugatit("export", run, "--output", folder, "--quiet")
    exported = json.loads((folder / "config.json").read_text())
    assert exported["family"] == "tiny" and exported["format_version"] == 1 and (folder / "net.safetensors").is_file()
    assert "Tiny identity" in (folder / "README.md").read_text()
    ugatit("translate", image, "--model", folder, "--output", tmp_path / "from-folder", "--quiet")
    got = np.asarray(Image.open(tmp_path / "from-folder" / "0.png"))
    assert np.array_equal(got, np.asarray(Image.open(tmp_path / "from-run" / "0.png")))
    x = torch.from_numpy(np.asarray(Image.open(image).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR),
                                    dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    want = ((run_net(folder, x)[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert not np.array_equal(got, np.asarray(Image.open(image).convert("RGB").resize((16, 16))))  # it translated
    bad = ugatit("translate", image, "--model", folder, "--direction", "a2b", "--output", tmp_path / "y", ok=False)
    assert bad.returncode == 2 and "--direction does not apply" in bad.stderr

    # ONNX: the family's inputs and outputs, dynamic sides
    onnx_folder = tmp_path / "onnx"
    ugatit("export", run, "--output", onnx_folder, "--format", "onnx", "--quiet")
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_folder / "net.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["image"]
    x3 = torch.rand(3, 3, 24, 32) * 2 - 1
    (onnx_out,) = session.run(None, {"input": x3.numpy()})
    np.testing.assert_allclose(onnx_out, run_net(folder, x3).numpy(), atol=1e-5)

    # eval: what the family compares (its test images against themselves, translated)
    report = json.loads(ugatit("eval", data, "--model", folder, "--kid", "--json", "--kid-subsets", "5",
                               "--device", "cpu", "--feature-extractor", "small_extractor:SmallFeatures",
                               "--quiet").stdout)
    (result,) = report["results"]
    assert result["direction"] == "identity" and result["fake_images"] == result["real_images"] == 4
    assert result["kid_mean"] is not None


def test_a_family_reads_its_own_inputs_and_images_of_other_shapes_go_in_other_batches(tmp_path):
    import ugatit_cli

    register_family(FAMILY)
    sizes = [(20, 16), (24, 16), (20, 16), (33, 18)]
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (40 * i, 80, 120)).save(tmp_path / f"{i}.png")
    model = Model(FAMILY, TinyConfig(gain=1.0), {"net": TinyNet(TinyConfig(gain=1.0)).eval()})
    report = ugatit_cli.translate(sorted(tmp_path.glob("*.png")), model, output=tmp_path / "out", native=True,
                                  batch_size=4, device="cpu", progress=False)
    assert not report.failed and len(report.done) == 4
    for i, (w, h) in enumerate(sizes):
        out = Image.open(tmp_path / "out" / f"{i}.png")
        assert out.size == (w - w % 4, h - h % 4)
        source = np.asarray(Image.open(tmp_path / f"{i}.png"), dtype=int)[: out.size[1], : out.size[0]]
        assert np.abs(np.asarray(out, dtype=int) - source).max() <= 1  # gain 1: the identity
    with pytest.raises(UserError, match="--heatmap does not apply to Tiny identity models"):
        ugatit_cli.translate(tmp_path / "0.png", model, output=tmp_path / "x", heatmap=True, progress=False)


def test_batches_hold_images_of_one_shape_and_failures_go_to_the_report(tmp_path):
    """A GPU's batches (a CPU runs one image per pass): consecutive inputs of one shape, at most batch_size,
    a new batch at each change of shape; a failed decode is reported and breaks no batch."""
    from ugatit_cli.translation import Failed, TranslationReport, _batches, _Decoded, _Job

    def decoded(i: int, h: int) -> _Decoded:
        return _Decoded(_Job(tmp_path / f"{i}.png", ()), {"pixels": np.zeros((h, 8, 3), np.uint8)}, (8, h))

    items = [decoded(0, 4), decoded(1, 4), Failed("x.png", "not an image"), decoded(2, 4), decoded(3, 4),
             decoded(4, 8), decoded(5, 4)]
    report, advanced = TranslationReport(tmp_path), []
    batches = list(_batches(iter(items), 3, report, advanced.append))
    assert [[d.job.source.name for d in batch] for batch in batches] == [
        ["0.png", "1.png", "2.png"], ["3.png"], ["4.png"], ["5.png"]]
    assert report.failed == [items[2]] and advanced == [False]


def test_a_translator_that_cannot_feed_its_graph_never_gets_onnxruntime(tmp_path):
    """A cached graph (or --backend auto) never picks onnxruntime for a translator that cannot feed the graph:
    auto runs PyTorch and says so; --backend onnxruntime is one line, exit 2."""
    pytest.importorskip("onnxruntime")
    from ugatit_cli.families.model_folder import ModelFolder

    register_family(FAMILY)
    folder = tmp_path / "model"
    ModelFolder(Model(FAMILY, TinyConfig(gain=0.5), {"net": TinyNet(TinyConfig(gain=0.5)).eval()})).save_pretrained(
        folder)
    image = tmp_path / "0.png"
    Image.new("RGB", (20, 16), (40, 80, 120)).save(image)
    env = {**PLUGIN_ENV, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def translate(*args, ok=True):
        done = subprocess.run([sys.executable, "-m", "ugatit_cli", "translate", str(image), "--model", str(folder),
                               "--device", "cpu", *map(str, args)], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    done = translate("-o", tmp_path / "ort", "--backend", "onnxruntime", "--json")
    assert json.loads(done.stdout)["backend"] == "onnxruntime"  # the graph is now in the cache
    done = translate("-o", tmp_path / "auto", "--torch-only", "--json")
    assert json.loads(done.stdout)["backend"] == "torch" and (tmp_path / "auto" / "0.png").is_file()
    done = translate("-o", tmp_path / "x", "--torch-only", "--backend", "onnxruntime", ok=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "--backend torch" in done.stderr

    # a damaged cache entry fails one run with one line and is removed: the next run exports it anew
    (graph,) = (tmp_path / "cache" / "ugatit-cli" / "onnx").glob("*/net.onnx")
    graph.write_bytes(b"not a graph")
    done = translate("-o", tmp_path / "y", "--backend", "onnxruntime", ok=False)
    assert done.returncode == 2 and "removed" in done.stderr and not graph.exists()
    done = translate("-o", tmp_path / "z", "--backend", "onnxruntime", "--json")
    assert json.loads(done.stdout)["backend"] == "onnxruntime" and graph.is_file()


def test_help_names_every_family_once_and_shows_defaults_cleanly(monkeypatch):
    """The root help names the three systems; a family's line in a shared option's help carries its name once;
    a default in words prints as "(default: ...)", not as a stray " ." left by Rich markup."""
    from typer.testing import CliRunner

    from ugatit_cli.cli.app import app

    monkeypatch.setenv("COLUMNS", "400")
    root = " ".join(CliRunner().invoke(app, ["--help"]).stdout.split())
    assert "GAN image-to-image translation: U-GAT-IT, pix2pixHD, TUNIT." in root
    for command in ("eval", "translate", "export", "train"):
        text = " ".join(CliRunner().invoke(app, [command, "--help"]).stdout.split())
        assert "TUNIT: TUNIT" not in text and "U-GAT-IT: U-GAT-IT" not in text and "pix2pixHD: pix2pixHD" not in text
    text = " ".join(CliRunner().invoke(app, ["eval", "--help"]).stdout.split())
    assert "TUNIT: a folder of images" in text and " ." not in text
    assert "translation and features. (default: translate's per-device choice; 16 for features)" in text
