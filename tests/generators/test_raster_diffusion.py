"""The causal continuous-token generator (MAR's "AR" variant): causality of its head input, the Diffusion
Loss learning a fixed batch, its sampler option, and the CLI from training on VAE latents to samples."""
import json

import numpy as np
import pytest
import torch

import argen
from argen import registry
from argen.presets import get_config
from argen.sampling import generate
from gen_helpers import class_conditioner, embed, perturb

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny():
    torch.manual_seed(0)
    g = registry.build(get_config("ar-diffusion-tiny"))
    return g, class_conditioner(g, num_classes=4)


def test_head_input_is_causal_and_conditioned():
    g, cond = tiny()
    perturb(g)
    g.eval()
    c = embed(cond, [0, 1])
    x = torch.randn(2, 64, 4)
    with torch.no_grad():
        z = g(x, c)
        assert z.shape == (2, 64, 64)
        later = x.clone()
        later[:, 20:] = torch.randn(2, 44, 4)
        z2 = g(later, c)
        assert torch.equal(z[:, :21], z2[:, :21])  # z_i reads x_0 .. x_{i-1} only
        assert not torch.allclose(z[:, 21:], z2[:, 21:])
        other = g(x, embed(cond, [2, 3]))
        assert not torch.allclose(other[:, 0], z[:, 0])  # the condition starts the sequence


def test_the_diffusion_loss_learns_a_fixed_batch():
    g, cond = tiny()
    g.train()
    x = torch.randn(8, 64, 4, generator=torch.Generator().manual_seed(1)) * 0.5
    labels = [0, 1, 2, 3] * 2
    opt = torch.optim.Adam(list(g.parameters()) + list(cond.parameters()), lr=3e-3)

    def loss(seed):
        return g.loss(x, cond(cond.parse(labels)), rng=torch.Generator().manual_seed(seed)).loss

    with torch.no_grad():
        before = sum(float(loss(s)) for s in range(4)) / 4
    for step in range(60):
        opt.zero_grad()
        loss(100 + step).backward()
        opt.step()
    with torch.no_grad():
        after = sum(float(loss(s)) for s in range(4)) / 4
    assert after < 0.7 * before


def test_sampling_takes_the_heads_number_of_steps():
    g, cond = tiny()
    g.eval()
    a = generate(g, cond, [0, 1], seed=0, diffusion_steps=5)
    assert a.shape == (2, 64, 4) and torch.isfinite(a).all()
    assert torch.equal(a, generate(g, cond, [0, 1], seed=0, diffusion_steps=5))
    assert not torch.equal(a, generate(g, cond, [0, 1], seed=0, diffusion_steps=6))
    with pytest.raises(ValueError, match="diffusion_steps"):
        generate(g, cond, [0], diffusion_steps=1)
    with pytest.raises(ValueError, match="order"):  # a random-order knob is not this sampler's
        generate(g, cond, [0], order="raster")


def test_cli_trains_on_vae_latents_and_samples(tmp_path, fashion_mnist):
    from argen.cli import main

    torch.manual_seed(0)
    argen.save(argen.create("vae-tiny"), tmp_path / "tok")
    assert main(["train", "--preset", "fmnist-ar-diffusion-tiny", "--tokenizer", str(tmp_path / "tok"),
                 "--data", "fashion-mnist", "--max-images", "32", "--batch-size", "16", "--steps", "2",
                 "--samples-per-class", "0", "--out", str(tmp_path / "run"), "--threads", "1"]) == 0
    pipe = argen.Pipeline.load(tmp_path / "run" / "pipeline")
    assert type(pipe.generator.config).kind == "raster-diffusion"
    # the head's x0 bound was fitted to the cached latents (and recorded with the run)
    latents = np.load(tmp_path / "run" / "tokens" / "tokens.npy")
    assert pipe.generator.config.head.x0_clip == pytest.approx(float(np.abs(latents).max()), rel=1e-5)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["pipeline"]["generator"]["head"]["x0_clip"] == pipe.generator.config.head.x0_clip
    for extra in ([], ["--x0-clip", "0"]):
        assert main(["sample", str(tmp_path / "run"), "--labels", "0,1", "--diffusion-steps", "4", "--seed", "0",
                     "--out", str(tmp_path / "s"), "--threads", "1", *extra]) == 0
    assert len(list((tmp_path / "s").glob("*.png"))) == 2
