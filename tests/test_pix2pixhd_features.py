"""pix2pixHD instance features end to end: a run with --instance-feat clusters its training set's features after
the last iteration (official encode_features.py), the run, its export and its ONNX export carry the encoder and
the centres, and translate draws a centre per instance (seeded), takes centre K, reads an official cluster file
(.npz) or encodes a real photo (--encode-image)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_pix2pixhd_cli import TINY, _pair, ugatit

from ugatit_cli.families.pix2pixhd.features import (
    FeatureClusters,
    cluster_vectors,
    instance_vectors,
    kmeans,
    sample_feature_map,
)

FEAT = ("--instance-feat", "--nef", "4", "--n-downsample-e", "2")


def official_vectors(feat_map, inst, label_nc):
    """Official Pix2PixHDModel.encode_features, in our words: per instance id, the value at the middle one of its
    pixels in nonzero() order and the weight num / (H * W // 32)."""
    h, w = inst.shape[-2:]
    found = {label: [] for label in range(label_nc)}
    for i in np.unique(inst.numpy().astype(int)):
        label = i if i < 1000 else i // 1000
        idx = (inst == int(i)).nonzero()
        num = idx.shape[0]
        b, c, y, x = idx[num // 2].tolist()
        vec = [float(feat_map[b, c + k, y, x]) for k in range(feat_map.shape[1])]
        found[label].append(vec + [num / (h * w // 32)])
    return found


def test_instance_vectors_and_clusters_follow_the_official_script():
    torch.manual_seed(0)
    inst = torch.zeros(1, 1, 16, 16, dtype=torch.int64)
    inst[..., :8, :] = 2001
    inst[..., 8:, :5] = 2002
    inst[..., 15, 15] = 3  # one pixel: weight 1 / 8, left out of the clustering
    feat_map = torch.randn(1, 3, 16, 16)
    mine = instance_vectors(feat_map, inst, label_nc=4)
    official = official_vectors(feat_map, inst, 4)
    got = {}
    for label, vec, weight in mine:
        got.setdefault(label, []).append(list(vec) + [weight])
    official = {k: v for k, v in official.items() if v}
    assert official.keys() == got.keys()
    for label in got:
        np.testing.assert_allclose(np.array(got[label]), np.array(official[label]), rtol=1e-6)
    clusters = cluster_vectors(mine, n_clusters=10)
    assert set(clusters) == {0, 2} and clusters[2].shape == (2, 3)  # min(2 instances, 10) centres; class 3 too small
    assert clusters[0].shape == (1, 3)  # id 0 (the background) is class 0


def test_kmeans_finds_the_clusters_scikit_learn_finds():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    truth = rng.normal(0, 5, (4, 3))
    points = np.concatenate([c + rng.normal(0, 0.1, (30, 3)) for c in truth])
    ours = kmeans(points, 4, seed=0)
    theirs = KMeans(n_clusters=4, random_state=0, n_init=10).fit(points).cluster_centers_
    order = lambda c: c[np.lexsort(c.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(ours), order(theirs), atol=1e-9)
    assert np.array_equal(kmeans(points, 4, seed=3), kmeans(points, 4, seed=3))
    assert kmeans(points[:2], 2).shape == (2, 3)
    with pytest.raises(ValueError):
        kmeans(points[:2], 3)


def test_sampling_is_per_image_and_seeded():
    clusters = {1: np.arange(30, dtype=np.float32).reshape(10, 3)}
    inst = torch.full((2, 1, 4, 4), 1001)
    inst[:, :, :2] = 1002
    a = sample_feature_map(clusters, inst, 3, seed=5)
    assert torch.equal(a[0], a[1])  # the same map in a batch: the same draw
    assert torch.equal(sample_feature_map(clusters, inst[:1], 3, seed=5)[0], a[0])  # whatever the batch holds
    draws = {tuple(sample_feature_map(clusters, inst[:1], 3, seed=s)[0, :, 0, 0].tolist()) for s in range(8)}
    assert len(draws) > 1
    fixed = sample_feature_map(clusters, inst[:1], 3, choice=12)
    assert torch.equal(fixed[0, :, 0, 0], torch.tensor([6.0, 7.0, 8.0]))  # 12 mod 10 clusters = centre 2
    holder = FeatureClusters(label_nc=3, n_clusters=10, feat_num=3)
    assert holder.empty
    holder.set(clusters)
    assert not holder.empty and np.array_equal(holder.as_dict()[1], clusters[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("p2phd-feat")
    data = root / "data"
    for i in range(3):
        _pair(data, "train", f"city_{i:06d}", (32, 32), i)
    for i in range(2):
        _pair(data, "test", f"town_{i:06d}", (32, 32), 10 + i)
    run = root / "run"
    ugatit("train", data, *TINY, *FEAT, "--iterations", "2", "--save-every", "2", "--sample-every", "2",
           "--output", run)
    return data, run


def _translate(data, model, out, *extra, ok=True):
    return ugatit("translate", data / "test_label", "--model", model, "--instance-maps", data / "test_inst",
                  "--output", out, "--quiet", *extra, ok=ok)


def _pngs(folder):
    """The translations of test_label/ (a folder argument keeps its name under --output), sorted; never none."""
    assert sorted(folder.glob("test_label/*.png")), folder
    return [np.asarray(Image.open(p)).astype(int) for p in sorted(folder.glob("test_label/*.png"))]


def test_run_clusters_its_training_set_and_translate_uses_them(trained, tmp_path):
    data, run = trained
    ckpt = run / "checkpoints" / "step_00000002"
    stored = load_file(str(ckpt / "clusters.safetensors"))
    # the centres are the official script's: encode every training image, cluster each class
    from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig
    from ugatit_cli.families.pix2pixhd.data import prepare_instance, prepare_photo
    from ugatit_cli.families.pix2pixhd.networks import build_encoder

    config = Pix2PixHDConfig.from_dict(json.loads((run / "config.json").read_text())["model"])
    net_e = build_encoder(config)
    net_e.load_state_dict(load_file(str(ckpt / "netE.safetensors")))
    net_e.eval()
    vectors = []
    for name in sorted(p.name for p in (data / "train_img").iterdir()):
        stem = name.replace("_leftImg8bit.png", "")
        photo = prepare_photo(data / "train_img" / name, (32, 32))
        inst = prepare_instance(data / "train_inst" / f"{stem}_gtFine_instanceIds.png", (32, 32))
        with torch.no_grad():
            found = official_vectors(net_e(photo, inst), inst, 4)
        vectors += [(label, np.array(v[:-1]), v[-1]) for label, vs in found.items() for v in vs]
    expected = cluster_vectors(vectors, 10)
    counts = stored["counts"].tolist()
    assert counts == [len(expected.get(c, [])) for c in range(4)] and sum(counts) > 4
    for label, centres in expected.items():
        np.testing.assert_allclose(stored["centres"][label, :counts[label]].numpy(), centres, atol=1e-5)

    # translate: the stored centres by default, one drawn per instance; the same seed gives the same photos
    a, b = tmp_path / "a", tmp_path / "b"
    _translate(data, run, a)
    _translate(data, run, b, "--seed", "0")
    assert len(_pngs(a)) == 2 and all(np.array_equal(x, y) for x, y in zip(_pngs(a), _pngs(b), strict=True))
    looks = []
    for k in range(3):
        _translate(data, run, tmp_path / f"k{k}", "--feature-cluster", str(k))
        looks.append(_pngs(tmp_path / f"k{k}")[0])
    assert any(not np.array_equal(looks[0], other) for other in looks[1:])  # other centres, other looks

    # an official cluster file (converted to .npz) instead of the model's own centres
    npz = tmp_path / "features_clustered_010.npz"
    np.savez(npz, **{str(c): np.full((1, 3), 0.9 if c % 2 else -0.9, np.float32) for c in range(4)})
    _translate(data, run, tmp_path / "npz", "--feature-clusters", npz)
    assert not np.array_equal(_pngs(tmp_path / "npz")[0], _pngs(a)[0])
    bad = _translate(data, run, tmp_path / "bad", "--feature-cluster", "first", ok=False)
    assert bad.returncode == 2 and "--feature-cluster must be random or a cluster index" in bad.stderr


def test_encode_image_takes_the_features_from_a_real_photo(trained, tmp_path):
    data, run = trained
    out = tmp_path / "enc"
    _translate(data, run, out, "--encode-image", data / "test_img")
    got = _pngs(out)[0]
    from ugatit_cli.families.pix2pixhd.data import prepare_instance, prepare_label, prepare_photo
    from ugatit_cli.families.pix2pixhd.inference import generate
    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(run)
    assert set(model.nets) == {"netG", "netE", "clusters"}
    label, _ = prepare_label(model.config, data / "test_label" / "town_000000_gtFine_labelIds.png")
    batch = {"label": label, "inst": prepare_instance(data / "test_inst" / "town_000000_gtFine_instanceIds.png",
                                                      (32, 32)),
             "image": prepare_photo(data / "test_img" / "town_000000_leftImg8bit.png", (32, 32))}
    fake = generate(model.config, model.nets["netG"], batch, model.nets["netE"])
    expected = ((fake[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).clip(0, 255)
    assert np.abs(got - expected).max() <= 1
    both = _translate(data, run, tmp_path / "x", "--encode-image", data / "test_img", "--feature-cluster", "1",
                      ok=False)
    assert both.returncode == 2 and "--encode-image" in both.stderr and "Traceback" not in both.stderr
    # the encoder runs with PyTorch: onnxruntime is refused in one line before any image, never half-run
    ort = _translate(data, run, tmp_path / "ort", "--encode-image", data / "test_img", "--backend", "onnxruntime",
                     ok=False)
    assert ort.returncode == 2 and "use --backend torch" in ort.stderr and "Traceback" not in ort.stderr
    assert not (tmp_path / "ort").exists()


def test_export_carries_encoder_and_centres_and_onnx_takes_the_feature_map(trained, tmp_path):
    data, run = trained
    folder = tmp_path / "exported"
    ugatit("export", run, "--output", folder, "--quiet")
    assert {"generator.safetensors", "encoder.safetensors", "feature_clusters.safetensors"} <= {
        p.name for p in folder.iterdir()}
    from_run, from_folder = tmp_path / "r", tmp_path / "f"
    _translate(data, run, from_run, "--seed", "3")
    _translate(data, folder, from_folder, "--seed", "3")
    assert all(np.array_equal(x, y) for x, y in zip(_pngs(from_run), _pngs(from_folder), strict=True))
    # a folder without the centres asks for them in one line
    (folder / "feature_clusters.safetensors").unlink()
    asked = _translate(data, folder, tmp_path / "none", ok=False)
    assert asked.returncode == 2 and "--feature-clusters FILE" in asked.stderr and "Traceback" not in asked.stderr

    onnx_dir = tmp_path / "onnx"
    ugatit("export", run, "--output", onnx_dir, "--format", "onnx", "--quiet")
    names = {p.name for p in onnx_dir.iterdir()}
    assert {"generator.onnx", "encoder.safetensors", "feature_clusters.safetensors"} <= names
    assert "encoder.onnx" not in names
    import onnxruntime as ort

    from ugatit_cli.store.sources import resolve_model

    model = resolve_model(run)
    centres = load_file(str(onnx_dir / "feature_clusters.safetensors"))
    label = np.zeros((1, 1, 32, 32), np.float32)
    label[..., 16:] = 2
    inst = label * 1000 + 1
    feat = torch.from_numpy(centres["centres"][2, 0].numpy()).view(1, 3, 1, 1).expand(1, 3, 32, 32).clone()
    feat[..., :16] = centres["centres"][0, 0].view(1, 3, 1) if int(centres["counts"][0]) else 0
    session = ort.InferenceSession(str(onnx_dir / "generator.onnx"))
    (image,) = session.run(None, {"label": label, "inst": inst, "feat": feat.numpy()})
    from ugatit_cli.families.pix2pixhd.graph import LabelToImage

    with torch.no_grad():
        expected = LabelToImage(model.config, model.nets["netG"])(torch.from_numpy(label), torch.from_numpy(inst),
                                                                  feat)
    np.testing.assert_allclose(image, expected.numpy(), atol=1e-4)
    card = (onnx_dir / "README.md").read_text()
    assert "feature_clusters.safetensors" in card and "`feat`" in card


def test_models_without_features_refuse_feature_options(tmp_path):
    from ugatit_cli.errors import UserError
    from ugatit_cli.families.base import Model
    from ugatit_cli.families.pix2pixhd import FAMILY
    from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig

    config = Pix2PixHDConfig(label_nc=3, ngf=4, n_downsample_global=1, n_blocks_global=1, no_instance=True)
    model = Model(FAMILY, config, {"netG": FAMILY.build_net(config, "netG")})
    with pytest.raises(UserError, match="--feature-cluster applies to pix2pixHD models trained with instance"):
        FAMILY.translator(model, None, None, {"feature_cluster": "1"})


def test_label_features_without_instance_maps_local_enhancer_and_bce(trained, tmp_path):
    """--label-feat: one feature region per class (the label map), so no instance maps anywhere; with
    --netG local --niter-fix-global and --no-lsgan through the CLI."""
    data, _ = trained
    run = tmp_path / "run"
    at = TINY.index("--n-downsample-global") + 1
    args = [*TINY[:at], "1", *TINY[at + 1:]]
    ugatit("train", data, *args, "--label-feat", "--no-instance", "--nef", "4", "--n-downsample-e", "1",
           "--netG", "local", "--n-blocks-local", "1", "--niter-fix-global", "1", "--no-lsgan", "--iterations", "2",
           "--save-every", "2", "--sample-every", "2", "--output", run)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["no_lsgan"] and config["train"]["niter_fix_global"] == 1
    counts = load_file(str(run / "checkpoints" / "step_00000002" / "clusters.safetensors"))["counts"]
    assert counts.tolist() == [3, 3, 3, 1]  # label regions: ids 0, 1 and 2 in each of the three maps, 3 in one
    out = tmp_path / "out"
    ugatit("translate", data / "test_label", "--model", run, "--output", out, "--quiet")
    assert len(_pngs(out)) == 2
