// clara's web chat: plain JavaScript against clara-serve's own OpenAI-compatible API
// (chat completions streamed over SSE, files + vector stores for uploads). No build step,
// nothing loaded from elsewhere: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const turns = []; // {role, content} of this chat

function headers(json = true) {
  const h = {};
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: { ...headers(!!options.body), ...(options.headers || {}) } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error((body.error && body.error.message) || `${r.status} ${r.statusText}`);
    e.status = r.status;
    e.retryAfter = Number(r.headers.get("Retry-After")) || 0;
    throw e;
  }
  return body;
}

function add(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

// ---- server state: model, collections, retrieval modes -----------------------------------
async function refresh() {
  try {
    const models = await api("/v1/models");
    $("model").textContent = models.data[0].id;
    const mode = models.data[0].mode; // what "server default" reads
    if (mode) $("mode").options[0].textContent = `server default (${mode})`;
  } catch (e) {
    $("model").textContent = e.message;
    // still loading (503 + Retry-After): look again then, so the page fills in by itself
    if (e.status === 503) setTimeout(refresh, 1000 * Math.min(e.retryAfter || 3, 10));
    return;
  }
  await loadCollections();
  await loadRetrievalModes();
}

async function loadCollections(select) {
  const picker = $("collection");
  const keep = select || picker.value;
  try {
    const stores = await api("/v1/vector_stores?limit=100");
    picker.replaceChildren(new Option("server default", ""));
    for (const s of stores.data) picker.add(new Option(`${s.name} (${s.file_counts.total} files)`, s.id));
    picker.value = [...picker.options].some((o) => o.value === keep) ? keep : "";
  } catch (e) {
    // the files API may be turned off (--no-files-api): keep the server's default collection
  }
}

async function loadRetrievalModes() {
  // retrieval modes (e.g. hybrid / dense / lexical) are offered when the server's schema has them
  try {
    const spec = await api("/openapi.json");
    const field = spec.components.schemas.ChatCompletionRequest.properties.retrieval_mode;
    const values = field && (field.enum || (field.anyOf || []).flatMap((x) => x.enum || []));
    if (!values || !values.length) return;
    const picker = $("retrieval-mode");
    picker.replaceChildren(new Option("server default", ""), ...values.map((v) => new Option(v, v)));
    $("retrieval-mode-label").hidden = false;
  } catch (e) {
    /* no schema: no picker */
  }
}

// ---- chat ----------------------------------------------------------------------------------
function pages(s) {
  if (s.page_start == null) return "";
  return s.page_end == null || s.page_end === s.page_start ? `, p. ${s.page_start}` : `, pp. ${s.page_start}-${s.page_end}`;
}

function showSources(div, sources) {
  if (!sources || !sources.length) return;
  const list = document.createElement("ol");
  list.className = "sources";
  for (const s of sources) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "source";
    button.textContent = `${s.filename}${pages(s)} (score ${s.score.toFixed(3)})`;
    const snippet = document.createElement("div");
    snippet.className = "snippet";
    snippet.textContent = s.snippet;
    snippet.hidden = true;
    button.onclick = () => { snippet.hidden = !snippet.hidden; };
    li.append(button, snippet);
    list.appendChild(li);
  }
  div.appendChild(list);
}

async function ask(question) {
  add("user", question);
  turns.push({ role: "user", content: question });
  const div = add("assistant", "");
  const text = document.createTextNode("");
  div.appendChild(text);
  const body = { messages: turns, stream: true, retrieval: $("retrieval").checked };
  if ($("mode").value) body.mode = $("mode").value;
  if ($("collection").value) body.collection = $("collection").value;
  if (!$("retrieval-mode-label").hidden && $("retrieval-mode").value) body.retrieval_mode = $("retrieval-mode").value;
  $("send").disabled = true;
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `${r.status} ${r.statusText}`);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.error) throw new Error(chunk.error.message);
          for (const choice of chunk.choices || []) {
            if (choice.delta.content) text.data += choice.delta.content;
            if (choice.delta.sources) showSources(div, choice.delta.sources);
          }
          $("log").scrollTop = $("log").scrollHeight;
        }
      }
    }
    turns.push({ role: "assistant", content: text.data });
    div.classList.add("done");
  } catch (e) {
    div.classList.add("error");
    text.data += (text.data ? "\n" : "") + "Error: " + e.message;
    turns.pop();
  } finally {
    $("send").disabled = false;
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
    xhr.open("POST", "/v1/files");
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
    xhr.onerror = () => reject(new Error("upload failed: the server did not answer"));
    xhr.send(form);
  });
}

async function targetCollection() {
  const name = $("new-collection").value.trim();
  if (!name) {
    if ($("collection").value) return $("collection").value;
    throw new Error("pick a collection or type a new collection name");
  }
  const stores = await api("/v1/vector_stores?limit=100");
  const found = stores.data.find((s) => s.id === name || s.name === name);
  if (found) return found.id;
  return (await api("/v1/vector_stores", { method: "POST", body: JSON.stringify({ name }) })).id;
}

async function upload() {
  const files = [...$("file").files];
  const status = $("upload-status");
  if (!files.length) { status.textContent = "choose a file first"; return; }
  $("upload").disabled = true;
  try {
    const store = await targetCollection();
    for (const file of files) {
      $("upload-progress").hidden = false;
      $("upload-progress").value = 0;
      status.textContent = `uploading ${file.name}…`;
      const uploaded = await uploadFile(file);
      status.textContent = `indexing ${file.name}…`;
      const path = `/v1/vector_stores/${encodeURIComponent(store)}/files`;
      let link = await api(path, { method: "POST", body: JSON.stringify({ file_id: uploaded.id }) });
      while (link.status === "in_progress") {
        await new Promise((r) => setTimeout(r, 300));
        link = await api(`${path}/${uploaded.id}`);
      }
      if (link.status !== "completed") throw new Error(`${file.name}: ${link.last_error ? link.last_error.message : link.status}`);
      status.textContent = `${file.name}: indexed into ${store}`;
    }
    $("new-collection").value = "";
    await loadCollections(store);
  } catch (e) {
    status.textContent = "Error: " + e.message;
  } finally {
    $("upload").disabled = false;
  }
}

// ---- wiring --------------------------------------------------------------------------------
$("api-key").value = localStorage.getItem("clara-api-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("clara-api-key", $("api-key").value.trim());
  refresh();
});
$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (!q || $("send").disabled) return;
  $("question").value = "";
  ask(q);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("clear").addEventListener("click", () => { turns.length = 0; $("log").replaceChildren(); });
$("upload").addEventListener("click", upload);
refresh();
