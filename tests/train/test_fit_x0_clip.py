"""The trainer bounds a diffusion head's predicted token by the training tokens' range (train/recipes.py
`fit_x0_clip`): set only where unset, kept where the user gave one, nothing for other generators."""
from types import SimpleNamespace

import pytest

from argen.presets import get_config
from argen.train.recipes import fit_x0_clip

LATENTS = SimpleNamespace(abs_max=3.14159265)  # what TokenCacheDataset / TokenShards report


@pytest.mark.parametrize("preset", ["fmnist-mar-tiny", "fmnist-ar-diffusion-tiny"])
def test_an_unset_bound_is_fitted_to_the_tokens(preset):
    cfg = get_config(preset)
    assert cfg.generator.head.x0_clip is None
    fitted, changes = fit_x0_clip(cfg, LATENTS)
    assert fitted.generator.head.x0_clip == 3.14159 and changes == {"generator.head.x0_clip": 3.14159}
    assert fitted.generator.replace(head=cfg.generator.head) == cfg.generator  # nothing else changed


@pytest.mark.parametrize("given", [0.0, 7.5])
def test_a_given_bound_is_kept(given):
    cfg = get_config("fmnist-mar-tiny")
    cfg = cfg.replace(generator=cfg.generator.replace(head=cfg.generator.head.replace(x0_clip=given)))
    assert fit_x0_clip(cfg, LATENTS) == (cfg, {})


def test_nothing_changes_without_a_head_or_a_known_range():
    raster = get_config("fmnist-raster-tiny")
    assert fit_x0_clip(raster, LATENTS) == (raster, {})
    mar = get_config("fmnist-mar-tiny")
    assert fit_x0_clip(mar, SimpleNamespace(abs_max=None)) == (mar, {})  # e.g. shards of a cache without it
    assert fit_x0_clip(mar, object()) == (mar, {})
