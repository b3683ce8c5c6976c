import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

import ugatit_cli
from ugatit_cli.errors import UserError
from ugatit_cli.families.model_folder import write_model_folder
from ugatit_cli.families.ugatit import Generator, UGATITConfig, build_discriminators
from ugatit_cli.families.ugatit.family import UGATITModel, weights_name


def tiny_model(light=False, size=32, seed=0):
    torch.manual_seed(seed)
    config = UGATITConfig(img_size=size, ch=4, n_res=2, light=light)
    return UGATITModel(config, {"a2b": Generator(config).eval(), "b2a": Generator(config).eval()})


def outputs(generator, size=32, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        return generator(torch.rand(2, 3, size, size) * 2 - 1)


def test_model_folder_round_trip(tmp_path):
    model = tiny_model()
    folder = write_model_folder(model, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "generator_a2b.safetensors", "generator_b2a.safetensors"]
    assert UGATITConfig.from_dict(json.loads((folder / "config.json").read_text())) == model.config
    assert "library_name: ugatit-cli" in (folder / "README.md").read_text()
    for direction in ("a2b", "b2a"):
        loaded = ugatit_cli.load_generator(folder, direction=direction)
        for ours, theirs in zip(outputs(loaded), outputs(model.generators[direction]), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_loading_one_direction_reads_only_its_file(tmp_path):
    folder = write_model_folder(tiny_model(), tmp_path / "model")
    (folder / weights_name("b2a")).unlink()
    assert set(ugatit_cli.resolve_model(folder, ("a2b",)).generators) == {"a2b"}
    with pytest.raises(UserError, match="no generator_b2a.safetensors"):
        ugatit_cli.load_generator(folder, direction="b2a")


def test_half_precision_weights_load_back_as_float32(tmp_path):
    model = tiny_model()
    folder = write_model_folder(model, tmp_path / "model")
    path = folder / weights_name("a2b")
    from safetensors.torch import save_file
    save_file({k: v.half() for k, v in load_file(path).items()}, path)
    loaded = ugatit_cli.load_generator(folder)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(outputs(loaded)[0], outputs(model.generators["a2b"])[0], atol=5e-3, rtol=0)


def test_write_model_folder_refuses_to_clobber_and_replaces_atomically(tmp_path):
    target = tmp_path / "model"
    write_model_folder(tiny_model(seed=0), target)
    with pytest.raises(UserError, match="not empty"):
        write_model_folder(tiny_model(seed=1), target)
    write_model_folder(tiny_model(seed=1), target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


def write_official_checkpoint(path, model: UGATITModel):
    """The official ``UGATIT.save`` layout: a dict of the six networks' state_dicts."""
    states = {"genA2B": model.generators["a2b"].state_dict(), "genB2A": model.generators["b2a"].state_dict()}
    states |= {name: dis.state_dict() for name, dis in build_discriminators(model.config).items()}
    torch.save(states, path)


@pytest.mark.parametrize("light,size", [(False, 64), (True, 32)])
def test_official_pytorch_checkpoint_hyper_parameters_come_from_tensor_shapes(tmp_path, light, size):
    model = tiny_model(light=light, size=size)
    path = tmp_path / "selfie2anime_params_0001000.pt"
    write_official_checkpoint(path, model)
    loaded = ugatit_cli.resolve_model(path)
    expected_size = size if not light else 256  # a light generator's weights do not fix the image size
    assert (loaded.config.ch, loaded.config.n_res, loaded.config.light) == (4, 2, light)
    assert loaded.config.img_size == expected_size
    assert loaded.config.dis_global_layers == model.config.dis_global_layers
    for direction in ("a2b", "b2a"):
        torch.testing.assert_close(outputs(loaded.generators[direction], size)[0],
                                   outputs(model.generators[direction], size)[0], rtol=0, atol=0)


def test_official_checkpoint_is_read_without_running_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil_params_latest.pt"
    with open(path, "wb") as fh:
        pickle.dump({"genA2B": Payload()}, fh)
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        ugatit_cli.resolve_model(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_broken_checkpoint_files_are_one_line_errors(tmp_path, content):
    path = tmp_path / "broken_params_latest.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        ugatit_cli.resolve_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_of_something_else_is_rejected(tmp_path):
    path = tmp_path / "other_params_latest.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match="not an official U-GAT-IT checkpoint"):
        ugatit_cli.resolve_model(path)


def test_unknown_sources_are_explained(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a recognised model"):
        ugatit_cli.resolve_model(tmp_path / "notes.txt")
    with pytest.raises(UserError, match="registered model"):
        ugatit_cli.resolve_model("no-such-model-name")
    with pytest.raises(UserError, match="unknown direction"):
        ugatit_cli.load_generator("whatever", direction="sideways")


def test_model_folder_with_mismatched_weights_is_a_clear_error(tmp_path):
    folder = write_model_folder(tiny_model(), tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"ch": 8}))
    with pytest.raises(UserError, match="weights do not match its config"):
        ugatit_cli.load_generator(folder)


def on_meta(build):
    with torch.device("meta"):
        return build()


def test_loaded_weights_are_the_files_tensors_not_a_second_initialised_copy(tmp_path):
    """A model folder's tensors become the network's parameters (built on the meta device, loaded with
    assign=True): one copy of the weights in memory, nothing randomly initialised and then overwritten."""
    from ugatit_cli.core.nets import adopt_weights

    model = tiny_model()
    folder = write_model_folder(model, tmp_path / "model")
    state = load_file(folder / weights_name("a2b"))
    config = model.config
    net = adopt_weights(on_meta(lambda: Generator(config)), state)
    assert {k: p.data_ptr() for k, p in net.state_dict().items()} == {k: t.data_ptr() for k, t in state.items()}
    assert not any(t.is_meta for t in net.state_dict().values())
    for ours, theirs in zip(outputs(net.eval()), outputs(model.generators["a2b"]), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # fp16 weights are cast to the network's float32
    half = adopt_weights(on_meta(lambda: Generator(config)), {k: v.half() for k, v in state.items()})
    assert all(p.dtype == torch.float32 for p in half.parameters())


def test_modules_holding_tensors_no_file_provides_are_built_normally():
    """A non-persistent buffer or a plain tensor attribute (spectral norm's ``weight``) cannot come from a
    file: adopt_weights declines (None) instead of leaving it on the meta device, and so does a state that
    does not fit; the family's loader then builds and loads the network the ordinary way."""
    from torch import nn

    from ugatit_cli.core.nets import adopt_weights

    class WithNonPersistent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.register_buffer("classes", torch.arange(4.0), persistent=False)

    state = WithNonPersistent().state_dict()
    assert adopt_weights(on_meta(WithNonPersistent), state) is None
    spectral = nn.utils.spectral_norm(nn.Conv2d(3, 4, 3))
    assert adopt_weights(on_meta(lambda: nn.utils.spectral_norm(nn.Conv2d(3, 4, 3))), spectral.state_dict()) is None
    assert adopt_weights(on_meta(lambda: nn.Conv2d(3, 4, 3)), {"weight": torch.zeros(4, 3, 3, 3)}) is None  # no bias
    plain = adopt_weights(on_meta(lambda: nn.Conv2d(3, 4, 3)), nn.Conv2d(3, 4, 3).state_dict())
    assert isinstance(plain, nn.Conv2d) and plain.weight.device.type == "cpu"


def test_nan_past_the_first_checked_chunk_is_found(tmp_path):
    """Finiteness is checked in chunks (bounded temporaries); a NaN in the last chunk is still refused."""
    from ugatit_cli.core.safety import FINITE_CHUNK, check_tensors
    from ugatit_cli.errors import ProcessingError

    big = torch.zeros(2 * FINITE_CHUNK + 5)
    assert check_tensors({"w": big}, "file")["w"] is big
    big[-1] = float("inf")
    with pytest.raises(ProcessingError, match="w holds NaN or infinite"):
        check_tensors({"w": big}, "file")
