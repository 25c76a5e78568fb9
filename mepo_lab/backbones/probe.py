"""Offline linear probing: how linearly separable are a backbone's features?

The standard representation-quality check (e.g. DINO, MAE): freeze the backbone, fit a multinomial
logistic regression ``softmax(W f + b)`` on standardised training features, report test accuracy.
It is *not* a continual-learning result (all data at once, many passes); the lab uses it to show that
pretraining on the synthetic world's pretraining classes transfers to its downstream classes.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 weight_decay: float = 1e-4, max_iter: int = 200, seed: int = 0) -> float:
    """Test accuracy of an L2-regularised softmax regression fitted with full-batch L-BFGS.

    Minimises ``mean_i CE(W z_i + b, y_i) + weight_decay · ||W||²`` with ``z = (f − μ) / σ``
    (μ, σ from the training features).
    """
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels must have the same length")
    xtr = torch.as_tensor(np.asarray(train_x, np.float32))
    xte = torch.as_tensor(np.asarray(test_x, np.float32))
    mu, sigma = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sigma, (xte - mu) / sigma
    ytr = torch.as_tensor(np.asarray(train_y, np.int64))
    n_classes = int(max(ytr.max().item(), int(np.max(test_y))) + 1)
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(xtr.shape[1], n_classes, generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, ytr) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xte @ weight + bias).argmax(1).numpy()
    return float((pred == np.asarray(test_y)).mean())
