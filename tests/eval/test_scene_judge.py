"""Scene judge: ground truth per cell, label-consistent augmentation, shipped accuracy, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omniflex.data.scenes import Scene, SceneObject, render_scene
from omniflex.eval.image_tokenizer_report import image_tokenizer_report
from omniflex.eval.scene_judge import (
    SceneJudge,
    SceneJudgeConfig,
    _dihedral,
    scene_cells,
    train_scene_judge,
)
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from omniflex.tokenizers.image_train import held_out_scenes


@pytest.fixture(scope="module")
def judge() -> SceneJudge:
    return SceneJudge.load()


def test_scene_cells() -> None:
    scene = Scene(
        (
            SceneObject("star", "red", "small", "top", "right"),
            SceneObject("ring", "white", "large", "bottom", "left"),
        ),
        seed=1,
    )
    assert scene_cells(scene) == [None, None, ("star", "red"), *[None] * 3, ("ring", "white"),
                                  None, None]  # fmt: skip


@pytest.mark.parametrize("k", range(8))
def test_views_move_labels_with_pixels(k: int) -> None:
    # Each cell's pixels hold its index: after any view, pixels and labels still agree.
    cell_of_pixel = (torch.arange(63).div(21, rounding_mode="floor")[:, None] * 3
                     + torch.arange(63).div(21, rounding_mode="floor")[None, :])  # fmt: skip
    x = cell_of_pixel.float().expand(1, 3, 63, 63)
    labels = torch.arange(9).view(1, 3, 3)
    x2, kinds, colours = _dihedral(x, labels, labels.clone(), k)
    for r in range(3):
        for c in range(3):
            assert x2[0, 0, 21 * r + 10, 21 * c + 10] == kinds[0, r, c] == colours[0, r, c]


def test_shipped_judge_is_right_on_original_scenes(judge: SceneJudge) -> None:
    scenes = held_out_scenes(24)
    images = np.stack([render_scene(s) for s in scenes])
    assert judge.match_rate(images, scenes) == 1.0
    assert judge.matches(images[0], scenes[0])
    assert not judge.matches(images[0], scenes[1])
    predicted = judge.predict(images[:2])
    assert len(predicted) == 2 and all(len(cells) == 9 for cells in predicted)
    assert judge.metadata["test"]["scene_match_rate"] >= 0.99


def test_judge_rejects_bad_images(judge: SceneJudge) -> None:
    with pytest.raises(ValueError, match="uint8"):
        judge.predict(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(64, 64, 3\)"):
        judge.predict(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="match_rate"):
        judge.matches(np.zeros((2, 64, 64, 3), np.uint8), held_out_scenes(1)[0])
    with pytest.raises(ValueError, match="2 images but 1 scenes"):
        judge.match_rate(np.zeros((2, 64, 64, 3), np.uint8), held_out_scenes(1))


def test_train_save_load(tmp_path) -> None:
    tiny = SceneJudgeConfig(channels=(4, 8, 8), hidden=8)
    judge = train_scene_judge(
        tmp_path, config=tiny, n_scenes=8, steps=3, batch_size=4, test_scenes=held_out_scenes(2),
        progress=False,
    )  # fmt: skip
    loaded = SceneJudge.load(tmp_path)
    assert loaded.metadata == judge.metadata and loaded.config == tiny
    images = np.stack([render_scene(s) for s in held_out_scenes(3)])
    assert loaded.predict(images) == judge.predict(images)
    with pytest.raises(FileNotFoundError, match="train_scene_judge"):
        SceneJudge.load(tmp_path / "missing")


def test_report_is_json(judge: SceneJudge) -> None:
    tok = ImageTokenizer(ImageTokenizerConfig.from_name("tiny")).eval()
    report = image_tokenizer_report(tok, judge, n_scenes=3, n_digits=2)
    json.dumps(report)
    assert report["tokens_per_image"] == 256 and report["judge_match_rate_originals"] == 1.0
    for key in ("psnr_scenes_db", "psnr_digits_db", "judge_match_rate_reconstructions",
                "encode_ms_per_image", "decode_ms_per_image"):  # fmt: skip
        assert isinstance(report[key], float)
