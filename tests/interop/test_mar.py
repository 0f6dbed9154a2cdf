"""Official MAR checkpoints: KL-16 VAE parity with golden outputs of the official code (tiny official-shaped
AutoencoderKL, weights rebuilt from a seed), the safe `checkpoint-last.pth` reader, the diffusion head's
`diffloss.*` mapping (MAR training loss and per-step head sampling of the official tiny MAR), and the MAR
sampling schedules recorded from the official `sample_tokens` (see tests/fixtures/mar/README.md)."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from argen import registry
from argen.errors import CheckpointError
from argen.heads import DiffusionHead, DiffusionHeadConfig
from argen.interop.common import rename
from argen.interop.mar import (MarCheckpoint, convert_head, convert_vae, diffloss_rules, head_config, head_state,
                               read_mar_checkpoint, vae_config)
from argen.presets import get_config
from argen.saving import check_state_dict
from argen.types import SampleOptions
from seeded_weights import seeded_state_dict

FIX = Path(__file__).parent.parent / "fixtures" / "mar"
SPEC = json.loads((FIX / "spec.json").read_text())
GOLD = load_file(str(FIX / "golden.safetensors"))
SCALE = SPEC["scale_factor"]
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tokens_of(nchw: torch.Tensor) -> torch.Tensor:
    """Official (B, C, h, w) latents -> argen / MAR-patchify tokens (B, L, C), raster order."""
    return nchw.flatten(2).transpose(1, 2)


def meta_state(shapes: dict) -> dict:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


@pytest.fixture(scope="module")
def vae_sd():
    return seeded_state_dict(SPEC["vae_table"], SPEC["vae_seed"])


@pytest.fixture(scope="module")
def mar_sd():
    return seeded_state_dict(SPEC["mar_table"], SPEC["mar_seed"])


@pytest.fixture(scope="module")
def vae(vae_sd, tmp_path_factory):
    path = tmp_path_factory.mktemp("mar_vae") / "kl16.ckpt"
    torch.save({"model": vae_sd}, path)
    model, conv = convert_vae(path, resolution=SPEC["vae"]["resolution"])
    assert conv.container == "model" and conv.dropped == []
    return model


def mar_args(**kw) -> argparse.Namespace:
    m = SPEC["mar"]
    return argparse.Namespace(model="mar_tiny", img_size=m["img_size"], vae_embed_dim=m["vae_embed_dim"],
                              diffloss_d=m["diffloss_d"], diffloss_w=m["diffloss_w"],
                              num_sampling_steps=m["num_sampling_steps"], diffusion_batch_mul=m["diffusion_batch_mul"],
                              buffer_size=m["buffer_size"], cfg=1.0, temperature=1.0, output_dir="./out", **kw)


@pytest.fixture(scope="module")
def mar_ckpt(mar_sd, tmp_path_factory):
    """A tiny official-format checkpoint-last.pth: raw weights differ from EMA ones in one tensor."""
    raw = dict(mar_sd)
    raw["fake_latent"] = mar_sd["fake_latent"] + 1.0
    path = tmp_path_factory.mktemp("mar_ckpt") / "checkpoint-last.pth"
    torch.save({"model": raw, "model_ema": mar_sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "epoch": 7, "scaler": {"scale": 65536.0, "_growth_tracker": 3}, "args": mar_args()}, path)
    return path


# ----------------------------------------------------------------------------- KL-16 VAE


def test_vae_posterior_tokens_and_decode_match_official(vae):
    with torch.no_grad():
        mean, logvar = vae.posterior(GOLD["vae_images"])
        torch.testing.assert_close(mean, GOLD["vae_mean"], atol=ATOL, rtol=0)
        torch.testing.assert_close(logvar, GOLD["vae_logvar"], atol=ATOL, rtol=0)
        tokens = vae.encode(GOLD["vae_images"])  # posterior mode * 0.2325
        assert tokens.shape == (2, 16, 4)
        torch.testing.assert_close(tokens, tokens_of(GOLD["vae_tokens"]), atol=ATOL, rtol=0)
        torch.testing.assert_close(tokens, tokens_of(GOLD["vae_mean"]) * SCALE, atol=ATOL, rtol=0)
        latent = GOLD["vae_decode_latent"]
        torch.testing.assert_close(vae.decode_latent(latent / SCALE), GOLD["vae_decode"], atol=ATOL, rtol=0)
        # argen's decode takes tokens, divides the scale out and clamps; the official decode does not clamp
        torch.testing.assert_close(vae.decode(tokens_of(latent)), GOLD["vae_decode"].clamp(-1, 1), atol=ATOL, rtol=0)


def test_vae_config_is_read_from_the_weights(vae):
    v = SPEC["vae"]
    net = vae.config.net
    assert (net.ch, net.ch_mult, net.num_res_blocks, net.attn_resolutions, net.decoder_attn, net.mid_attn) == (
        v["ch"], tuple(v["ch_mult"]), v["num_res_blocks"], tuple(v["encoder_attn_resolutions"]), False, True)
    assert vae.config.embed_dim == v["embed_dim"] and vae.config.scale_factor == SCALE


def test_released_kl16_layout_is_the_vae_kl16_preset():
    shapes = SPEC["shapes_kl16"]
    assert len(shapes) == 312
    cfg = vae_config(meta_state(shapes))
    assert cfg == get_config("vae-kl16")
    with torch.device("meta"):
        model = registry.build(cfg)
    rep = check_state_dict(model, meta_state(shapes))
    assert rep.ok, rep.summary(8)


def test_vae_loss_modules_are_dropped_by_name(vae_sd):
    sd = dict(vae_sd)
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    _, conv = convert_vae({"model": sd}, resolution=16)
    assert sorted(conv.dropped) == ["loss.discriminator.main.0.weight", "loss.logvar"]


def test_vae_missing_and_unexpected_keys_are_named(vae_sd):
    sd = dict(vae_sd)
    sd["decoder.up.0.block.2.conv_1.weight"] = sd.pop("decoder.up.0.block.2.conv1.weight")
    with pytest.raises(CheckpointError) as e:
        convert_vae({"model": sd}, resolution=16)
    msg = str(e.value)
    assert "1 missing from the file: decoder.up.0.block.2.conv1.weight" in msg
    assert "1 unexpected in the file: decoder.up.0.block.2.conv_1.weight" in msg


def test_vae_not_a_vae_is_refused(mar_sd):
    with pytest.raises(CheckpointError, match="not an AutoencoderKL state dict"):
        convert_vae({"model": mar_sd})


# ----------------------------------------------------------------------------- checkpoint-last.pth


def test_reader_picks_ema_by_default_and_model_on_request(mar_ckpt, mar_sd):
    ema = read_mar_checkpoint(mar_ckpt)
    assert isinstance(ema, MarCheckpoint) and ema.container == "model_ema" and ema.epoch == 7
    assert sorted(ema.state) == sorted(mar_sd)
    assert torch.equal(ema.state["fake_latent"], mar_sd["fake_latent"])
    raw = read_mar_checkpoint(mar_ckpt, which="model")
    assert raw.container == "model" and torch.equal(raw.state["fake_latent"], mar_sd["fake_latent"] + 1.0)
    assert ema.args == vars(mar_args()) and isinstance(ema.args, dict)
    with pytest.raises(ValueError, match="which must be 'model_ema'"):
        read_mar_checkpoint(mar_ckpt, which="ema")


class NotAllowed:
    """Stands in for any pickled object other than argparse.Namespace."""

    def __init__(self):
        self.payload = 1


def test_reader_refuses_other_pickled_objects(mar_sd, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_ema": mar_sd, "args": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="holds Python objects other than tensors"):
        read_mar_checkpoint(path)


def test_reader_names_the_missing_entry(mar_sd, tmp_path):
    path = tmp_path / "raw_only.pth"
    torch.save({"model": mar_sd, "args": mar_args()}, path)
    with pytest.raises(CheckpointError, match=r"no 'model_ema' entry \(it holds 'model', 'args'\); pass which='model'"):
        read_mar_checkpoint(path)
    assert read_mar_checkpoint(path, which="model").container == "model"


def test_reader_accepts_files_without_args(mar_sd, tmp_path):
    path = tmp_path / "released.pth"
    torch.save({"model": mar_sd, "model_ema": mar_sd}, path)
    ck = read_mar_checkpoint(path)
    assert ck.args == {} and ck.epoch is None


# ----------------------------------------------------------------------------- the diffusion head


def test_diffloss_rules_map_official_names():
    state = meta_state(SPEC["shapes_mar_b"])
    conv = rename({k: v for k, v in state.items() if k.startswith("diffloss.")}, diffloss_rules("head."))
    assert all(k.startswith("head.net.") for k in conv.state)
    assert conv.source_of["head.net.res_blocks.5.adaLN_modulation.1.weight"] == \
        "diffloss.net.res_blocks.5.adaLN_modulation.1.weight"
    rest = rename({k: v for k, v in state.items() if not k.startswith("diffloss.")}, diffloss_rules("head."))
    assert sorted(rest.state) == sorted(k for k in state if not k.startswith("diffloss."))  # untouched


def test_mar_b_head_layout_matches_the_official_one():
    state = meta_state(SPEC["shapes_mar_b"])
    cfg = head_config(state, {"num_sampling_steps": "100", "diffusion_batch_mul": 4})
    assert cfg == DiffusionHeadConfig()  # MAR-B: 6 x 1024 on 768-d conditions, 16-d tokens
    with torch.device("meta"):
        head = DiffusionHead(cfg)
    rep = check_state_dict(head, head_state(state))
    assert rep.ok, rep.summary(8)


@pytest.fixture(scope="module")
def head(mar_ckpt):
    h, conv = convert_head(read_mar_checkpoint(mar_ckpt))
    assert len(conv.state) == len([k for k in SPEC["mar_table"] if k[0].startswith("diffloss.")])
    return h


def test_head_config_comes_from_weights_and_args(head):
    m = SPEC["mar"]
    cfg = head.config
    assert (cfg.depth, cfg.width, cfg.token_dim, cfg.cond_dim) == (m["diffloss_d"], m["diffloss_w"],
                                                                  m["vae_embed_dim"], m["decoder_embed_dim"])
    assert cfg.sampling_steps == int(m["num_sampling_steps"]) and cfg.batch_mul == m["diffusion_batch_mul"]


def test_official_mar_training_loss_from_decoder_conditions(head):
    """MAR.forward_loss: z (B, L, D) and target = patchify(latents) tiled diffusion_batch_mul times, masked mean."""
    target = tokens_of(GOLD["mar_latents"])
    mask = GOLD["mar_mask"].bool()
    out = head.loss(GOLD["mar_z"], target, mask, timesteps=GOLD["mar_t"], noise=GOLD["mar_noise"])
    torch.testing.assert_close(out.loss.detach(), GOLD["mar_loss"], atol=ATOL, rtol=1e-6)
    mul = SPEC["mar"]["diffusion_batch_mul"]
    terms = head.terms(GOLD["mar_z"].reshape(-1, 32).repeat(mul, 1), target.reshape(-1, 4).repeat(mul, 1),
                       GOLD["mar_t"], GOLD["mar_noise"])["loss"]
    torch.testing.assert_close(terms.detach(), GOLD["mar_loss_terms"], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("name", ["cfg", "nocfg"])
def test_official_sample_tokens_head_calls(head, name):
    """Every AR step's head call of the official sample_tokens, given its z rows, cfg and recorded draws."""
    run = SPEC["e2e"][name]
    guided = run["cfg"] != 1.0
    for k, scale in enumerate(run["cfg_per_step"]):
        z = GOLD[f"e2e_{name}_z_{k}"]
        B = z.shape[0] // 2 if guided else z.shape[0]
        noise = torch.cat([GOLD[f"e2e_{name}_x_T_{k}"][None], GOLD[f"e2e_{name}_step_noise_{k}"][:, :B]])
        tokens, _ = head.sample(z, SampleOptions(temperature=run["temperature"]), cfg_scale=scale, guided=guided,
                                noise=noise)
        ref = GOLD[f"e2e_{name}_head_out_{k}"][:B]
        s = ref.abs().max()
        torch.testing.assert_close(tokens / s, ref / s, atol=1e-5, rtol=0)


def test_head_conversion_errors_name_the_keys(mar_sd):
    sd = {k: v for k, v in mar_sd.items() if k != "diffloss.net.res_blocks.1.mlp.2.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing from the file: net\.res_blocks\.1\.mlp\.2\.bias"):
        convert_head(sd, config=head_config(mar_sd))
    bad = dict(mar_sd)
    bad["diffloss.net.input_proj.weight"] = bad["diffloss.net.input_proj.weight"][:, :3]
    with pytest.raises(CheckpointError, match="diffloss.net.input_proj.weight"):
        convert_head(bad, config=head_config(mar_sd))
    with pytest.raises(CheckpointError, match="no 'diffloss"):
        convert_head({"z_proj.weight": torch.zeros(2, 2)})


# ----------------------------------------------------------------------------- official MAR semantics (README)


def mask_counts(L: int, K: int) -> list[int]:
    """Tokens revealed per step by MAR.sample_tokens (README: cosine schedule, >= 1 per step, rest at the end)."""
    masked, counts = L, []
    for k in range(K):
        nxt = max(1, min(masked - 1, math.floor(L * math.cos(math.pi / 2 * (k + 1) / K))))
        counts.append(masked if k == K - 1 else masked - nxt)
        masked = nxt
    return counts


def linear_cfg(L: int, K: int, cfg: float) -> list[float]:
    masked, out = L, []
    for k in range(K):
        nxt = max(1, min(masked - 1, math.floor(L * math.cos(math.pi / 2 * (k + 1) / K))))
        out.append(1 + (cfg - 1) * (L - nxt) / L)  # the fraction known AFTER this step
        masked = nxt
    return out


@pytest.mark.parametrize("key,L,K,cfg", [("L16_K4", 16, 4, 3.0), ("L16_K16", 16, 16, 3.0),
                                         ("L256_K64", 256, 64, 2.9), ("L256_K256", 256, 256, 2.9)])
def test_readme_schedule_formulas_reproduce_the_official_counts(key, L, K, cfg):
    rec = SPEC["schedules"][key]
    assert mask_counts(L, K) == rec["counts"]
    torch.testing.assert_close(torch.tensor(linear_cfg(L, K, cfg)), torch.tensor(rec[f"cfg_linear_{cfg}"]),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("K", [4, 16])
def test_each_step_reveals_the_next_slice_of_the_order(K):
    step_of, orders = GOLD[f"sched_K{K}_step_of_position"], GOLD["mar_orders"]
    counts = mask_counts(16, K)
    for b in range(orders.shape[0]):
        masked = 16
        for k, n in enumerate(counts):  # step k predicts orders[b, masked - n : masked]
            assert sorted(orders[b, masked - n:masked].tolist()) == (step_of[b] == k).nonzero().flatten().tolist()
            masked -= n


def test_training_mask_is_the_first_num_masked_of_each_order():
    orders, mask, n = GOLD["mar_orders"], GOLD["mar_mask"], SPEC["mar_forward"]["num_masked"]
    for b in range(orders.shape[0]):
        assert mask[b].nonzero().flatten().tolist() == sorted(orders[b, :n].tolist())
    assert GOLD["mar_encoder_out"].shape == (2, SPEC["mar"]["buffer_size"] + 16 - n, 32)
