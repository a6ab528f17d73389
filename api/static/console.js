// korag console: the service's own API (/v1) with a key typed in and kept in sessionStorage.
// Plain browser JavaScript, no build step. Every value from the server goes in as text, never HTML.
"use strict";

const FINAL = new Set(["indexed", "unchanged", "failed", "deleted"]);
const POLL_MS = 700;
const KEY = "korag.key";
const TENANT = "korag.tenant";

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

// -- key ------------------------------------------------------------------------------------------
function authHeaders() {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  const tenant = sessionStorage.getItem(TENANT);
  if (key) headers["Authorization"] = `Bearer ${key}`;
  if (key && tenant) headers["X-Korag-Tenant"] = tenant;
  return headers;
}

function showKeyState() {
  const key = sessionStorage.getItem(KEY);
  const tenant = sessionStorage.getItem(TENANT);
  $("key").value = key || "";
  $("tenant").value = tenant || "";
  $("key-state").textContent = key
    ? `A key is kept for this tab (…${key.slice(-4)})${tenant ? `, tenant ${tenant}` : ""}.`
    : "No key: works only with a service that runs without keys (loopback).";
}

function saveKey(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const tenant = $("tenant").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  if (tenant) sessionStorage.setItem(TENANT, tenant); else sessionStorage.removeItem(TENANT);
  showKeyState();
  hideMessage();
  loadInfo();
}

function forgetKey() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TENANT);
  showKeyState();
}

// -- HTTP -----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && (problem.detail || problem.title);
    super(`${status}${detail ? ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)) : ""}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function showMessage(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = false;
}

function hideMessage() { $("message").hidden = true; }

function showError(what, err) {
  let text = `${what}: ${err.message}`;
  if (err.status === 401) text += " — type a valid API key above.";
  showMessage(text);
}

// -- info -----------------------------------------------------------------------------------------
async function loadInfo() {
  try {
    const info = await api("GET", "/v1/info");
    const parts = [];
    if (info.model) parts.push(`model ${info.model}`);
    if (info.dimension) parts.push(`${info.dimension} dimensions`);
    if (info.max_input_tokens) parts.push(`${info.max_input_tokens} tokens per chunk`);
    if (info.mode) parts.push(`${info.mode} mode`);
    if (info.tenant) parts.push(`tenant ${info.tenant}`);
    $("info").textContent = parts.join(" · ") || "connected";
    const types = info.file_types;
    if (Array.isArray(types)) {
      $("accepted").textContent = `accepted: ${types.join(" ")}`;
      $("files").accept = types.filter((t) => t.startsWith(".")).join(",");
    }
  } catch (err) {
    $("info").textContent = err.status === 401 ? "key needed" : `service: ${err.message}`;
  }
}

// -- documents ------------------------------------------------------------------------------------
const rows = new Map(); // doc_id -> <tr>
const polling = new Set();

function statusCell(status, stage) {
  const shown = stage && stage !== status ? `${status} (${stage})` : status;
  return el("span", { className: `status status-${status}`, textContent: shown });
}

function renderRow(doc, watch = true) {
  let row = rows.get(doc.doc_id);
  if (!row) {
    row = el("tr");
    row.dataset.docId = doc.doc_id;
    rows.set(doc.doc_id, row);
    $("uploads").tBodies[0].prepend(row);
  }
  row.dataset.status = doc.status;
  const remove = el("button", { type: "button", textContent: "delete", className: "delete" });
  remove.addEventListener("click", () => deleteDocument(doc.doc_id));
  row.replaceChildren(
    el("td", { className: "source", textContent: doc.source ?? "" }),
    el("td", { className: "status-cell" }, statusCell(doc.status, doc.stage)),
    el("td", { className: "chunks", textContent: doc.chunks ?? "" }),
    el("td", { className: "doc-id", textContent: doc.doc_id }),
    el("td", { className: "error", textContent: doc.error ?? "" }),
    el("td", {}, doc.status === "deleted" ? null : remove),
  );
  if (watch && !FINAL.has(doc.status)) poll(doc.doc_id);
}

async function poll(docId) {
  if (polling.has(docId)) return;
  polling.add(docId);
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      let doc;
      try {
        doc = await api("GET", `/v1/documents/${encodeURIComponent(docId)}`);
      } catch (err) {
        if (err.status === 404) {
          renderRowStatus(docId, "deleted");
          return;
        }
        continue; // a transient error: keep watching
      }
      renderRow(doc, false);
      if (FINAL.has(doc.status)) return;
    }
  } finally {
    polling.delete(docId);
  }
}

function renderRowStatus(docId, status) {
  const row = rows.get(docId);
  if (!row) return;
  row.dataset.status = status;
  row.querySelector(".status-cell").replaceChildren(statusCell(status));
}

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  showMessage(`Uploading ${files.length} file(s)…`, true);
  try {
    const data = await api("POST", "/v1/documents", form);
    hideMessage();
    for (const doc of data.documents) renderRow(doc);
  } catch (err) {
    showError("Upload refused", err);
  }
}

async function deleteDocument(docId) {
  try {
    const data = await api("DELETE", `/v1/documents/${encodeURIComponent(docId)}`);
    renderRowStatus(docId, "deleted");
    showMessage(`Deleted ${docId}: ${data.deleted_chunks} chunks.`, true);
  } catch (err) {
    showError("Delete failed", err);
  }
}

async function listDocuments() {
  try {
    const data = await api("GET", "/v1/documents?limit=100");
    for (const doc of data.documents.slice().reverse()) renderRow(doc);
    if (!data.documents.length) showMessage("No documents stored yet.", true);
  } catch (err) {
    showError("Listing failed", err);
  }
}

function setUpDrop() {
  const zone = $("drop");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload([...event.dataTransfer.files]);
  });
  $("files").addEventListener("change", (event) => {
    upload([...event.target.files]);
    event.target.value = "";
  });
}

// -- search ---------------------------------------------------------------------------------------
function rankOf(result, channel) {
  // korag.schemas.SearchHit: "ranks": {"dense": n, "sparse": n}, null when not in that channel's candidates
  const value = result.ranks ? result.ranks[channel] : null;
  return value === null || value === undefined ? "–" : String(value);
}

function renderResult(result, index, explained) {
  const meta = result.metadata ?? {};
  const where = el("div", { className: "where" },
    el("span", { className: "rank", textContent: `#${index + 1}` }),
    el("span", { className: "score", textContent: `score ${Number(result.score).toFixed(4)}` }),
    el("span", { className: "source", textContent: meta.source ?? meta.filename ?? "" }),
    meta.section ? el("span", { className: "section", textContent: meta.section }) : null,
    meta.page_number !== undefined && meta.page_number !== null
      ? el("span", { className: "page", textContent: `p. ${meta.page_number}` }) : null,
  );
  const ranks = explained
    ? el("div", { className: "ranks", textContent: `dense rank ${rankOf(result, "dense")} · sparse rank ${rankOf(result, "sparse")}` })
    : null;
  return el("li", { className: "result" }, where, ranks, el("p", { className: "text", textContent: result.text }));
}

async function search(event) {
  event.preventDefault();
  const body = {
    query: $("query").value,
    k: Number($("k").value) || 5,
    mode: $("mode").value,
    explain: $("explain").checked,
  };
  $("search-button").disabled = true;
  try {
    const data = await api("POST", "/v1/search", body);
    hideMessage();
    const terms = data.explain ? data.explain.terms : null;
    const meta = $("search-meta");
    meta.replaceChildren(`${data.results.length} result(s) in ${data.took_ms} ms`);
    if (data.notice) meta.append(` — ${data.notice}`);
    if (data.explain) meta.append(` · ${data.explain.mode}, ranks among ${data.explain.candidates} candidates per channel`);
    if (body.explain && Array.isArray(terms)) {
      const span = el("span", { className: "terms" }, " · Kiwi terms: ");
      for (const term of terms) span.append(el("code", { textContent: typeof term === "string" ? term : JSON.stringify(term) }));
      meta.append(span);
    }
    $("results").replaceChildren(...data.results.map((r, i) => renderResult(r, i, body.explain)));
  } catch (err) {
    showError("Search failed", err);
  } finally {
    $("search-button").disabled = false;
  }
}

// -- start ----------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", saveKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("search-form").addEventListener("submit", search);
  $("refresh").addEventListener("click", listDocuments);
  setUpDrop();
  showKeyState();
  loadInfo();
});
