// Audio on the page: pcm16 <-> float samples, WAV files, the microphone (40 ms blocks at
// 24 kHz through capture-worklet.js), a tape of what was sent, and a playback queue that can
// be stopped at once (barge-in).

export const RATE = 24000; // the Realtime API's wire rate; the page's AudioContext runs at it

export function b64FromBytes(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

export function floatFromPcm16B64(b64) {
  const bin = atob(b64);
  const out = new Float32Array(bin.length >> 1);
  for (let i = 0; i < out.length; i++) {
    let v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 32768;
  }
  return out;
}

export function pcm16FromFloat(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 32768 : s * 32767;
  }
  return out;
}

function concatFloat(chunks) {
  const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/** A mono 16-bit WAV file of `pcm` (Int16Array) at `rate`, as bytes. */
export function wavBytes(pcm, rate = RATE) {
  const out = new Uint8Array(44 + pcm.length * 2);
  const view = new DataView(out.buffer);
  const ascii = (at, s) => { for (let i = 0; i < s.length; i++) out[at + i] = s.charCodeAt(i); };
  ascii(0, "RIFF"); view.setUint32(4, 36 + pcm.length * 2, true); ascii(8, "WAVE");
  ascii(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  ascii(36, "data"); view.setUint32(40, pcm.length * 2, true);
  new Uint8Array(out.buffer, 44).set(new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.length * 2));
  return out;
}

/** Float chunks (an answer's audio) as a WAV blob, for download. */
export function wavBlob(chunks, rate = RATE) {
  return new Blob([wavBytes(pcm16FromFloat(concatFloat(chunks)), rate)], { type: "audio/wav" });
}

/**
 * The audio sent to the server, in order: `slice(from, to)` gives samples back by their index
 * on the wire (the Realtime API's `audio_start_ms`/`audio_end_ms` count the same samples) and
 * `timeOf(i)` the page clock (performance.now) when sample `i` was captured.
 */
export class Tape {
  constructor(keepSeconds = 60) {
    this.keep = keepSeconds * RATE;
    this.reset();
  }

  reset() {
    this.blocks = []; // {start, pcm, at}
    this.length = 0;
  }

  append(pcm, at) {
    this.blocks.push({ start: this.length, pcm, at });
    this.length += pcm.length;
    while (this.blocks.length && this.blocks[0].start + this.keep < this.length) this.blocks.shift();
  }

  slice(from, to) {
    const out = new Int16Array(Math.max(0, to - from));
    for (const b of this.blocks) {
      const lo = Math.max(from, b.start), hi = Math.min(to, b.start + b.pcm.length);
      if (hi > lo) out.set(b.pcm.subarray(lo - b.start, hi - b.start), lo - from);
    }
    return out;
  }

  timeOf(sample) {
    const last = this.blocks[this.blocks.length - 1];
    if (!last) return performance.now();
    // a block is posted when its last sample is captured
    return last.at - ((last.start + last.pcm.length - sample) / RATE) * 1000;
  }
}

const withWorklet = new WeakSet(); // AudioContexts that have loaded capture-worklet.js

/** The microphone: `onblock(pcm16, level)` every 40 ms while it runs. */
export class Mic {
  constructor(ctx) {
    this.ctx = ctx;
    this.stream = null;
    this.node = null;
    this.onblock = () => {};
  }

  get running() { return this.stream !== null; }

  async start(deviceId) {
    if (!withWorklet.has(this.ctx)) {
      await this.ctx.audioWorklet.addModule("/web/capture-worklet.js");
      withWorklet.add(this.ctx);
    }
    const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: true };
    if (deviceId) audio.deviceId = { exact: deviceId };
    const stream = await navigator.mediaDevices.getUserMedia({ audio });
    this.stop();
    this.stream = stream;
    this.node = new AudioWorkletNode(this.ctx, "capture-processor");
    this.node.port.onmessage = (e) => {
      const block = e.data;
      let sum = 0;
      for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
      this.onblock(pcm16FromFloat(block), Math.sqrt(sum / block.length));
    };
    this.ctx.createMediaStreamSource(stream).connect(this.node);
  }

  stop() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.node) { this.node.port.onmessage = null; this.node.disconnect(); }
    this.stream = this.node = null;
  }

  static async devices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return [];
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  }
}

/**
 * Answers' audio, queued back to back. Each chunk belongs to an `owner` (an answer), so that
 * `heard(owner)` says how much of that answer was played when playback is stopped.
 */
export class Player {
  constructor(ctx) {
    this.ctx = ctx;
    this.head = 0;
    this.sources = new Set();
    this.chunks = new Map(); // owner -> [{at, seconds}]
    this.started = 0; // chunks started and ended: the page's audio clock really ran
    this.ended = 0;
    this.onchange = () => {};
  }

  get playing() { return this.sources.size > 0; }

  /** Seconds queued and not yet heard. */
  get ahead() { return Math.max(0, this.head - this.ctx.currentTime); }

  schedule(samples, owner) {
    const buffer = this.ctx.createBuffer(1, samples.length, RATE);
    buffer.copyToChannel(samples, 0);
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.ctx.destination);
    const at = Math.max(this.head, this.ctx.currentTime + 0.03);
    src.start(at);
    this.head = at + buffer.duration;
    this.sources.add(src);
    this.started++;
    const now = this.ctx.currentTime;
    for (const [other, list] of this.chunks) {  // forget answers that are over
      if (other !== owner && list.every((c) => c.at + c.seconds <= now)) this.chunks.delete(other);
    }
    if (!this.chunks.has(owner)) this.chunks.set(owner, []);
    this.chunks.get(owner).push({ at, seconds: buffer.duration });
    src.onended = () => {
      if (this.sources.delete(src)) { this.ended++; this.onchange(); }
    };
    this.onchange();
  }

  /** Whether any of `owner`'s audio is still queued or playing. */
  holds(owner) {
    const now = this.ctx.currentTime;
    return this.playing && (this.chunks.get(owner) || []).some((c) => c.at + c.seconds > now);
  }

  heard(owner) {
    const now = this.ctx.currentTime;
    return (this.chunks.get(owner) || [])
      .reduce((s, c) => s + Math.max(0, Math.min(c.seconds, now - c.at)), 0);
  }

  /** Stop everything at once; returns the seconds that were queued and will not be heard. */
  stop() {
    const cut = this.playing ? this.ahead : 0;
    for (const src of this.sources) {
      src.onended = null;
      try { src.stop(); } catch (e) { /* never started */ }
    }
    this.sources.clear();
    this.chunks.clear();
    this.head = 0;
    this.onchange();
    return cut;
  }
}
