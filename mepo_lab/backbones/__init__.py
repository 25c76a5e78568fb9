"""Backbones: what a backbone is (``base``), the micro ViT (``micro_vit``) and its cached pretraining
(``pretrain``), tagged timm ViT-B/16s (``zoo``) through the Hugging Face cache (``hf_cache``), cached
features (``features``) and offline linear probing (``probe``).

The checkpoint IO of the released MePo format is importable from here (a documented place)::

    from mepo_lab.backbones.base import save_mepo_backbone, load_mepo_backbone

Backbones *by name* (``"pretrained"``, ``"sup21k"``, ``"mepo:sup21k"``, ...) are resolved once, in
:mod:`mepo_lab.registry`.
"""
from __future__ import annotations

from mepo_lab.backbones.base import (
                                     Backbone,
                                     backbone_state,
                                     cls_features,
                                     count_parameters,
                                     load_mepo_backbone,
                                     save_mepo_backbone,
                                     weights_hash,
)
from mepo_lab.backbones.micro_vit import create_micro_vit

__all__ = ["Backbone", "backbone_state", "cls_features", "count_parameters", "create_micro_vit",
           "load_mepo_backbone", "save_mepo_backbone", "weight_distance", "weights_hash"]
