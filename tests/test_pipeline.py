import json

import pytest
import torch

import argen
from argen import registry
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
    assert pipe.labels_for(["sneaker", "0", 3, "none"]) == [7, 0, 3, -1]
    with pytest.raises(ValueError, match="unknown class"):
        pipe.labels_for(["giraffe"])


def test_save_load_one_directory_identical_outputs(pipe, tmp_path):
    pipe.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "p" / "config.json").read_text())
    assert meta["kind"] == "pipeline"
    assert meta["config"]["generator"]["kind"] == "raster" and meta["config"]["tokenizer"]["kind"]
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
        get_config("fmnist-raster-tiny", ["generator.num_classes=3"])


def test_from_parts_and_official_pipeline_presets():
    tok, gen = argen.create("vq-tiny"), argen.create("llamagen-tiny")
    p = Pipeline.from_parts(tok, gen, cfg=3.0)
    assert p.tokenizer is tok and p.config.cfg == 3.0 and isinstance(p.config, PipelineConfig)
    cfg = get_config("imagenet-llamagen-l")
    assert cfg.generator.grid == (24, 24) and cfg.tokenizer.resolution == 384 and cfg.cfg == 2.0


def test_sampling_and_decoding_restore_the_training_flag():
    # generate / decode run in eval + inference mode and hand the modules back as they were (mid-training samples)
    pipe = argen.create("fmnist-raster-tiny").train()
    images = pipe([0, 1], seed=0)
    assert pipe.generator.training and pipe.tokenizer.training
    assert images.shape[0] == 2 and not images.requires_grad
    pipe.eval()
    pipe([0], seed=0)
    assert not pipe.generator.training and not pipe.tokenizer.training
