"""Small synthetic inputs shared by several test modules."""
import numpy as np
import torch


def clustered(n_classes=6, per_class=40, dim=8, seed=0, test_per_class=10):
    """Well-separated Gaussian clusters: (train x, train y, test x, test y, a class-mean covariance)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    y = rng.permutation(np.repeat(np.arange(n_classes), per_class))
    yte = np.repeat(np.arange(n_classes), test_per_class)

    def draw(lab):
        return torch.tensor(centres[lab] + rng.normal(size=(len(lab), dim)), dtype=torch.float32)

    return draw(y), y, draw(yte), yte, np.cov(centres, rowvar=False) + 0.1 * np.eye(dim)
