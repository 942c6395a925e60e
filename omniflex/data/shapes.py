"""Images of coloured, textured shapes with exact ground truth.

Two uses: a CIFAR-like 10-class set of 32x32 images (one shape per image, the class is its kind)
for the Flexpoint experiments, and scenes (several shapes, known kind, colour, size and position)
for captions and questions. Every image is a pure function of ``(seed, index)``: regenerating
gives the same bytes, and any slice can be made without making the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["COLOURS", "SHAPE_KINDS", "ShapeSpec", "make_shapes_classification", "render_shapes"]

SHAPE_KINDS = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "cross",
    "ring",
    "star",
    "hexagon",
    "bar",
    "arrow",
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
    "cyan": (40, 200, 210),
    "white": (235, 235, 235),
}


@dataclass(frozen=True)
class ShapeSpec:
    """One shape: kind, colour name, centre (x, y) and radius in pixels, rotation in degrees."""

    kind: str
    colour: str
    cx: float
    cy: float
    radius: float
    rotation: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"unknown shape kind {self.kind!r}; choose from {SHAPE_KINDS}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; choose from {sorted(COLOURS)}")
        if self.radius <= 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")


def _polygon(n: int, cx: float, cy: float, r: float, rot: float, inner: float | None = None):
    pts = []
    steps = 2 * n if inner is not None else n
    for i in range(steps):
        radius = r if inner is None or i % 2 == 0 else r * inner
        a = math.radians(rot) + 2 * math.pi * i / steps - math.pi / 2
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


def _rotated(points: list[tuple[float, float]], cx: float, cy: float, rot: float):
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw(draw: ImageDraw.ImageDraw, spec: ShapeSpec, fill: int = 255) -> None:
    cx, cy, r, rot = spec.cx, spec.cy, spec.radius, spec.rotation
    box = (cx - r, cy - r, cx + r, cy + r)
    k = spec.kind
    if k == "circle":
        draw.ellipse(box, fill=fill)
    elif k == "ring":
        draw.ellipse(box, fill=fill)
        inner = r * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif k == "square":
        draw.polygon(_polygon(4, cx, cy, r * 1.2, rot + 45), fill=fill)
    elif k == "diamond":
        draw.polygon(
            _rotated(
                [(cx, cy - r), (cx + r * 0.6, cy), (cx, cy + r), (cx - r * 0.6, cy)], cx, cy, rot
            ),
            fill=fill,
        )
    elif k == "triangle":
        draw.polygon(_polygon(3, cx, cy, r * 1.15, rot), fill=fill)
    elif k == "hexagon":
        draw.polygon(_polygon(6, cx, cy, r, rot), fill=fill)
    elif k == "star":
        draw.polygon(_polygon(5, cx, cy, r * 1.15, rot, inner=0.45), fill=fill)
    elif k == "cross":
        w = r * 0.35
        for pts in (
            [(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)],
            [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy + r), (cx - w, cy + r)],
        ):
            draw.polygon(_rotated(pts, cx, cy, rot), fill=fill)
    elif k == "bar":
        w = r * 0.3
        pts = [(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)]
        draw.polygon(_rotated(pts, cx, cy, rot), fill=fill)
    elif k == "arrow":
        w = r * 0.25
        pts = [
            (cx - r, cy - w),
            (cx + r * 0.2, cy - w),
            (cx + r * 0.2, cy - r * 0.7),
            (cx + r, cy),
            (cx + r * 0.2, cy + r * 0.7),
            (cx + r * 0.2, cy + w),
            (cx - r, cy + w),
        ]
        draw.polygon(_rotated(pts, cx, cy, rot), fill=fill)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random field in [0, 1]: a few low-frequency waves plus fine noise. (H, W)"""
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(3):
        fx, fy = rng.uniform(0.5, 4.0, 2)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    return 0.8 * field + 0.2 * rng.random((size, size))


def render_shapes(
    specs: list[ShapeSpec],
    size: int = 64,
    seed: int = 0,
    supersample: int = 4,
    plain: bool = False,
) -> np.ndarray:
    """Render shapes over a textured background, or a flat one with flat shapes and no sensor
    noise (``plain``, as a drawing program would); (size, size, 3) uint8, antialiased."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 110, 3)
    tint = rng.uniform(-40, 40, 3)
    background = base + (0.0 if plain else _texture(rng, size)[..., None] * tint)  # (H, W, 3)
    image = background
    big = size * supersample
    for spec in specs:
        mask_img = Image.new("L", (big, big), 0)
        scaled = ShapeSpec(
            spec.kind,
            spec.colour,
            spec.cx * supersample,
            spec.cy * supersample,
            spec.radius * supersample,
            spec.rotation,
        )
        _draw(ImageDraw.Draw(mask_img), scaled)
        mask_img = mask_img.resize((size, size), Image.Resampling.LANCZOS)
        mask = np.asarray(mask_img.filter(ImageFilter.SMOOTH), dtype=np.float64)[..., None] / 255
        colour = np.array(COLOURS[spec.colour], dtype=np.float64)
        shade = 1.0 if plain else 0.75 + 0.25 * _texture(rng, size)[..., None]  # surface texture
        image = image * (1 - mask) + colour * shade * mask
    noise = 0.0 if plain else rng.normal(0, 4.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def make_shapes_classification(
    n: int, seed: int = 0, size: int = 32, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-like set: ``n`` images of one shape each, the label is the kind (10 classes).

    Colour, size, position, rotation and background vary at random, so colour carries no label
    information. Returns ``(images (n, 3, size, size) uint8, labels (n,) int64)``; image ``i``
    depends only on ``(seed, start + i)``.
    """
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    colours = sorted(COLOURS)
    for i in range(n):
        rng = np.random.default_rng([seed, start + i])
        label = int(rng.integers(len(SHAPE_KINDS)))
        radius = rng.uniform(0.22, 0.38) * size
        margin = radius * 1.1
        spec = ShapeSpec(
            SHAPE_KINDS[label],
            colours[int(rng.integers(len(colours)))],
            float(rng.uniform(margin, size - margin)),
            float(rng.uniform(margin, size - margin)),
            float(radius),
            float(rng.uniform(0, 360)),
        )
        img = render_shapes([spec], size=size, seed=int(rng.integers(2**31)), supersample=4)
        images[i] = img.transpose(2, 0, 1)
        labels[i] = label
    return images, labels
