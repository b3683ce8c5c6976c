"""Official pix2pixHD checkpoints: opt.txt, generator files and folders, shape inference, feature clusters."""

import numpy as np
import pytest
import torch
from pix2pixhd_reference import RefEncoder, RefGlobal, RefLocal

from ugatit_cli.errors import UserError
from ugatit_cli.families.pix2pixhd.features import sample_feature_map
from ugatit_cli.families.pix2pixhd.official import (
    find_generator_file,
    model_options,
    parse_opt_txt,
    read_feature_clusters,
    read_official,
)


def write_opt_txt(folder, **options):
    """An opt.txt as the official BaseOptions.parse writes it: header, sorted 'name: value' lines, footer."""
    defaults = {"label_nc": 35, "netG": "global", "ngf": 64, "n_downsample_global": 4, "n_blocks_global": 9,
                "n_local_enhancers": 1, "n_blocks_local": 3, "norm": "instance", "no_instance": False,
                "instance_feat": False, "label_feat": False, "feat_num": 3, "nef": 16, "n_downsample_E": 4,
                "gpu_ids": [0], "name": "label2city", "loadSize": 1024, "fineSize": 512, "input_nc": 3,
                "output_nc": 3, "isTrain": True, "max_dataset_size": float("inf")}
    defaults.update(options)
    lines = ["------------ Options -------------"] + [f"{k}: {v}" for k, v in sorted(defaults.items())]
    (folder / "opt.txt").write_text("\n".join(lines + ["-------------- End ----------------", ""]))


def test_parse_opt_txt(tmp_path):
    write_opt_txt(tmp_path, label_nc=12, no_instance=True, netG="local", ngf=32)
    raw = parse_opt_txt(tmp_path / "opt.txt")
    assert raw["gpu_ids"] == "[0]" and raw["max_dataset_size"] == "inf"
    typed = model_options(tmp_path / "opt.txt")
    assert typed["label_nc"] == 12 and typed["no_instance"] is True and typed["netG"] == "local"
    assert typed["ngf"] == 32 and typed["instance_feat"] is False
    (tmp_path / "bad.txt").write_text("label_nc: 3\n")
    with pytest.raises(UserError, match="not an official pix2pixHD opt.txt"):
        parse_opt_txt(tmp_path / "bad.txt")
    write_opt_txt(tmp_path, ngf="many")
    with pytest.raises(UserError, match="option ngf is 'many', expected an integer"):
        model_options(tmp_path / "opt.txt")


def _official_global(folder, label_nc=5, ngf=8, n_down=2, n_blocks=2, inst=True, feat=0, name="latest",
                     prefix=""):
    torch.manual_seed(0)
    ref = RefGlobal(label_nc + int(inst) + feat, 3, ngf, n_down, n_blocks)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({prefix + k: v for k, v in ref.state_dict().items()}, folder / f"{name}_net_G.pth")
    return ref


def test_read_official_with_opt_txt_and_module_prefix(tmp_path):
    ckpt = tmp_path / "checkpoints" / "label2city_512p"
    ref = _official_global(ckpt, prefix="module.")
    write_opt_txt(ckpt, label_nc=5, ngf=8, n_downsample_global=2, n_blocks_global=2)
    for source in (ckpt, ckpt / "latest_net_G.pth"):
        model = read_official(source)
        assert model.config.label_nc == 5 and model.config.n_blocks_global == 2 and not model.config.no_instance
        assert model.opt_path == ckpt / "opt.txt"
        net_g, net_e = model.build()
        assert net_e is None
        x = torch.randn(1, 6, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(net_g(x), ref.eval()(x), rtol=0, atol=1e-5)


def test_read_official_infers_shapes_and_asks_for_the_rest(tmp_path):
    _official_global(tmp_path / "a")
    with pytest.raises(UserError) as err:
        read_official(tmp_path / "a")
    message = str(err.value)
    assert "\n" not in message and "no opt.txt" in message and "--label-nc" in message and "6 input channels" in message
    cfg = read_official(tmp_path / "a", {"label_nc": 5}).config
    assert (cfg.ngf, cfg.n_downsample_global, cfg.n_blocks_global, cfg.no_instance) == (8, 2, 2, False)
    cfg = read_official(tmp_path / "a", {"label_nc": 6}).config
    assert cfg.no_instance  # 6 channels = 6 labels, no edge map
    with pytest.raises(UserError, match="do not fit label_nc 9"):
        read_official(tmp_path / "a", {"label_nc": 9})
    # opt.txt that contradicts the weights
    write_opt_txt(tmp_path / "a", label_nc=5, ngf=16, n_downsample_global=2, n_blocks_global=2)
    with pytest.raises(UserError, match="opt.txt says ngf 16 but the weights have ngf 8"):
        read_official(tmp_path / "a")


def test_read_official_local_with_encoder(tmp_path):
    ckpt = tmp_path / "label2city_1024p_feat"
    ckpt.mkdir()
    torch.manual_seed(0)
    ref = RefLocal(5 + 1 + 3, 3, 4, 1, 1, 1, 2)
    torch.save(ref.state_dict(), ckpt / "20_net_G.pth")
    torch.save(ref.state_dict(), ckpt / "3_net_G.pth")
    enc = RefEncoder(3, 3, 4, 2)
    torch.save(enc.state_dict(), ckpt / "20_net_E.pth")
    assert find_generator_file(ckpt).name == "20_net_G.pth"  # the highest epoch when there is no latest
    write_opt_txt(ckpt, label_nc=5, netG="local", ngf=4, n_downsample_global=1, n_blocks_global=1,
                  n_blocks_local=2, instance_feat=True, nef=4, n_downsample_E=2)
    model = read_official(ckpt)
    assert model.config.netG == "local" and model.config.use_features and model.encoder is not None
    net_g, net_e = model.build()
    image, inst = torch.randn(1, 3, 16, 16), torch.randint(0, 3, (1, 1, 16, 16))
    torch.testing.assert_close(net_e(image, inst), enc(image, inst), rtol=0, atol=1e-6)
    # as a MODEL: the official cluster file, once converted to .npz, comes with it as the model's own centres
    from ugatit_cli.store.sources import resolve_model

    assert set(resolve_model(ckpt).nets) == {"netG", "netE"}
    centres = {"1": np.arange(6, dtype=np.float32).reshape(2, 3), "4": np.ones((10, 3), np.float32)}
    np.savez(ckpt / "features_clustered_010.npz", **centres)
    clusters = resolve_model(ckpt).nets["clusters"].as_dict()
    assert set(clusters) == {1, 4} and np.array_equal(clusters[1], centres["1"])
    (ckpt / "20_net_E.pth").unlink()
    with pytest.raises(UserError, match="20_net_E.pth is not beside it"):
        read_official(ckpt)


def test_read_official_refuses_pickles_with_code_and_other_files(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "latest_net_G.pth").write_bytes(pickle.dumps({"model.1.weight": Payload()}, protocol=2))
    with pytest.raises(UserError, match="refusing to load pix2pixHD generator"):
        read_official(tmp_path)
    torch.save({"genA2B": torch.zeros(1)}, tmp_path / "latest_net_G.pth")
    with pytest.raises(UserError, match="not a pix2pixHD generator state dict"):
        read_official(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no latest_net_G.pth or N_net_G.pth"):
        read_official(tmp_path / "empty")


def test_feature_clusters_refuse_the_pickled_dict_and_read_the_converted_archive(tmp_path):
    centres = {26: np.random.default_rng(0).random((10, 3)), 7: np.zeros((0, 3)), 33: np.ones((2, 3))}
    official = tmp_path / "features_clustered_010.npy"
    np.save(official, centres, allow_pickle=True)  # what encode_features.py writes
    with pytest.raises(UserError) as err:
        read_feature_clusters(official, 3)
    message = str(err.value)
    assert "\n" not in message and "pickled dict" in message and "allow_pickle=True" in message
    # the conversion the message gives, run where the file is trusted
    loaded = np.load(official, allow_pickle=True, encoding="latin1").item()
    np.savez(tmp_path / "features_clustered_010.npz", **{str(k): v for k, v in loaded.items()})
    clusters = read_feature_clusters(tmp_path / "features_clustered_010.npz", 3)
    assert set(clusters) == {26, 33} and clusters[26].shape == (10, 3)
    with pytest.raises(UserError, match=r"expected \(n_clusters, 4\)"):
        read_feature_clusters(tmp_path / "features_clustered_010.npz", 4)
    # each instance gets one centre of its class (id // 1000 for ids >= 1000); unknown classes stay 0
    inst = torch.tensor([[26001, 26001, 26002], [33, 33, 5]]).view(1, 1, 2, 3)
    feat = sample_feature_map(clusters, inst, 3, torch.Generator().manual_seed(0))
    assert feat.shape == (1, 3, 2, 3)
    first = feat[0, :, 0, 0]
    assert torch.equal(feat[0, :, 0, 1], first)
    assert any(torch.allclose(first, torch.from_numpy(c).float()) for c in clusters[26])
    assert torch.equal(feat[0, :, 1, 0], torch.ones(3)) and torch.equal(feat[0, :, 1, 2], torch.zeros(3))
