"""pix2pixHD losses and training step against the official formulas, and the VGG19 weights' paths."""

import pickle

import pytest
import torch
from pix2pixhd_reference import RefEncoder, RefGlobal, RefLocal, RefMultiscaleD, RefVgg19, official_step
from safetensors.torch import save_file

from ugatit_cli.errors import UserError
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig, Pix2PixHDTrainConfig
from ugatit_cli.families.pix2pixhd.losses import VGG19Features
from ugatit_cli.families.pix2pixhd.step import LOSS_NAMES, Pix2PixHDTrainer


@pytest.fixture(scope="module")
def vgg_state():
    """Random VGG19 weights in torchvision's layout (``features.N.*``), as a downloaded file would hold them."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(123)
    features = make_layers(cfgs["E"])
    for m in features.modules():
        if isinstance(m, torch.nn.Conv2d):  # scaled so activations keep a sensible size through 13 layers
            torch.nn.init.normal_(m.weight, 0.0, (2.0 / (9 * m.in_channels)) ** 0.5)
    return {f"features.{k}": v for k, v in features.state_dict().items()}


@pytest.fixture(scope="module")
def vgg_file(vgg_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(vgg_state, path)
    return path


def _batch(label_nc, size=(32, 32), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    label = torch.randint(0, label_nc, (batch, 1, h, w), generator=g)
    inst = label * 1000 + torch.randint(0, 2, (batch, 1, h, w), generator=g)
    return {"label": label, "inst": inst, "image": torch.rand(batch, 3, h, w, generator=g) * 2 - 1}


CASES = {
    "global_vgg": dict(model=dict(label_nc=4, ngf=8, n_downsample_global=2, n_blocks_global=1), ndf=8),
    "local_features_fix_global": dict(
        model=dict(label_nc=3, netG="local", ngf=4, n_downsample_global=1, n_blocks_global=1, n_blocks_local=1,
                   instance_feat=True, nef=4, n_downsample_E=2), ndf=8, no_vgg_loss=True, niter_fix_global=5),
    "bce_no_feature_matching": dict(model=dict(label_nc=4, ngf=8, n_downsample_global=2, n_blocks_global=1,
                                               no_instance=True), ndf=8, no_lsgan=True, no_ganFeat_loss=True,
                                    num_D=1, no_vgg_loss=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_step_loss_terms_equal_the_official_formulas(case, vgg_state, vgg_file):
    spec = dict(CASES[case])
    model = Pix2PixHDConfig(**spec.pop("model"))
    cfg = Pix2PixHDTrainConfig(model=model, iterations=100, vgg_weights=str(vgg_file), **spec)
    torch.manual_seed(0)
    trainer = Pix2PixHDTrainer(cfg)
    if model.netG == "global":
        ref_g = RefGlobal(model.netG_input_nc, 3, model.ngf, model.n_downsample_global, model.n_blocks_global)
    else:
        ref_g = RefLocal(model.netG_input_nc, 3, model.ngf, model.n_downsample_global, model.n_blocks_global,
                         model.n_local_enhancers, model.n_blocks_local)
    ref_d = RefMultiscaleD(model.label_channels + (0 if model.no_instance else 1) + 3, cfg.ndf, cfg.n_layers_D,
                           num_D=cfg.num_D, interm=not cfg.no_ganFeat_loss)
    ref_g.load_state_dict(trainer.nets["netG"].state_dict())
    ref_d.load_state_dict(trainer.nets["netD"].state_dict())
    ref_e = None
    g_params = list(ref_g.parameters())
    if model.use_features:
        ref_e = RefEncoder(3, model.feat_num, model.nef, model.n_downsample_E)
        ref_e.load_state_dict(trainer.nets["netE"].state_dict())
        # official: while the global generator is fixed only model{n_local_enhancers}* (and E) train
        g_params = [p for n, p in ref_g.named_parameters() if n.startswith("model1")] + list(ref_e.parameters())
    opt_g = torch.optim.Adam(g_params, lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(ref_d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    ref_vgg = None if cfg.no_vgg_loss else RefVgg19({k.removeprefix("features."): v for k, v in vgg_state.items()
                                                      if int(k.split(".")[1]) < 37})
    global_before = {n: p.clone() for n, p in trainer.nets["netG"].named_parameters() if n.startswith("model.")}

    for step in range(2):
        batch = _batch(model.label_nc, seed=step)
        ours = trainer.step(batch)
        theirs = official_step(ref_g, ref_d, opt_g, opt_d, ref_vgg, batch, model.label_nc, cfg.n_layers_D, cfg.num_D,
                               cfg.lambda_feat, use_inst=not model.no_instance, net_e=ref_e,
                               feat_loss=not cfg.no_ganFeat_loss, lsgan=not cfg.no_lsgan)
        rel = 1e-5 if step == 0 else 1e-4  # step 2 starts from weights that Adam moved by +-lr per element
        for name in LOSS_NAMES:
            assert ours[name] == pytest.approx(theirs[name], rel=rel, abs=1e-7), (step, name)
        assert ours["g_loss"] == pytest.approx(theirs["G_GAN"] + theirs["G_GAN_Feat"] + theirs["G_VGG"], rel=rel)
        assert ours["d_loss"] == pytest.approx(0.5 * (theirs["D_real"] + theirs["D_fake"]), rel=rel)
        if step == 0:  # the gradients each optimiser stepped with (D's: its own loss only, as official)
            nets = [(trainer.nets["netD"], ref_d), (trainer.nets["netG"], ref_g)]
            if ref_e is not None:
                nets.append((trainer.nets["netE"], ref_e))
            for net, ref in nets:
                ref_grads = dict(ref.named_parameters())
                # one tolerance per network: conv biases before an instance norm have zero gradients up to rounding
                scale = max(q.grad.abs().max().item() for q in ref.parameters() if q.grad is not None)
                for name, p in net.named_parameters():
                    if p.grad is None:  # fixed global generator: not in the official optimiser either
                        assert ref_e is not None and name.startswith("model."), name
                        continue
                    torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-3, atol=1e-5 * scale,
                                               msg=lambda m, n=name: f"{n}: {m}")
    if not cfg.no_vgg_loss:
        assert ours["G_VGG"] > 0 and ours["G_GAN_Feat"] > 0
    if cfg.niter_fix_global:
        for n, p in trainer.nets["netG"].named_parameters():
            if n.startswith("model."):
                assert torch.equal(p, global_before[n]), n  # the global generator stayed fixed

def test_niter_fix_global_then_all_of_g_trains(vgg_file):
    model = Pix2PixHDConfig(label_nc=3, netG="local", ngf=4, n_downsample_global=1, n_blocks_global=1,
                            n_blocks_local=1, no_instance=True)
    cfg = Pix2PixHDTrainConfig(model=model, ndf=8, no_vgg_loss=True, iterations=4, niter_fix_global=1)
    trainer = Pix2PixHDTrainer(cfg)
    before = trainer.nets["netG"].model[1].weight.clone()
    trainer.step(_batch(3))
    assert torch.equal(trainer.nets["netG"].model[1].weight, before)
    result = trainer.step(_batch(3, seed=1))
    assert not torch.equal(trainer.nets["netG"].model[1].weight, before)
    assert result["lr"] == pytest.approx(2e-4)
    # a checkpoint taken in either phase restores
    state = trainer.state_dict()
    again = Pix2PixHDTrainer(cfg)
    again.load_state_dict(state)
    assert again.iteration == 2
    a, b = trainer.step(_batch(3, seed=2)), again.step(_batch(3, seed=2))
    assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-6)


def test_vgg_weights_file_layouts(vgg_state, vgg_file, tmp_path):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    from_pth = VGG19Features.pretrained(vgg_file)
    st_path = tmp_path / "vgg19.safetensors"
    save_file({k.removeprefix("features."): v.contiguous() for k, v in vgg_state.items()}, str(st_path))
    from_st = VGG19Features.pretrained(st_path)
    ref = RefVgg19({k.removeprefix("features."): v for k, v in vgg_state.items()})
    for a, b, c in zip(from_pth(x), from_st(x), ref(x), strict=True):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)
    assert [t.shape[1] for t in from_pth(x)] == [64, 128, 256, 512, 512]
    assert not any(p.requires_grad for p in from_pth.parameters())


def test_vgg_weights_through_torchvisions_cache(vgg_state, monkeypatch, tmp_path):
    """No path given: torchvision's own loader; a file already in its cache is used (no download here)."""
    from torchvision.models import VGG19_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(vgg_state, cached)
    net = VGG19Features.pretrained()
    torch.testing.assert_close(net.features[0].weight, vgg_state["features.0.weight"])


def test_vgg_download_failure_is_one_line(monkeypatch, tmp_path):
    import urllib.error

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.urlopen", unreachable)
    with pytest.raises(UserError, match="could not get torchvision's VGG19 ImageNet weights.*--vgg-weights PATH"):
        VGG19Features.pretrained()


class _Payload:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_vgg_weights_refuses_a_pickle_with_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"features.0.weight": _Payload()}, f, protocol=2)
    with pytest.raises(UserError) as err:
        VGG19Features.pretrained(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "refusing" in message
    assert "runs code" not in capsys.readouterr().out


def test_vgg_weights_wrong_layout(tmp_path):
    path = tmp_path / "small.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(UserError, match=r"features\.0\.weight has shape \(8, 3, 3, 3\)"):
        VGG19Features.pretrained(path)
    with pytest.raises(UserError, match="no such file"):
        VGG19Features.pretrained(tmp_path / "missing.pth")


def test_load_official_checkpoints_folder_and_sample_grid(tmp_path):
    model = Pix2PixHDConfig(label_nc=3, ngf=4, n_downsample_global=2, n_blocks_global=1)
    cfg = Pix2PixHDTrainConfig(model=model, ndf=8, no_vgg_loss=True, iterations=4)
    torch.manual_seed(0)
    source = Pix2PixHDTrainer(cfg)
    # what the official save_network writes (DataParallel keys carry "module.")
    torch.save({f"module.{k}": v for k, v in source.nets["netG"].state_dict().items()}, tmp_path / "latest_net_G.pth")
    torch.save(source.nets["netD"].state_dict(), tmp_path / "latest_net_D.pth")
    torch.manual_seed(1)
    trainer = Pix2PixHDTrainer(cfg)
    trainer.load_official(tmp_path)
    for name in ("netG", "netD"):
        for key, value in source.nets[name].state_dict().items():
            assert torch.equal(trainer.nets[name].state_dict()[key], value), (name, key)
    bigger = Pix2PixHDTrainConfig(model=Pix2PixHDConfig(label_nc=3, ngf=8, n_downsample_global=2, n_blocks_global=1),
                                  ndf=8, no_vgg_loss=True, iterations=4)
    with pytest.raises(UserError, match="latest_net_G.pth: netG does not fit the training settings"):
        Pix2PixHDTrainer(bigger).load_official(tmp_path / "latest_net_G.pth")
    grid = trainer.sample_grids(_batch(3, size=(16, 16)))["samples"]
    assert grid.size == (48, 32)  # 2 rows of label | generated | real


def test_ema_and_exact_resume(tmp_path):
    model = Pix2PixHDConfig(label_nc=3, ngf=4, n_downsample_global=2, n_blocks_global=1)
    cfg = Pix2PixHDTrainConfig(model=model, ndf=8, no_vgg_loss=True, iterations=6)
    torch.manual_seed(0)
    straight = Pix2PixHDTrainer(cfg, ema=0.5)
    torch.manual_seed(0)
    first = Pix2PixHDTrainer(cfg, ema=0.5)
    for i in range(2):
        first.step(_batch(3, seed=i))
    path = tmp_path / "state.pt"
    torch.save(first.state_dict(), path)
    resumed = Pix2PixHDTrainer(cfg, ema=0.5)
    resumed.load_state_dict(torch.load(path, weights_only=True))
    for i in range(4):
        a = straight.train_step(_batch(3, seed=i))
        if i >= 2:
            b = resumed.train_step(_batch(3, seed=i))
            assert a == b
    for key, value in straight.ema["netG"].state_dict().items():
        assert torch.equal(resumed.ema["netG"].state_dict()[key], value)
    assert not torch.equal(straight.ema["netG"].model[1].weight, straight.nets["netG"].model[1].weight)
    with pytest.raises(UserError, match="keeps an EMA generator"):
        Pix2PixHDTrainer(cfg).load_state_dict(torch.load(path, weights_only=True))


def test_rgb_inputs_label_nc_0_train_from_the_official_a_b_layout(tmp_path):
    import numpy as np
    from PIL import Image

    from ugatit_cli.families.pix2pixhd.data import PairedBatches, scan_dataset

    rng = np.random.default_rng(0)
    for folder in ("train_A", "train_B"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    model = Pix2PixHDConfig(label_nc=0, no_instance=True, ngf=4, n_downsample_global=2, n_blocks_global=1)
    cfg = Pix2PixHDTrainConfig(model=model, ndf=8, num_D=1, no_vgg_loss=True, iterations=2, resize_or_crop="none")
    batch = PairedBatches(cfg, scan_dataset(tmp_path, model))[0]
    assert batch["label"].shape == (1, 3, 16, 16) and batch["label"].dtype == torch.float32 and "inst" not in batch
    trainer = Pix2PixHDTrainer(cfg)
    assert trainer.nets["netD"].scale0_layer0[0].in_channels == 6  # input photo + image, no edge map
    losses = trainer.step(batch)
    assert all(v == v for v in losses.values()) and losses["G_VGG"] == 0.0


def test_bf16_autocast_step_on_the_cpu():
    model = Pix2PixHDConfig(label_nc=3, ngf=4, n_downsample_global=2, n_blocks_global=1)
    cfg = Pix2PixHDTrainConfig(model=model, ndf=8, num_D=1, no_vgg_loss=True, iterations=2)
    torch.manual_seed(0)
    trainer = Pix2PixHDTrainer(cfg, precision="bf16")
    losses = trainer.step(_batch(3, size=(16, 16)))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert all(p.dtype == torch.float32 for p in trainer.nets["netG"].parameters())  # weights stay fp32
    with pytest.raises(UserError, match="fp16 autocast needs a GPU"):
        Pix2PixHDTrainer(cfg, precision="fp16")
