// What the page holds for its conversation, and what every kind of turn uses: the stats the
// tests read, the server's settings, the history sent with typed turns, the two connections,
// the audio, the answers in flight; the connection and activity state; errors; barge-in.

import { Mic, Player, RATE, Tape, wavBlob } from "./audio.js";
import { RealtimeLink } from "./realtime.js";
import { ApiError, Rest } from "./rest.js";
import { $ } from "./view.js";

// What happened on the page, for the browser tests (tests/serve/test_web.py) and the curious.
export const stats = {
  ready: false, state: "idle", events: 0, errors: [], keyAsked: 0,
  speechStarted: 0, speechStopped: 0, responses: 0, transcript: "", audioChunks: 0,
  audioSeconds: 0, restAnswers: 0, restAudioSeconds: 0, pictures: 0, attachments: 0,
  playing: 0, played: 0, bargeIns: 0, cutSeconds: 0, lastBargeIn: null, truncated: 0,
  cancelled: 0, latencies: [],
};
window.omniflexStats = stats;

// The server's offer (/web/config.json), until it is read.
export const config = { model: "", voices: ["aria", "bram", "cleo", "dax"], voice_aliases: {},
                        temperature: 0, max_new_tokens: 800 };
export const rest = new Rest();
export const link = new RealtimeLink({}); // voice.js handles its events
export const tape = new Tape(); // what the microphone sent this Realtime session
export const history = []; // {role, content, text, synced}: the conversation for chat completions

export const page = {
  server: "connecting…", // online | needs API key | offline
  voiceLink: "off", // off | connecting | on
  ctx: null, player: null, mic: null, // one AudioContext for capture and playback
  restAnswer: null, // the REST answer in flight: {controller, turn, cut, ...}
  rtAnswer: null, // the Realtime answer in flight
  lastRtAnswer: null, // the last Realtime answer that had audio, while it may still play
};

export const voice = { on: false, starting: false, hearing: false, talking: false,
                       waiting: false, turn: null, startSample: 0, endSample: 0, endAt: null };

export function settings() {
  const max = parseInt($("max-tokens").value, 10);
  return {
    voice: $("voice").value,
    handsFree: $("mode").value === "vad",
    answer: $("answer").value,
    temperature: Number($("temperature").value),
    maxTokens: Math.max(1, Math.min(4096, Number.isFinite(max) ? max : config.max_new_tokens)),
  };
}

export function ensureAudio() {
  if (!page.ctx) {
    page.ctx = new AudioContext({ sampleRate: RATE });
    page.player = new Player(page.ctx);
    page.player.onchange = () => {
      stats.playing = page.player.sources.size;
      stats.played = page.player.ended;
      refreshState();
    };
    page.mic = new Mic(page.ctx);
  }
  if (page.ctx.state === "suspended") page.ctx.resume();
}

// ------------------------------------------------------------------ state, errors, key
export function showError(message) {
  stats.errors.push(message);
  $("error-text").textContent = message;
  $("error").hidden = false;
}

export function hideError() { $("error").hidden = true; }

export function updateConn() {
  const c = $("conn");
  const extra = { off: "", connecting: " · voice connecting…", on: " · voice on" }[page.voiceLink];
  c.textContent = page.server + extra;
  c.dataset.kind = page.server === "online" ? "ok" : page.server === "connecting…" ? "" : "bad";
}

/** listening / hearing you / thinking / speaking / idle, from what the page is doing. */
export function refreshState() {
  let s = "idle";
  if (voice.hearing || voice.talking) s = "hearing you";
  else if (page.player && page.player.playing) s = "speaking";
  else if (page.restAnswer || page.rtAnswer || voice.waiting) s = "thinking";
  else if (voice.on) s = "listening";
  stats.state = s;
  const el = $("state");
  if (el.dataset.state !== s) { el.textContent = s; el.dataset.state = s; }
}

export function askForKey(message) {
  page.server = "needs API key";
  updateConn();
  stats.keyAsked++;
  $("key-form").hidden = false;
  $("key").focus();
  if (rest.key) showError(message); // a key was sent and refused: say what the server said
}

export function handleRestError(err) {
  if (err.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) { askForKey(err.message); return; }
  if (err instanceof TypeError) {
    page.server = "offline";
    updateConn();
    showError("the server cannot be reached (" + err.message + "); is `omniflex serve` running?");
    return;
  }
  showError(err.message);
}

/** Ask for the model list: says whether the server is up and whether it wants a key. */
export async function checkServer() {
  try {
    const models = await rest.json("/v1/models");
    config.model = (models.data[0] && models.data[0].id) || config.model;
    $("model").textContent = config.model;
    page.server = "online";
    $("key-form").hidden = true;
  } catch (err) {
    handleRestError(err);
  }
  updateConn();
}

// ------------------------------------------------------------------ answers' audio, barge-in
export function addAudioActions(turn, chunks) {
  if (!chunks.length) return;
  turn.button("Play again", () => {
    interrupt("replay");
    const owner = {};
    chunks.forEach((c) => page.player.schedule(c, owner));
  });
  turn.download(URL.createObjectURL(wavBlob(chunks)), `omniflex-answer-${turn.n}.wav`,
                "Download audio");
}

/** Stop the answer that is playing or being written: speech over it, a new message, a clear. */
export function interrupt(why) {
  const { player, restAnswer, rtAnswer } = page;
  const playing = player !== null && player.playing;
  if (!playing && !restAnswer && !rtAnswer) return;
  const heard = [rtAnswer, page.lastRtAnswer]
    .find((a) => a && !a.cut && a.itemId && playing && player.holds(a));
  const heardMs = heard ? Math.round(player.heard(heard) * 1000) : 0;
  const cut = player ? player.stop() : 0;
  if (heard) { // tell the server how much of its answer was heard: the rest is not in the context
    heard.cut = true;
    heard.turn.mark("interrupted");
    link.send({ type: "conversation.item.truncate", item_id: heard.itemId, content_index: 0,
                audio_end_ms: heardMs });
  }
  if (rtAnswer && !rtAnswer.cut) {
    rtAnswer.cut = true;
    rtAnswer.turn.mark("interrupted");
    // hands-free speech: the server cancels the answer itself (interrupt_response)
    if (why !== "speech") link.send({ type: "response.cancel" });
  }
  if (restAnswer) {
    restAnswer.cut = true;
    restAnswer.turn.mark("interrupted");
    restAnswer.controller.abort();
  }
  if (why === "speech" || why === "talk") {
    stats.bargeIns++;
    stats.cutSeconds += cut;
    stats.lastBargeIn = { why, cutSeconds: cut, heardMs, playingAfter: player ? player.sources.size : 0 };
  }
  refreshState();
}
