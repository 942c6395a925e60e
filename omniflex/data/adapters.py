"""Convert public data sets already on disk into omniflex shards.

* LibriSpeech: ``<root>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` + ``*.flac``
* LJSpeech: ``<root>/metadata.csv`` (``id|text|normalized text``) + ``<root>/wavs/<id>.wav``
* COCO captions: ``<root>/annotations/captions_*.json`` + the images folder it names

Speech becomes speech-recognition samples, captions become captioning samples. A file that is
missing or does not decode is skipped, counted and listed in the returned report (``strict=True``
raises instead); an unreadable folder raises at once, naming it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omniflex.data.shards import write_shards
from omniflex.media.audio import read_audio, to_wav_bytes
from omniflex.media.errors import MediaError
from omniflex.media.image import read_image, to_png_bytes

__all__ = ["ADAPTERS", "ConversionReport", "convert_dataset"]


@dataclass
class ConversionReport:
    dataset: str
    converted: int = 0
    skipped: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)


def _asr(
    key: str, audio: bytes, text: str, source: str
) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    conv = {
        "id": key,
        "task": "asr",
        "split": "train",
        "source": source,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "file": "user.wav", "transcript": text},
                    {"type": "text", "text": "Transcribe this recording."},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": text}]},
        ],
    }
    return key, conv, {"user.wav": audio}


def _require_dir(root: Path, what: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder {root} does not exist or is not a folder")


def _librispeech(
    root: Path, report: ConversionReport, strict: bool
) -> Iterator[tuple[str, dict[str, Any], dict[str, bytes]]]:
    _require_dir(root, "LibriSpeech")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise FileNotFoundError(
            f"no *.trans.txt files under {root}; is this a LibriSpeech split folder?"
        )
    for trans in transcripts:
        for line in trans.read_text().splitlines():
            utt, _, text = line.partition(" ")
            path = trans.parent / f"{utt}.flac"
            try:
                audio = to_wav_bytes(read_audio(path))
            except MediaError as err:
                if strict:
                    raise
                report.skipped.append(str(err))
                continue
            yield _asr(
                f"librispeech_{utt.replace('-', '_')}", audio, text.strip().lower(), "librispeech"
            )


def _ljspeech(
    root: Path, report: ConversionReport, strict: bool
) -> Iterator[tuple[str, dict[str, Any], dict[str, bytes]]]:
    _require_dir(root, "LJSpeech")
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing; an LJSpeech folder has metadata.csv and wavs/")
    with meta.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE):
            if len(row) < 2:
                report.skipped.append(f"{meta}: malformed line {row!r}")
                continue
            utt, text = row[0], row[-1]
            try:
                audio = to_wav_bytes(read_audio(root / "wavs" / f"{utt}.wav"))
            except MediaError as err:
                if strict:
                    raise
                report.skipped.append(str(err))
                continue
            yield _asr(f"ljspeech_{utt.replace('-', '_')}", audio, text.strip(), "ljspeech")


def _coco(
    root: Path, report: ConversionReport, strict: bool
) -> Iterator[tuple[str, dict[str, Any], dict[str, bytes]]]:
    _require_dir(root, "COCO")
    annotation_files = sorted((root / "annotations").glob("captions_*.json"))
    if not annotation_files:
        raise FileNotFoundError(
            f"no annotations/captions_*.json under {root}; is this a COCO folder?"
        )
    for ann_path in annotation_files:
        try:
            ann = json.loads(ann_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{ann_path} is not valid JSON ({err.msg})") from None
        image_dir = root / ann_path.stem.removeprefix("captions_")
        captions: dict[int, list[str]] = {}
        for a in ann.get("annotations", []):
            captions.setdefault(a["image_id"], []).append(a["caption"].strip())
        for img in sorted(ann.get("images", []), key=lambda i: i["id"]):
            if img["id"] not in captions:
                continue
            try:
                png = to_png_bytes(read_image(image_dir / img["file_name"], size=64))
            except MediaError as err:
                if strict:
                    raise
                report.skipped.append(str(err))
                continue
            key = f"coco_{img['id']}"
            conv = {
                "id": key,
                "task": "caption",
                "split": "train",
                "source": "coco",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "file": "image.png"},
                            {"type": "text", "text": "Describe the image."},
                        ],
                    },
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": captions[img["id"]][0]}],
                    },
                ],
                "all_captions": captions[img["id"]],
            }
            yield key, conv, {"image.png": png}


ADAPTERS = {"librispeech": _librispeech, "ljspeech": _ljspeech, "coco": _coco}


def convert_dataset(
    name: str, root: str | Path, out: str | Path, *, strict: bool = False, per_shard: int = 500
) -> ConversionReport:
    """Convert the data set ``name`` at ``root`` into ``out/<name>-NNNNN.tar`` shards."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown data set {name!r}; choose from {list(ADAPTERS)}")
    report = ConversionReport(name)
    out = Path(out)

    def counted() -> Iterator[tuple[str, dict[str, Any], dict[str, bytes]]]:
        for item in ADAPTERS[name](Path(root), report, strict):
            report.converted += 1
            yield item

    report.shards = [
        str(p) for p in write_shards(counted(), str(out / f"{name}-%05d.tar"), per_shard)
    ]
    return report
