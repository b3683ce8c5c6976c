"""pix2pixHD inference equals the official test pipeline (test transform + encoding + generator)."""

import numpy as np
import pytest
import torch
from PIL import Image
from pix2pixhd_reference import RefGlobal, RefLocal, ref_onehot_edges

from ugatit_cli.core.images import BadImageError, tensor_to_pixels
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig
from ugatit_cli.families.pix2pixhd.inference import find_instance_map, generate, prepare
from ugatit_cli.families.pix2pixhd.networks import build_generator


def official_test_input(label_path, inst_path, base, label_nc):
    """``--resize_or_crop none``: sides to round(side / base) * base, NEAREST; ToTensor (x 255 for labels)."""
    def make_power_2(img):
        w, h = img.size
        nw, nh = int(round(w / base) * base), int(round(h / base) * base)
        return img if (nw, nh) == (w, h) else img.resize((nw, nh), Image.NEAREST)

    label = make_power_2(Image.open(label_path))
    label_t = torch.from_numpy(np.array(label, dtype=np.uint8)).float().div(255)[None, None] * 255.0
    inst = make_power_2(Image.open(inst_path))
    inst_t = torch.from_numpy(np.array(inst, dtype=np.int32)).float()[None, None]
    return ref_onehot_edges(label_t, inst_t, label_nc)


@pytest.mark.parametrize("net", ["global", "local"])
def test_translation_equals_the_official_test_pipeline(net, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (37, 53)).astype(np.uint8)  # not multiples: the test transform rounds
    Image.fromarray(labels, mode="L").save(tmp_path / "a_gtFine_labelIds.png")
    (tmp_path / "inst").mkdir()
    inst = (labels.astype(np.uint16) * 1000 + rng.integers(0, 2, labels.shape)).astype(np.uint16)
    Image.fromarray(inst).save(tmp_path / "inst" / "a_gtFine_instanceIds.png")
    torch.manual_seed(0)
    if net == "global":
        cfg = Pix2PixHDConfig(label_nc=6, ngf=8, n_downsample_global=3, n_blocks_global=2)
        ref = RefGlobal(7, 3, 8, 3, 2)
    else:
        cfg = Pix2PixHDConfig(label_nc=6, netG="local", ngf=4, n_downsample_global=2, n_blocks_global=1,
                              n_blocks_local=1)
        ref = RefLocal(7, 3, 4, 2, 1, 1, 1)
    for p in ref.parameters():
        p.data.normal_(0, 0.1)
    ref.eval()
    ours = build_generator(cfg).eval()
    ours.load_state_dict(ref.state_dict())

    inst_path = find_instance_map(tmp_path / "inst", tmp_path / "a_gtFine_labelIds.png")
    batch = prepare(cfg, tmp_path / "a_gtFine_labelIds.png", inst_path)
    got = generate(cfg, ours, batch)
    with torch.no_grad():
        expected = ref(official_test_input(tmp_path / "a_gtFine_labelIds.png", inst_path, cfg.size_multiple, 6))
    assert got.shape == expected.shape == (1, 3, 40, 56)  # 37 x 53 rounded to multiples of 8
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    official_pixels = ((expected[0].permute(1, 2, 0).numpy() + 1) / 2.0 * 255.0).clip(0, 255).astype(np.uint8)
    ours_pixels = tensor_to_pixels(got[0]).numpy()
    assert np.abs(ours_pixels.astype(int) - official_pixels.astype(int)).max() <= 1  # rounding vs truncation


def test_instance_maps_are_found_by_name(tmp_path):
    (tmp_path / "inst" / "sub").mkdir(parents=True)
    Image.new("L", (4, 4)).save(tmp_path / "inst" / "x.png")
    Image.new("L", (4, 4)).save(tmp_path / "inst" / "sub" / "city_gtFine_instanceIds.png")
    assert find_instance_map(tmp_path / "inst", tmp_path / "x.png").name == "x.png"
    found = find_instance_map(tmp_path / "inst", tmp_path / "l" / "city_gtFine_labelIds.png",
                              relative="sub/city_gtFine_labelIds.png")
    assert found.name == "city_gtFine_instanceIds.png"
    with pytest.raises(BadImageError, match="y.png: no instance map for it in"):
        find_instance_map(tmp_path / "inst", tmp_path / "y.png")


def test_models_with_features_need_clusters_or_a_photo(tmp_path):
    Image.fromarray(np.zeros((16, 16), np.uint8), mode="L").save(tmp_path / "l.png")
    cfg = Pix2PixHDConfig(label_nc=2, ngf=4, n_downsample_global=2, n_blocks_global=1, instance_feat=True)
    net = build_generator(cfg).eval()
    batch = prepare(cfg, tmp_path / "l.png", tmp_path / "l.png")
    with pytest.raises(ValueError, match="give feature clusters or a real photo"):
        generate(cfg, net, batch)
    out = generate(cfg, net, batch, clusters={0: np.full((2, 3), 0.5, np.float32)})
    assert out.shape == (1, 3, 16, 16)


def test_paired_metrics_are_scikit_images():
    from skimage.metrics import structural_similarity

    from ugatit_cli.families.pix2pixhd.paired_metrics import paired_scores, psnr_ssim

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    noisy = np.clip(real.astype(int) + rng.integers(-8, 9, real.shape), 0, 255).astype(np.uint8)
    psnr, ssim = psnr_ssim(noisy, real)
    mse = np.mean((noisy.astype(float) - real.astype(float)) ** 2)
    assert psnr == pytest.approx(10 * np.log10(255**2 / mse))
    assert ssim == pytest.approx(structural_similarity(real, noisy, data_range=255, channel_axis=-1))
    assert psnr_ssim(real, real) == (float("inf"), 1.0)
    summary = paired_scores([(noisy, real), (real // 2, real)]).summary()
    assert summary["pairs"] == 2 and summary["psnr_std"] > 0 and 0 < summary["ssim_mean"] < 1
    with pytest.raises(ValueError, match="one shape"):
        psnr_ssim(real[:8], real)


def test_label_colours_and_sample_grid():
    from ugatit_cli.families.pix2pixhd.visuals import colorize, label_palette, sample_grid

    assert tuple(label_palette(35)[7]) == (128, 64, 128)  # Cityscapes "road"
    voc = label_palette(4)  # the bit-interleaved palette: 1 -> (128, 0, 0), 2 -> (0, 128, 0), 3 -> (128, 128, 0)
    assert [tuple(c) for c in voc] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert tuple(label_palette(9)[8]) == (64, 0, 0)
    ids = torch.tensor([[0, 1], [2, 9]])
    assert colorize(ids, 4)[1, 1].tolist() == [0, 0, 0]  # out of range: black
    grid = sample_grid(torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8), 4)
    assert grid.size == (24, 16)
    assert np.asarray(grid)[0, 20].tolist() == [255, 255, 255]


def test_label_to_image_graph_equals_encode_input_then_generator():
    from ugatit_cli.families.pix2pixhd.data import encode_input
    from ugatit_cli.families.pix2pixhd.graph import LabelToImage

    torch.manual_seed(0)
    cfg = Pix2PixHDConfig(label_nc=5, ngf=4, n_downsample_global=2, n_blocks_global=1)
    net = build_generator(cfg).eval()
    label = torch.randint(0, 5, (2, 1, 16, 20))
    inst = torch.randint(0, 3, (2, 1, 16, 20))
    graph = LabelToImage(cfg, net).eval()
    with torch.no_grad():
        torch.testing.assert_close(graph(label.float(), inst.float()), net(encode_input(cfg, label, inst)))
        assert torch.equal(LabelToImage.edges(inst.float()), encode_input(cfg, label, inst)[:, -1:])
