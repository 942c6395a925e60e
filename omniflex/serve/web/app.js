// omniflex voice page: microphone -> pcm16 24 kHz -> Realtime websocket -> streamed playback.
"use strict";

const RATE = 24000;
const $ = (id) => document.getElementById(id);
const stats = { audioChunks: 0, audioSeconds: 0, transcript: "", responses: 0, errors: [],
                events: 0, speechStarted: 0, speechStopped: 0 };
window.omniflexStats = stats; // read by the browser test

let ws = null, ctx = null, micStream = null, worklet = null;
let talking = false; // push-to-talk button held
let playHead = 0, playing = [], currentItem = null, itemStartedAt = 0, itemSeconds = 0;
let assistantTurn = null;

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (kind || "");
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  div.textContent = text || "";
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function send(event) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(event));
}

function b64FromInt16(int16) {
  const bytes = new Uint8Array(int16.buffer);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function floatFromB64(b64) {
  const bin = atob(b64);
  const n = bin.length >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 32768;
  }
  return out;
}

function sessionConfig() {
  const vad = $("mode").value === "vad";
  return {
    type: "realtime",
    output_modalities: ["audio"],
    audio: {
      input: {
        format: { type: "audio/pcm", rate: RATE },
        turn_detection: vad ? { type: "server_vad", threshold: 0.5, prefix_padding_ms: 300,
                                silence_duration_ms: 500, create_response: true,
                                interrupt_response: true } : null,
      },
      output: { format: { type: "audio/pcm", rate: RATE }, voice: $("voice").value },
    },
  };
}

function onMic(block) {
  let sum = 0;
  for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
  $("level").style.width = Math.min(100, Math.sqrt(sum / block.length) * 400) + "%";
  if ($("mode").value === "ptt" && !talking) return;
  const int16 = new Int16Array(block.length);
  for (let i = 0; i < block.length; i++) {
    const s = Math.max(-1, Math.min(1, block[i]));
    int16[i] = s < 0 ? s * 32768 : s * 32767;
  }
  send({ type: "input_audio_buffer.append", audio: b64FromInt16(int16) });
}

function play(samples) {
  const buffer = ctx.createBuffer(1, samples.length, RATE);
  buffer.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  const now = ctx.currentTime;
  if (playHead < now + 0.02) playHead = now + 0.02;
  if (itemSeconds === 0) itemStartedAt = playHead;
  src.start(playHead);
  playHead += buffer.duration;
  itemSeconds += buffer.duration;
  playing.push(src);
  src.onended = () => { playing = playing.filter((s) => s !== src); };
}

function stopPlayback() {
  // Barge-in: silence what is queued and tell the server how much was heard.
  if (currentItem && ctx) {
    const heard = Math.max(0, Math.min(itemSeconds, ctx.currentTime - itemStartedAt));
    if (playing.length) {
      send({ type: "conversation.item.truncate", item_id: currentItem, content_index: 0,
             audio_end_ms: Math.round(heard * 1000) });
    }
  }
  playing.forEach((s) => { try { s.stop(); } catch (e) { /* already ended */ } });
  playing = [];
  playHead = 0;
}

function onEvent(event) {
  stats.events++;
  switch (event.type) {
    case "session.created":
      send({ type: "session.update", session: sessionConfig() });
      setStatus("listening", "live");
      break;
    case "input_audio_buffer.speech_started":
      stats.speechStarted++;
      stopPlayback();
      setStatus("hearing you…", "live");
      break;
    case "input_audio_buffer.speech_stopped":
      stats.speechStopped++;
      setStatus("thinking…", "live");
      break;
    case "input_audio_buffer.committed":
      addTurn("user", "🎤 (spoken turn)");
      break;
    case "response.created":
      assistantTurn = addTurn("assistant", "");
      itemSeconds = 0;
      break;
    case "response.output_item.added":
      currentItem = event.item.id;
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta":
      stats.transcript += event.delta;
      if (assistantTurn) assistantTurn.textContent += event.delta;
      break;
    case "response.output_audio.delta": {
      const samples = floatFromB64(event.delta);
      stats.audioChunks++;
      stats.audioSeconds += samples.length / RATE;
      play(samples);
      setStatus("speaking", "live");
      break;
    }
    case "response.done":
      stats.responses++;
      if (assistantTurn && !assistantTurn.textContent) assistantTurn.textContent = "(no words)";
      if (event.response.status !== "completed") {
        const d = event.response.status_details || {};
        addTurn("system", "answer " + event.response.status + (d.reason ? ": " + d.reason : ""));
      }
      setStatus("listening", "live");
      break;
    case "error":
      stats.errors.push(event.error.message);
      addTurn("system", "error: " + event.error.message);
      break;
    default:
      break;
  }
}

async function start() {
  $("start").disabled = true;
  try {
    ctx = new AudioContext({ sampleRate: RATE });
    await ctx.audioWorklet.addModule("/web/capture-worklet.js");
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    const source = ctx.createMediaStreamSource(micStream);
    worklet = new AudioWorkletNode(ctx, "capture-processor");
    worklet.port.onmessage = (e) => onMic(e.data);
    source.connect(worklet);
  } catch (err) {
    setStatus("microphone unavailable: " + err.message, "error");
    $("start").disabled = false;
    return;
  }
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const protocols = ["realtime"];
  const key = $("key").value.trim();
  if (key) protocols.push("openai-insecure-api-key." + key);
  ws = new WebSocket(scheme + location.host + "/v1/realtime?model=omniflex", protocols);
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = (e) => {
    setStatus("disconnected" + (e.reason ? " (" + e.reason + ")" : ""), e.code === 1000 ? "" : "error");
    stop();
  };
  ws.onerror = () => setStatus("connection failed", "error");
  setStatus("connecting…");
  $("stop").disabled = false;
  $("image").disabled = false;
  $("talk").disabled = $("mode").value !== "ptt";
}

function stop() {
  if (ws) { ws.onclose = null; ws.close(1000); ws = null; }
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  ctx = micStream = worklet = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  $("talk").disabled = true;
  $("image").disabled = true;
  if ($("status").textContent.startsWith("listening")) setStatus("disconnected");
}

function talkDown() {
  if (!ws || $("mode").value !== "ptt") return;
  stopPlayback();
  talking = true;
  $("talk").classList.add("held");
}

function talkUp() {
  if (!talking) return;
  talking = false;
  $("talk").classList.remove("held");
  send({ type: "input_audio_buffer.commit" });
  send({ type: "response.create" });
}

function sendImage(file) {
  // Downscale to the model's 64x64 in the page: a small event instead of a photo.
  const img = new Image();
  img.onload = () => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 64;
    canvas.getContext("2d").drawImage(img, 0, 0, 64, 64);
    const url = canvas.toDataURL("image/png");
    send({ type: "conversation.item.create", item: { type: "message", role: "user",
           content: [{ type: "input_image", image_url: url }] } });
    const turn = addTurn("user", "");
    const shown = document.createElement("img");
    shown.src = url;
    turn.appendChild(shown);
    URL.revokeObjectURL(img.src);
  };
  img.src = URL.createObjectURL(file);
}

$("start").onclick = start;
$("stop").onclick = stop;
$("voice").onchange = () => send({ type: "session.update", session: sessionConfig() });
$("mode").onchange = () => {
  send({ type: "session.update", session: sessionConfig() });
  $("talk").disabled = !ws || $("mode").value !== "ptt";
};
$("talk").onmousedown = talkDown;
$("talk").onmouseup = talkUp;
$("talk").onmouseleave = talkUp;
$("talk").ontouchstart = (e) => { e.preventDefault(); talkDown(); };
$("talk").ontouchend = talkUp;
$("image").onchange = (e) => { if (e.target.files[0]) sendImage(e.target.files[0]); e.target.value = ""; };
document.addEventListener("keydown", (e) => { if (e.code === "Space" && e.target === document.body) { e.preventDefault(); talkDown(); } });
document.addEventListener("keyup", (e) => { if (e.code === "Space") talkUp(); });
