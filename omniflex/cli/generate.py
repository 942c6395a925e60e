"""``omniflex generate``: one prompt to a trained omni model, answers saved as text, WAV and PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["generate"]


def _user_message(text: str | None, audio: str | None, image: str | None) -> tuple[dict, dict]:
    from omniflex.media.audio import read_audio, to_wav_bytes
    from omniflex.media.image import read_image, to_png_bytes

    content: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    if audio:
        files["user.wav"] = to_wav_bytes(read_audio(audio))
        content.append({"type": "audio", "file": "user.wav"})
    if image:
        files["image.png"] = to_png_bytes(read_image(image, size=64))
        content.append({"type": "image", "file": "image.png"})
    if text:
        content.append({"type": "text", "text": text})
    if not content:
        raise ValueError("give a prompt: text, --audio FILE and/or --image FILE")
    return {"messages": [{"role": "user", "content": content}]}, files


def generate(
    run: str,
    text: str | None,
    *,
    audio: str | None = None,
    image: str | None = None,
    voice: str | None = None,
    out: str = "runs/generate",
    max_new_tokens: int = 400,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Answer one user turn with the model in ``run`` (a training run folder or checkpoint)."""
    from omniflex.model import Generator, ModalityConstraint, ModelConfig, OmniModel, SamplingConfig
    from omniflex.model.chat import ChatTemplate
    from omniflex.tokenizers import special
    from omniflex.train.checkpoint import load_model_state

    if not Path(run).exists():
        raise FileNotFoundError(f"no model at {run}; train one with `omniflex train --recipe tiny`")
    state, model_config = load_model_state(run)
    if model_config is None:
        raise ValueError(f"{run} holds no model config; it is not an omniflex training run")
    config = ModelConfig.from_dict(model_config)
    model = OmniModel.build(config)
    model.load_state_dict(state)
    model.eval()
    template = ChatTemplate.from_shipped()
    if template.layout != config.vocab:
        raise ValueError(
            f"the model in {run} was trained on vocabulary {config.vocab.to_dict()}, but the "
            f"shipped tokenizers give {template.layout.to_dict()}; retokenize and retrain"
        )
    conversation, files = _user_message(text, audio, image)
    prompt = template.prompt(conversation, files, voice=voice)
    grid = template.image.grid
    gen = Generator(model, config.vocab, image_grid=grid)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    stops = (special.special_index(special.END_OF_TURN), special.special_index(special.EOS))
    start = time.perf_counter()
    answer = [
        e.token_id
        for e in gen.stream(
            prompt, max_new_tokens=max_new_tokens, sampling=sampling, stop_tokens=stops,
            constraint_fn=ModalityConstraint(config.vocab, grid),
        )
    ]  # fmt: skip
    seconds = time.perf_counter() - start
    decoded = template.decode(prompt + answer, strict=False)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save_answer(decoded, out_dir) | {
        "tokens": len(answer),
        "seconds": round(seconds, 2),
        "tokens_per_second": round(len(answer) / max(seconds, 1e-9), 1),
        "stop_reason": gen.stop_reason,
    }


def _save_answer(decoded: Any, out_dir: Path) -> dict[str, Any]:
    from omniflex.media.audio import write_audio
    from omniflex.media.image import write_image

    messages = decoded.conversation["messages"]
    answer = messages[-1] if messages and messages[-1]["role"] == "assistant" else {"content": []}
    result: dict[str, Any] = {"text": "", "files": []}
    for part in answer["content"]:
        if part["type"] == "text":
            result["text"] += part["text"]
        elif part["type"] in ("audio", "image") and part.get("file") in decoded.media:
            media = decoded.media[part["file"]]
            if part["type"] == "audio":
                path = write_audio(out_dir / f"{part['file']}.wav", media)
            else:
                path = write_image(out_dir / f"{part['file']}.png", media)
            result["files"].append(str(path))
    (out_dir / "answer.json").write_text(json.dumps(result, indent=2))
    return result
