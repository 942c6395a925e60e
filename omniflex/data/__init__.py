"""Synthetic, reproducible data: the generators every experiment and corpus draws from."""

from omniflex.data.shapes import SHAPE_KINDS, ShapeSpec, make_shapes_classification, render_shapes

__all__ = ["SHAPE_KINDS", "ShapeSpec", "make_shapes_classification", "render_shapes"]
