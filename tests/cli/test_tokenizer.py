"""``omniflex tokenizer roundtrip|train`` and ``omniflex bench tokenizers`` end to end."""

import json

import pytest

from omniflex.cli.main import main
from omniflex.media.audio import read_audio, write_audio


def test_roundtrip_text_is_exact(tmp_path, capsys):
    src = tmp_path / "note.txt"
    src.write_text("héllo <|user|> wörld 🚀\n", encoding="utf-8")
    assert main(["tokenizer", "roundtrip", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] is True and report["tokens"] > 0
    assert (tmp_path / "note.recon.txt").read_text(encoding="utf-8") == src.read_text()


def test_roundtrip_audio_writes_reconstruction(tmp_path, capsys):
    from omniflex.common.voices import voice
    from omniflex.data.speech import synthesize

    src = write_audio(tmp_path / "say.flac", synthesize("seven plus two is nine.", voice("lia")))
    assert main(["tokenizer", "roundtrip", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    recon = read_audio(tmp_path / "say.recon.wav")
    assert abs(len(recon) - len(read_audio(src))) == 0
    assert report["tokens_per_second"] == 50 and report["tokens"] == 2 * -(-len(recon) // 640)
    assert report["mcd_db"] < 4.0 and report["speaker_similarity"] > 0.6


def test_roundtrip_errors_name_the_file(tmp_path, capsys):
    assert main(["tokenizer", "roundtrip", str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    assert main(["tokenizer", "roundtrip", str(bad)]) == 2
    assert "bad.wav" in capsys.readouterr().err


def test_train_text_tokenizer_needs_a_corpus(tmp_path, capsys):
    argv = ["tokenizer", "train", "text", "--corpus", str(tmp_path), "--out", str(tmp_path / "t")]
    assert main(argv) == 2
    assert "omniflex data build" in capsys.readouterr().err


def test_bench_tokenizers_text(capsys):
    assert main(["bench", "tokenizers", "--only", "text"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"]["roundtrip_exact"] is True and result["text"]["met"] is True


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_bench_tokenizers_without_corpus_says_how_to_build_it(tmp_path, capsys, kind):
    assert main(["bench", "tokenizers", "--only", kind, "--corpus", str(tmp_path)]) == 2
    assert "omniflex data build" in capsys.readouterr().err
