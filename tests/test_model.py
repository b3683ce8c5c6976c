import pytest
import torch

from ugatit_cli.families.ugatit import AdaLIN, Generator, UGATITConfig, build_discriminators, clip_rho_
from ugatit_cli.families.ugatit.config import deepest_discriminator


def official_generator_parameter_count(ch: int, n_res: int, img_size: int, light: bool) -> int:
    """Parameter count of the official ResnetGenerator, summed layer by layer from its definition."""
    dim = ch * 4
    conv = lambda cin, cout, k: cin * cout * k * k  # noqa: E731  (bias-free convs)
    count = conv(3, ch, 7) + conv(ch, 2 * ch, 3) + conv(2 * ch, dim, 3)  # encoder
    count += n_res * 2 * conv(dim, dim, 3)  # encoder residual blocks
    count += 2 * dim + (2 * dim * dim + dim)  # gap_fc, gmp_fc, conv1x1 (with bias)
    fc_in = dim if light else (img_size // 4) ** 2 * dim
    count += fc_in * dim + dim * dim + 2 * dim * dim  # FC (2 layers), gamma, beta
    count += n_res * (2 * conv(dim, dim, 3) + 2 * dim)  # AdaLIN blocks: 2 convs + 2 rho
    count += conv(dim, dim // 2, 3) + 3 * (dim // 2) + conv(dim // 2, ch, 3) + 3 * ch  # up convs + LIN
    count += conv(ch, 3, 7)
    return count


@pytest.mark.parametrize("light", [False, True])
def test_paper_generator_has_the_official_parameter_count(light):
    with torch.device("meta"):  # no memory for the 1.1 GB full model
        generator = Generator(UGATITConfig(img_size=256, ch=64, n_res=4, light=light))
    count = sum(p.numel() for p in generator.parameters())
    assert count == official_generator_parameter_count(64, 4, 256, light)
    if not light:
        assert count == 278_959_808  # ~1.1 GB in fp32, the size the official release ships per generator


@pytest.mark.parametrize("size,light", [(64, False), (64, True), (256, True)])
def test_generator_shapes(size, light):
    config = UGATITConfig(img_size=size, ch=4, n_res=2, light=light)
    image, cam_logit, heatmap = Generator(config)(torch.rand(2, 3, size, size) * 2 - 1)
    assert image.shape == (2, 3, size, size)
    assert cam_logit.shape == (2, 2)
    assert heatmap.shape == (2, 1, size // 4, size // 4)
    assert image.abs().max() <= 1


def test_full_generator_at_256_px():
    config = UGATITConfig(img_size=256, ch=2, n_res=1)
    image, cam_logit, heatmap = Generator(config)(torch.zeros(1, 3, 256, 256))
    assert image.shape == (1, 3, 256, 256) and heatmap.shape == (1, 1, 64, 64)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminator_shapes(size):
    config = UGATITConfig(img_size=size, ch=4, n_res=1)
    for name, dis in build_discriminators(config).items():
        logits, cam_logit, heatmap = dis(torch.zeros(2, 3, size, size))
        assert logits.shape[:2] == (2, 1) and min(logits.shape[2:]) >= 1, name
        assert cam_logit.shape == (2, 2)


def test_discriminator_depth_is_the_papers_when_it_fits_and_the_deepest_otherwise():
    assert UGATITConfig(img_size=256).dis_global_layers == 7
    assert UGATITConfig(img_size=128).dis_global_layers == 7
    small = UGATITConfig(img_size=64)
    assert (small.dis_global_layers, small.dis_local_layers) == (6, 5)
    assert deepest_discriminator(32, 7) == 5
    with pytest.raises(ValueError):
        deepest_discriminator(4, 7)


def test_config_round_trips_through_a_dict_and_ignores_unknown_keys():
    config = UGATITConfig(img_size=64, ch=8, n_res=3, light=True)
    data = config.to_dict() | {"from_a_newer_version": 1}
    assert UGATITConfig.from_dict(data) == config


@pytest.mark.parametrize("bad", [{"img_size": 30}, {"variant": "jax"}, {"ch": 0}])
def test_config_rejects_impossible_values(bad):
    with pytest.raises(ValueError):
        UGATITConfig(**bad)


def test_rho_starts_as_in_the_paper_and_is_clipped_to_the_unit_interval():
    generator = Generator(UGATITConfig(img_size=32, ch=2, n_res=1))
    assert torch.all(generator.UpBlock1_1.norm1.rho == 0.9)
    assert torch.all(generator.UpBlock2[3].rho == 0.0)
    with torch.no_grad():
        generator.UpBlock1_1.norm1.rho.fill_(1.7)
        generator.UpBlock2[3].rho.fill_(-0.3)
    clip_rho_(generator)
    assert torch.all(generator.UpBlock1_1.norm1.rho == 1.0)
    assert torch.all(generator.UpBlock2[3].rho == 0.0)


def test_adalin_uses_unbiased_instance_and_layer_statistics():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    norm = AdaLIN(3)
    with torch.no_grad():
        norm.rho.copy_(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1))
    gamma, beta = torch.rand(2, 3), torch.rand(2, 3)
    n_in, n_ln = 4 * 5, 3 * 4 * 5
    mean_in = x.sum((2, 3), keepdim=True) / n_in
    var_in = ((x - mean_in) ** 2).sum((2, 3), keepdim=True) / (n_in - 1)
    mean_ln = x.sum((1, 2, 3), keepdim=True) / n_ln
    var_ln = ((x - mean_ln) ** 2).sum((1, 2, 3), keepdim=True) / (n_ln - 1)
    rho = norm.rho
    expected = rho * (x - mean_in) / (var_in + 1e-5).sqrt() + (1 - rho) * (x - mean_ln) / (var_ln + 1e-5).sqrt()
    expected = expected * gamma[:, :, None, None] + beta[:, :, None, None]
    torch.testing.assert_close(norm(x, gamma, beta), expected)


def test_discriminator_attention_uses_the_weight_before_spectral_normalisation():
    """The official CAM multiplies by ``list(gap_fc.parameters())[0]``, i.e. ``weight_orig``."""
    dis = build_discriminators(UGATITConfig(img_size=64, ch=4))["disLA"].eval()
    x = torch.randn(1, 3, 64, 64)
    _, _, heatmap = dis(x)
    with torch.no_grad():
        dis.gap_fc.weight_orig.mul_(3.0)  # the normalised weight is unchanged by a rescale
    _, _, heatmap_scaled = dis(x)
    assert not torch.allclose(heatmap, heatmap_scaled)
