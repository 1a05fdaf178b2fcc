// clara's web chat: plain JavaScript against clara-serve's own OpenAI-compatible API
// (chat completions streamed over SSE, files + vector stores for uploads). No build step,
// nothing loaded from elsewhere: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const turns = []; // {role, content} of this chat
let chat = 0; // "New chat" counts up: an answer of an earlier chat changes nothing of this one
let running = null; // the AbortController of the answer streaming now
let serverCollection = ""; // what "server default" searches (from /v1/models)
let filesApi = true; // false when the server runs with --no-files-api (no listing, no uploads)
const storeNames = {}; // vector store id -> its name, as last listed for this key
let keyChanged = false; // the API key was typed again since the stores were listed
let keyRole = "all"; // the API key's role, as the server's answers say (X-Clara-Key-Role)
const MAX_SEARCHED = 8; // collections one question searches at most (server/protocol.py's)
const NO_ANSWER = "the server did not answer (stopped or restarting?)";
const OFFLINE = "this device is offline: send it again once it is back online";
let leaving = false; // the page is being reloaded or closed (an answer cut by it is no error)
const KEY_WRONG = "the API key is missing or wrong: enter the server's key in the API key field";
const KEY_UNSENDABLE = "the API key has a character a browser cannot send (a curly quote or a dash pasted with it?): type the server's key again";

// What a screen reader says: `say` when it is idle (an answer, progress), `alert` at once
// (errors). Set to "" first, so the same words twice are said twice; emptied once said (a
// reader going through the page read the last answer twice, there and in the log: an audit).
const SAID_FOR = 8000; // ms: the words are spoken (or queued to be) when they change
const timers = {}; // id -> [the timer that shows the words, the one that empties them]
function speak(id, text) {
  $(id).textContent = "";
  for (const t of timers[id] || []) clearTimeout(t);
  timers[id] = [setTimeout(() => {
    $(id).textContent = text;
    timers[id][1] = setTimeout(() => { $(id).textContent = ""; }, SAID_FOR);
  }, 50)];
}
const say = (text) => speak("announce", text);
const alertUser = (text) => speak("alert", text);

function headers(json = true) {
  const h = {};
  const key = $("api-key").value.trim();
  if (/[^\x20-\x7e\xa0-\xff]/.test(key)) { // a browser sends no such header (fetch's TypeError
    keyNeeded(true); // read as "the server did not answer"): say what is wrong with the key
    throw new Error(KEY_UNSENDABLE);
  }
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

function keyNeeded(needed) {
  $("api-key").closest(".key").classList.toggle("needed", needed);
  if (needed) $("api-key").setAttribute("aria-invalid", "true");
  else $("api-key").removeAttribute("aria-invalid");
}

// An Error for a refused request: the server's own message, or what to do about a missing key.
function failure(r, body) {
  const message = (body.error && body.error.message) || `${r.status} ${r.statusText}`;
  const e = new Error(r.status === 401 ? KEY_WRONG : message);
  e.status = r.status;
  e.code = body.error && body.error.code;
  e.retryAfter = Number(r.headers.get("Retry-After")) || 0;
  if (r.status === 401) {
    keyNeeded(true);
    $("api-key").focus();
  }
  return e;
}

// Every address is relative to the page, so the chat works behind a reverse proxy that serves
// it under a path of its own (https://example.org/clara/): the API is beside the page. A source
// link the server writes from its root ("/v1/files/...", or "/clara/v1/files/..." under
// --root-path) is read from the page's folder too.
function here(url) {
  const at = url.startsWith("/") ? url.lastIndexOf("/v1/files/") : -1; // (the path may hold
  return at >= 0 ? url.slice(at + 1) : url; // a "/v1/" of its own)
}

function isUpload(url) {
  return !!url && url.startsWith("/") && url.includes("/v1/files/");
}

async function api(path, options = {}) {
  let r;
  const sent = { ...options, headers: { ...headers(!!options.body), ...(options.headers || {}) } };
  try {
    r = await fetch(path, sent);
  } catch (e) {
    throw new Error(NO_ANSWER);
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw failure(r, body);
  const role = r.headers.get("X-Clara-Key-Role"); // (none: the server has no keys)
  if (role !== null && role !== keyRole) {
    keyRole = role;
    uploadsFor();
  }
  return body;
}

// The upload form, for a key that may upload: an "ask" key's uploads are refused (a 403 once
// the file was picked and sent), so it is told where documents come from instead.
function uploadsFor() {
  if (!filesApi) return; // (--no-files-api: `filesOff` says so)
  const ask = keyRole === "ask";
  $("uploads").hidden = ask;
  $("ask-only").hidden = !ask;
}

// Follow the newest text only while the reader is at the bottom: scrolling up to read stays put.
// What scrolls is the log, or the page itself in a short window (a phone on its side: style.css).
function scroller() {
  const log = $("log");
  return getComputedStyle(log).overflowY === "visible" ? document.scrollingElement : log;
}

function atBottom() {
  const s = scroller();
  return s.scrollHeight - s.scrollTop - s.clientHeight < 40;
}

function follow(wasAtBottom) {
  if (wasAtBottom) { const s = scroller(); s.scrollTop = s.scrollHeight; }
}

// The reader's place, kept across a turn of the phone (which changes what scrolls): at the
// bottom, or the first message in view.
let pinned = true;
let reading = null;
let noting = false;
function notePlace() { // (once a frame at most: scroll events come with every streamed chunk)
  if (noting) return;
  noting = true;
  requestAnimationFrame(() => {
    noting = false;
    pinned = atBottom();
    const s = scroller();
    const top = s === $("log") ? s.getBoundingClientRect().top : 0;
    reading = [...$("log").children].find((m) => m.getBoundingClientRect().bottom > top + 1) || null;
  });
}
function keepPlace() {
  if (pinned || !reading) follow(true);
  else reading.scrollIntoView({ block: "start" });
}

function add(role, text) {
  const div = document.createElement("article"); // who said it, for screen readers too
  div.className = "msg " + role;
  div.setAttribute("aria-label", role === "user" ? "Your question" : "clara's answer");
  div.dir = "auto"; // Arabic and Hebrew read right to left (the browser tells by the text)
  div.textContent = text;
  $("log").appendChild(div);
  follow(true); // the reader's own question, or the answer to it: show it
  return div;
}

// A file:// URL's path as a person reads it; the bytes of a name that are not UTF-8 (a
// Latin-1 disk's %E9) keep their escapes (decodeURIComponent throws on them, and the sources
// went unshown)
// A file:// URL's path as the server writes names: bytes that are not UTF-8 (a Latin-1
// disk's) as \xNN, as in the source's name (they showed as %E9 beside \xe9).
const strict = new TextDecoder("utf-8", { fatal: true });
function fileName(path) {
  return path.replace(/(%[0-9A-Fa-f]{2})+/g, (run) => {
    const bytes = run.slice(1).split("%").map((h) => parseInt(h, 16));
    let out = "";
    for (let i = 0; i < bytes.length; ) {
      let n = 4;
      for (; n > 0; n--) { // the longest UTF-8 character starting here
        try {
          out += strict.decode(new Uint8Array(bytes.slice(i, i + n)));
          break;
        } catch { /* shorter */ }
      }
      if (n === 0) out += "\\x" + bytes[i].toString(16).padStart(2, "0");
      i += Math.max(n, 1);
    }
    return out;
  });
}

// An answer's Markdown as a reader expects it, once it is written: fenced code blocks,
// headings, lists (nested by their indentation; task items ticked or not), tables, quotes,
// rules, `code`, **bold**, *italics*, ~~struck~~ and links (http and https only). Built of
// elements and text nodes, never innerHTML: markup in an answer stays text. The block rules
// are CommonMark's and GitHub's, simplified: no setext headings (a "---" under a line is a
// rule: models write it between sections), no indented code, no footnotes, no HTML; a list's
// items share its marker. Every pattern is linear in its line (a model looping on spaces or
// brackets writes 100 KB of them), and a table's cells are bounded (`MOST_CELLS`).
const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/; // and its info string: the language first
const ITEM = /^( {0,3})(?:([-*+])|(\d{1,9})([.)]))( +|$)(.*)$/;
const RULE = /^ {0,3}([-*_])(?: *\1){2,} *$/; // --- *** ___ (spaced too)
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/; // (its closing #s: `headingText`)
// a table's |---|:--:| (tested trimmed: no two runs of spaces meet, which backtracked on
// a model's run of spaces)
const DELIMITER = /^\|?(?: *:?-+:? *\|)* *:?-+:? *\|?$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const DEEPEST = 8; // lists in lists: deeper ones are read as text
const MOST_COLUMNS = 64; // a table wider, or of more cells, is shown as its lines (each row is
const MOST_CELLS = 20000; // filled to the header's width: 6 KB of bars made a million cells)

function formatted(text) {
  const out = document.createDocumentFragment();
  const lines = text.replace(/\r\n?|[\u2028\u2029]/g, "\n").split("\n")
    .map((l) => l.replace(/^[ \t]+/, (w) => w.replace(/\t/g, "    "))); // (tabs: 4 columns)
  for (const block of blocks(lines, 0)) out.append(block);
  return out;
}

const indentOf = (line) => line.length - line.trimStart().length;

function fenceOf(line) { // [marks, info] of an opening fence, else null
  const m = line.match(FENCE);
  return m && !(m[1][0] === "`" && m[2].includes("`")) ? [m[1], m[2]] : null;
}

// Whether a line starts a block of its own (it ends a quoted paragraph, not goes on with it)
function startsBlock(line) {
  return Boolean(fenceOf(line) || ITEM.test(line) || RULE.test(line) || headingText(line) ||
    QUOTE.test(line) || line.includes("|"));
}

function* blocks(lines, depth) {
  let para = [];
  const flush = function* () { // (its blank lines at either end left out)
    const first = para.findIndex((l) => l.trim());
    if (first >= 0) {
      let last = para.length - 1;
      while (!para[last].trim()) last--;
      const text = document.createDocumentFragment();
      inline(text, para.slice(first, last + 1).join("\n"));
      yield text;
    }
    para = [];
  };
  let i = 0;
  let shape = null;
  while (i < lines.length) {
    const line = lines[i];
    const fence = fenceOf(line);
    const item = line.match(ITEM);
    const heading = headingText(line);
    const inPara = para.length > 0 && para[para.length - 1].trim() !== "";
    if (fence) {
      yield* flush();
      const [marks, info] = fence;
      const code = [];
      const pad = new RegExp(`^ {0,${indentOf(line)}}`);
      for (i++; i < lines.length; i++) {
        const close = lines[i].match(FENCE);
        if (close && close[1][0] === marks[0] && close[1].length >= marks.length && !close[2].trim()) break;
        code.push(lines[i].replace(pad, ""));
      }
      i++; // (past the closing fence; an answer cut inside its block ends it)
      yield codeBlock(code, (info.trim().split(/[\s:,{}]+/).find(Boolean) || "").replace(/[^\w+#.-]/g, ""));
    } else if ((shape = tableAt(lines, i))) {
      const [end, fits] = shape;
      if (fits) {
        yield* flush();
        yield table(lines.slice(i, end).filter((_, k) => k !== 1).map(cells), cells(lines[i + 1]));
      } else { // (too big: its lines as text, past them at once: each was read again before)
        for (let k = i; k < end; k++) para.push(lines[k]); // (no spread: 130k lines overflowed)
      }
      i = end;
    } else if (QUOTE.test(line) && depth < DEEPEST) { // > quoted lines, and the lines that go
      yield* flush(); // on with a quoted paragraph (not a line that starts a block of its own)
      const quoted = [];
      for (; i < lines.length && lines[i].trim(); i++) {
        const q = lines[i].match(QUOTE);
        if (q) quoted.push(q[1]);
        else if (startsBlock(lines[i]) || startsBlock(quoted[quoted.length - 1]) || !quoted[quoted.length - 1].trim()) break;
        else quoted.push(lines[i]);
      }
      const quote = document.createElement("blockquote");
      for (const block of blocks(quoted, depth + 1)) quote.append(block);
      yield quote;
    } else if (RULE.test(line)) {
      yield* flush();
      yield document.createElement("hr");
      i++;
    } else if (heading) {
      yield* flush();
      // (h3 and below: the page's h1 and h2 come first)
      const h = document.createElement(`h${Math.min(6, heading[0] + 2)}`);
      inline(h, heading[1]);
      yield h;
      i++;
    } else if (item && depth < DEEPEST && !(inPara && (!item[6].trim() || (item[3] && item[3] !== "1")))) {
      yield* flush(); // (a paragraph goes on past "1999. " and an empty "- ": CommonMark's rule)
      const [list, next] = listAt(lines, i, depth);
      yield list;
      i = next;
    } else {
      para.push(line);
      i++;
    }
  }
  yield* flush();
}

// [level, text] of an ATX heading with words ("## Notes ##"), else null (a lone "#" is text)
function headingText(line) {
  const m = line.match(HEADING);
  if (!m || !m[2] || !m[2].trim()) return null;
  let text = m[2].trimEnd();
  let k = text.length;
  while (k > 0 && text[k - 1] === "#") k--;
  if (k === 0 || text[k - 1] === " " || text[k - 1] === "\t") text = text.slice(0, k).trimEnd();
  return text ? [m[1].length, text] : null;
}

// A table at lines[i]: a header row over a delimiter row of as many cells (a line holding "|"
// over a "---" is no table: it is prose and a rule), and its rows: [the line after it,
// whether it is small enough to draw], else null
function tableAt(lines, i) {
  const rule = (lines[i + 1] ?? "").trim();
  if (!lines[i].includes("|") || !rule.includes("-") || headingText(lines[i])) return null;
  if (indentOf(lines[i + 1]) > 3 || !DELIMITER.test(rule)) return null;
  const columns = cells(lines[i]).length;
  if (columns !== cells(rule).length || (columns === 1 && !rule.includes("|"))) return null;
  let end = i + 2;
  while (end < lines.length && lines[end].includes("|") && lines[end].trim()) end++;
  return [end, columns <= MOST_COLUMNS && columns * (end - i - 1) <= MOST_CELLS];
}

// The list starting at lines[i], and the line after it. An item holds the lines indented to
// its text's column (its paragraphs, code, lists in it) and a paragraph's lazy next lines.
function listAt(lines, i, depth) {
  const first = lines[i].match(ITEM);
  const ordered = first[3] !== undefined;
  const kind = (m) => (m[3] !== undefined ? "1" + m[4] : m[2]);
  const list = document.createElement(ordered ? "ol" : "ul");
  if (ordered && first[3] !== "1") list.start = Number(first[3]);
  const nextFilled = (j) => { while (j < lines.length && !lines[j].trim()) j++; return j; };
  while (i < lines.length) {
    if (!lines[i].trim()) { // items apart by blank lines: one list
      const j = nextFilled(i);
      const m = j < lines.length && lines[j].match(ITEM);
      if (!m || kind(m) !== kind(first) || indentOf(lines[j]) > 3) break;
      i = j;
    }
    const m = lines[i].match(ITEM);
    if (!m || kind(m) !== kind(first) || RULE.test(lines[i])) break;
    const marker = m[1].length + (m[2] || m[3] + m[4]).length;
    const column = marker + (m[6] && m[5].length <= 4 ? m[5].length : 1);
    const own = [m[6]];
    for (i++; i < lines.length; i++) {
      const l = lines[i];
      if (!l.trim()) {
        const j = nextFilled(i);
        if (j < lines.length && indentOf(lines[j]) >= column) {
          own.push(...lines.slice(i, j).map(() => ""));
          i = j - 1;
          continue;
        }
        break;
      }
      if (indentOf(l) >= column) own.push(l.slice(column));
      else if (!ITEM.test(l) && !RULE.test(l) && !fenceOf(l) && !HEADING.test(l) && own[own.length - 1].trim()) own.push(l.trim());
      else break;
    }
    const li = document.createElement("li");
    const task = own[0].match(/^\[([ xX])\] +(.*)$/); // - [ ] to do, - [x] done
    if (task) {
      const box = document.createElement("input");
      box.type = "checkbox";
      box.disabled = true;
      box.defaultChecked = task[1] !== " "; // (the attribute: a copy of the answer keeps it)
      li.className = "task";
      li.append(box, " ");
      own[0] = task[2];
    }
    for (const block of blocks(own, depth + 1)) li.append(block);
    list.append(li);
  }
  return [list, i];
}

function cells(line) {
  const row = line.trim().replace(/^\|/, "").replace(/(?<!\\)\|$/, "");
  return row.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(rows, rule) {
  const wrap = document.createElement("div");
  wrap.className = "table scrolls";
  wrap.setAttribute("role", "group");
  const n = rows.length - 1;
  wrap.setAttribute("aria-label", n ? `table, ${n} ${n === 1 ? "row" : "rows"}` : "table");
  const t = document.createElement("table");
  const align = rule.map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : ""));
  rows.forEach((row, r) => {
    const tr = document.createElement("tr");
    for (let c = 0; c < rows[0].length; c++) {
      const cell = document.createElement(r ? "td" : "th");
      if (!r) cell.scope = "col";
      if (align[c]) cell.style.textAlign = align[c];
      inline(cell, row[c] ?? "");
      tr.append(cell);
    }
    (r ? t.tBodies[0] ?? t.createTBody() : t.createTHead()).append(tr);
  });
  wrap.append(t);
  return wrap;
}

const INLINE = new RegExp([
  /`[^`\n]+`/, /\*\*[^*\n]+\*\*/, /__[^_\n]+__/,
  /(?<![\w*])\*[^*\s](?:[^*\n]*[^*\s])?\*(?![\w*])/, /(?<![\w_])_[^_\s](?:[^_\n]*[^_\s])?_(?![\w_])/,
  /\[[^[\]\n]{1,500}\]\(https?:\/\/(?:[^\s()]|\([^\s()]{0,200}\)){1,2000}\)/, /<https?:\/\/[^\s<>]{1,2000}>/,
  /~~[^~\s](?:[^~\n]*[^~\s])?~~/,
].map((r) => r.source).join("|"));
const INLINE_PARTS = new RegExp(`(${INLINE.source})`); // (split: the marks at odd places)
function inline(parent, text) {
  text.split(INLINE_PARTS).forEach((part, k) => {
    if (k % 2 === 0) {
      if (part) parent.append(part);
      return;
    }
    let el = null;
    if (part[0] === "`") {
      el = document.createElement("code");
      el.textContent = part.slice(1, -1);
    } else if (part.startsWith("**") || part.startsWith("__")) {
      el = document.createElement("strong");
      el.textContent = part.slice(2, -2);
    } else if (part[0] === "[") {
      el = link(...part.match(/^\[([^\]]+)\]\((.+)\)$/).slice(1));
    } else if (part[0] === "<") {
      el = link(part.slice(1, -1), part.slice(1, -1));
    } else if (part.startsWith("~~")) {
      el = document.createElement("del");
      el.textContent = part.slice(2, -2);
    } else {
      el = document.createElement("em");
      el.textContent = part.slice(1, -1);
    }
    parent.append(el);
  });
}

// A link (http or https: the pattern takes no other) that says where it goes: a touch screen
// shows no address on hover, and an answer may word a link as another site
function link(words, url) {
  const a = document.createElement("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.title = url;
  a.textContent = words;
  const host = a.hostname.replace(/^www\./, "");
  if (!host) return a; // (an address the browser cannot read: its title says it)
  const named = words.match(/(?:https?:\/\/)?((?:[\w-]+\.)+[a-z][\w-]+)/i); // (a site the words name)
  if (!named || named[1].toLowerCase().replace(/^www\./, "") !== host) {
    const where = document.createElement("span");
    where.className = "muted";
    where.textContent = ` (${host})`;
    a.append(where);
  }
  return a;
}

function codeBlock(lines, lang) {
  const pre = document.createElement("pre");
  pre.className = "code scrolls";
  pre.setAttribute("role", "group"); // (named: a generic element's name is not read)
  pre.setAttribute("aria-label", lang ? `${lang} code` : "code");
  const code = document.createElement("code");
  code.textContent = lines.join("\n");
  pre.append(code);
  return pre;
}

// A wide code block or table scrolls inside its box: from the keyboard too, so it is a tab
// stop while it overflows (only then: a chat of short snippets had a stop for each).
function tabStops(root) {
  for (const box of root.querySelectorAll(".scrolls")) {
    if (box.scrollWidth > box.clientWidth + 1) box.tabIndex = 0;
    else box.removeAttribute("tabindex");
  }
}

// What a screen reader says of an answer: its text as shown, a table by its size (its cells
// are read with table navigation; a 200-row table said 4,795 characters of pipes: an audit)
function spoken(fragment) {
  const copy = document.createElement("div");
  copy.append(fragment.cloneNode(true));
  for (const t of copy.querySelectorAll(".table")) t.replaceWith(` (${t.getAttribute("aria-label")}) `);
  for (const ol of copy.querySelectorAll("ol")) { // (the numbers the page shows)
    [...ol.children].forEach((li, k) => li.prepend(`${ol.start + k}. `));
  }
  for (const box of copy.querySelectorAll("li.task > input")) {
    box.replaceWith(box.hasAttribute("checked") ? "(done) " : "(to do) ");
  }
  for (const del of copy.querySelectorAll("del")) del.prepend("(struck) ");
  for (const b of copy.querySelectorAll("li, h3, h4, h5, h6, pre, hr, ul, ol, blockquote")) {
    b.before(" ");
    b.append(" ");
  }
  return copy.textContent.replace(/\s+/g, " ").trim();
}

function note(div, text) {
  const span = document.createElement("span");
  span.className = "note";
  span.textContent = text;
  div.appendChild(span);
}

// ---- server state: model, collections, retrieval modes -----------------------------------
let refreshTimer = null; // one pending look at the server at most
let listedAt = 0; // when the collections were last listed (`lookAgain`: not more than each 5 s)

// What the user picked (collection, what the model reads, retrieval), kept for this tab: a
// reload, a refresh after a restart or a key typed again kept none of them (the next question
// went to the server default), nor does a list that no longer holds the pick change it.
const PICKS = ["collection", "mode", "retrieval-mode"];
const picked = (() => { // (anything unreadable there is no pick: the page must still start)
  try {
    const read = JSON.parse(sessionStorage.getItem("clara-picks") || "{}");
    return read && typeof read === "object" && !Array.isArray(read) ? read : {};
  } catch (e) {
    return {};
  }
})();
function pick(id, value) {
  picked[id] = value;
  if (id === "collection") { // its name too: shown if it is deleted, after a reload as well
    const option = [...$(id).options].find((o) => o.value === value);
    picked["collection-name"] = (option && option.dataset.name) || "";
  }
  sessionStorage.setItem("clara-picks", JSON.stringify(picked));
}
function restore(id) {
  const picker = $(id);
  const value = picked[id] || "";
  if ([...picker.options].some((o) => o.value === value)) picker.value = value;
}

function refreshIn(ms) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, ms);
}

async function refresh() {
  try {
    const card = (await api("v1/models")).data[0];
    keyNeeded(false);
    $("model").textContent = card.id;
    if (card.mode) $("mode").options[0].textContent = `server default (${card.mode})`;
    serverCollection = card.collection || "";
    showRetrievalModes(card);
  } catch (e) {
    $("model").textContent = e.message;
    if ((e.status && e.status !== 503) || e.message === KEY_UNSENDABLE) alertUser(e.message);
    // still loading (503 + Retry-After), or not answering (restarting?): look again, so the
    // page fills in by itself (a 401, or a key a browser cannot send, waits for the key)
    if (e.status === 503) refreshIn(1000 * Math.min(e.retryAfter || 3, 10));
    else if (!e.status && e.message !== KEY_UNSENDABLE) refreshIn(5000);
    return;
  }
  await loadCollections();
}

// Every vector store, page after page (a picker cut at the first 100 hid the rest).
async function allStores() {
  const out = [];
  let after = "";
  for (;;) {
    const page = await api(`v1/vector_stores?limit=100${after}`);
    out.push(...page.data);
    if (!page.has_more || !page.last_id) return out;
    after = `&after=${encodeURIComponent(page.last_id)}`;
  }
}

async function loadCollections(select) {
  const picker = $("collection");
  if (select !== undefined) pick("collection", select || "");
  listedAt = Date.now(); // (before the answer: a look that fails is not tried at every focus)
  try {
    const stores = { data: await allStores() };
    const keep = picked.collection || ""; // (read now: a pick made while the list came counts)
    const label = serverCollection ? `server default (${serverCollection})` : "server default";
    const was = picked["collection-name"] || keep;
    picker.replaceChildren(new Option(label, ""));
    const names = stores.data.map((s) => s.name || s.id);
    for (const s of stores.data) {
      const name = s.name || s.id;
      const twin = name !== s.id && names.filter((n) => n === name).length > 1; // tell them apart
      const option = new Option(`${name}${twin ? ` [${s.id}]` : ""} (${s.file_counts.completed} file${s.file_counts.completed === 1 ? "" : "s"})`, s.id);
      option.dataset.name = name;
      picker.add(option);
    }
    if (keep && ![...picker.options].some((o) => o.value === keep)) {
      // gone (deleted elsewhere): still picked and said so, not swapped for the server default,
      // which answered the next question from other documents without a word
      const gone = new Option(`${was} (${notListed()})`, keep);
      gone.dataset.name = was;
      gone.dataset.gone = "true";
      picker.add(gone);
    }
    picker.value = keep;
    const current = picker.selectedOptions[0];
    if (keep && current && !current.dataset.gone && current.dataset.name !== picked["collection-name"]) {
      pick("collection", keep); // (its name, once listed: a store just made for an upload)
    }
    for (const id of Object.keys(storeNames)) delete storeNames[id]; // (another key's, before)
    for (const s of stores.data) storeNames[s.id] = s.name || s.id;
    if (keyChanged) { // another key's ticks are not this one's to search (they blocked each
      keepTicks(alsoPicked().filter((id) => id in storeNames)); // question until unticked)
      keyChanged = false;
    }
    drawAlso(stores.data);
  } catch (e) {
    // --no-files-api: no listing and no uploads; the collection is typed by name instead
    if (e.status === 404) filesOff();
  }
}

// What a question or an upload says of a picked collection no longer on the server: its name
// (the picker's `option`), else `id`. With an API key it may be there and not for this key
// (one limited to some collections, typed after the pick): the words say so.
function goneCollection(option, id) {
  return `the collection ${(option && option.dataset.name) || id} is ${notListed()}`;
}
function notListed() {
  return $("api-key").value.trim() ? "no longer on the server, or not readable with this API key" : "no longer on the server";
}

// ---- several collections: "Also search" ------------------------------------------------------
// Collections searched with the one picked, ticked in a list of the others (at most 7: a
// question searches 8 at most); ticks kept for this tab, as the pick is. A ticked one that is
// no longer listed stays ticked and says so (a question then names it, and is refused), never
// dropped without a word.
function alsoPicked() {
  return Array.isArray(picked.also) ? picked.also.filter((id) => typeof id === "string") : [];
}
function nameOf(id) { // a store's name: as listed, else as it was when ticked, else its id
  return storeNames[id] || (picked["also-names"] || {})[id] || id;
}
function primary() {
  return collection() || serverCollection;
}
function drawAlso(stores) {
  const box = $("also-list");
  const ticked = alsoPicked();
  const listed = new Set(stores.map((s) => s.id));
  const all = stores.map((s) => storeNames[s.id]);
  const rows = stores.filter((s) => s.id !== primary()).map((s) => {
    const name = storeNames[s.id];
    return [s.id, name !== s.id && all.filter((n) => n === name).length > 1 ? `${name} [${s.id}]` : name];
  });
  for (const id of ticked) {
    if (!listed.has(id) && id !== primary()) rows.push([id, `${nameOf(id)} (${notListed()})`]);
  }
  box.replaceChildren();
  for (const [id, label] of rows) {
    const row = document.createElement("label");
    const tick = document.createElement("input");
    tick.type = "checkbox";
    tick.value = id;
    tick.checked = ticked.includes(id);
    tick.addEventListener("change", tickAlso);
    const name = document.createElement("bdi");
    name.textContent = label;
    row.append(tick, " ", name);
    box.append(row);
  }
  $("also").hidden = rows.length === 0;
  limitAlso();
}
function tickAlso() {
  const ticked = [...$("also-list").querySelectorAll("input:checked")].map((b) => b.value);
  keepTicks(ticked);
  limitAlso();
}
function keepTicks(ticked) {
  picked["also-names"] = Object.fromEntries(ticked.map((id) => [id, nameOf(id)]));
  picked.also = ticked;
  sessionStorage.setItem("clara-picks", JSON.stringify(picked));
}
function limitAlso() { // (the 8th tick would be refused by the server: it cannot be made)
  const boxes = [...$("also-list").querySelectorAll("input")];
  const full = boxes.filter((b) => b.checked).length >= MAX_SEARCHED - 1;
  for (const b of boxes) b.disabled = full && !b.checked;
}
// What a question searches: the collection picked, and those ticked under "Also search" (a
// list: the server ranks their chunks together); without the files API, the names typed,
// separated by commas.
function searched() {
  if (!filesApi) {
    const typed = collection().split(",").map((n) => n.trim()).filter(Boolean);
    return typed.length > 1 ? typed : collection();
  }
  const also = alsoPicked().filter((id) => id !== primary()); // (more than 7: the server's 400)
  if (!also.length) return collection();
  return [...(primary() ? [primary()] : []), ...also];
}

function filesOff() {
  filesApi = false;
  $("collection-label").hidden = true;
  $("collection-name-label").hidden = false;
  $("collection-name").placeholder = serverCollection ? `server default (${serverCollection})` : "server default";
  $("uploads").hidden = true;
  $("ask-only").hidden = true;
  $("no-uploads").hidden = false;
}

function collection() {
  return filesApi ? $("collection").value : $("collection-name").value.trim();
}

// The retrieval modes (hybrid / dense / lexical) the server's model card lists
function showRetrievalModes(card) {
  const values = card.retrieval_modes;
  if (!Array.isArray(values) || !values.length) return;
  const picker = $("retrieval-mode");
  const fallback = card.retrieval_mode ? `server default (${card.retrieval_mode})` : "server default";
  picker.replaceChildren(new Option(fallback, ""), ...values.map((v) => new Option(v, v)));
  restore("retrieval-mode"); // (it went back to the server default at each refresh)
  $("retrieval-mode-label").hidden = false;
}

// ---- sources -------------------------------------------------------------------------------
let snippets = 0; // ids tying each source button to its text
function pages(s) {
  if (s.page_start == null) return "";
  const name = (s.filename || "").toLowerCase();
  const slides = [".pptx", ".pptm", ".ppsx", ".ppsm", ".potx", ".potm", ".odp", ".otp"].some((x) => name.endsWith(x)); // (its pages)
  const [one, many] = slides ? ["slide", "slides"] : ["p.", "pp."];
  return s.page_end == null || s.page_end === s.page_start ? `, ${one} ${s.page_start}` : `, ${many} ${s.page_start}-${s.page_end}`;
}

// An uploaded file, fetched with the API key and shown from memory. Anything but a PDF is shown
// as plain text: an uploaded HTML page must not run inside this page's origin.
async function openFile(s, tab, li) {
  try {
    const r = await fetch(here(s.url.split("#")[0]), { headers: headers(false) });
    if (!r.ok) throw failure(r, await r.json().catch(() => ({})));
    const data = await r.blob();
    const pdf = data.type === "application/pdf";
    const text = /^(text\/|application\/(json|xml|xhtml\+xml))/.test(data.type) ||
      /\.(md|markdown|mdown|mkd|html?|xhtml|txt|text|rst|log|org|adoc|asciidoc|tex)$/i.test(s.filename);
    if (!pdf && !text) { // (by its name too: a .org file is sent as a Lotus Organizer one)
      // a Word file or a book, which a browser cannot show: saved under its own name
      const url = URL.createObjectURL(data);
      const save = document.createElement("a");
      save.href = url;
      save.download = s.filename;
      save.click();
      tab.close();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      return;
    }
    const blob = new Blob([data], { type: pdf ? "application/pdf" : "text/plain;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    tab.location = url + (pdf && s.page_start ? `#page=${s.page_start}` : "");
    setTimeout(() => URL.revokeObjectURL(url), 60000); // the tab has loaded it by then
  } catch (e) {
    tab.close();
    note(li, `could not open ${s.filename}: ${e instanceof TypeError ? NO_ANSWER : e.message}`);
  }
}

// `from`: the collection searched (the picker's name for it), said above the list: a chat that
// changed collections on the way did not say which answer came from which.
function showSources(div, sources, from) {
  if (!sources || !sources.length) return;
  if (from) {
    const caption = document.createElement("span");
    caption.className = "from";
    const name = document.createElement("bdi");
    name.textContent = from;
    caption.append("Sources from ", name, ":");
    div.appendChild(caption);
  }
  const list = document.createElement("ol");
  list.className = "sources";
  list.setAttribute("aria-label", from ? `Sources from ${from}` : "Sources");
  for (const [i, s] of sources.entries()) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "source";
    const name = document.createElement("bdi"); // a Hebrew or Arabic name, kept apart
    name.textContent = s.filename;
    const scored = `${pages(s)} (score ${s.score.toFixed(3)})`;
    button.append(name, scored);
    if (s.collection_name) { // several collections searched: which one it is in
      const where = document.createElement("bdi");
      where.textContent = s.collection_name;
      button.append(" in ", where);
    }
    // six words; Chinese and Japanese have no spaces: then 24 characters
    const words = (s.snippet || "").split(/\s+/).slice(0, 6).join(" ");
    const first = [...words].length > 60 ? [...words].slice(0, 24).join("") : words;
    const in_ = s.collection_name ? ` in ${s.collection_name}` : "";
    // (its name holds what it shows, score too: voice control and WCAG 2.5.3 Label in Name)
    button.setAttribute("aria-label", `Source ${i + 1}: ${s.filename}${scored}${in_}, "${first}…"`);
    button.setAttribute("aria-expanded", "false");
    const snippet = document.createElement("div");
    snippet.id = `snippet-${++snippets}`;
    button.setAttribute("aria-controls", snippet.id);
    snippet.className = "snippet";
    snippet.dir = "auto";
    snippet.textContent = s.snippet;
    snippet.hidden = true;
    if (s.section) { // the document's title and the heading the chunk is under
      const section = document.createElement("span");
      section.className = "where";
      section.textContent = "in: " + s.section;
      snippet.appendChild(section);
    }
    if (s.url && s.url.startsWith("file://")) {
      // a file on the server's disk: its place, to open there (a web page cannot link to it)
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = "file: " + fileName(s.url.slice(7).split("#")[0]);
      snippet.appendChild(where);
    }
    button.onclick = () => {
      snippet.hidden = !snippet.hidden;
      button.setAttribute("aria-expanded", String(!snippet.hidden));
    };
    li.append(button);
    if (filesApi && isUpload(s.url)) { // uploads: the files API's
      const open = document.createElement("a");
      open.href = here(s.url);
      open.textContent = "open";
      open.title = `open ${s.filename}`;
      open.setAttribute("aria-label", `Open source ${i + 1}, ${s.filename} (new tab)`);
      open.onclick = (e) => {
        e.preventDefault();
        const tab = window.open("", "_blank"); // opened in the click: no popup blocker
        if (tab) openFile(s, tab, li);
        else note(li, "the browser blocked the new tab: allow pop-ups for this page");
      };
      // a middle click opened the bare API address in a tab: without the key, an error
      open.onauxclick = (e) => { if (e.button === 1) open.onclick(e); };
      li.append(open);
    }
    li.append(snippet);
    list.appendChild(li);
  }
  div.appendChild(list);
}

// ---- the conversation, kept for this tab ---------------------------------------------------
// What the log shows (each question, each answer with its sources and notes) and the turns
// sent as history, drawn again after a reload, which lost the whole conversation. Only what
// has finished is kept: an answer being written when the page reloads is lost with its
// question. "New chat" clears it.
const CHAT = "clara-chat";
const shown = []; // {role, text} and {role: "assistant", text, sources, from, notes, error}
function saveChat() {
  try {
    sessionStorage.setItem(CHAT, JSON.stringify({ turns, shown }));
  } catch (e) { /* storage full or off: the conversation stays on this page only */ }
}
function draw(record) {
  const shaped = record.role === "assistant" && !record.error; // (an error's words as they are)
  const div = add(record.role, shaped ? "" : record.text);
  if (shaped) {
    div.prepend(formatted(record.text));
    tabStops(div);
  }
  if (record.role !== "assistant") return;
  showSources(div, record.sources, record.from);
  for (const text of record.notes) note(div, text);
  div.classList.add(record.error ? "error" : "done");
}
function restoreChat() { // (anything unreadable there is no conversation: the page must start)
  let read;
  try {
    read = JSON.parse(sessionStorage.getItem(CHAT) || "{}");
  } catch (e) {
    return;
  }
  const roles = ["user", "assistant"];
  const text = (x) => typeof x === "string";
  if (!read || !Array.isArray(read.turns) || !Array.isArray(read.shown)) return;
  for (const t of read.turns) {
    if (t && roles.includes(t.role) && text(t.content)) turns.push({ role: t.role, content: t.content });
  }
  for (const r of read.shown) {
    if (!r || !roles.includes(r.role) || !text(r.text)) continue;
    const record = { role: r.role, text: r.text };
    if (r.role === "assistant") {
      const maybe = (x) => x == null || text(x);
      const fine = (s) => s && text(s.filename) && typeof s.score === "number" &&
        maybe(s.url) && maybe(s.snippet) && maybe(s.section);
      record.sources = Array.isArray(r.sources) ? r.sources.filter(fine) : [];
      record.from = text(r.from) ? r.from : "";
      record.notes = Array.isArray(r.notes) ? r.notes.filter(text) : [];
      record.error = r.error === true;
    }
    try {
      draw(record);
      shown.push(record);
    } catch (e) { /* one the page cannot draw is left out, and the page still starts */ }
  }
}

// ---- chat ----------------------------------------------------------------------------------
// Send and Stop take turns; focus follows the one shown (a hidden button drops it to the page).
function busy(on) {
  const had = document.activeElement;
  $("send").hidden = on;
  $("stop").hidden = !on;
  if (on && had === $("send")) $("stop").focus();
  // (without scrolling: a reader who scrolled up to read stays there when the answer ends)
  if (!on && (had === $("stop") || had === document.body || had === null)) $("question").focus({ preventScroll: true });
}

// The SSE events of one streamed answer, as parsed JSON chunks. A stream that ends without
// its "[DONE]" was cut (the server stopped): an error, not a finished answer.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the answer was cut off: the server stopped sending");
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line === "data: [DONE]") return;
        if (line.startsWith("data: ")) yield JSON.parse(line.slice(6));
      }
    }
  }
}

// An answer's text node replaced by what its Markdown shows, the end kept in view when the
// reader was there (a table is taller than its lines); returns the words a screen reader says
function reshape(div, text) {
  const shaped = formatted(text.data);
  const words = spoken(shaped);
  const wasAtBottom = atBottom();
  text.replaceWith(shaped);
  tabStops(div);
  follow(wasAtBottom);
  return words;
}

async function ask(question) {
  const mine = chat;
  for (const line of $("log").querySelectorAll(".cleared")) line.remove(); // (a new chat began)
  cleared = null;
  const controller = new AbortController();
  running = controller;
  busy(true);
  say("Answering…");
  add("user", question);
  turns.push({ role: "user", content: question });
  const div = add("assistant", "");
  const text = document.createTextNode("");
  const waiting = document.createElement("span"); // until the first words come (a slow network)
  waiting.className = "muted";
  waiting.textContent = "Answering…";
  div.append(text, waiting);
  div.setAttribute("aria-busy", "true");
  const body = { messages: turns.slice(), stream: true, retrieval: $("retrieval").checked };
  const chosen = filesApi ? $("collection").selectedOptions[0] : null;
  const asked = searched();
  const several = Array.isArray(asked);
  const from = several
    ? asked.map(nameOf).join(", ")
    : (chosen && chosen.value && chosen.dataset.name) || collection() || serverCollection;
  const record = { role: "assistant", text: "", sources: [], from, notes: [], error: false };
  const remark = (words) => { note(div, words); record.notes.push(words); };
  if ($("mode").value) body.mode = $("mode").value;
  if (several || asked) body.collection = asked;
  if (!$("retrieval-mode-label").hidden && $("retrieval-mode").value) body.retrieval_mode = $("retrieval-mode").value;
  let retrieval = null;
  let finish = null;
  try {
    const r = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!r.ok) {
      const e = failure(r, await r.json().catch(() => ({})));
      const missing = several && asked.find((n) => e.message.includes(`'${n}'`));
      if (e.code === "collection_not_found" && missing && missing !== primary()) { // (an id)
        e.message = `${goneCollection(null, nameOf(missing))}: untick it under Also search`;
      } else if (e.code === "collection_not_found" && chosen && chosen.value) { // (it named the id)
        e.message = `${goneCollection(chosen, chosen.value)}: pick another one`;
      }
      throw e;
    }
    for await (const chunk of events(r)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.retrieval) retrieval = chunk.retrieval;
      const wasAtBottom = atBottom();
      for (const choice of chunk.choices || []) {
        if (choice.delta.content) { text.data += choice.delta.content; waiting.remove(); }
        if (choice.delta.sources) {
          if (several) { // each says its collection, by name (kept with the conversation)
            for (const src of choice.delta.sources) src.collection_name = storeNames[src.collection] || src.collection;
          }
          showSources(div, choice.delta.sources, from);
          record.sources.push(...choice.delta.sources);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      follow(wasAtBottom);
    }
    if (mine === chat) turns.push({ role: "assistant", content: text.data });
    const words = reshape(div, text); // (its words stay in `text` for the record)
    div.classList.add("done");
    if (retrieval && !["ok", "disabled"].includes(retrieval.status)) {
      remark(`no sources: ${retrieval.detail || retrieval.status.replace("_", " ")}`);
    }
    if (finish === "length") remark("cut off at the answer length limit; ask for the rest");
    say(words);
  } catch (e) {
    if (leaving) return; // the page reloads or closes: nothing failed, nothing is kept
    if (e.name === "AbortError") { // Stop, or New chat: keep what was written
      if (mine === chat) {
        if (text.data) turns.push({ role: "assistant", content: text.data });
        else turns.pop();
      }
      reshape(div, text);
      remark("stopped");
      say("stopped");
    } else {
      div.classList.add("error");
      record.error = true;
      // the connection broke: this device's, or the server's
      const message = e instanceof TypeError ? (navigator.onLine ? NO_ANSWER : OFFLINE) : e.message;
      text.data += (text.data ? "\n" : "") + "Error: " + message;
      // what the page shows of the server may be out of date: a restart (another model, other
      // collections) or a collection deleted elsewhere, which stayed picked
      if (message === NO_ANSWER) refreshIn(0);
      else if (e.code === "collection_not_found") loadCollections();
      alertUser("Error: " + message);
      if (mine === chat) turns.pop();
      if (mine === chat && !$("question").value) { // to send again
        $("question").value = question;
        keepDraft();
      }
    }
  } finally {
    waiting.remove();
    div.removeAttribute("aria-busy");
    if (mine === chat && !leaving) { // (an answer New chat abandoned belongs to no conversation kept)
      record.text = text.data;
      shown.push({ role: "user", text: question }, record);
      saveChat();
    }
    if (running === controller) {
      running = null;
      busy(false);
    }
  }
}

// ---- uploads -------------------------------------------------------------------------------
function uploadFile(file) {
  // XMLHttpRequest, not fetch: it reports upload progress
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("purpose", "assistants");
    form.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "v1/files");
    const auth = headers(false).Authorization;
    if (auth) xhr.setRequestHeader("Authorization", auth);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) $("upload-progress").value = (100 * e.loaded) / e.total;
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 200) resolve(body);
      else reject(new Error((body.error && body.error.message) || `upload failed (${xhr.status})`));
    };
    xhr.onerror = () => reject(new Error("upload failed: " + NO_ANSWER));
    xhr.send(form);
  });
}

// The vector store uploads go to, as {id, name}: the one typed (made if new), else the one
// picked, else the server's default collection (made by the first upload into an empty index).
async function targetCollection() {
  const typed = $("new-collection").value.trim();
  const wanted = typed || $("collection").value || serverCollection;
  if (!wanted && $("api-key").hasAttribute("aria-invalid")) throw new Error(KEY_WRONG);
  if (!wanted) throw new Error("pick a collection or type a new collection name");
  let found = null;
  try {
    found = await api(`v1/vector_stores/${encodeURIComponent(wanted)}`);
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  if (!found && typed) { // by its name; else the one whose name differs only in case ("Docs"
    const stores = await allStores(); // made a second store beside "docs")
    const folded = stores.filter((s) => (s.name || "").toLowerCase() === typed.toLowerCase());
    found = stores.find((s) => s.name === typed) || (folded.length === 1 ? folded[0] : null);
  }
  // the server's default collection is made by the first file put into it (a store created
  // under its name would get another id, which "server default" never searches)
  if (!found && wanted === serverCollection) return { id: wanted, name: wanted };
  if (!found && !typed) { // the one picked, deleted elsewhere (a store named after its id was made)
    throw new Error(`${goneCollection($("collection").selectedOptions[0], wanted)}: pick another one, or type a name for a new one`);
  }
  if (!found) {
    found = await api("v1/vector_stores", { method: "POST", body: JSON.stringify({ name: wanted }) });
    found.made = true;
  }
  return { id: found.id, name: found.name || found.id, made: !!found.made };
}

function named(file, message) {
  return message.includes(file.name) ? message : `${file.name}: ${message}`;
}

async function upload() {
  const files = [...$("file").files];
  const status = $("upload-status");
  if (!files.length) { status.textContent = "choose a file first"; return; }
  if ($("upload").getAttribute("aria-disabled") === "true") return; // (one upload at a time)
  $("upload").setAttribute("aria-disabled", "true"); // not disabled: that drops its focus
  let store = null;
  const failed = [];
  try {
    store = await targetCollection();
    const path = `v1/vector_stores/${encodeURIComponent(store.id)}/files`;
    for (const file of files) {
      $("upload-progress").hidden = false;
      $("upload-progress").value = 0;
      status.textContent = `uploading ${file.name}…`;
      try {
        const uploaded = await uploadFile(file);
        status.textContent = `indexing ${file.name}…`;
        let link = await api(path, { method: "POST", body: JSON.stringify({ file_id: uploaded.id }) });
        while (link.status === "in_progress") {
          await new Promise((r) => setTimeout(r, 300));
          link = await api(`${path}/${uploaded.id}`);
        }
        if (link.status !== "completed") failed.push(named(file, link.last_error ? link.last_error.message : link.status));
      } catch (e) {
        failed.push(named(file, e.message));
      }
    }
    const done = files.length - failed.length;
    if (!done && store.made) { // made for these files, none of which was indexed: not kept
      await api(`v1/vector_stores/${encodeURIComponent(store.id)}`, { method: "DELETE" }).catch(() => {});
      status.textContent = [`0 of ${files.length} files indexed (collection ${store.name} not made)`, ...failed].join("\n");
      store = null;
    } else {
      status.textContent = [`${done} of ${files.length} files indexed into ${store.name}`, ...failed].join("\n");
    }
    if (failed.length) alertUser(failed.join("; "));
    if (done) $("new-collection").value = "";
  } catch (e) {
    status.textContent = "Error: " + e.message;
    alertUser("Upload error: " + e.message);
  } finally {
    $("upload").removeAttribute("aria-disabled");
    $("upload-progress").hidden = true;
    $("file").value = "";
    status.scrollIntoView({ block: "nearest" }); // (the settings fold scrolls on a phone)
    await loadCollections(store ? store.id : undefined);
  }
}

// ---- wiring --------------------------------------------------------------------------------
// The key stays for this tab only (sessionStorage) unless "remember" keeps it in this browser.
function storeKey() {
  const key = $("api-key").value.trim();
  const remember = $("remember-key").checked;
  localStorage.removeItem("clara-api-key");
  sessionStorage.removeItem("clara-api-key");
  if (key) (remember ? localStorage : sessionStorage).setItem("clara-api-key", key);
}
$("remember-key").checked = localStorage.getItem("clara-api-key") !== null;
$("api-key").value = localStorage.getItem("clara-api-key") || sessionStorage.getItem("clara-api-key") || "";
$("remember-key").addEventListener("change", storeKey);
$("api-key").addEventListener("change", () => {
  keyChanged = true;
  storeKey();
  refresh();
});
$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (!q || running) return;
  $("question").value = "";
  keepDraft();
  ask(q);
});
// A question typed and not sent yet survives a reload (the conversation did, not it)
const DRAFT = "clara-draft";
function keepDraft() {
  try {
    if ($("question").value) sessionStorage.setItem(DRAFT, $("question").value);
    else sessionStorage.removeItem(DRAFT);
  } catch (e) { /* storage full or off */ }
}
$("question").addEventListener("input", keepDraft);
$("question").addEventListener("keydown", (e) => {
  // Enter sends, except while an input method composes (Japanese, Chinese, Korean, ...)
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    $("ask").requestSubmit();
  }
});
$("stop").addEventListener("click", () => { if (running) running.abort(); });
const APPLE = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgentData?.platform || "");
if (APPLE) {
  $("stop").setAttribute("aria-keyshortcuts", "Escape Meta+.");
  $("stop").title = "Stop (Escape or Cmd+.)";
}
document.addEventListener("keydown", (e) => { // Escape stops the answer being written, or
  // Cmd+. (iPad keyboards have no Escape key), but not an input method's Escape, which
  // cancels what it is converting
  const stop = (e.key === "Escape" && !e.isComposing && e.keyCode !== 229) ||
    (APPLE && e.metaKey && e.key === "."); // (Windows+. opens the emoji panel)
  if (stop && running) {
    e.preventDefault();
    running.abort();
  }
});
let cleared = null; // the chat New chat cleared, until the next question
$("clear").addEventListener("click", () => {
  chat += 1;
  // the chat cleared can be brought back until the next question (a tap beside Send cleared
  // it for good: a mobile audit); an answer being written is not kept: its question comes
  // back in the question box (a chat's first question cut so had nothing to bring back)
  const writing = running && turns.length; // (not on a second tap: the first took the turns)
  if (shown.length || writing) {
    const cut = writing ? turns[turns.length - 1].content : "";
    cleared = { turns: turns.slice(0, writing ? turns.length - 1 : turns.length), shown: shown.slice(), cut };
  } // (else a second tap: the chat before stays the one to bring back)
  if (running) running.abort(); // the server stops generating when the stream closes
  const before = cleared;
  turns.length = 0;
  shown.length = 0;
  sessionStorage.removeItem(CHAT);
  $("log").replaceChildren();
  $("announce").textContent = "";
  if (before) {
    const line = document.createElement("p");
    line.className = "muted cleared";
    const back = document.createElement("button");
    back.type = "button";
    back.className = "secondary";
    back.textContent = "Bring back the last chat";
    back.onclick = () => {
      if (shown.length || cleared !== before) return; // (a new one has begun)
      cleared = null;
      line.remove();
      turns.push(...before.turns);
      for (const record of before.shown) { draw(record); shown.push(record); }
      if (before.cut && !$("question").value.trim()) {
        $("question").value = before.cut;
        keepDraft();
      }
      saveChat();
      say("last chat back");
      $("question").focus();
    };
    line.append("New chat. ", back);
    $("log").appendChild(line);
  }
  say("New chat");
  $("question").focus();
});
$("upload").addEventListener("click", upload);
for (const id of PICKS) $(id).addEventListener("change", () => pick(id, $(id).value));
$("collection").addEventListener("change", () => { // (the one picked is not listed under Also:
  if (!filesApi) return; // its tick goes, and the ticks stay at most 7, as the boxes show)
  keepTicks(alsoPicked().filter((id) => id !== primary()));
  drawAlso(Object.keys(storeNames).map((id) => ({ id, name: storeNames[id] })));
});
restore("mode");
restoreChat();
try {
  if (!$("question").value) $("question").value = sessionStorage.getItem(DRAFT) || "";
} catch (e) { /* storage off */ }
// collections made or deleted elsewhere (the CLI, another tab) show when the page is back in view
function lookAgain() { // (not while the key is wrong: a 401 at each focus took the focus)
  const keyWrong = $("api-key").hasAttribute("aria-invalid");
  if (filesApi && !keyWrong && document.visibilityState === "visible" && Date.now() - listedAt > 5000) loadCollections();
}
window.addEventListener("focus", lookAgain); // back from the terminal that ran clara-index add
document.addEventListener("visibilitychange", lookAgain);
const phone = window.matchMedia("(max-width: 700px)");
if (phone.matches) $("settings").open = false; // phones: the settings fold above the chat
phone.addEventListener("change", (e) => { // turned (not a window narrowed under a hand at work)
  // (kept open only for a field being typed in: a picker keeps the focus after a pick)
  const typing = $("settings").contains(document.activeElement) && document.activeElement.matches("input:not([type=checkbox]):not([type=file])");
  if (e.matches && !typing) $("settings").open = false;
});
// a phone turned changes what scrolls (style.css: short windows): the reader keeps their place
const PHONE_SIZES = ["(max-width: 700px)", "(max-height: 560px)"];
for (const query of PHONE_SIZES) window.matchMedia(query).addEventListener("change", keepPlace);
let resizing = false; // a tablet turned, a window resized: the end followed, wide boxes a tab
window.addEventListener("resize", () => { // stop (or not) as they now are; once a frame at most
  if (resizing) return;
  resizing = true;
  requestAnimationFrame(() => {
    resizing = false;
    if (pinned) follow(true); // (not keepPlace: a reader mid-answer stays where they are)
    tabStops($("log"));
  });
});
$("log").addEventListener("scroll", notePlace, { passive: true });
window.addEventListener("scroll", notePlace, { passive: true });
window.addEventListener("pagehide", () => { leaving = true; });
window.addEventListener("pageshow", () => { leaving = false; }); // (back from the page cache)
window.addEventListener("online", () => refreshIn(0)); // back online: the server's state at once
// a phone's keyboard has no Shift+Enter (a tablet's may be a real one: it keeps the hint)
if (window.matchMedia(PHONE_SIZES.map((size) => `(pointer: coarse) and ${size}`).join(", ")).matches) {
  $("question").placeholder = "Ask about your documents";
}
refresh();
