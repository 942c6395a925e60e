// The server's OpenAI REST API from the page: JSON calls with the API key (when one is set),
// chat completions streamed as server-sent events, and the server's errors as ApiError.

/** An OpenAI-shaped error from the server ({"error": {message, type, param, code}}). */
export class ApiError extends Error {
  constructor(status, message, code = null, param = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.param = param;
  }
}

export class Rest {
  constructor() {
    this.key = "";
  }

  headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    if (this.key) h.Authorization = "Bearer " + this.key;
    return h;
  }

  /** fetch `path`; a response that is not 2xx becomes an ApiError with the server's message. */
  async call(path, { method = "GET", body, signal } = {}) {
    const res = await fetch(path, {
      method, signal, headers: this.headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.ok) return res;
    let message = `${method} ${path} answered ${res.status} ${res.statusText}`, code = null, param = null;
    try {
      const err = (await res.json()).error || {};
      message = err.message || message;
      code = err.code || null;
      param = err.param || null;
    } catch (e) { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, message, code, param);
  }

  async json(path, options) {
    return (await this.call(path, options)).json();
  }

  /** POST /v1/chat/completions with stream: true; yields each chunk's first choice. */
  async *chatStream(body, signal) {
    const res = await this.call("/v1/chat/completions", {
      method: "POST", body: { ...body, stream: true }, signal,
    });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return;
          const chunk = JSON.parse(data);
          if (chunk.error) {
            throw new ApiError(200, chunk.error.message, chunk.error.code, chunk.error.param);
          }
          if (chunk.choices && chunk.choices.length) yield chunk.choices[0];
        }
      }
    }
  }
}
