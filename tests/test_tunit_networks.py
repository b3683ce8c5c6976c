"""TUNIT networks against an independent re-statement of the official forward passes (tests/tunit_reference.py),
on weights in the official state_dict layout."""

import pytest
import torch
import tunit_reference as ref

from ugatit_cli.families.tunit.config import TunitConfig, TunitHyperParams
from ugatit_cli.families.tunit.networks import Discriminator, Generator, GuidingNet, build
from ugatit_cli.families.tunit.official import official_state_dict, to_ours

pytestmark = pytest.mark.usefixtures("one_thread")


def _official_layout(config: TunitConfig, name: str, seed: int) -> dict:
    """Random weights in the official layout (with the official AdaIN buffers for generators)."""
    return ref.randomise(official_state_dict(build(config, name), name), seed)


@pytest.mark.parametrize("size,n_downs", [(32, 1), (64, 2)])
def test_generator_with_style_of_reference_matches_official(size, n_downs):
    config = TunitConfig(size=size, k=3, sty_dim=8)
    assert config.n_downs == n_downs
    g_sd = _official_layout(config, "G_EMA", 1)
    c_sd = _official_layout(config, "C_EMA", 2)
    assert any(k.endswith("norm.running_mean") for k in g_sd)  # the official AdaIN buffers are there
    g, c = build(config, "G_EMA").eval(), build(config, "C_EMA").eval()
    g.load_state_dict(to_ours(g_sd))
    c.load_state_dict(to_ours(c_sd))
    torch.manual_seed(0)
    x = torch.rand(3, 3, size, size) * 2 - 1
    reference_image = torch.rand(3, 3, size, size) * 2 - 1
    with torch.no_grad():
        expected = ref.generator(g_sd, x, ref.guiding(c_sd, reference_image)["cont"])
        ours = g(x, c(reference_image, sty=True))
    assert expected.abs().max() > 0.1 and expected.std() > 0.05  # not saturated or flat
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_guiding_network_logits_and_style_match_official():
    config = TunitConfig(size=32, k=5, sty_dim=16)
    sd = _official_layout(config, "C", 3)
    c = GuidingNet(5, 16).eval()
    c.load_state_dict(to_ours(sd))
    torch.manual_seed(0)
    x = torch.rand(4, 3, 48, 48) * 2 - 1  # any size >= 32: the pooling is global
    with torch.no_grad():
        expected = ref.guiding(sd, x)
        out = c(x)
        torch.testing.assert_close(out["disc"], expected["disc"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["cont"], expected["cont"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c(x, sty=True), out["cont"])
        torch.testing.assert_close(c.style(x), out["cont"])
        torch.testing.assert_close(c.logits(x), out["disc"])


@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_matches_official(size):
    config = TunitConfig(size=size, k=4)
    sd = ref.randomise(build(config, "D").state_dict(), 4)
    d = Discriminator(size, 4)
    d.load_state_dict(sd)
    torch.manual_seed(0)
    x = torch.rand(4, 3, size, size) * 2 - 1
    y = torch.tensor([0, 3, 1, 3])
    with torch.no_grad():
        # float32 sums over ~10 residual blocks of random weights: agreement to ~1e-5 of the logit scale
        torch.testing.assert_close(d(x, y), ref.discriminator(sd, x, y), atol=5e-5, rtol=1e-4)
        assert d.all_logits(x).shape == (4, 4)


def test_official_widths_and_layer_counts():
    # nf 64 below 256 px, 32 from 256 px; log2(size/16) downsamplings; log2(size) - 2 discriminator stages
    with torch.device("meta"):
        for size, nf, n_downs in ((128, 64, 3), (256, 32, 4)):
            g = Generator(size, 128)
            assert g.cnt_encoder.model[0].conv.out_channels == nf
            assert len(g.cnt_encoder.model) == 1 + n_downs + 1
            assert g.mlp.model[0].fc.in_features == 128 and g.mlp.model[1].fc.out_features == 256
            d = Discriminator(size, 10)
            assert d.main[0].out_channels == nf
            assert sum(1 for k in d.state_dict() if k.endswith("norm1.tau")) == 2 * (size.bit_length() - 1 - 2)
            assert d.main[-1].out_channels == 10


def test_official_state_dict_round_trip_keeps_every_key():
    config = TunitConfig(size=32, k=3, sty_dim=8)
    g = build(config, "G")
    official = official_state_dict(g, "G", ddp=True)
    assert all(k.startswith("module.") for k in official)
    # the AdaIN buffers: two per AdaIN layer (4 in 2 residual blocks + 1 per upsampling level)
    assert sum(k.endswith("norm.running_var") for k in official) == 2 * 2 + config.n_downs
    g2 = build(config, "G")
    g2.load_state_dict(to_ours(official))
    for (k, a), b in zip(g.state_dict().items(), g2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_size_rules():
    with pytest.raises(ValueError, match="power of two"):
        TunitConfig(size=96)
    with pytest.raises(ValueError, match="k"):
        TunitConfig(k=1)
    config = TunitConfig(size=128)
    assert config.check_size(None) == 128 and config.check_size(200) == 200
    from ugatit_cli.errors import UserError

    with pytest.raises(UserError, match="multiple of 8"):
        config.check_size(100)
    assert TunitConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    hyper = TunitHyperParams(iterations=2000)
    assert hyper.warmup == 650 and hyper.ema_from == 660  # the official 65/200 and 66/200 of the run
    assert TunitHyperParams().warmup == 65_000
    with pytest.raises(ValueError, match="ema_start"):
        TunitHyperParams(warmup_iterations=10, ema_start=5)
    with pytest.raises(ValueError, match="p_semi"):
        TunitHyperParams(p_semi=1.5)
