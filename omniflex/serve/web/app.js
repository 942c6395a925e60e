// omniflex playground: one conversation of typed, spoken, picture and video turns, whose
// answers stream as text, play as speech (with a transcript) or appear as pictures.
//
// Which protocol carries a turn, and why:
// * Spoken turns go over the Realtime websocket (/v1/realtime). It streams the microphone,
//   finds the end of speech on the server (silero-vad), prefills the model while the user is
//   still speaking and cancels an answer the user talks over: what makes speech feel live.
//   Push-to-talk turns too (turn detection off; commit and response.create on release).
// * Typed, picture and video turns go to POST /v1/chat/completions (stream: true) with the
//   conversation kept in this page: it takes a temperature (the Realtime session does not) and
//   pictures and audio as content parts, and streams text, or speech with its transcript.
// * Drawing ("draw …", or "Answer as: picture") goes to POST /v1/images/generations: neither
//   chat completions nor the Realtime API return images.
// Both see one conversation: spoken turns join the page's history (the user's recorded audio
// as input_audio, the answer's transcript as text), and the text of typed turns and their
// answers is added to the Realtime session (conversation.item.create).
//
// Modules: page.js (what the page holds; barge-in), typed.js (REST turns and attachments),
// voice.js (Realtime turns), view.js (the turns on screen), audio.js, attachments.js, rest.js,
// realtime.js. This one reads the server's offer, wires the controls and starts the page.

import {
  checkServer, config, hideError, history, interrupt, page, refreshState, rest, showError, stats,
  voice,
} from "./page.js";
import { attach, autosize, clearPending, sendTyped } from "./typed.js";
import { $, followLog } from "./view.js";
import {
  applySession, reconnectVoice, refreshDevices, startVoice, stopVoice, talkDown, talkUp,
} from "./voice.js";

async function loadConfig() {
  try {
    const res = await fetch("/web/config.json");
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    Object.assign(config, await res.json());
  } catch (err) {
    showError("could not read the page's settings from /web/config.json (" + err.message + ")");
  }
  const select = $("voice");
  select.replaceChildren();
  const presets = document.createElement("optgroup");
  presets.label = "preset voices";
  config.voices.forEach((v) => presets.append(new Option(v, v)));
  select.append(presets);
  const aliases = Object.entries(config.voice_aliases);
  if (aliases.length) {
    const openai = document.createElement("optgroup");
    openai.label = "OpenAI's names";
    aliases.forEach(([name, preset]) => openai.append(new Option(`${name} (speaks as ${preset})`, name)));
    select.append(openai);
  }
  $("temperature").value = config.temperature;
  $("temperature-value").textContent = config.temperature;
  $("max-tokens").max = config.max_new_tokens;
  $("max-tokens").value = config.max_new_tokens;
}

function clearConversation() {
  interrupt("clear");
  history.length = 0;
  clearPending();
  if (voice.turn) voice.turn = null;
  $("log").replaceChildren($("empty"));
  $("empty").hidden = false;
  hideError();
  if (voice.on) reconnectVoice(); // a fresh Realtime session: it forgets the old conversation
}

function isField(el) {
  return el && el.id !== "talk" && (/^(INPUT|TEXTAREA|SELECT|BUTTON|SUMMARY|A)$/.test(el.tagName) || el.isContentEditable);
}

function hasFiles(e) { return e.dataTransfer && [...e.dataTransfer.types].includes("Files"); }

function wire() {
  const run = (fn) => (...args) => Promise.resolve(fn(...args)).catch((err) => showError(err.message));
  $("composer").onsubmit = (e) => { e.preventDefault(); $("prompt").focus(); run(sendTyped)(); };
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); run(sendTyped)(); }
  });
  $("prompt").addEventListener("input", autosize);
  $("prompt").addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])];
    if (files.length) { e.preventDefault(); attach(files); }
  });
  $("attach").onchange = (e) => { attach([...e.target.files]); e.target.value = ""; };
  $("voice-toggle").onclick = run(() => (voice.on ? stopVoice() : startVoice()));
  $("mode").onchange = applySession;
  $("voice").onchange = applySession;
  $("answer").onchange = applySession;
  $("max-tokens").onchange = applySession;
  $("temperature").oninput = () => { $("temperature-value").textContent = $("temperature").value; };
  $("mic").onchange = run(async () => { if (voice.on) await page.mic.start($("mic").value); });
  $("clear").onclick = clearConversation;
  $("error-close").onclick = hideError;
  $("key-form").onsubmit = run(async (e) => {
    e.preventDefault();
    rest.key = $("key").value.trim();
    sessionStorage.setItem("omniflex-key", rest.key);
    hideError();
    await checkServer();
  });
  const talk = $("talk");
  talk.addEventListener("pointerdown", (e) => { e.preventDefault(); run(talkDown)(); });
  for (const type of ["pointerup", "pointerleave", "pointercancel"]) talk.addEventListener(type, talkUp);
  document.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat && !isField(e.target)) { e.preventDefault(); run(talkDown)(); }
  });
  document.addEventListener("keyup", (e) => {
    if (e.code === "Space" && voice.talking) { e.preventDefault(); talkUp(); }
  });
  // a button clicked with the mouse lets go of the focus, so that Space talks instead of
  // pressing it again (keyboard users keep the focus: their clicks have detail 0)
  document.addEventListener("click", (e) => {
    const control = e.target.closest && e.target.closest("button, summary");
    if (e.detail > 0 && control) control.blur();
  });
  let depth = 0; // dragenter/dragleave pairs, over child elements too
  document.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; $("drop").hidden = false; } });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    if (e.dataTransfer && e.dataTransfer.files.length) attach([...e.dataTransfer.files]);
  });
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", refreshDevices);
  }
}

async function init() {
  wire();
  followLog();
  rest.key = sessionStorage.getItem("omniflex-key") || "";
  const phone = matchMedia("(max-width: 760px)"); // settings folded away on a phone
  $("settings").open = !phone.matches;
  phone.addEventListener("change", (e) => { $("settings").open = !e.matches; });
  await loadConfig();
  await checkServer();
  await refreshDevices();
  refreshState();
  stats.ready = true;
}

init();
