"""Parity of converted LlamaGen checkpoints with golden outputs of the official code (tiny official-shaped
config, weights rebuilt from a seed; see tests/fixtures/llamagen/README.md), and clear conversion errors."""
from __future__ import annotations

import argparse
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import argen
from argen.errors import CheckpointError
from argen.interop import common
from argen.interop.llamagen import convert_gpt, convert_vq, gpt_shape_info, vq_config
from argen.presets import get_config
from seeded_weights import seeded_state_dict

FIX = Path(__file__).parent.parent / "fixtures" / "llamagen"
SPEC = json.loads((FIX / "spec.json").read_text())
GOLD = load_file(str(FIX / "golden.safetensors"))
NULL = SPEC["gpt"]["num_classes"]  # the official null-class id; argen's label for it is -1
ATOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def tiny_gpt_overrides() -> dict:
    g = SPEC["gpt"]
    side = int(g["block_size"] ** 0.5)
    return {"dim": g["dim"], "depth": g["n_layer"], "num_heads": g["n_head"], "vocab_size": g["vocab_size"],
            "scales": [[side, side]]}


def tiny_gpt_config():
    return get_config("llamagen-b", tiny_gpt_overrides())


def argen_labels(labels: torch.Tensor) -> torch.Tensor:
    return torch.where(labels == NULL, torch.full_like(labels, -1), labels)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The tiny official checkpoints, rebuilt from the seed and saved in the official format."""
    d = tmp_path_factory.mktemp("llamagen_official")
    vq = seeded_state_dict(SPEC["vq_table"], SPEC["vq_seed"])
    gpt = seeded_state_dict(SPEC["gpt_table"], SPEC["gpt_seed"])
    torch.save({"model": vq, "steps": 7}, d / "vq.pt")
    torch.save({"model": gpt, "steps": 7}, d / "gpt.pt")
    return {"dir": d, "vq": vq, "gpt": gpt, "vq_path": d / "vq.pt", "gpt_path": d / "gpt.pt"}


@pytest.fixture(scope="module")
def tokenizer(official):
    tok, conv = convert_vq(official["vq_path"], resolution=SPEC["image_size"])
    assert conv.container == "model" and conv.dropped == ["quantize.codebook_used"]
    assert sorted(conv.fresh) == ["quantizer.last_used", "quantizer.usage_step"]  # argen-only counters
    return tok


@pytest.fixture(scope="module")
def converted(official):
    gen, cond, conv = convert_gpt(official["gpt_path"], tiny_gpt_config())
    assert conv.container == "model" and conv.dropped == []
    assert cond.num_classes == SPEC["gpt"]["num_classes"]  # read from the class table's rows
    return gen, cond


@pytest.fixture(scope="module")
def generator(converted):
    return converted[0]


def conditioning(cond, labels: torch.Tensor, guided: bool = False):
    from argen.sampling.loop import guided_conditioning

    return guided_conditioning(cond, cond.parse(argen_labels(labels)), guided, torch.device("cpu"))


# ----------------------------------------------------------------------------- parity


def test_vq_encode_decode_match_official(tokenizer):
    with torch.no_grad():
        latent = tokenizer.encode_latent(GOLD["images"])
        torch.testing.assert_close(latent, GOLD["vq_latent"], atol=ATOL, rtol=0)
        ids = tokenizer.encode(GOLD["images"])
        assert ids.dtype == torch.long and ids.shape == GOLD["vq_ids"].shape
        assert torch.equal(ids, GOLD["vq_ids"])
        recon = tokenizer.decode_latent(tokenizer.quantizer(latent).z_q)
        torch.testing.assert_close(recon, GOLD["vq_recon"], atol=ATOL, rtol=0)
        # argen's decode clamps to [-1, 1]; the official decode_code does not
        images = tokenizer.decode(GOLD["decode_ids"])
        torch.testing.assert_close(images, GOLD["decode_images"].clamp(-1, 1), atol=ATOL, rtol=0)


def test_gpt_teacher_forced_logits_and_loss_match_official(converted):
    generator, cond = converted
    labels = argen_labels(GOLD["tf_labels"])
    assert (labels == -1).any()  # the null class is exercised
    with torch.no_grad():
        c = conditioning(cond, GOLD["tf_labels"])
        logits = generator(GOLD["tf_ids"], c)
        torch.testing.assert_close(logits, GOLD["tf_logits"], atol=ATOL, rtol=0)
        loss = generator.loss(GOLD["tf_ids"], c).loss
    torch.testing.assert_close(loss, GOLD["tf_loss"], atol=ATOL, rtol=0)


def test_gpt_guided_logits_per_step_match_official(converted):
    """Drive the raster sampler with the official tokens: every step's CFG-combined logits agree."""
    from argen.sampling.loop import resolve_options
    from argen.sampling.samplers import sampler_for

    generator, cond = converted
    ids = GOLD["sample_ids_cfg"]
    opts, dec = resolve_options(generator, cfg=SPEC["cfg"])
    sampler = sampler_for(generator)(generator, opts, dec)
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        state = sampler.begin(conditioning(cond, GOLD["sample_labels"], guided=True), 2, rng)
        steps = []
        while not state.done:
            steps.append(generator.head.guide(sampler.predict(state, rng), SPEC["cfg"], True)[:, -1])
            t = state.step
            sampler.commit(state, ids[:, t:t + 1], torch.zeros(2, 1), rng=rng, cfg_scale=SPEC["cfg"])
    torch.testing.assert_close(torch.stack(steps, 1), GOLD["sample_logits_cfg"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name,cfg", [("cfg", SPEC["cfg"]), ("nocfg", 1.0)])
def test_greedy_generate_matches_official(converted, name, cfg):
    generator, cond = converted
    ids = argen.generate(generator, cond, GOLD["sample_labels"], cfg=cfg, top_k=1, seed=0)
    assert torch.equal(ids, GOLD[f"sample_ids_{name}"])


# ----------------------------------------------------------------------------- containers and errors


@pytest.mark.parametrize("wrap", ["module", "state_dict", "raw", "ddp_prefix", "compiled"])
def test_gpt_containers_are_unwrapped(official, tmp_path, wrap):
    sd = official["gpt"]
    obj = {"module": {"module": sd, "epoch": 1}, "state_dict": {"state_dict": sd}, "raw": sd,
           "ddp_prefix": {"model": {f"module.{k}": v for k, v in sd.items()}},
           "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()}}[wrap]
    torch.save(obj, tmp_path / "gpt.pt")
    gen, cond, conv = convert_gpt(tmp_path / "gpt.pt", tiny_gpt_config())
    torch.testing.assert_close(cond.embedding_table.weight, sd["cls_embedding.embedding_table.weight"], atol=0, rtol=0)
    assert conv.container == {"module": "module", "state_dict": "state_dict"}.get(wrap, "model" if wrap == "ddp_prefix" else "<raw>")
    torch.testing.assert_close(gen.output.weight, sd["output.weight"], atol=0, rtol=0)


def test_non_state_entries_are_dropped_by_name_and_reported(official):
    sd = dict(official["gpt"])
    sd["freqs_cis"] = torch.zeros(17, 16, 2)
    sd["layers.0.attention.kv_cache.k_cache"] = torch.zeros(4, 2, 24, 32)
    sd["layers.0.attention.kv_cache.v_cache"] = torch.zeros(4, 2, 24, 32)
    _, _, conv = convert_gpt({"model": sd}, tiny_gpt_config())
    assert sorted(conv.dropped) == ["freqs_cis", "layers.0.attention.kv_cache.k_cache",
                                    "layers.0.attention.kv_cache.v_cache"]


def test_truncated_checkpoint_gives_clear_error(official, tmp_path):
    data = official["gpt_path"].read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        convert_gpt(bad, tiny_gpt_config())
    assert "truncated.pt" in str(e.value)


def test_state_dict_missing_entries_names_them(official):
    """A checkpoint cut short (e.g. an interrupted consolidation) names the missing keys."""
    sd = {k: v for k, v in official["gpt"].items() if not k.startswith("layers.1.feed_forward.") and k != "norm.weight"}
    with pytest.raises(CheckpointError, match="4 missing from the file: ") as e:
        convert_gpt({"model": sd}, tiny_gpt_config())
    for key in ("layers.1.feed_forward.w1.weight", "layers.1.feed_forward.w2.weight", "norm.weight"):
        assert f"generator.{key}" in str(e.value)  # argen's name: the generator part of the pipeline


def test_renamed_key_is_reported_with_both_names(official):
    sd = dict(official["gpt"])
    sd["layers.1.attention.w_o.weight"] = sd.pop("layers.1.attention.wo.weight")
    with pytest.raises(CheckpointError) as e:
        convert_gpt({"model": sd}, tiny_gpt_config())
    msg = str(e.value)
    assert "1 missing from the file: generator.layers.1.attention.wo.weight" in msg
    assert "1 unexpected in the file: layers.1.attention.w_o.weight" in msg


def test_misshaped_vq_key_is_reported_with_official_and_argen_names(official):
    sd = dict(official["vq"])
    key = "decoder.conv_blocks.0.res.1.conv1.weight"  # lowest resolution = argen's decoder.up.1
    sd[key] = sd[key][:, :-1]
    with pytest.raises(CheckpointError) as e:
        convert_vq({"model": sd}, resolution=SPEC["image_size"])
    msg = str(e.value)
    assert f"{key} (-> decoder.up.1.block.1.conv1.weight) file (128, 127, 3, 3) vs argen (128, 128, 3, 3)" in msg


def test_wrong_preset_names_the_matching_one(official):
    with pytest.raises(CheckpointError, match="dim 64 in the file vs 768 in the config"):
        convert_gpt(official["gpt_path"], get_config("llamagen-b"))
    fake = {k: v for k, v in official["gpt"].items()}
    fake["tok_embeddings.weight"] = torch.zeros(64, 1024)
    fake["layers.0.feed_forward.w1.weight"] = torch.zeros(2816, 1024)
    fake.update({f"layers.{i}.ffn_norm.weight": torch.ones(1024) for i in range(24)})
    with pytest.raises(CheckpointError, match="use --preset llamagen-l"):
        convert_gpt({"model": fake}, get_config("llamagen-b"))


def test_text_to_image_checkpoint_is_refused_with_reason():
    sd = {"cls_embedding.cap_proj.fc1.weight": torch.zeros(4, 4), "tok_embeddings.weight": torch.zeros(8, 4)}
    with pytest.raises(CheckpointError, match="text-to-image"):
        gpt_shape_info(sd)


def test_swapped_files_are_refused(official):
    with pytest.raises(CheckpointError, match="--generator"):
        convert_gpt(official["vq_path"], tiny_gpt_config())
    with pytest.raises(CheckpointError, match="--tokenizer"):
        convert_vq(official["gpt_path"])


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a checkpoint carrying arbitrary Python objects is not unpickled."""
    path = tmp_path / "args.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        common.read_checkpoint(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"a": 1}, protocol=2))  # not a torch zip file either
    with pytest.raises(CheckpointError):
        common.read_checkpoint(raw)


def test_no_state_dict_in_container():
    with pytest.raises(CheckpointError, match="no state dict found.*'model'.*the file holds: steps, args"):
        common.unwrap({"steps": 3, "args": {"lr": 1.0}})


def test_vq_config_is_read_from_shapes():
    shapes = json.loads((FIX / "shapes_full.json").read_text())["vq_ds16_c2i"]
    state = {k: torch.empty(v) for k, v in shapes.items()}
    cfg = vq_config(state, 256)
    assert cfg == get_config("vq-f16-c16384").replace(quantizer=cfg.quantizer)
    assert (cfg.quantizer.codebook_size, cfg.quantizer.dim, cfg.quantizer.metric) == (16384, 8, "cosine")
    assert cfg.downsample == 16 and cfg.net.attn_resolutions == (16,)


def test_full_size_official_shapes_fit_argen_presets():
    """Every key and shape of the real vq_ds16_c2i.pt and c2i_B_256.pt maps onto argen (no weights needed)."""
    from argen import registry
    from argen.interop.llamagen import GPT_NON_STATE, GPT_RULES, VQ_FRESH, VQ_NON_STATE, vq_rules

    shapes = json.loads((FIX / "shapes_full.json").read_text())
    with torch.device("meta"):  # shapes only: no memory, no init cost
        tok = registry.build(get_config("vq-f16-c16384"))
        gen = torch.nn.ModuleDict({"generator": registry.build(get_config("llamagen-b")), "conditioner": registry.build(
            registry.config_class("class")(dim=768, num_classes=1000))})
    for model, table, non_state, rules, fresh in ((tok, shapes["vq_ds16_c2i"], VQ_NON_STATE, vq_rules(5), VQ_FRESH),
                                                  (gen, shapes["c2i_B_256"], GPT_NON_STATE, GPT_RULES, ())):
        state, _ = common.drop({k: torch.empty(v, device="meta") for k, v in table.items()}, non_state)
        conv = common.rename(state, rules)
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in conv.state.items()}
        extra_own = {k for k in set(own) - set(theirs) if not any(re.fullmatch(f, k) for f in fresh)}
        assert not extra_own and not set(theirs) - set(own)
        assert all(own[k] == theirs[k] for k in theirs)


# ----------------------------------------------------------------------------- pipeline + CLI


def _cli_set_args() -> list[str]:
    out = []
    for k, v in tiny_gpt_overrides().items():
        out += ["--set", f"{k}={json.dumps(v).replace(' ', '')}"]
    return out


@pytest.fixture(scope="module")
def converted_dir(official, tmp_path_factory):
    """`argen convert llamagen ...` on the tiny official checkpoints."""
    from argen.cli import main

    out = tmp_path_factory.mktemp("llamagen_converted") / "pipe"
    rc = main(["convert", "llamagen", "--tokenizer", str(official["vq_path"]), "--generator",
               str(official["gpt_path"]), "--preset", "llamagen-b", *_cli_set_args(), "--out", str(out)])
    assert rc == 0
    return out


def test_cli_convert_then_load_reproduces_official(converted_dir, capsys):
    pipe = argen.load(converted_dir)
    assert type(pipe).__name__ == "Pipeline"
    assert pipe.config.generator.prefix_rope == "zero" and pipe.tokenizer.config.resolution == SPEC["image_size"]
    with torch.no_grad():
        ids = pipe.tokenizer.encode(GOLD["images"])
        assert ids.dtype == torch.long and torch.equal(ids, GOLD["vq_ids"])
        torch.testing.assert_close(pipe.tokenizer.decode(GOLD["decode_ids"]), GOLD["decode_images"].clamp(-1, 1),
                                   atol=ATOL, rtol=0)
        loss = pipe.generator.loss(GOLD["tf_ids"], conditioning(pipe.conditioner, GOLD["tf_labels"])).loss
        torch.testing.assert_close(loss, GOLD["tf_loss"], atol=ATOL, rtol=0)
    ids = argen.generate(pipe.generator, pipe.conditioner, GOLD["sample_labels"], cfg=SPEC["cfg"], top_k=1, seed=0)
    assert torch.equal(ids, GOLD["sample_ids_cfg"])
    # the pipeline's own call: same greedy tokens, decoded and clamped
    images = pipe(GOLD["sample_labels"], cfg=SPEC["cfg"], top_k=1, seed=0)
    torch.testing.assert_close(images, GOLD["sample_images_cfg"].clamp(-1, 1), atol=ATOL, rtol=0)
    assert pipe.config.sampling.cfg == 4.0 and pipe.config.sampling.top_k == 2000  # the official demo's defaults


def test_cli_convert_prints_report(official, tmp_path, capsys):
    from argen.cli import main

    rc = main(["convert", "llamagen", "--tokenizer", str(official["vq_path"]), "--generator",
               str(official["gpt_path"]), *_cli_set_args(), "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dropped non-state entries: quantize.codebook_used" in out
    assert "all keys and shapes matched" in out and f"wrote {tmp_path / 'p'}" in out


def test_cli_convert_errors_are_one_line(official, tmp_path, capsys):
    from argen.cli import main

    bad = tmp_path / "bad.pt"
    bad.write_bytes(official["gpt_path"].read_bytes()[:1000])
    rc = main(["convert", "llamagen", "--tokenizer", str(official["vq_path"]), "--generator", str(bad),
               *_cli_set_args(), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 1 and "bad.pt cannot be read" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "p").exists()  # nothing written on failure
    rc = main(["convert", "llamagen", "--tokenizer", str(official["vq_path"]), "--generator",
               str(official["gpt_path"]), "--out", str(tmp_path / "p")])  # default preset llamagen-b: wrong size
    assert rc == 1 and "dim 64 in the file vs 768 in the config" in capsys.readouterr().err


def test_cli_convert_lists_sources(capsys):
    from argen.cli import main
    from argen.cli.convert import SOURCES

    assert "llamagen" in SOURCES
    assert main(["convert"]) == 1
    assert "argen convert {" in capsys.readouterr().err
