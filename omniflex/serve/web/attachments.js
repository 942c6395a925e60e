// Pictures and short videos the user attaches, read in the page into what the server takes.
//
// The model sees 64x64 pictures, so a picture is scaled down here (a small request instead of
// a photo). The API has no video content part, so a video becomes what the model can read:
// up to VIDEO_FRAMES frames at one a second (as pictures) and its soundtrack (as input audio).

import { RATE, b64FromBytes, pcm16FromFloat, wavBytes } from "./audio.js";

export const PICTURE_SIDE = 128; // the server scales to 64x64; 128 keeps the thumbnail sharp
export const VIDEO_FRAMES = 4; // each frame costs the model about 66 tokens of context
export const MAX_VIDEO_SECONDS = 60;
export const SOUNDTRACK_SECONDS = 10;

function pictureUrl(source, width, height) {
  const scale = Math.min(1, PICTURE_SIDE / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/png");
}

function once(target, ok, bad = "error") {
  return new Promise((resolve, reject) => {
    const done = (e) => {
      target.removeEventListener(ok, done);
      target.removeEventListener(bad, done);
      if (e.type === ok) resolve(e);
      else reject(new Error("cannot decode it"));
    };
    target.addEventListener(ok, done);
    target.addEventListener(bad, done);
  });
}

async function readPicture(file) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
  } catch (e) {
    URL.revokeObjectURL(url);
    throw new Error(`cannot read ${file.name} as a picture (PNG, JPEG, GIF or WebP)`);
  }
  const frame = pictureUrl(img, img.naturalWidth, img.naturalHeight);
  URL.revokeObjectURL(url);
  return { kind: "picture", name: file.name, preview: frame, frames: [frame], audio: null };
}

async function soundtrack(file) {
  // decodeAudioData resamples to the context's rate; a video without sound throws
  try {
    const decoded = await new OfflineAudioContext(1, 1, RATE).decodeAudioData(await file.arrayBuffer());
    const n = Math.min(decoded.length, SOUNDTRACK_SECONDS * RATE);
    const mono = new Float32Array(n);
    for (let c = 0; c < decoded.numberOfChannels; c++) {
      const ch = decoded.getChannelData(c);
      for (let i = 0; i < n; i++) mono[i] += ch[i] / decoded.numberOfChannels;
    }
    const rms = Math.sqrt(mono.reduce((s, x) => s + x * x, 0) / Math.max(1, n));
    if (rms < 1e-4) return null; // silent: nothing to hear
    const pcm = pcm16FromFloat(mono);
    return { wav: b64FromBytes(wavBytes(pcm)), seconds: n / RATE };
  } catch (e) {
    return null;
  }
}

async function readVideo(file) {
  const url = URL.createObjectURL(file);
  const video = document.createElement("video");
  video.muted = true;
  video.preload = "auto";
  video.src = url;
  try {
    await once(video, "loadeddata");
  } catch (e) {
    URL.revokeObjectURL(url);
    throw new Error(`cannot play ${file.name} in this browser (try MP4 or WebM)`);
  }
  const seconds = video.duration;
  if (Number.isFinite(seconds) && seconds > MAX_VIDEO_SECONDS) {
    URL.revokeObjectURL(url);
    throw new Error(`${file.name} is ${Math.round(seconds)} s long; attach a video of at most ` +
                    `${MAX_VIDEO_SECONDS} s (the model reads ${VIDEO_FRAMES} frames of it)`);
  }
  const known = Number.isFinite(seconds) && seconds > 0;
  const count = known ? Math.max(1, Math.min(VIDEO_FRAMES, Math.round(seconds))) : 1; // 1 a second
  const frames = [];
  for (let i = 0; i < count; i++) {
    if (known) {
      video.currentTime = (seconds * (i + 0.5)) / count;
      await once(video, "seeked");
    }
    frames.push(pictureUrl(video, video.videoWidth, video.videoHeight));
  }
  return {
    kind: "video", name: file.name, preview: url, frames, audio: await soundtrack(file),
    seconds: known ? seconds : null,
  };
}

/** Read one attached file: {kind: "picture"|"video", name, preview, frames, audio}. */
export async function readAttachment(file) {
  if (file.type.startsWith("image/")) return readPicture(file);
  if (file.type.startsWith("video/")) return readVideo(file);
  throw new Error(`${file.name} is ${file.type || "of an unknown type"}; attach a picture or a video`);
}

/** The attachment as chat-completion content parts: pictures, then the soundtrack. */
export function contentParts(attachment) {
  const parts = attachment.frames.map((url) => ({ type: "image_url", image_url: { url } }));
  if (attachment.audio) {
    parts.push({ type: "input_audio", input_audio: { data: attachment.audio.wav, format: "wav" } });
  }
  return parts;
}
