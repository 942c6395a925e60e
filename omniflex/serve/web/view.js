// The conversation view: one Turn per message, labelled with who spoke and in which modality
// ("You · typed + picture", "omniflex · speech · interrupted"), holding its text, transcript,
// pictures, timings and download links.

export const $ = (id) => document.getElementById(id);
export const ms = (x) => `${Math.round(x)} ms`;

let turnCount = 0;
let atEnd = true; // the log follows new content while its reader is at the end

/** Keep the log at its end as turns grow or the window changes, unless the reader scrolled up. */
export function followLog() {
  const log = $("log");
  log.addEventListener("scroll", () => {
    atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 48;
  });
  new ResizeObserver(() => { if (atEnd) log.scrollTop = log.scrollHeight; }).observe(log);
}

export class Turn {
  constructor(role, modality) {
    $("empty").hidden = true;
    this.n = ++turnCount; // names downloads: omniflex-answer-3.wav
    this.role = role;
    this.flag = "";
    this.el = document.createElement("article");
    this.el.className = "turn " + role;
    this.tag = document.createElement("div");
    this.tag.className = "tag";
    this.body = document.createElement("div");
    this.body.className = "body";
    this.meta = document.createElement("div");
    this.meta.className = "meta";
    this.actions = document.createElement("div");
    this.actions.className = "actions";
    this.el.append(this.tag, this.body, this.meta, this.actions);
    this.label(modality);
    $("log").append(this.el);
    this.scroll(role === "user"); // what the user just said is always shown
  }

  label(modality) {
    this.modality = modality;
    this.el.dataset.modality = modality;
    const who = this.role === "user" ? "You" : "omniflex";
    this.tag.textContent = `${who} · ${modality}${this.flag ? " · " + this.flag : ""}`;
    this.el.setAttribute("aria-label", this.tag.textContent);
  }

  mark(flag) {
    this.flag = flag;
    this.el.dataset.flag = flag;
    this.label(this.modality);
  }

  part(kind) {
    let p = this.body.querySelector(":scope > ." + kind);
    if (!p) {
      p = document.createElement("p");
      p.className = kind;
      this.body.append(p);
    }
    return p;
  }

  append(text, kind = "text") { this.part(kind).textContent += text; this.scroll(); }

  set(text, kind = "text") {
    if (text) this.part(kind).textContent = text;
    else this.body.querySelector(":scope > ." + kind)?.remove();
  }

  media(el) { this.body.append(el); this.scroll(); }

  setMeta(text) { this.meta.textContent = text; this.scroll(); }

  download(href, name, label) {
    const a = document.createElement("a");
    a.href = href;
    a.download = name;
    a.className = "download";
    a.textContent = label;
    this.actions.append(a);
    this.scroll();
  }

  button(label, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.onclick = onclick;
    this.actions.append(b);
    this.scroll();
  }

  scroll(force = false) {
    const log = $("log");
    if (force || atEnd) log.scrollTop = log.scrollHeight;
  }
}
