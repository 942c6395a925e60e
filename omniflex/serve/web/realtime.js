// The Realtime websocket (/v1/realtime) from the page: connect, send events, hand each server
// event on. Browsers cannot set headers on a websocket, so the API key travels as the
// `openai-insecure-api-key.KEY` subprotocol, as OpenAI's own browser clients send it.

import { RATE } from "./audio.js";

/** The session for session.update: voice, turn detection, answer modality and length. */
export function sessionConfig({ voice, handsFree, textOnly, maxTokens }) {
  const format = { type: "audio/pcm", rate: RATE };
  return {
    type: "realtime",
    output_modalities: textOnly ? ["text"] : ["audio"],
    max_output_tokens: maxTokens,
    audio: {
      input: {
        format,
        turn_detection: handsFree ? {
          type: "server_vad", threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500,
          create_response: true, interrupt_response: true,
        } : null,
      },
      output: { format, voice },
    },
  };
}

export class RealtimeLink {
  constructor({ onEvent, onClose }) {
    this.ws = null;
    this.onEvent = onEvent;
    this.onClose = onClose;
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  /** Resolves once the socket is open; rejects if it closes first (refused, unreachable). */
  connect(key) {
    this.close();
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const protocols = ["realtime"];
    if (key) protocols.push("openai-insecure-api-key." + key);
    const ws = new WebSocket(scheme + location.host + "/v1/realtime", protocols);
    this.ws = ws;
    return new Promise((resolve, reject) => {
      let opened = false;
      ws.onopen = () => { opened = true; resolve(); };
      ws.onmessage = (m) => this.onEvent(JSON.parse(m.data));
      ws.onclose = (e) => {
        if (this.ws === ws) this.ws = null;
        if (opened) this.onClose(e);
        else reject(new Error("the voice connection was refused" + (e.reason ? ": " + e.reason : "")));
      };
    });
  }

  send(event) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  }

  close() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000);
    }
  }
}
