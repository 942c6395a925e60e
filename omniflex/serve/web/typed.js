// Typed, picture and video turns: POST /v1/chat/completions, streamed, with the page's history
// (a "draw …" request goes to POST /v1/images/generations instead), and the attachments of the
// message being written.

import { RATE, floatFromPcm16B64 } from "./audio.js";
import { contentParts, readAttachment } from "./attachments.js";
import {
  addAudioActions, config, ensureAudio, handleRestError, history, interrupt, page, refreshState,
  rest, settings, showError, stats, updateConn,
} from "./page.js";
import { ApiError } from "./rest.js";
import { $, Turn, ms } from "./view.js";
import { syncRealtime } from "./voice.js";

const DRAW = /^\s*(please\s+)?(draw|paint|sketch)\b/i;
const HISTORY_WINDOW = 12; // messages sent with a typed turn; older ones go if the context is full
let pending = []; // attachments of the message being written
let reading = Promise.resolve(); // attachments still being read

function toMessages(entries) {
  return entries.map((m) => ({ role: m.role, content: m.content }));
}

function tooLong(err) {
  return err instanceof ApiError && (err.status === 413 ||
    (err.code === "invalid_messages" && /capacity|too long|context/i.test(err.message)));
}

function answerMode(text, attachments) {
  const chosen = $("answer").value;
  // images/generations reads words only: a message with attachments is answered in words
  if (chosen === "picture") return text && !attachments.length ? "picture" : "text";
  if (chosen !== "auto") return chosen;
  return DRAW.test(text) && !attachments.length ? "picture" : "text";
}

function showAttachment(turn, a) {
  if (a.kind === "video") {
    const v = document.createElement("video");
    v.src = a.preview;
    v.controls = true;
    v.muted = true;
    v.className = "thumb";
    v.setAttribute("aria-label", "video " + a.name);
    turn.media(v);
    const sound = a.audio ? ` and ${a.audio.seconds.toFixed(1)} s of its sound` : "";
    turn.append(`${a.frames.length} frame${a.frames.length > 1 ? "s" : ""}${sound} sent`, "note");
  } else {
    const img = new Image();
    img.src = a.preview;
    img.alt = "picture " + a.name;
    img.className = "thumb";
    turn.media(img);
  }
}

export async function sendTyped() {
  await reading;
  const text = $("prompt").value.trim();
  const attachments = pending;
  if (!text && !attachments.length) return;
  ensureAudio();
  interrupt("new message");
  pending = [];
  renderPending();
  $("prompt").value = "";
  autosize();
  const kinds = [...new Set([...(text ? ["typed"] : []), ...attachments.map((a) => a.kind)])];
  const turn = new Turn("user", kinds.join(" + "));
  attachments.forEach((a) => showAttachment(turn, a));
  if (text) turn.set(text);
  const content = attachments.flatMap(contentParts);
  if (text) content.push({ type: "text", text });
  history.push({ role: "user", content, text, synced: false });
  const mode = answerMode(text, attachments);
  if (mode === "picture") await drawAnswer(text);
  else await chatAnswer(mode === "speech");
  syncRealtime();
}

async function chatAnswer(spoken) {
  const s = settings();
  const turn = new Turn("assistant", spoken ? "speech" : "text");
  const answer = { controller: new AbortController(), turn, cut: false, text: "", audio: [] };
  page.restAnswer = answer;
  refreshState();
  const body = {
    model: config.model || undefined, temperature: s.temperature,
    max_completion_tokens: s.maxTokens, modalities: spoken ? ["text", "audio"] : ["text"],
  };
  if (spoken) body.audio = { voice: s.voice, format: "pcm16" };
  const start = performance.now();
  let first = null, firstAudio = null, tokens = 0, audioSeconds = 0, finish = null;
  let size = Math.min(history.length, HISTORY_WINDOW);
  try {
    for (;;) {
      try {
        const messages = toMessages(history.slice(-size));
        for await (const choice of rest.chatStream({ ...body, messages }, answer.controller.signal)) {
          const d = choice.delta || {};
          const audio = d.audio || {};
          if (d.content || audio.transcript) {
            if (first === null) first = performance.now();
            tokens++;
            answer.text += d.content || audio.transcript;
            turn.append(d.content || audio.transcript, d.content ? "text" : "transcript");
          }
          if (audio.data && !answer.cut) {
            const samples = floatFromPcm16B64(audio.data);
            if (firstAudio === null) firstAudio = performance.now();
            audioSeconds += samples.length / RATE;
            answer.audio.push(samples);
            page.player.schedule(samples, answer);
          }
          if (d.refusal) turn.append("refused: " + d.refusal, "note");
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        break;
      } catch (err) { // longer than the model's context: drop the oldest turns and ask again
        if (!tooLong(err) || first !== null || size <= 1) throw err;
        size = Math.max(1, size - 2);
        turn.set(`(the conversation is longer than the model's context: sent the last ${size} messages)`, "note");
      }
    }
    page.server = "online";
    updateConn();
  } catch (err) {
    if (err.name !== "AbortError") { turn.mark("failed"); handleRestError(err); }
  }
  const seconds = (performance.now() - start) / 1000;
  if (finish === "length") turn.mark("cut at max length");
  if (finish === "content_filter") turn.mark("stopped by the output guard");
  const meta = [];
  if (spoken && firstAudio !== null) meta.push(`request → first audio ${ms(firstAudio - start)}`);
  else if (first !== null) meta.push(`request → first token ${ms(first - start)}`);
  if (tokens) meta.push(`${tokens} tok · ${(tokens / seconds).toFixed(1)} tok/s`);
  if (audioSeconds) meta.push(`${audioSeconds.toFixed(1)} s of speech in ${seconds.toFixed(1)} s`);
  meta.push("chat completions");
  turn.setMeta(meta.join(" · "));
  if (first !== null || firstAudio !== null) {
    stats.latencies.push({ kind: spoken ? "rest-audio" : "rest-text",
                           ms: (spoken && firstAudio !== null ? firstAudio : first) - start });
  }
  if (!answer.text && !answer.audio.length && !answer.cut && turn.flag !== "failed") turn.set("(no words)", "note");
  addAudioActions(turn, answer.audio);
  stats.restAnswers++;
  stats.restAudioSeconds += audioSeconds;
  if (answer.text.trim()) history.push({ role: "assistant", content: answer.text, text: answer.text, synced: false });
  if (page.restAnswer === answer) page.restAnswer = null;
  refreshState();
}

async function drawAnswer(prompt) {
  const turn = new Turn("assistant", "picture");
  turn.set("drawing…", "status");
  const answer = { controller: new AbortController(), turn, cut: false };
  page.restAnswer = answer;
  refreshState();
  const start = performance.now();
  try {
    const out = await rest.json("/v1/images/generations", {
      method: "POST", body: { prompt, n: 1, response_format: "b64_json" },
      signal: answer.controller.signal,
    });
    turn.set("", "status");
    const item = out.data && out.data[0];
    if (!item) {
      turn.set("The model answered without a picture this time.", "note");
    } else {
      const url = "data:image/png;base64," + item.b64_json;
      const img = new Image();
      img.src = url;
      img.alt = "picture drawn for: " + prompt;
      img.className = "drawn";
      turn.media(img);
      if (item.revised_prompt) turn.append(item.revised_prompt);
      turn.download(url, `omniflex-picture-${turn.n}.png`, "Download picture");
      stats.pictures++;
      // chat completions read no pictures from the assistant: only its words go in the history
      if (item.revised_prompt) {
        history.push({ role: "assistant", content: item.revised_prompt, text: item.revised_prompt, synced: false });
      }
    }
    turn.setMeta(`request → picture ${ms(performance.now() - start)} · images/generations`);
    stats.latencies.push({ kind: "picture", ms: performance.now() - start });
    page.server = "online";
    updateConn();
  } catch (err) {
    turn.set("", "status");
    if (err.name !== "AbortError") { turn.mark("failed"); handleRestError(err); }
  }
  if (page.restAnswer === answer) page.restAnswer = null;
  refreshState();
}

// ------------------------------------------------------------------ attachments
export function renderPending() {
  const box = $("attachments");
  box.replaceChildren();
  pending.forEach((a, i) => {
    const chip = document.createElement("figure");
    chip.className = "chip";
    const media = document.createElement(a.kind === "video" ? "video" : "img");
    media.src = a.preview;
    if (a.kind === "video") { media.muted = true; media.setAttribute("aria-label", "video " + a.name); }
    else media.alt = "picture " + a.name;
    const caption = document.createElement("figcaption");
    caption.textContent = a.kind === "video"
      ? `${a.name} · ${a.frames.length} frames${a.audio ? " + sound" : ""}` : a.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", "Remove " + a.name);
    remove.onclick = () => { pending.splice(i, 1); renderPending(); };
    chip.append(media, caption, remove);
    box.append(chip);
  });
  stats.attachments = pending.length;
}

export function attach(files) {
  reading = reading.then(async () => {
    for (const file of files) {
      try {
        pending.push(await readAttachment(file));
      } catch (err) {
        showError(err.message);
      }
    }
    renderPending();
  });
  return reading;
}

/** Drop the attachments of the message being written. */
export function clearPending() {
  pending = [];
  renderPending();
}

export function autosize() {
  const p = $("prompt");
  p.style.height = "auto";
  p.style.height = Math.min(p.scrollHeight, 160) + "px";
}
