"""Vectorised renderer of the synthetic world's images (numpy, float32, whole batches at once).

An image is a background (grey level, gradient, tint), a few clutter blobs, and one object: a
*shape* (signed distance field in the object's own frame) filled with a two-colour *pattern*
(also in the object's frame, so it turns with the object) in the colours of a *palette*, then
luminance noise. Object frame: ``(u, v) = R(-angle) (x - centre) / radius``; the shape's edge is
where its signed distance ``sdf(u, v)`` crosses 0, anti-aliased over one pixel as
``alpha = clip(0.5 - sdf * radius_px, 0, 1)``.

The per-image nuisance (centre, radius, angle, colour jitter, background, clutter, noise) comes
in as arrays drawn by the caller (:mod:`mepo_lab.data.synthetic`), so rendering is deterministic.

Styles (the lab's ImageNet → ImageNet-R: same classes, other renditions; ``world.shift`` picks one for
the downstream classes only): ``photo`` (the above), ``sketch`` (light paper, the shape's outline in the
primary colour, the pattern's marks in the secondary colour with primary-coloured edges),
``invert`` (``1 - rgb`` of the photo) and ``clutter`` (the photo with more, bigger blobs and stronger
noise; those extra draws come in the nuisance).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("disk", "ring", "square", "triangle", "cross", "star", "bar", "crescent")
PATTERNS = ("solid", "stripes", "checker", "dots", "rings", "split")
# (name, primary colour, secondary colour); primaries are distinct so "solid" keeps palettes apart.
PALETTES = (
    ("red/yellow", (0.90, 0.12, 0.10), (0.98, 0.85, 0.15)),
    ("green/white", (0.10, 0.70, 0.20), (0.95, 0.95, 0.95)),
    ("blue/orange", (0.12, 0.25, 0.90), (1.00, 0.55, 0.05)),
    ("yellow/purple", (0.95, 0.90, 0.10), (0.45, 0.10, 0.60)),
    ("cyan/red", (0.10, 0.85, 0.90), (0.85, 0.05, 0.10)),
    ("magenta/green", (0.90, 0.10, 0.80), (0.20, 0.80, 0.25)),
    ("orange/blue", (1.00, 0.50, 0.05), (0.05, 0.15, 0.65)),
    ("black/cyan", (0.05, 0.05, 0.05), (0.20, 0.90, 0.95)),
)
_COLORS = np.asarray([[p[1], p[2]] for p in PALETTES], dtype=np.float32)  # (palettes, 2, 3)
N_CLUTTER = 4
SHIFTS = ("none", "sketch", "invert", "clutter")  # values of WorldConfig.shift
STYLES = ("photo", "sketch", "invert", "clutter")  # render styles; shift "none" renders "photo"


def check_shift(shift: str) -> str:
    """``shift`` itself if it is one of :data:`SHIFTS`; otherwise one ``ValueError`` naming them."""
    if shift not in SHIFTS:
        raise ValueError(f"world.shift must be one of {', '.join(SHIFTS)}, got {shift!r}")
    return shift


def shift_style(shift: str) -> str:
    """The render style of a world shift: ``"photo"`` for ``"none"``, else the shift's own name."""
    return "photo" if check_shift(shift) == "none" else shift


@dataclass
class Nuisance:
    """Per-image nuisance parameters, each an array over the batch (sizes ``B`` or ``(B, k)``)."""

    cx: np.ndarray  # object centre, pixels
    cy: np.ndarray
    radius: np.ndarray  # object radius, pixels
    angle: np.ndarray  # radians
    brightness: np.ndarray  # (B,) multiplies the palette
    color_shift: np.ndarray  # (B, 3) added to the palette
    bg_level: np.ndarray  # (B,)
    bg_tint: np.ndarray  # (B, 3)
    bg_grad: np.ndarray  # (B, 2) gradient per pixel along x and y
    clutter_xy: np.ndarray  # (B, N_CLUTTER, 2) pixels
    clutter_r: np.ndarray  # (B, N_CLUTTER) pixels
    clutter_rgb: np.ndarray  # (B, N_CLUTTER, 3)
    noise_sigma: np.ndarray  # (B,)
    noise: np.ndarray  # (B, H, W) standard normal, luminance only


def shape_sdf(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (object units, negative inside) of shape ``SHAPES[kind]`` at ``(u, v)``."""
    name = SHAPES[kind]
    if name in ("disk", "ring", "star", "crescent"):
        r = np.hypot(u, v)
    if name == "disk":
        return r - 0.9
    if name == "ring":
        return np.abs(r - 0.68) - 0.3
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.78
    if name == "triangle":  # three half-planes with outward normals at -90, 30 and 150 degrees
        k = np.float32(np.sqrt(3.0) / 2.0)
        return np.maximum(np.maximum(-v, k * u + 0.5 * v), -k * u + 0.5 * v) - 0.5
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - 0.95, av - 0.3), np.maximum(au - 0.3, av - 0.95))
    if name == "star":  # five spikes: the radius oscillates between 0.45 and 1.0 with the angle
        phase = (np.arctan2(v, u) * (5.0 / (2.0 * np.pi))) % 1.0
        return (r - (0.45 + 1.1 * np.abs(phase - 0.5))) * 0.6
    if name == "bar":
        return np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.3)
    if name == "crescent":
        return np.maximum(r - 0.95, 0.72 - np.hypot(u - 0.5, v))
    raise ValueError(f"unknown shape index {kind}: valid indices are 0..{len(SHAPES) - 1}")


def pattern_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where pattern ``PATTERNS[kind]`` shows its secondary colour (float 0/1)."""
    name = PATTERNS[kind]
    if name == "solid":
        out = np.zeros_like(u)
    elif name == "stripes":
        out = np.sin(np.pi * 3.0 * u) > 0
    elif name == "checker":
        out = np.sin(np.pi * 2.4 * u) * np.sin(np.pi * 2.4 * v) > 0
    elif name == "dots":
        fu, fv = (u * 2.4) % 1.0 - 0.5, (v * 2.4) % 1.0 - 0.5
        out = fu * fu + fv * fv < 0.08
    elif name == "rings":
        out = np.sin(np.pi * 3.4 * np.hypot(u, v)) > 0
    elif name == "split":
        out = u > 0
    else:
        raise ValueError(f"unknown pattern index {kind}: valid indices are 0..{len(PATTERNS) - 1}")
    return out.astype(np.float32)


def _grouped(fn, kinds: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Apply ``fn(kind, u, v)`` to each group of images sharing a kind; returns (B, H, W)."""
    out = np.empty_like(u)
    for kind in np.unique(kinds):
        sel = kinds == kind
        out[sel] = fn(int(kind), u[sel], v[sel])
    return out


def render(shape: np.ndarray, pattern: np.ndarray, palette: np.ndarray, nz: Nuisance,
           size: int, style: str = "photo") -> np.ndarray:
    """Render a batch to uint8 images of shape ``(B, 3, size, size)``.

    ``shape``, ``pattern``, ``palette`` are integer factor indices (one per image); ``nz`` holds the
    nuisance; ``style`` is one of :data:`STYLES` (module docstring). Cost is O(B · size²) with a small
    constant; no Python loop over images.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    grid = np.arange(size, dtype=np.float32) + 0.5
    dx = grid[None, None, :] - nz.cx[:, None, None]
    dy = grid[None, :, None] - nz.cy[:, None, None]
    cos, sin = np.cos(nz.angle)[:, None, None], np.sin(nz.angle)[:, None, None]
    rad = nz.radius[:, None, None]
    u, v = (cos * dx + sin * dy) / rad, (-sin * dx + cos * dy) / rad
    sdf = _grouped(shape_sdf, shape, u, v) * rad  # pixels, negative inside
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)[:, None]
    mix = _grouped(pattern_mask, pattern, u, v)[:, None]
    colors = _COLORS[palette] * nz.brightness[:, None, None] + nz.color_shift[:, None, :]
    c0, c1 = colors[:, 0, :, None, None], colors[:, 1, :, None, None]
    if style == "sketch":
        img = _sketch(nz, dx, dy, sdf[:, None], alpha, mix, c0, c1)
    else:
        pad = _PAD if style != "clutter" else max(_PAD, int(np.ceil(nz.clutter_r.max(initial=0.0))) + 2)
        img = _background(nz, dx, dy, size, pad)
        img += alpha * (c0 + mix * (c1 - c0) - img)
        img += (nz.noise_sigma[:, None, None] * nz.noise)[:, None]
    np.clip(img, 0.0, 1.0, out=img)
    if style == "invert":
        img = 1.0 - img
    return (img * 255.0 + 0.5).astype(np.uint8)


def _sketch(nz: Nuisance, dx: np.ndarray, dy: np.ndarray, sdf: np.ndarray, alpha: np.ndarray, mix: np.ndarray,
            c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """The ``sketch`` style before clipping, (B, 3, H, W): light paper (level 0.88-0.99, a third of the photo's
    gradient and tint, no clutter), the pattern's marks filled with ``c1`` inside the shape, ink in ``c0`` (the
    outline ``clip(1.25 - |sdf|, 0, 1)``, about 1.5 px wide, and the marks' edges at 0.8), half the noise."""
    level = 0.86 + 0.15 * nz.bg_level[:, None, None] + (nz.bg_grad[:, 0, None, None] * dx
                                                         + nz.bg_grad[:, 1, None, None] * dy) / 3.0
    img = level[:, None] + nz.bg_tint[:, :, None, None] / 3.0
    img += alpha * mix * (c1 - img)
    ink = np.maximum(np.clip(1.25 - np.abs(sdf), 0.0, 1.0), 0.8 * alpha * _edges(mix))
    img += ink * (c0 - img)
    img += (0.5 * nz.noise_sigma[:, None, None] * nz.noise)[:, None]
    return img


def _edges(mask: np.ndarray) -> np.ndarray:
    """1 on the pixels of a 0/1 mask ``(..., H, W)`` that differ from their left or upper neighbour, else 0."""
    out = np.zeros_like(mask)
    out[..., :, 1:] = mask[..., :, 1:] != mask[..., :, :-1]
    out[..., 1:, :] = np.maximum(out[..., 1:, :], mask[..., 1:, :] != mask[..., :-1, :])
    return out


_PAD = 4  # photo clutter blobs have radius < _PAD - 1 pixels


def _background(nz: Nuisance, dx: np.ndarray, dy: np.ndarray, size: int, pad: int = _PAD) -> np.ndarray:
    """Grey level + linear gradient + tint, then clutter blobs of radius < ``pad - 1``; returns (B, 3, H, W).

    Each blob only touches a (2·pad)² window around its centre, so it is composited there alone,
    on a canvas padded by ``pad`` pixels (windows never leave the canvas, indices never repeat).
    """
    level = nz.bg_level[:, None, None] + nz.bg_grad[:, 0, None, None] * dx + nz.bg_grad[:, 1, None, None] * dy
    canvas = np.zeros((len(level), size + 2 * pad, size + 2 * pad, 3), np.float32)
    inner = canvas[:, pad:-pad, pad:-pad]
    inner[...] = level[..., None] + nz.bg_tint[:, None, None, :]
    offsets = np.arange(-pad + 1, pad + 1)
    batch = np.arange(len(level))[:, None, None]
    for k in range(nz.clutter_r.shape[1]):
        x, y = nz.clutter_xy[:, k, 0], nz.clutter_xy[:, k, 1]
        ix = np.floor(x).astype(np.int64)[:, None] + offsets  # (B, w) pixel columns
        iy = np.floor(y).astype(np.int64)[:, None] + offsets
        dist = np.hypot((ix + 0.5 - x[:, None])[:, None, :], (iy + 0.5 - y[:, None])[:, :, None])
        a = np.clip(nz.clutter_r[:, k, None, None] - dist + 0.5, 0.0, 1.0)[..., None]
        rows, cols = iy[:, :, None] + pad, ix[:, None, :] + pad
        patch = canvas[batch, rows, cols]
        canvas[batch, rows, cols] = patch + a * (nz.clutter_rgb[:, k, None, None, :] - patch)
    return np.ascontiguousarray(inner.transpose(0, 3, 1, 2))
