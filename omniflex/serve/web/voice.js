// Spoken turns over the Realtime websocket: start and stop voice, stream the microphone, turn
// server events into turns (the user's speech, the answer's audio, transcript and timings),
// push to talk, and keeping the Realtime session's conversation in step with typed turns.

import { Mic, RATE, b64FromBytes, floatFromPcm16B64, wavBytes } from "./audio.js";
import {
  addAudioActions, checkServer, ensureAudio, history, interrupt, link, page, refreshState, rest,
  settings, showError, stats, tape, updateConn, voice,
} from "./page.js";
import { sessionConfig } from "./realtime.js";
import { $, Turn, ms } from "./view.js";

const SYNC_WINDOW = 6; // messages added to a Realtime session that starts mid-conversation
const syncs = new Map(); // event_id -> history entry, of the items added to the Realtime session

link.onEvent = onRealtimeEvent;
link.onClose = onVoiceClosed;

export function applySession() {
  const s = settings();
  link.send({ type: "session.update", session: sessionConfig({
    voice: s.voice, handsFree: s.handsFree, textOnly: s.answer === "text", maxTokens: s.maxTokens,
  }) });
}

export async function startVoice() {
  if (voice.on || voice.starting) return;
  voice.starting = true;
  ensureAudio();
  page.voiceLink = "connecting";
  updateConn();
  page.mic.onblock = onMicBlock;
  try {
    tape.reset();
    await link.connect(rest.key);
    await page.mic.start($("mic").value);
  } catch (err) {
    link.close();
    page.mic.stop();
    voice.starting = false;
    page.voiceLink = "off";
    updateConn();
    if (err.name === "NotAllowedError") showError("the microphone was not allowed; allow it for this page to speak");
    else showError("voice could not start: " + err.message);
    checkServer(); // a refused websocket says nothing; REST says why (a key, say)
    return;
  }
  voice.on = true;
  voice.starting = false;
  page.voiceLink = "on";
  $("voice-toggle").textContent = "Stop voice";
  $("voice-toggle").setAttribute("aria-pressed", "true");
  updateConn();
  refreshState();
  refreshDevices();
}

export function stopVoice() {
  link.close();
  if (page.mic) page.mic.stop();
  voice.on = voice.hearing = voice.talking = voice.waiting = false;
  if (voice.turn) voice.turn.el.remove(); // a spoken turn that was never committed
  voice.turn = null;
  if (page.rtAnswer) { page.rtAnswer.turn.mark("interrupted"); page.rtAnswer = null; }
  page.voiceLink = "off";
  $("voice-toggle").textContent = "Start voice";
  $("voice-toggle").setAttribute("aria-pressed", "false");
  $("level").style.width = "0";
  updateConn();
  refreshState();
}

function onVoiceClosed(e) {
  stopVoice();
  if (e.code !== 1000) showError(`the voice connection closed (${e.code}${e.reason ? ": " + e.reason : ""})`);
}

export function reconnectVoice() {
  tape.reset();
  page.voiceLink = "connecting";
  updateConn();
  link.connect(rest.key).then(() => { page.voiceLink = "on"; updateConn(); }, (err) => {
    stopVoice();
    showError("voice could not reconnect: " + err.message);
  });
}

function onMicBlock(pcm, level) {
  $("level").style.width = Math.min(100, level * 400) + "%";
  if (!link.open || ($("mode").value !== "vad" && !voice.talking)) return;
  tape.append(pcm, performance.now());
  link.send({ type: "input_audio_buffer.append", audio: b64FromBytes(new Uint8Array(pcm.buffer)) });
}

function openSpokenTurn() {
  if (!voice.turn) voice.turn = new Turn("user", "spoken");
  voice.turn.set("speaking…", "status");
}

function closeSpokenTurn() {
  const turn = voice.turn || new Turn("user", "spoken");
  voice.turn = null;
  const pcm = tape.slice(voice.startSample, Math.max(voice.startSample, voice.endSample));
  turn.set(`${(pcm.length / RATE).toFixed(1)} s of speech`, "status");
  if (!pcm.length) return;
  const wav = wavBytes(pcm);
  turn.download(URL.createObjectURL(new Blob([wav], { type: "audio/wav" })),
                `omniflex-you-${turn.n}.wav`, "Download your audio");
  // the Realtime session has this turn already; chat completions hear it from the history
  history.push({ role: "user", content: [{ type: "input_audio", input_audio: { data: b64FromBytes(wav), format: "wav" } }],
                 text: "", synced: true });
}

/** Add the text of typed turns and their answers to the Realtime session. */
export function syncRealtime() {
  if (!link.open || voice.hearing || voice.talking || page.rtAnswer) return;
  for (const m of history) {
    if (m.synced) continue;
    m.synced = true;
    if (!m.text.trim()) continue;
    const id = `sync_${syncs.size}_${Date.now()}`;
    syncs.set(id, m); // an error event names it: the item is sent again later
    link.send({ type: "conversation.item.create", event_id: id, item: { type: "message",
      role: m.role, content: [{ type: m.role === "user" ? "input_text" : "output_text", text: m.text }] } });
  }
}

function onRealtimeEvent(ev) {
  stats.events++;
  const a = page.rtAnswer;
  switch (ev.type) {
    case "session.created":
      applySession();
      history.slice(0, -SYNC_WINDOW).forEach((m) => { m.synced = true; });
      history.slice(-SYNC_WINDOW).forEach((m) => { if (m.text) m.synced = false; });
      syncRealtime();
      break;
    case "input_audio_buffer.speech_started":
      stats.speechStarted++;
      interrupt("speech"); // barge-in
      voice.hearing = true;
      voice.startSample = Math.round((ev.audio_start_ms * RATE) / 1000);
      openSpokenTurn();
      break;
    case "input_audio_buffer.speech_stopped":
      stats.speechStopped++;
      voice.hearing = false;
      voice.waiting = true;
      voice.endSample = Math.round((ev.audio_end_ms * RATE) / 1000);
      voice.endAt = tape.timeOf(voice.endSample); // when the user stopped, not when the VAD said so
      break;
    case "input_audio_buffer.committed":
      closeSpokenTurn();
      break;
    case "response.created": {
      const spoken = (ev.response.output_modalities || []).includes("audio");
      voice.waiting = false;
      page.rtAnswer = { id: ev.response.id, turn: new Turn("assistant", spoken ? "speech" : "text"),
                   created: performance.now(), endAt: voice.endAt, first: null, itemId: null,
                   text: "", audio: [], cut: false, spoken };
      voice.endAt = null;
      break;
    }
    case "response.output_item.added":
      if (page.rtAnswer) page.rtAnswer.itemId = ev.item.id;
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta":
      if (!a) break;
      stats.transcript += ev.delta;
      a.text += ev.delta;
      a.turn.append(ev.delta, ev.type === "response.output_text.delta" ? "text" : "transcript");
      if (!a.spoken) firstOutput(a);
      break;
    case "response.output_audio.delta": {
      if (!a || a.cut) break;
      const samples = floatFromPcm16B64(ev.delta);
      stats.audioChunks++;
      stats.audioSeconds += samples.length / RATE;
      a.audio.push(samples);
      page.player.schedule(samples, a);
      page.lastRtAnswer = a;
      firstOutput(a);
      break;
    }
    case "response.done":
      if (ev.response.status === "cancelled") stats.cancelled++;
      finishRealtimeAnswer(ev.response);
      break;
    case "conversation.item.truncated": // the server cut its answer at what was heard
      stats.truncated++;
      break;
    case "error":
      if (ev.error.code === "input_audio_buffer_open" && syncs.has(ev.error.event_id)) {
        syncs.get(ev.error.event_id).synced = false; // the user began to speak first: send it later
        break;
      }
      showError(ev.error.message);
      break;
    default:
      break;
  }
  refreshState();
}

function firstOutput(a) {
  if (a.first !== null) return;
  a.first = performance.now();
  if (a.endAt !== null) stats.latencies.push({ kind: a.spoken ? "speech" : "speech-text", ms: a.first - a.endAt });
}

function finishRealtimeAnswer(response) {
  const a = page.rtAnswer;
  page.rtAnswer = null;
  if (!a) return;
  stats.responses++;
  const seconds = (performance.now() - a.created) / 1000;
  const details = response.status_details || {};
  if (response.status === "cancelled") a.turn.mark("interrupted");
  else if (details.reason === "max_output_tokens") a.turn.mark("cut at max length");
  else if (details.reason === "content_filter") {
    a.turn.mark("stopped by the output guard");
    a.turn.append((details.error && details.error.message) || "", "note");
  }
  const meta = [];
  const what = a.spoken ? "audio" : "token";
  if (a.first !== null && a.endAt !== null) meta.push(`speech end → first ${what} ${ms(a.first - a.endAt)}`);
  else if (a.first !== null) meta.push(`request → first ${what} ${ms(a.first - a.created)}`);
  const tokens = (response.usage && response.usage.output_tokens) || 0;
  if (tokens) meta.push(`${tokens} tok · ${(tokens / seconds).toFixed(1)} tok/s`);
  const audioSeconds = a.audio.reduce((s, c) => s + c.length, 0) / RATE;
  if (audioSeconds) meta.push(`${audioSeconds.toFixed(1)} s of speech`);
  meta.push("Realtime");
  a.turn.setMeta(meta.join(" · "));
  if (!a.text && !a.audio.length) a.turn.set("(no words)", "note");
  addAudioActions(a.turn, a.audio);
  if (a.text.trim()) history.push({ role: "assistant", content: a.text, text: a.text, synced: true });
  syncRealtime();
}

// ------------------------------------------------------------------ push to talk
export async function talkDown() {
  if (voice.talking) return;
  ensureAudio();
  if ($("mode").value !== "ptt") { $("mode").value = "ptt"; applySession(); }
  interrupt("talk");
  voice.talking = true;
  $("talk").classList.add("held");
  $("talk").setAttribute("aria-pressed", "true");
  refreshState();
  if (!voice.on) await startVoice(); // the first press starts voice (and asks for the microphone)
  if (!voice.talking || !voice.on) return;
  voice.startSample = tape.length;
  openSpokenTurn();
}

export function talkUp() {
  if (!voice.talking) return;
  voice.talking = false;
  $("talk").classList.remove("held");
  $("talk").setAttribute("aria-pressed", "false");
  if (!voice.on || tape.length === voice.startSample) { // nothing was said
    if (voice.turn) voice.turn.el.remove();
    voice.turn = null;
    refreshState();
    return;
  }
  voice.endSample = tape.length;
  voice.endAt = performance.now();
  voice.waiting = true;
  link.send({ type: "input_audio_buffer.commit" });
  link.send({ type: "response.create" });
  refreshState();
}

export async function refreshDevices() {
  const select = $("mic");
  const current = select.value;
  let devices = [];
  try { devices = await Mic.devices(); } catch (e) { return; } // no permission yet
  select.replaceChildren(new Option("default microphone", ""));
  devices.forEach((d, i) => {
    if (d.deviceId && d.deviceId !== "default") select.append(new Option(d.label || `microphone ${i + 1}`, d.deviceId));
  });
  select.value = [...select.options].some((o) => o.value === current) ? current : "";
}
