"""Metrics: the evaluator (FID / KID / precision-recall on pluggable feature networks), PSNR/SSIM,
codebook usage and perplexity, bits per dimension.

    from argen.metrics import evaluate
    result = evaluate(images, reference="fashion-mnist:test", features="inception", n=1000, out="metrics.json")

Numbers from a feature network other than TF-Inception are labelled with its name (FD_lenet-fmnist),
never FID/IS. Inception Score is not available (no Inception logits offline).

Text-image alignment (`alignment.py`): `alignment_score(images, prompts)` with argen's own contrastive model,
labelled TIS_<model> (e.g. TIS_align-minilm-emoji), never CLIPScore; `clip_score(...)` is CLIPScore proper,
through open_clip with local CLIP weights only.
"""
from .alignment import alignment_score, clip_score, retrieval_accuracy, similarity_scores
from .codebook import CodeCounter, codebook_perplexity, codebook_usage
from .evaluator import DatasetSpec, evaluate, write_result
from .features import describe_feature_nets, feature_net_names, load_feature_net
from .frechet import (UnstableMetricWarning, feature_statistics, frechet_distance, kernel_distance,
                      precision_recall)
from .image_quality import psnr, ssim
from .likelihood import bits_per_dim

__all__ = ["alignment_score", "clip_score", "retrieval_accuracy", "similarity_scores", "CodeCounter", "codebook_perplexity", "codebook_usage", "DatasetSpec", "evaluate", "write_result",
           "describe_feature_nets", "feature_net_names", "load_feature_net", "UnstableMetricWarning",
           "feature_statistics", "frechet_distance", "kernel_distance", "precision_recall", "psnr", "ssim",
           "bits_per_dim"]
