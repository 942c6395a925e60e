import numpy as np
import pytest

from omniflex.data import SHAPE_KINDS, ShapeSpec, make_shapes_classification, render_shapes


def test_classification_set_is_deterministic_and_sliceable():
    x, y = make_shapes_classification(20, seed=3)
    x2, y2 = make_shapes_classification(20, seed=3)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    tail, tail_y = make_shapes_classification(5, seed=3, start=15)
    assert np.array_equal(tail, x[15:]) and np.array_equal(tail_y, y[15:])
    other, _ = make_shapes_classification(20, seed=4)
    assert not np.array_equal(other, x)


def test_labels_cover_all_classes_and_images_show_the_shape():
    _, y = make_shapes_classification(300, seed=0)
    assert set(y.tolist()) == set(range(len(SHAPE_KINDS)))
    spec = ShapeSpec("square", "red", 16, 16, 8)
    img = render_shapes([spec], size=32, seed=1).astype(int)
    centre, corner = img[16, 16], img[1, 1]
    assert centre[0] > 150 and centre[0] > centre[1] + 60  # red where the square is
    assert abs(int(corner[0]) - int(centre[0])) > 60  # background differs


def test_bad_specs_name_the_field():
    with pytest.raises(ValueError, match="kind"):
        ShapeSpec("blob", "red", 1, 1, 1)
    with pytest.raises(ValueError, match="colour"):
        ShapeSpec("circle", "mauve", 1, 1, 1)
    with pytest.raises(ValueError, match="radius"):
        ShapeSpec("circle", "red", 1, 1, 0)
