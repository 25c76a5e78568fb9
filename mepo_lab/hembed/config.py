"""Presets of the H-embedding experiment (``mepo-lab hembed --preset smoke|cpu|colab|paper``).

Official values (review code of Wu et al., NeurIPS 2025, arXiv 2502.11609: ``cifar/run_resnet.sh``,
``cifar/train_args.py``): Adam at 5e-4, batch 32, 100 epochs per task, task and chunk embeddings of size 32,
chunks of 7000 weights with a linear chunked hypernetwork, HyperCL β = 0.05 with the lookahead, embedding loss
weight ``min(0.05·t, 1)``, H-embedding from 1000 samples of the new task, ``direct`` distances with ε = 0.1,
placement by Adam at 1e-3 for 2000 iterations, a fully generated ResNet-32 on CIFAR-10 followed by ten
10-class CIFAR-100 tasks. ``cpu``: a generated 2-layer head on frozen micro-ViT features, on binary tasks of
the synthetic world with designed similarity (:func:`mepo_lab.hembed.tasks.similarity_tasks`), 3 seeds × 3
methods in minutes on 2 cores; ``colab``/``paper``: the official ResNet-32 setting (20 / 100 epochs per task);
``colab_vit``: a frozen ViT-B/16 (Sup-21K) with a generated rank-4 LoRA on the ``qkv`` of its last 2 blocks and
a generated head (our reading of the final paper's PEFT setting). ``MEPO_LAB_SMOKE=1`` forces ``smoke``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from mepo_lab.backbones.zoo import LOCAL_PREFIX, ZOO
from mepo_lab.config import PRESETS, check_choices, check_subset, smoke_forced

METHODS = ("hnet", "hnet_random_guide", "hnet_hembedding")
GUIDES = {"hnet": "none", "hnet_random_guide": "random", "hnet_hembedding": "hembedding"}  # official --emb_metric


@dataclass(frozen=True)
class HembedConfig:
    """Tasks, frozen backbone, hypernetwork, HyperCL regulariser and the H-embedding guide."""

    name: str = "cpu"
    data: str = "similarity"  # similarity (designed tasks of the world) | cifar (CIFAR-10, then CIFAR-100 splits)
    world_preset: str = "cpu"  # the lab preset whose world and micro ViT are used
    target: str = "mlp"  # mlp (generated head on frozen features) | lora (generated LoRA + head) | resnet32
    backbone: str = "pretrained"  # pretrained | random (the micro ViT) | a backbone zoo name or local:<path> (lora)
    pretrained: bool = True  # zoo backbones only: False = timm's random init (offline timing)
    lora_rank: int = 4
    lora_blocks: int = 1  # the last blocks whose qkv get a generated LoRA
    cifar100_tasks: int = 10  # data=cifar: CIFAR-10 is task 0, then this many 10-class CIFAR-100 tasks
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA; lora only)
    n_per_group: int = 3
    groups: tuple[str, ...] = ("shape", "pattern")
    contrast: str = "shared"  # shared (a group's tasks contrast the same two factor values) | any
    train_per_class: int = 100
    test_per_class: int = 50
    hidden: int = 16  # width of the generated head's hidden layer (narrow: its features stay task-specific)
    temb: int = 32
    cemb: int = 32
    chunk: int = 512
    hnet_hidden: tuple[int, ...] = ()  # () = the review code's linear chunked hypernetwork
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    temb_lr: float | None = None  # the current task embedding's Adam; None = lr (official: one learning rate)
    beta: float = 0.05  # HyperCL output regulariser
    lookahead: bool = True
    emb_beta: float = 0.05  # ramp of the embedding loss: min(emb_beta * t, 1)
    emb_mode: str = "direct"  # direct | reciprocal | ahp (our interpretation, unverified)
    emb_eps: float = 0.1
    emb_iters: int = 2000
    emb_lr: float = 1e-3
    emb_data_size: int = 1000
    dec_mid: int = 0  # 0 = one Linear (official fc_decoder.py); > 0 adds a ReLU hidden layer of that width
    seeds: tuple[int, ...] = (1, 2, 3)
    methods: tuple[str, ...] = METHODS
    device: str = "auto"

    def __post_init__(self) -> None:
        check_subset("methods", self.methods, METHODS)
        for key in ("n_per_group", "train_per_class", "test_per_class", "hidden", "epochs", "batch_size",
                    "emb_data_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.beta < 0 or self.emb_beta < 0 or self.lr <= 0:
            raise ValueError(f"beta and emb_beta must be >= 0 and lr > 0, got {self.beta}, {self.emb_beta}, {self.lr}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed, e.g. --set seeds=1,2,3")
        if self.lora_rank < 1 or self.lora_blocks < 1 or not 1 <= self.cifar100_tasks <= 10:
            raise ValueError(f"lora_rank and lora_blocks must be >= 1 and cifar100_tasks in [1, 10], got "
                             f"{self.lora_rank}, {self.lora_blocks}, {self.cifar100_tasks}")
        micro = self.backbone in ("pretrained", "random")
        if not micro and not (self.backbone in ZOO or self.backbone.startswith(LOCAL_PREFIX)):
            raise ValueError(f"backbone must be pretrained, random (the micro ViT), one of {', '.join(ZOO)} or "
                             f"{LOCAL_PREFIX}<path>, got {self.backbone!r}")
        if self.target == "mlp" and not micro:
            raise ValueError("target='mlp' runs on the micro ViT's features: use backbone=pretrained|random, or "
                             "target=lora for a zoo ViT")
        check_choices(self, _CHOICES)


_CHOICES = {"world_preset": tuple(PRESETS), "data": ("similarity", "cifar"), "target": ("mlp", "lora", "resnet32"),
            "precision": ("fp32", "bf16"),
            "contrast": ("shared", "any"), "emb_mode": ("direct", "reciprocal", "ahp")}


def _smoke() -> HembedConfig:
    return HembedConfig(name="smoke", world_preset="smoke", n_per_group=2, train_per_class=20, test_per_class=10,
                        epochs=2, emb_iters=50, seeds=(1,))


def _colab() -> HembedConfig:
    return HembedConfig(name="colab", data="cifar", target="resnet32", chunk=7000, epochs=20, lr=5e-4, batch_size=32)


def _colab_vit() -> HembedConfig:
    return HembedConfig(name="colab_vit", data="cifar", target="lora", backbone="sup21k", lora_rank=4, lora_blocks=2,
                        precision="bf16", chunk=7000, epochs=3, lr=5e-4, batch_size=32)


def _paper() -> HembedConfig:
    return replace(_colab(), name="paper", epochs=100, seeds=(1, 2, 3, 4, 5))


HEMBED_PRESETS = {"smoke": _smoke, "cpu": HembedConfig, "colab": _colab, "colab_vit": _colab_vit, "paper": _paper}


def hembed_preset(name: str = "cpu") -> HembedConfig:
    """The named H-embedding preset (``MEPO_LAB_SMOKE=1`` forces ``smoke``); ValueError for unknown names."""
    if name not in HEMBED_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(HEMBED_PRESETS)}")
    return HEMBED_PRESETS["smoke" if smoke_forced() else name]()
