"""The omni corpus: determinism, held-out splits, decodable media, loader resume, adapters."""

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from omniflex.common.voices import (
    HELD_OUT_VOICES,
    INPUT_VOICES,
    PRESET_VOICES,
    TEST_VOICES,
    VAL_VOICES,
)
from omniflex.data import build as build_mod
from omniflex.data.adapters import convert_dataset
from omniflex.data.build import build_corpus
from omniflex.data.loader import CorpusLoader
from omniflex.data.scenes import is_held_out_pair
from omniflex.data.shards import CorruptShardError, ShardWriter, read_shard
from omniflex.data.speech import EspeakMissingError
from omniflex.data.tasks import TASKS
from omniflex.data.templates import TEMPLATES, template_ids
from omniflex.media import read_audio, read_image, read_video

MICRO = {t: 3 for t in build_mod.SIZES["tiny"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    build_mod.SIZES["micro"] = MICRO
    out = tmp_path_factory.mktemp("corpus")
    build_corpus("micro", out, seed=0, workers=1, progress=False)
    return out


def samples(root: Path, split: str):
    for shard in sorted(root.glob(f"{split}-*.tar")):
        yield from read_shard(shard)


def test_same_seed_same_bytes_whatever_the_workers(corpus, tmp_path):
    build_mod.SIZES["micro"] = MICRO
    build_corpus("micro", tmp_path, seed=0, workers=2, progress=False)
    for shard in sorted(corpus.glob("*.tar")):
        assert shard.read_bytes() == (tmp_path / shard.name).read_bytes(), shard.name
    card = (corpus / "data_card.json").read_text()
    assert '"speech_hours"' in card and (corpus / "data_card.md").exists()


def test_every_referenced_file_exists_and_decodes(corpus):
    seen_tasks = set()
    for split in ("train", "val", "test"):
        for s in samples(corpus, split):
            seen_tasks.add(s.conversation["task"])
            for message in s.conversation["messages"]:
                for part in message["content"]:
                    if "file" not in part:
                        continue
                    data = s.file(part["file"])
                    if part["type"] == "audio":
                        assert len(read_audio(data)) > 1600
                        assert part["seconds"] == pytest.approx(
                            len(read_audio(data)) / 16000, abs=1e-3
                        )
                    elif part["type"] == "image":
                        side = part.get("size", 64)
                        assert read_image(data).shape == (side, side, 3)
                    elif part["type"] == "video":
                        frames, audio, _ = read_video(data)
                        assert frames.shape[1:] == (64, 64, 3) and audio is not None
                        # the clip holds its whole narration
                        assert len(audio) / 16000 >= part["seconds"] - 0.15
    assert seen_tasks == set(TASKS)


def _parts(conv, role):
    return [p for m in conv["messages"] if m["role"] == role for p in m["content"]]


def test_held_out_voices_templates_and_scenes_never_reach_training(corpus):
    held = {v.name for v in HELD_OUT_VOICES}
    for split in ("train", "val", "test"):
        for s in samples(corpus, split):
            conv = s.conversation
            user_voices = {p["voice"] for p in _parts(conv, "user") if p.get("voice")}
            out_voices = {p["voice"] for p in _parts(conv, "assistant") if p.get("voice")}
            assert out_voices <= {v.name for v in PRESET_VOICES}
            if split == "train":
                assert not user_voices & held
                assert user_voices <= {v.name for v in INPUT_VOICES}
            else:
                assert user_voices <= {
                    v.name for v in (VAL_VOICES if split == "val" else TEST_VOICES)
                }
            objects = [
                o for m in conv["messages"] for p in m["content"] for o in p.get("objects", [])
            ]
            pairs = [is_held_out_pair(o["colour"], o["kind"]) for o in objects]
            if split == "train":
                assert not any(pairs)
            if split == "test" and conv["task"] in ("caption", "vqa", "text_to_image"):
                assert any(pairs)
    # Template hold-out: the test template's text never appears in training samples.
    train_texts = {
        p.get("text", "") for s in samples(corpus, "train") for m in s.conversation["messages"]
        for p in m["content"]
    }  # fmt: skip
    for task in ("asr", "caption", "digit", "speaker_id"):
        test_template = TEMPLATES[task][template_ids(task, "test")[0]]
        assert test_template not in train_texts


def test_loader_shuffles_and_resumes_at_the_exact_sample(corpus):
    loader = CorpusLoader(corpus, "train", seed=3, buffer=8, epochs=1)
    keys = [s.key for s in loader]
    assert sorted(keys) == sorted(s.key for s in samples(corpus, "train"))
    assert keys != [s.key for s in samples(corpus, "train")]  # shuffled
    first = CorpusLoader(corpus, "train", seed=3, buffer=8, epochs=1)
    it = iter(first)
    head = [next(it).key for _ in range(10)]
    resumed = CorpusLoader(corpus, "train", seed=3, buffer=8, epochs=1)
    resumed.load_state_dict(first.state_dict())
    assert head + [s.key for s in resumed] == keys


def test_webdataset_package_reads_the_shards(corpus):
    import webdataset as wds

    shard = str(sorted(corpus.glob("train-*.tar"))[0])
    got = list(wds.WebDataset(shard, shardshuffle=False))
    assert got and "json" in got[0] and got[0]["__key__"].startswith("train_")


def test_corrupt_inputs_give_named_errors(corpus, tmp_path):
    shard = sorted(corpus.glob("train-*.tar"))[0]
    truncated = tmp_path / "train-00000.tar"
    truncated.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    with pytest.raises(CorruptShardError, match=r"train-00000\.tar"):
        list(read_shard(truncated))
    missing = tmp_path / "missing.tar"
    conv = {"messages": [{"role": "user", "content": [{"type": "audio", "file": "user.wav"}]}]}
    with pytest.raises(CorruptShardError, match=r"user\.wav"), ShardWriter(missing) as w:
        w.write("k1", conv, {})
    assert not missing.exists()  # nothing half-written is left behind
    with tarfile.open(tmp_path / "bad-00000.tar", "w") as tar:
        info = tarfile.TarInfo("k2.json")
        data = (
            b'{"messages": [{"role": "user", "content": [{"type": "image", "file": "image.png"}]}]}'
        )
        info.size = len(data)
        import io

        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(CorruptShardError, match=r"k2 .*image\.png"):
        list(read_shard(tmp_path / "bad-00000.tar"))
    with pytest.raises(FileNotFoundError, match="omniflex data build"):
        CorpusLoader(tmp_path / "empty-dir-does-not-exist")


def test_missing_espeak_says_how_to_install(monkeypatch):
    from omniflex.data import speech

    speech._espeak.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(EspeakMissingError, match="apt-get install espeak-ng"):
        speech._espeak()
    speech._espeak.cache_clear()


def _tone(seconds=0.5, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_librispeech_and_ljspeech_round_trip(tmp_path):
    chapter = tmp_path / "libri" / "19" / "198"
    chapter.mkdir(parents=True)
    sf.write(chapter / "19-198-0000.flac", _tone(), 16000)
    sf.write(chapter / "19-198-0001.flac", _tone(0.3), 16000)
    (chapter / "19-198-0002.flac").write_bytes(b"not audio")
    (chapter / "19-198.trans.txt").write_text(
        "19-198-0000 HELLO WORLD\n19-198-0001 GOOD MORNING\n19-198-0002 BROKEN FILE\n"
    )
    report = convert_dataset("librispeech", tmp_path / "libri", tmp_path / "out")
    assert report.converted == 2 and len(report.skipped) == 1 and "19-198-0002" in report.skipped[0]
    got = list(read_shard(report.shards[0]))
    assert got[0].conversation["messages"][1]["content"][0]["text"] == "hello world"
    assert np.allclose(read_audio(got[0].file("user.wav")), _tone(), atol=1e-3)
    with pytest.raises(Exception, match="19-198-0002"):
        convert_dataset("librispeech", tmp_path / "libri", tmp_path / "out2", strict=True)

    lj = tmp_path / "lj"
    (lj / "wavs").mkdir(parents=True)
    sf.write(lj / "wavs" / "LJ001-0001.wav", _tone(), 22050)
    (lj / "metadata.csv").write_text(
        "LJ001-0001|Printing, in the only sense|Printing, in the only sense\n"
    )
    report = convert_dataset("ljspeech", lj, tmp_path / "out_lj")
    sample = next(read_shard(report.shards[0]))
    assert sample.conversation["messages"][1]["content"][0]["text"] == "Printing, in the only sense"
    with pytest.raises(FileNotFoundError, match=r"metadata\.csv"):
        convert_dataset("ljspeech", tmp_path / "libri", tmp_path / "x")


def test_coco_round_trip_and_missing_folder(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.new("RGB", (120, 80), (200, 30, 30)).save(root / "val2017" / "000000000001.jpg")
    import json

    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000000000001.jpg"}, {"id": 2, "file_name": "gone.jpg"}],
        "annotations": [{"image_id": 1, "caption": "A red wall."}, {"image_id": 2, "caption": "x"}],
    }))  # fmt: skip
    report = convert_dataset("coco", root, tmp_path / "out")
    assert report.converted == 1 and "gone.jpg" in report.skipped[0]
    sample = next(read_shard(report.shards[0]))
    img = read_image(sample.file("image.png"))
    assert img.shape == (64, 64, 3) and img[..., 0].mean() > 150
    with pytest.raises(FileNotFoundError, match="nowhere"):
        convert_dataset("coco", tmp_path / "nowhere", tmp_path / "y")


def test_extend_adds_training_samples_and_leaves_held_out_splits(corpus, tmp_path):
    from omniflex.data.build import extend_corpus
    from omniflex.data.tasks import make_sample

    root = tmp_path / "c"
    shutil.copytree(corpus, root)
    held_out = {
        p.name: p.read_bytes() for p in root.glob("*.tar") if not p.name.startswith("train")
    }
    card = extend_corpus(root, {"asr": 5}, workers=1, progress=False)
    new = sorted(p.name for p in root.glob("train-asr-from3-*.tar"))
    assert new == ["train-asr-from3-00000.tar"]
    got = list(read_shard(root / new[0]))
    assert [s.key for s in got] == ["train_asr_0000003", "train_asr_0000004"]
    for sample in got:  # what a corpus built with 5 ASR samples would hold
        twin = make_sample("asr", "train", int(sample.key[-7:]), 0)
        assert sample.conversation == twin.conversation
        assert sample.files == twin.media
    assert {p.name: p.read_bytes() for p in root.glob("*.tar")
            if not p.name.startswith("train")} == held_out  # fmt: skip
    assert card["train_extended"] == {"asr": 5}
    assert card["samples_per_split_task"]["train/asr"] == 5
    assert set(new) <= set(card["shards"])
    assert "extended (`omniflex data extend`): asr to 5" in (root / "data_card.md").read_text()
    with pytest.raises(ValueError, match="already holds 5"):
        extend_corpus(root, {"asr": 4}, workers=1, progress=False)
    with pytest.raises(ValueError, match="unknown task"):
        extend_corpus(root, {"nope": 9}, workers=1, progress=False)
    with pytest.raises(FileNotFoundError, match="data build"):
        extend_corpus(tmp_path / "none", {"asr": 9}, workers=1, progress=False)
