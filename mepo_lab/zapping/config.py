"""Presets of the zapping experiment (``mepo-lab zapping --preset smoke|cpu|colab|paper``).

Official values (uvm-neurobotics-lab/reset-it-and-forget-it, ``configs/train-omni-*.yml``,
``configs/eval-*.yml``, ``learning-rates.yml``): Omniglot background split with 15 training images per
character; i.i.d. Adam 1e-3, batch 256, 10 epochs, all rows zapped every epoch when zapping; ASB 9000 and
Meta-ASB 25 000 episodes of 20 single-image SGD steps at 0.1 plus one Adam 1e-3 step on the trajectory and 64
remembered images; continual transfer with Adam over a grid of learning rates, best reported. ``colab`` and
``paper`` use these values (:data:`OFFICIAL`). The ``cpu`` preset keeps the episode structure and scales the
rest to the synthetic world and a 5-minute budget: 50 pretraining classes with 40 images each (a small conv
net overfits 15 of the world's images per class), 16 filters with one-group normalisation (InstanceNorm
erases the colours that tell the world's classes apart), a fifth of the rows zapped per i.i.d. epoch and an
inner learning rate of 0.01 (zapping every row every epoch, or SGD at 0.1, leaves nothing learnt after 10
epochs or 300 episodes here; the README reports both).
``MEPO_LAB_SMOKE=1`` forces ``smoke``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from mepo_lab.config import check_choices, check_subset, smoke_forced

REGIMES = ("iid", "iid_zap", "asb", "asb_zap", "meta", "meta_zap")
OFFICIAL_EVAL_LRS = (0.055, 0.01, 0.0055, 0.001, 7e-4, 4e-4, 1e-4, 7e-5, 4e-5)


@dataclass(frozen=True)
class ZappingConfig:
    """Data, model, the three pretraining regimes and the transfer evaluation of the zapping experiment."""

    name: str = "cpu"
    data: str = "synthetic"  # synthetic (the embedded world as the Omniglot analogue) | omniglot
    world_seed: int = 0
    image_size: int = 28
    n_pretrain_classes: int = 50
    n_transfer_classes: int = 20
    train_per_class: int = 15  # transfer classes (and Omniglot's pretraining classes): the paper's 15
    pretrain_per_class: int = 40  # synthetic world only: its pretraining classes' training images
    test_per_class: int = 5
    model: str = "conv"  # conv (the official small conv net) | vit (the micro ViT)
    conv_blocks: int = 3
    conv_filters: int = 16  # 256 in the paper
    conv_norm: str = "layer"  # instance (official) | layer: the synthetic world's colours survive (models.conv_net)
    # i.i.d. pretraining
    iid_epochs: int = 10
    iid_batch_size: int = 64
    iid_lr: float = 1e-3
    zap_every: int = 1  # epochs between zaps (the official lobo_rate)
    zap_size: int | None = 10  # rows zapped each time; None = every row (official lobo_size = head size)
    official_fan: bool = False  # True: the official std sqrt(2/(k·d)) when k rows are zapped together
    # ASB / Meta-ASB pretraining
    asb_episodes: int = 500
    meta_episodes: int = 250
    n_seq: int = 20
    inner_lr: float = 0.01  # official 0.1: at the cpu preset's 300 episodes ASB then does not learn
    outer_lr: float = 1e-3
    remember: int = 64
    inner_params: str = "all"  # all | head (OML)
    # transfer evaluation
    eval_mode: str = "head"  # head (a fresh head on the frozen body) | all (the whole network)
    eval_lrs: tuple[float, ...] = (3e-3, 1e-3, 3e-4)
    iid_shots: int = 5
    iid_transfer_epochs: int = 20
    iid_transfer_lr: float = 1e-2
    curve_points: int = 10  # held-out accuracy measurements during pretraining
    seeds: tuple[int, ...] = (1, 2, 3)
    regimes: tuple[str, ...] = REGIMES
    device: str = "auto"

    def __post_init__(self) -> None:
        check_subset("regimes", self.regimes, REGIMES)
        if self.asb_episodes < 1 or self.meta_episodes < 1:
            raise ValueError(f"asb_episodes and meta_episodes must be at least 1, got {self.asb_episodes} and "
                             f"{self.meta_episodes}: an episodic regime with zero episodes trains nothing")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed, e.g. --set seeds=1,2,3")
        if self.iid_shots > self.train_per_class:
            raise ValueError(f"iid_shots must be in [1, {self.train_per_class}] (train_per_class), got {self.iid_shots}")
        check_choices(self, _CHOICES)


_CHOICES = {"data": ("synthetic", "omniglot"), "model": ("conv", "vit"), "eval_mode": ("head", "all"),
            "inner_params": ("all", "head"), "conv_norm": ("instance", "layer")}
#: The official values that the cpu preset scales (colab and paper use these).
OFFICIAL = {"conv_filters": 256, "conv_norm": "instance", "zap_size": None, "inner_lr": 0.1}


def _smoke() -> ZappingConfig:
    return ZappingConfig(name="smoke", n_pretrain_classes=12, n_transfer_classes=5, conv_filters=8, zap_size=3,
                         iid_epochs=2, asb_episodes=6, meta_episodes=3, n_seq=4, remember=8,
                         eval_lrs=(1e-2,), iid_transfer_epochs=2, curve_points=2, seeds=(1,))


def _colab() -> ZappingConfig:
    # Omniglot on a GPU: the official model width and 200 transfer characters, a tenth of the episodes.
    return ZappingConfig(name="colab", data="omniglot", n_pretrain_classes=964, n_transfer_classes=200,
                         **OFFICIAL, iid_epochs=10, iid_batch_size=256, asb_episodes=900,
                         meta_episodes=2500, eval_lrs=(1e-3, 7e-4, 4e-4, 1e-4), device="auto")


def _paper() -> ZappingConfig:
    return ZappingConfig(name="paper", data="omniglot", n_pretrain_classes=964, n_transfer_classes=600,
                         **OFFICIAL, iid_epochs=10, iid_batch_size=256, asb_episodes=9000,
                         meta_episodes=25000, eval_lrs=OFFICIAL_EVAL_LRS)


ZAPPING_PRESETS = {"smoke": _smoke, "cpu": ZappingConfig, "colab": _colab, "paper": _paper}


def zapping_preset(name: str = "cpu") -> ZappingConfig:
    """The named zapping preset (``MEPO_LAB_SMOKE=1`` forces ``smoke``); ValueError for unknown names."""
    if name not in ZAPPING_PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(ZAPPING_PRESETS)}")
    cfg = ZAPPING_PRESETS["smoke" if smoke_forced() else name]()
    return replace(cfg, name="smoke") if smoke_forced() else cfg
