"""pix2pixHD networks against an independent re-statement of the official modules (same keys, same outputs)."""

import pytest
import torch
from pix2pixhd_reference import RefEncoder, RefGlobal, RefLocal, RefMultiscaleD

from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig, Pix2PixHDTrainConfig
from ugatit_cli.families.pix2pixhd.networks import (
    build_discriminator,
    build_encoder,
    build_generator,
    instance_mean,
)


def _load_reference_into_ours(ref, ours):
    assert list(ref.state_dict()) == list(ours.state_dict())  # official key names, same order
    ours.load_state_dict(ref.state_dict())


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_global_generator_matches_official_layout(norm):
    torch.manual_seed(0)
    cfg = Pix2PixHDConfig(label_nc=6, ngf=8, n_downsample_global=3, n_blocks_global=2, norm=norm)
    ref = RefGlobal(cfg.netG_input_nc, 3, 8, 3, 2, norm).eval()
    for p in ref.parameters():  # away from the init, so that every weight matters
        p.data.normal_(0, 0.1)
    ours = build_generator(cfg).eval()
    _load_reference_into_ours(ref, ours)
    assert "model.1.weight" in ours.state_dict() and "model.13.conv_block.5.weight" in ours.state_dict()
    x = torch.randn(2, cfg.netG_input_nc, 40, 24)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 3, 40, 24)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_local_enhancer_matches_official_layout():
    torch.manual_seed(1)
    cfg = Pix2PixHDConfig(label_nc=5, netG="local", ngf=4, n_downsample_global=2, n_blocks_global=2,
                          n_local_enhancers=2, n_blocks_local=1)
    assert cfg.size_multiple == 16
    ref = RefLocal(cfg.netG_input_nc, 3, 4, 2, 2, 2, 1).eval()
    for p in ref.parameters():
        p.data.normal_(0, 0.1)
    ours = build_generator(cfg).eval()
    _load_reference_into_ours(ref, ours)
    assert {"model1_1.1.weight", "model2_2.0.conv_block.1.weight"} <= set(ours.state_dict())
    x = torch.randn(1, cfg.netG_input_nc, 48, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-5)


def test_encoder_is_the_official_instance_wise_mean():
    torch.manual_seed(2)
    cfg = Pix2PixHDConfig(nef=4, n_downsample_E=2, instance_feat=True)
    ref = RefEncoder(3, 3, 4, 2)
    ours = build_encoder(cfg)
    _load_reference_into_ours(ref, ours)
    image = torch.randn(2, 3, 16, 16)
    inst = (torch.randint(0, 3, (2, 1, 16, 16)) * 1000 + 26).float()
    inst[1] = 7  # one image is a single instance
    torch.testing.assert_close(ours(image, inst), ref(image, inst), rtol=0, atol=1e-6)
    # gradients spread evenly over an instance, as with the official index assignment
    f = torch.randn(1, 2, 4, 4, requires_grad=True)
    regions = torch.tensor([[0, 0, 1, 1]] * 4).view(1, 1, 4, 4)
    out = instance_mean(f, regions)
    (out[0, 0, 0, 0] * 8).backward()
    assert torch.allclose(f.grad[0, 0], torch.tensor([[1.0, 1, 0, 0]] * 4))


@pytest.mark.parametrize("interm", [True, False])
def test_discriminator_features_equal_official(interm):
    torch.manual_seed(3)
    cfg = Pix2PixHDConfig(label_nc=4)
    ref = RefMultiscaleD(4 + 1 + 3, ndf=8, n_layers=3, num_D=3, interm=interm)
    ours = build_discriminator(cfg, ndf=8, n_layers_D=3, num_D=3, get_interm_feat=interm)
    _load_reference_into_ours(ref, ours)
    x = torch.randn(2, 8, 64, 48)
    expected, got = ref(x), ours(x)
    assert len(got) == 3 and all(len(scale) == (5 if interm else 1) for scale in got)
    for e_scale, g_scale in zip(expected, got, strict=True):
        for e, g in zip(e_scale, g_scale, strict=True):
            assert g.shape == e.shape
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    if interm:
        assert "scale2_layer4.0.weight" in ours.state_dict()
        assert got[0][0].shape[-2:] == (33, 25)  # 4x4 stride-2 with padding 2 on the full image


def test_size_rule_and_validation():
    assert Pix2PixHDConfig().size_multiple == 16
    assert Pix2PixHDConfig(netG="local", n_local_enhancers=1).size_multiple == 32
    with pytest.raises(ValueError, match="multiples of 16"):
        Pix2PixHDConfig().check_shape(40, 64)
    assert Pix2PixHDConfig().rounded_size(24, 40) == (32, 32)  # round(1.5) = 2, round(2.5) = 2 (halves to even)
    with pytest.raises(ValueError, match="rounds to 0"):
        Pix2PixHDConfig().rounded_size(7, 64)
    with pytest.raises(ValueError, match="netG must be one of"):
        Pix2PixHDConfig(netG="unet")
    with pytest.raises(ValueError, match="niter_fix_global only applies to netG local"):
        Pix2PixHDTrainConfig(niter_fix_global=10, iterations=100)
    with pytest.raises(ValueError, match="fine_size 100 must be a multiple of 16"):
        Pix2PixHDTrainConfig(resize_or_crop="crop", fine_size=100)
    # G input: one-hot labels + edge map + features; D input: labels + edge map + image
    cfg = Pix2PixHDConfig(label_nc=35, instance_feat=True)
    assert cfg.netG_input_nc == 35 + 1 + 3
    assert Pix2PixHDConfig(label_nc=0, no_instance=True).netG_input_nc == 3


def test_learning_rate_schedule_is_the_official_one_in_iterations():
    cfg = Pix2PixHDTrainConfig(iterations=10, lr=1.0)  # niter 5, niter_decay 5
    assert [cfg.lr_at(s) for s in range(1, 11)] == pytest.approx([1, 1, 1, 1, 1, 1, 0.8, 0.6, 0.4, 0.2])
