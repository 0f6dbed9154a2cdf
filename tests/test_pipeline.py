import json

import pytest
import torch

import argen
from argen import registry
from argen.config import CONFIG_VERSION
from argen.errors import CheckpointError, ConfigError
from argen.pipeline import Pipeline, PipelineConfig
from argen.presets import get_config


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    p = argen.create("fmnist-raster-tiny")
    with torch.no_grad():  # make the generator's (zero-initialised) head informative
        p.generator.output.weight.normal_(std=0.5)
    return p.eval()


def test_call_returns_images_in_range(pipe):
    images = pipe([0, 9, -1], seed=0)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(images, pipe(torch.tensor([0, 9, -1]), seed=0))
    assert not torch.equal(images, pipe([0, 9, -1], seed=1))
    assert torch.equal(images, pipe(["t-shirt/top", "ankle boot", "none"], seed=0))  # names, case-insensitive
    assert pipe.conditioner.label_ids(["sneaker", "0", 3, "none"]) == [7, 0, 3, -1]
    with pytest.raises(ValueError, match="unknown class"):
        pipe(["giraffe"])


def test_save_load_component_folders_identical_outputs(pipe, tmp_path):
    pipe.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["conditioner", "config.json", "generator",
                                                                   "tokenizer"]
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert meta["kind"] == "pipeline" and meta["version"] == CONFIG_VERSION
    assert meta["components"] == ["tokenizer", "conditioner", "generator"] and set(meta["config"]) == {"sampling"}
    for name, kind in (("tokenizer", "autoencoder"), ("conditioner", "class"), ("generator", "raster")):
        sub = json.loads((tmp_path / "p" / name / "config.json").read_text())
        assert sub["kind"] == kind and (tmp_path / "p" / name / "model.safetensors").is_file()
    assert isinstance(argen.load(tmp_path / "p" / "tokenizer"), type(pipe.tokenizer))  # each loads on its own
    back = Pipeline.load(tmp_path / "p")
    assert back.config == pipe.config
    assert torch.equal(back([1, 2], seed=3, cfg=2.0, top_k=20), pipe([1, 2], seed=3, cfg=2.0, top_k=20))
    assert isinstance(argen.load(tmp_path / "p"), Pipeline)
    argen.save(pipe.generator, tmp_path / "g")
    with pytest.raises(CheckpointError, match="not a pipeline"):
        Pipeline.load(tmp_path / "g")


def test_layout_mismatch_is_a_config_error():
    cfg = get_config("fmnist-raster-tiny", ["generator.vocab_size=128"])
    with pytest.raises(ConfigError, match="vocab"):
        registry.build(cfg)
    with pytest.raises(ConfigError, match="class_names"):
        get_config("fmnist-raster-tiny", ["conditioner.num_classes=3"])


def test_conditioner_width_follows_the_generator():
    cfg = get_config("fmnist-raster-tiny", ["generator.dim=32", "generator.num_heads=2"])
    assert cfg.conditioner.dim == 32  # derived, so changing the generator's width is one override
    p = registry.build(cfg)
    assert p.conditioner.embedding_table.weight.shape == (11, 32)
    tok, cond, gen = argen.create("vq-tiny"), registry.build(cfg.conditioner), argen.create("llamagen-tiny")
    with pytest.raises(ConfigError, match="conditioner.dim=64"):
        Pipeline.from_parts(tok, cond, gen)


def test_from_parts_and_official_pipeline_presets():
    tok, gen = argen.create("vq-tiny"), argen.create("llamagen-tiny")
    cond = registry.build(registry.config_class("class")(dim=64, num_classes=10))
    p = Pipeline.from_parts(tok, cond, gen, cfg=3.0)
    assert p.tokenizer is tok and p.config.sampling.cfg == 3.0 and isinstance(p.config, PipelineConfig)
    cfg = get_config("imagenet-llamagen-l")
    assert cfg.generator.grid == (24, 24) and cfg.tokenizer.resolution == 384 and cfg.sampling.cfg == 2.0
    assert cfg.conditioner.num_classes == 1000 and cfg.conditioner.dim == 1024


def test_sampling_and_decoding_restore_the_training_flag():
    # generate / decode run in eval + inference mode and hand the modules back as they were (mid-training samples)
    pipe = argen.create("fmnist-raster-tiny").train()
    images = pipe([0, 1], seed=0)
    assert pipe.generator.training and pipe.tokenizer.training and pipe.conditioner.training
    assert images.shape[0] == 2 and not images.requires_grad
    pipe.eval()
    pipe([0], seed=0)
    assert not pipe.generator.training and not pipe.tokenizer.training and not pipe.conditioner.training
