"""Official TF checkpoints -> our TF-variant generator: outputs equal the official TF graph's (1e-4)."""

import json

import pytest
import torch
from tf_fixtures import assert_matches_official, tf_fixture
from tf_writer import tf_generator_tensors, write_checkpoint

import ugatit_cli
from ugatit_cli.errors import UserError
from ugatit_cli.families.ugatit import Generator, UGATITConfig
from ugatit_cli.families.ugatit.importers.tf_checkpoint import open_local_checkpoint
from ugatit_cli.families.ugatit.importers.tf_convert import (
    convert_checkpoint,
    convert_tf_checkpoint,
    generator_tensor_names,
    infer_tf_config,
    load_tf_checkpoint,
    smoothing_from_folder_name,
)


@pytest.mark.parametrize("kind", ["full", "light"])
@pytest.mark.parametrize("direction", ["a2b", "b2a"])
def test_load_generator_on_a_tf_checkpoint_reproduces_the_official_graph(kind, direction):
    fixture = tf_fixture(kind)
    source = fixture.checkpoint_dir if kind == "full" else fixture.index_file  # a folder or its .index
    generator = ugatit_cli.load_generator(source, direction=direction)
    assert generator.config.variant == "tf"
    assert_matches_official(generator, fixture, direction)


@pytest.mark.parametrize("kind, light, img_size", [("full", False, 128), ("light", True, 256)])
def test_hyper_parameters_come_from_tensor_shapes(kind, light, img_size):
    checkpoint = open_local_checkpoint(tf_fixture(kind).checkpoint_dir)
    config = infer_tf_config(checkpoint.entries, "a2b")
    # A light model's weights do not record its training size: the official 256 is assumed.
    assert (config.img_size, config.ch, config.n_res, config.light, config.img_ch) == (img_size, 4, 4, light, 3)
    assert config.variant == "tf"


def test_only_the_requested_generator_is_read(tmp_path):
    fixture = tf_fixture("full")
    checkpoint = open_local_checkpoint(fixture.checkpoint_dir)
    read_ranges = []
    fetch = checkpoint.fetch

    def counting_fetch(shard, offset, length):
        read_ranges.append((offset, length))
        return fetch(shard, offset, length)

    checkpoint.fetch = counting_fetch
    model = convert_checkpoint(checkpoint, ("b2a",))
    assert set(model.generators) == {"b2a"}
    wanted = generator_tensor_names(checkpoint.entries, "b2a")
    assert all(name.startswith("generator_A/") and "Adam" not in name for name in wanted)
    assert sorted(read_ranges) == sorted((checkpoint.entries[n].offset, checkpoint.entries[n].size) for n in wanted)


def test_export_writes_a_model_folder_that_loads_back(tmp_path):
    fixture = tf_fixture("full")
    out = convert_tf_checkpoint(fixture.checkpoint_dir, tmp_path / "selfie2anime", show_progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "generator_a2b.safetensors", "generator_b2a.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert (config["variant"], config["smoothing"], config["img_size"]) == ("tf", True, 128)
    assert "generator_B" in (out / "README.md").read_text()
    for direction in ("a2b", "b2a"):
        assert_matches_official(ugatit_cli.load_generator(out, direction=direction), fixture, direction)
    with pytest.raises(UserError, match="not empty"):
        convert_tf_checkpoint(fixture.checkpoint_dir, out, show_progress=False)


def test_smoothing_matters_and_is_read_from_the_official_folder_name():
    assert smoothing_from_folder_name("UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing")
    assert not smoothing_from_folder_name("UGATIT_light_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn")
    assert smoothing_from_folder_name("my_checkpoint")  # not an official name: the official default
    fixture = tf_fixture("full")
    model = load_tf_checkpoint(fixture.checkpoint_dir, ("a2b",), smoothing=False, show_progress=False)
    with pytest.raises(AssertionError):
        assert_matches_official(model.generators["a2b"], fixture, "a2b")


def test_incomplete_generator_is_rejected_naming_the_missing_variable():
    fixture = tf_fixture("full")
    checkpoint = open_local_checkpoint(fixture.checkpoint_dir)
    entries = dict(checkpoint.entries)
    del entries["generator_B/CAM_logit/bias"]
    checkpoint.index = type(checkpoint.index)(num_shards=1, entries=entries)
    with pytest.raises(UserError, match="missing generator_B/CAM_logit/bias"):
        convert_checkpoint(checkpoint, ("a2b",))


def test_tf_variant_generator_layout():
    config = UGATITConfig(img_size=32, ch=4, variant="tf")
    generator = Generator(config)
    keys = generator.state_dict().keys()
    assert {"cam_fc.weight", "cam_fc.bias", "DownBlock.1.bias", "DownBlock.2.weight", "FC.0.bias"} <= keys
    assert not {"gap_fc.weight", "gmp_fc.weight"} & keys
    assert generator.UpBlock1_1.norm1.rho.detach().eq(1.0).all()  # TF starts AdaLIN rho at 1.0
    image, cam_logit, heatmap = generator(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert image.shape == (2, 3, 32, 32) and cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="n_res == 4"):
        UGATITConfig(variant="tf", n_res=2)


def test_multi_shard_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    config = UGATITConfig(img_size=32, ch=2, variant="tf", smoothing=False)
    original = Generator(config)
    with torch.no_grad():
        for parameter in original.parameters():
            parameter.normal_()
    tensors = tf_generator_tensors(original, "generator_A")
    tensors["generator_A/conv/conv2d/kernel/Adam"] = torch.zeros(7, 7, 3, 2)  # optimizer slots are skipped
    write_checkpoint(tmp_path / "model-7", tensors, num_shards=3)

    checkpoint = open_local_checkpoint(tmp_path)
    assert checkpoint.index.num_shards == 3 and {e.shard for e in checkpoint.entries.values()} == {0, 1, 2}
    model = load_tf_checkpoint(tmp_path, ("b2a",), smoothing=False, show_progress=False)
    assert model.config == config
    converted = model.generators["b2a"].state_dict()
    assert converted.keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(converted[key], value), key
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for ours, theirs in zip(model.generators["b2a"](x), original(x), strict=True):
            torch.testing.assert_close(ours, theirs)  # equal weights; kernels may round differently
