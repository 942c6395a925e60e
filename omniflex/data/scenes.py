"""64x64 scenes of coloured shapes with exact ground truth, their captions and questions.

Shapes sit in a 3x3 grid of cells (top/middle/bottom x left/centre/right) so that positions have
exact names and shapes never overlap. Some (colour, kind) pairs appear only in held-out scenes:
evaluation then asks about combinations the model never saw.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from omniflex.data.shapes import ShapeSpec, render_shapes

__all__ = ["Scene", "SceneObject", "is_held_out_pair", "render_scene", "sample_scene"]

ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
SIZES = {"small": 0.10, "large": 0.15}  # radius as a fraction of the image side
# Kinds used in scenes: the ones whose names read naturally in captions.
SCENE_KINDS = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "diamond")
SCENE_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white")


def is_held_out_pair(colour: str, kind: str) -> bool:
    """About one (colour, kind) pair in seven never appears in training scenes."""
    return zlib.crc32(f"{colour}/{kind}".encode()) % 7 == 0


@dataclass(frozen=True)
class SceneObject:
    kind: str
    colour: str
    size: str  # "small" | "large"
    row: str
    col: str

    @property
    def position(self) -> str:
        if self.row == "middle" and self.col == "centre":
            return "in the centre"
        if self.row == "middle":
            return f"on the {self.col}"
        if self.col == "centre":
            return f"at the {self.row}"
        return f"at the {self.row} {self.col}"

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind} {self.position}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    seed: int

    def caption(self) -> str:
        parts = [o.phrase() for o in self.objects]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body[0].upper()}{body[1:]}."

    def brief(self) -> str:
        """The objects by colour and kind only ("A red circle and a blue square."): how people
        ask for a drawing, leaving size and place to the artist."""
        parts = [f"a {o.colour} {o.kind}" for o in self.objects]
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{body[0].upper()}{body[1:]}."

    def count(self, colour: str | None = None, kind: str | None = None) -> int:
        return sum(
            1
            for o in self.objects
            if (colour is None or o.colour == colour) and (kind is None or o.kind == kind)
        )


def sample_scene(rng: np.random.Generator, held_out: bool, max_objects: int = 4) -> Scene:
    """A random scene; ``held_out`` scenes contain at least one held-out pair, others none."""
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.permutation(9)[:n]
    pairs = [(c, k) for c in SCENE_COLOURS for k in SCENE_KINDS]
    seen = [p for p in pairs if not is_held_out_pair(*p)]
    unseen = [p for p in pairs if is_held_out_pair(*p)]
    objects = []
    for i, cell in enumerate(cells):
        pool = unseen if held_out and i == 0 else seen
        colour, kind = pool[int(rng.integers(len(pool)))]
        size = "small" if rng.random() < 0.5 else "large"
        objects.append(SceneObject(kind, colour, size, ROWS[cell // 3], COLS[cell % 3]))
    return Scene(tuple(objects), int(rng.integers(2**31)))


def render_scene(scene: Scene, size: int = 64, plain: bool = False) -> np.ndarray:
    """(size, size, 3) uint8; ``plain``: a flat background and flat shapes."""
    cell = size / 3
    specs = []
    rng = np.random.default_rng(scene.seed)
    for o in scene.objects:
        r, c = ROWS.index(o.row), COLS.index(o.col)
        jitter = rng.uniform(-0.08, 0.08, 2) * cell
        specs.append(
            ShapeSpec(
                o.kind,
                o.colour,
                (c + 0.5) * cell + jitter[0],
                (r + 0.5) * cell + jitter[1],
                SIZES[o.size] * size,
                float(rng.uniform(0, 360)),
            )
        )
    return render_shapes(specs, size=size, seed=scene.seed, plain=plain)
