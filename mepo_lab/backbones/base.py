"""What every backbone is: the :class:`Backbone` record, MePo's feature, weight fingerprints, checkpoint IO.

The feature is MePo's: the CLS token after the final LayerNorm, ``forward_features(x)[:, 0]``
(``docs/reference/mepo.md#meta-covariance``), for the micro ViT exactly as for ViT-B/16. Checkpoints use the
released MePo format (``docs/reference/releases.md#checkpoint-format``): a plain head-less timm state dict.
No ViT code is forked here.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mepo_lab import paths


@dataclass
class Backbone:
    """A frozen backbone and what produced it.

    ``kind`` is the name it was built from (``"pretrained"``, ``"random"``, ``"mepo"`` for the micro ViT;
    ``"sup21k"``, ``"local"``, ``"mepo:sup21k"``, ``"mepo-real"``, ... at real scale; see
    :mod:`mepo_lab.registry`), ``weights_hash`` fingerprints its weights (cache keys), ``info`` records
    the details (configs, paths, training log).
    """

    model: torch.nn.Module
    kind: str
    weights_hash: str
    info: dict = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        """Width ``d`` of the CLS feature."""
        return int(self.model.num_features)


def cls_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Post-LayerNorm CLS token ``f = norm(ViT(x))[:, 0]`` of a normalised batch (MePo's feature)."""
    return model.forward_features(x)[:, 0]


def weights_hash(model_or_state: torch.nn.Module | dict, n: int = 16) -> str:
    """SHA-256 fingerprint of a state dict (names, dtypes, shapes and bytes), first ``n`` hex digits."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:n]


def backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The head-less state dict (keys starting with ``head.`` dropped), as MePo releases them."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("head.")}


def save_mepo_backbone(model: torch.nn.Module, path: str | Path) -> Path:
    """Save ``model``'s head-less state dict, the format of the released MePo checkpoints.

    A plain ``OrderedDict`` of tensors (no wrapper, no ``module.`` prefix, keys starting with
    ``head.`` dropped), written atomically with ``torch.save``.
    """
    state = OrderedDict(backbone_state(model))
    return paths.atomic_write(path, lambda h: torch.save(state, h))


def load_mepo_backbone(path: str | Path, arch: str | torch.nn.Module = "vit_base_patch16_224",
                       **timm_kwargs) -> torch.nn.Module:
    """Load a MePo checkpoint into a head-less timm ViT (``arch`` name) or into a given module.

    Keys starting with ``head.`` are dropped, as the reference does; any other missing or unexpected
    key raises one ``ValueError`` that lists them all. With a name, the model is built by
    ``timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no MePo checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if isinstance(arch, str):
        import timm

        arch = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
    expected = {k for k in arch.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {type(arch).__name__}: missing keys {missing or 'none'}; "
                         f"unexpected keys {unexpected or 'none'}. Pass the architecture the checkpoint "
                         "was saved from (arch=... and its timm kwargs)")
    try:
        arch.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: same keys, another architecture
        raise ValueError(f"{path} does not fit {type(arch).__name__}: {err}".split("\n\t")[0]) from None
    return arch.eval()


def weight_distance(model: torch.nn.Module, reference: torch.nn.Module) -> float:
    """``‖φ − φ_ref‖ / ‖φ_ref‖`` over the floating-point tensors of the head-less state dicts (how far a
    refinement moved a backbone, relative to its size)."""
    ref = {k: v.float() for k, v in backbone_state(reference).items() if v.is_floating_point()}
    state = backbone_state(model)
    missing = sorted(set(ref) - set(state))
    if missing:
        raise ValueError(f"the two backbones have different architectures (e.g. {missing[0]!r} is missing)")
    diff = sum(float(((state[k].float() - v) ** 2).sum()) for k, v in ref.items())
    return (diff / sum(float((v ** 2).sum()) for v in ref.values())) ** 0.5


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (all tensors of ``model.parameters()``)."""
    return int(sum(np.prod(p.shape) for p in model.parameters()))
