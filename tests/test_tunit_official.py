"""Official TUNIT checkpoints (``model_N.ckpt``) written by the test in the official layout, read back."""

import pytest
import torch
import tunit_reference as ref

from ugatit_cli.errors import UserError
from ugatit_cli.families.tunit.config import TunitConfig
from ugatit_cli.families.tunit.networks import build
from ugatit_cli.families.tunit.official import load_official, looks_official, official_state_dict

CONFIG = TunitConfig(size=32, k=3, sty_dim=8, nf=16)


def _write_official(path, ddp: bool, config: TunitConfig = CONFIG):
    """A checkpoint as the official save_model writes it: every net, optimiser states, epoch."""
    states = {}
    for i, name in enumerate(("C", "C_EMA", "D", "G", "G_EMA")):
        sd = ref.randomise(official_state_dict(build(config, name), name), seed=10 + i)
        states[name] = {(f"module.{k}" if ddp else k): v for k, v in sd.items()}
    c = build(config, "C")
    opt = torch.optim.Adam(c.parameters(), 1e-4, weight_decay=0.001)
    c(torch.rand(2, 3, 32, 32))["cont"].sum().backward()
    opt.step()
    data = {"epoch": 4568, **{f"{n}_state_dict": s for n, s in states.items()},
            "c_optimizer": opt.state_dict(), "g_optimizer": opt.state_dict(), "d_optimizer": opt.state_dict()}
    torch.save(data, path)
    return states


@pytest.mark.parametrize("ddp", [False, True])
def test_official_checkpoint_translates_as_the_official_networks(tmp_path, ddp):
    path = tmp_path / "model_4568.ckpt"
    states = _write_official(path, ddp)
    assert looks_official(path)
    config, nets, epoch = load_official(path)
    assert (config.size, config.k, config.sty_dim, config.width, config.n_res) == (32, 3, 8, 16, 2)
    assert epoch == 4568 and set(nets) == {"G_EMA", "C_EMA"}
    plain = {n: {k.removeprefix("module."): v for k, v in s.items()} for n, s in states.items()}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    reference_image = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = ref.generator(plain["G_EMA"], x, ref.guiding(plain["C_EMA"], reference_image)["cont"])
        ours = nets["G_EMA"](x, nets["C_EMA"](reference_image, sty=True))
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(nets["C_EMA"](x)["disc"], ref.guiding(plain["C_EMA"], x)["disc"], atol=1e-5,
                                   rtol=1e-5)
    _, all_nets, _ = load_official(path, nets=("G", "G_EMA", "C", "C_EMA", "D"))
    y = torch.tensor([2, 0])
    with torch.no_grad():
        torch.testing.assert_close(all_nets["D"](x, y), ref.discriminator(plain["D"], x, y), atol=1e-5, rtol=1e-5)


def test_size_k_and_style_dimension_come_from_the_shapes(tmp_path):
    path = tmp_path / "model_10.ckpt"
    _write_official(path, ddp=False, config=TunitConfig(size=32, k=7, sty_dim=16, nf=8))
    config, _, _ = load_official(path)
    assert (config.size, config.k, config.sty_dim, config.n_downs) == (32, 7, 16, 1)
    # the legacy (pre-zip) torch.save format reads too
    torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)
    assert load_official(path)[0] == config


def test_a_tensor_of_the_wrong_shape_is_one_clear_error(tmp_path):
    path = tmp_path / "model_1.ckpt"
    states = _write_official(path, ddp=True)
    data = torch.load(path, weights_only=True)
    data["G_EMA_state_dict"]["module.mlp.model.2.fc.weight"] = torch.zeros(5, 256)
    torch.save(data, path)
    with pytest.raises(UserError, match=r"model_1\.ckpt: G_EMA_state_dict\[mlp\.model\.2\.fc\.weight\] has shape"):
        load_official(path)
    del data["G_EMA_state_dict"]["module.mlp.model.2.fc.weight"]
    torch.save(data, path)
    with pytest.raises(UserError, match="missing mlp.model.2.fc.weight"):
        load_official(path)
    assert states  # the other nets were fine


def test_files_that_are_not_tunit_checkpoints(tmp_path):
    other = tmp_path / "model_2.ckpt"
    torch.save({"genA2B": {}}, other)
    with pytest.raises(UserError, match="not an official TUNIT checkpoint"):
        load_official(other)
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    assert not looks_official(text)
    with pytest.raises(UserError, match="notes.ckpt: not a readable PyTorch checkpoint"):
        load_official(text)
    with pytest.raises(UserError, match="no such file"):
        load_official(tmp_path / "missing.ckpt")
    only_g = tmp_path / "model_3.ckpt"
    torch.save({"G_EMA_state_dict": official_state_dict(build(CONFIG, "G_EMA"), "G_EMA")}, only_g)
    with pytest.raises(UserError, match="guiding network"):
        load_official(only_g)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickles_with_code_are_refused(tmp_path, capsys):
    path = tmp_path / "model_5.ckpt"
    torch.save({"G_EMA_state_dict": {}, "evil": _Payload()}, path)
    capsys.readouterr()
    with pytest.raises(UserError, match="model_5.ckpt: not a readable PyTorch checkpoint"):
        load_official(path)
    assert "code ran" not in capsys.readouterr().out
