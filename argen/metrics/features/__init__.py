"""Feature networks for distribution metrics, behind one contract (`FeatureNet`, see base.py).

Registered names (`feature_net_names()`): 'inception-v3-compat' (alias 'inception', TF-Inception pool3,
labelled FID/KID) and 'lenet-fmnist' (a small CNN argen trains on Fashion-MNIST, labelled FD_lenet-fmnist).
contrastive.py holds argen's own CLIP-style text-image model (registered kind 'contrastive-text-image', e.g.
'align-minilm-emoji'), used by `argen.metrics.alignment` for scores labelled TIS_<name>; it is not a feature
network of the distribution metrics.
"""
from .base import (DEFAULT_CACHE_DIR, FeatureNet, describe_feature_nets, feature_net_names, file_sha256,
                   load_feature_net, register_feature_net, resize_bilinear_tf1, state_dict_sha256)
from .contrastive import (ContrastiveConfig, ContrastiveTextImage, default_contrastive_dir, encode_captions,
                          load_contrastive, save_contrastive, train_contrastive)
from .inception import InceptionConfig, InceptionV3Features, convert_fid_helper_weights, load_inception
from .lenet import LeNetConfig, LeNetFeatures, load_lenet, save_lenet, train_lenet

__all__ = ["DEFAULT_CACHE_DIR", "FeatureNet", "describe_feature_nets", "feature_net_names", "file_sha256",
           "load_feature_net", "register_feature_net", "resize_bilinear_tf1", "state_dict_sha256",
           "InceptionConfig", "InceptionV3Features", "convert_fid_helper_weights", "load_inception",
           "LeNetConfig", "LeNetFeatures", "load_lenet", "save_lenet", "train_lenet",
           "ContrastiveConfig", "ContrastiveTextImage", "default_contrastive_dir", "encode_captions",
           "load_contrastive", "save_contrastive", "train_contrastive"]
