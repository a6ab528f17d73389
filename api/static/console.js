// korag console: the service's own API (/v1) with a key typed in and kept in sessionStorage.
// Plain browser JavaScript, no build step. Every value from the server goes in as text, never HTML.
"use strict";

const FINAL = new Set(["indexed", "unchanged", "failed", "deleted", "superseded"]);
const POLL_MS = 700;
const PAGE = 20; // documents per page of the list (the API's cursor gives the next)
const CHUNK_PAGE = 50;
const KEY = "korag.key";
const TENANT = "korag.tenant";

// -- interface text: one table per language ------------------------------------------------------
const STRINGS = {
  en: {
    "key.title": "API key", "key.key": "Key", "key.tenant": "Tenant", "key.tenantHelp": "admin key: empty for all tenants",
    "key.use": "Use key", "key.forget": "Forget",
    "key.kept": "A key is kept for this tab (…{tail}).", "key.keptTenant": "A key is kept for this tab (…{tail}), tenant {tenant}.",
    "key.none": "No key: works only with a service that runs without keys (loopback).",
    "key.refused": "This key was not accepted ({status}): check it and type it again.",
    "key.checking": "Checking the key…", "key.ok": "Key accepted.", "key.okTenant": "Key accepted: tenant {tenant}.",
    "key.okAdmin": "Key accepted: an admin key (all tenants unless one is named).",
    "key.needed": "key needed",
    "docs.title": "Documents", "docs.drop": "Drop files here, or press Enter to choose files",
    "docs.accepted": "accepted: {types} · up to {size} a file",
    "docs.status": "Status", "docs.any": "any", "docs.prefix": "Source starts with", "docs.reload": "Reload list",
    "docs.more": "More documents", "docs.empty": "No documents stored yet: drop files above to add some.",
    "docs.emptyFiltered": "No document matches these filters.", "docs.noKey": "Type an API key above to see its documents.",
    "docs.listFailed": "Listing failed: {error}", "docs.loading": "Loading documents…",
    "docs.shown": "{n} document(s) shown.", "docs.shownMore": "{n} document(s) shown; more are stored.",
    "col.source": "source", "col.status": "status", "col.chunks": "chunks", "col.docId": "doc_id", "col.error": "error",
    "col.actions": "actions",
    "row.delete": "Delete", "row.deleteName": "Delete {source}", "row.chunks": "Chunks", "row.chunksName": "Read the chunks of {source}",
    "row.confirm": "Delete {source}? Its {chunks} chunk(s) leave the index; this cannot be undone.",
    "row.deleted": "Deleted {source}: {chunks} chunk(s).", "row.deleteFailed": "Delete of {source} failed: {error}",
    "row.gone": "Already deleted.",
    "up.uploading": "uploading", "up.refused": "refused", "up.progress": "Upload progress of {source}",
    "up.type": "not an accepted type; accepted: {types}",
    "up.size": "{size} is over the limit of {limit} a file",
    "up.failed": "upload failed: {error}", "up.network": "the connection failed",
    "up.started": "Uploading {n} file(s)…", "up.done": "{source}: {status}.",
    "poll.stopped": "status unknown: {error}", "status.queued": "queued", "status.refused": "refused",
    "chunks.title": "Chunks of {source}", "chunks.more": "More chunks", "chunks.close": "Close",
    "chunks.meta": "{shown} of {total} chunk(s), in order.", "chunks.none": "This document has no chunks.",
    "chunks.failed": "Reading the chunks failed: {error}", "chunks.tokens": "{n} tokens", "chunks.page": "p. {n}",
    "search.title": "Search", "search.query": "Question or keywords", "search.mode": "mode", "search.explain": "explain",
    "search.button": "Search", "search.empty": "Type a question or keywords to search.",
    "search.failed": "Search failed: {error}", "search.count": "{n} result(s) in {ms} ms",
    "search.explained": " · {mode}, ranks among {candidates} candidates per channel", "search.terms": " · Kiwi terms: ",
    "search.ranks": "dense rank {dense} · sparse rank {sparse}", "search.score": "score {score}",
    "err.401": " — type a valid API key above.", "err.network": "the service did not answer",
    "info.model": "model {model}", "info.dims": "{n} dimensions", "info.tokens": "{n} tokens per chunk",
    "info.mode": "{mode} mode", "info.tenant": "tenant {tenant}", "info.connected": "connected", "info.service": "service: {error}",
    "search.filter": "filter", "search.badFilter": "The filter is not a JSON object: {error}",
    "search.filterHelp": "filter: JSON, {\"key\": value} or {\"and\": [{\"key\": \"year\", \"op\": \"gte\", \"value\": 2024}]} (op: eq ne in nin gt gte lt lte exists)",
    "opt.title": "Upload options: source folder and metadata", "opt.prefix": "Source folder (put before each file name)",
    "opt.meta": "Metadata stored with every chunk (text values)", "opt.add": "Add a metadata row",
    "opt.key": "key", "opt.value": "value", "opt.remove": "Remove this row", "opt.keyN": "key {n}", "opt.valueN": "value {n}",
    "opt.removeN": "Remove metadata row {n}",
    "lang.label": "Language",
  },
  ko: {
    "key.title": "API 키", "key.key": "키", "key.tenant": "테넌트", "key.tenantHelp": "관리자 키: 비우면 모든 테넌트",
    "key.use": "키 사용", "key.forget": "키 지우기",
    "key.kept": "이 탭에 키가 저장되어 있습니다 (…{tail}).", "key.keptTenant": "이 탭에 키가 저장되어 있습니다 (…{tail}), 테넌트 {tenant}.",
    "key.none": "키 없음: 키 없이 실행되는 서비스(루프백)에서만 동작합니다.",
    "key.refused": "이 키는 받아들여지지 않았습니다 ({status}). 확인 후 다시 입력하세요.",
    "key.checking": "키를 확인하는 중…", "key.ok": "키가 확인되었습니다.", "key.okTenant": "키가 확인되었습니다: 테넌트 {tenant}.",
    "key.okAdmin": "키가 확인되었습니다: 관리자 키 (테넌트를 지정하지 않으면 모든 테넌트).",
    "key.needed": "키가 필요합니다",
    "docs.title": "문서", "docs.drop": "파일을 여기에 끌어다 놓거나, Enter 키를 눌러 파일을 고르세요",
    "docs.accepted": "받는 형식: {types} · 파일당 최대 {size}",
    "docs.status": "상태", "docs.any": "전체", "docs.prefix": "출처 시작 문자열", "docs.reload": "목록 새로 고침",
    "docs.more": "문서 더 보기", "docs.empty": "저장된 문서가 아직 없습니다. 위에 파일을 끌어다 놓아 추가하세요.",
    "docs.emptyFiltered": "이 조건에 맞는 문서가 없습니다.", "docs.noKey": "문서를 보려면 위에 API 키를 입력하세요.",
    "docs.listFailed": "목록을 가져오지 못했습니다: {error}", "docs.loading": "문서를 불러오는 중…",
    "docs.shown": "문서 {n}개를 표시합니다.", "docs.shownMore": "문서 {n}개를 표시합니다. 더 있습니다.",
    "col.source": "출처", "col.status": "상태", "col.chunks": "청크", "col.docId": "doc_id", "col.error": "오류",
    "col.actions": "작업",
    "row.delete": "삭제", "row.deleteName": "{source} 삭제", "row.chunks": "청크", "row.chunksName": "{source}의 청크 읽기",
    "row.confirm": "{source}을(를) 삭제할까요? 청크 {chunks}개가 색인에서 빠지며 되돌릴 수 없습니다.",
    "row.deleted": "{source} 삭제됨: 청크 {chunks}개.", "row.deleteFailed": "{source} 삭제 실패: {error}",
    "row.gone": "이미 삭제되었습니다.",
    "up.uploading": "올리는 중", "up.refused": "거부됨", "up.progress": "{source} 올리기 진행률",
    "up.type": "받지 않는 형식입니다. 받는 형식: {types}",
    "up.size": "{size}로 파일당 한도 {limit}을(를) 넘습니다",
    "up.failed": "올리기 실패: {error}", "up.network": "연결에 실패했습니다",
    "up.started": "파일 {n}개를 올리는 중…", "up.done": "{source}: {status}.",
    "poll.stopped": "상태를 알 수 없음: {error}", "status.queued": "대기", "status.refused": "거부됨",
    "chunks.title": "{source}의 청크", "chunks.more": "청크 더 보기", "chunks.close": "닫기",
    "chunks.meta": "청크 {total}개 중 {shown}개, 순서대로.", "chunks.none": "이 문서에는 청크가 없습니다.",
    "chunks.failed": "청크를 읽지 못했습니다: {error}", "chunks.tokens": "토큰 {n}개", "chunks.page": "{n}쪽",
    "search.title": "검색", "search.query": "질문 또는 검색어", "search.mode": "방식", "search.explain": "설명",
    "search.button": "검색", "search.empty": "검색할 질문이나 검색어를 입력하세요.",
    "search.failed": "검색 실패: {error}", "search.count": "결과 {n}개, {ms} ms",
    "search.explained": " · {mode}, 채널마다 후보 {candidates}개 중 순위", "search.terms": " · Kiwi 형태소: ",
    "search.ranks": "dense 순위 {dense} · sparse 순위 {sparse}", "search.score": "점수 {score}",
    "err.401": " — 위에 올바른 API 키를 입력하세요.", "err.network": "서비스가 응답하지 않았습니다",
    "info.model": "모델 {model}", "info.dims": "{n}차원", "info.tokens": "청크당 토큰 {n}개",
    "info.mode": "{mode} 모드", "info.tenant": "테넌트 {tenant}", "info.connected": "연결됨", "info.service": "서비스: {error}",
    "search.filter": "필터", "search.badFilter": "필터가 JSON 객체가 아닙니다: {error}",
    "search.filterHelp": "필터: JSON, {\"key\": value} 또는 {\"and\": [{\"key\": \"year\", \"op\": \"gte\", \"value\": 2024}]} (op: eq ne in nin gt gte lt lte exists)",
    "opt.title": "올리기 설정: 출처 폴더와 메타데이터", "opt.prefix": "출처 폴더 (각 파일 이름 앞에 붙음)",
    "opt.meta": "모든 청크에 저장할 메타데이터 (텍스트 값)", "opt.add": "메타데이터 행 추가",
    "opt.key": "키", "opt.value": "값", "opt.remove": "이 행 삭제", "opt.keyN": "키 {n}", "opt.valueN": "값 {n}",
    "opt.removeN": "메타데이터 행 {n} 삭제",
    "lang.label": "언어",
  },
};
let strings = STRINGS.en;

function t(name, values = {}) {
  const text = strings[name] ?? STRINGS.en[name] ?? name;
  return text.replace(/\{(\w+)\}/g, (_, k) => (values[k] === undefined ? "" : String(values[k])));
}

const LANG = "korag.lang";

/** The interface language: the one chosen here before, else Korean for a Korean browser, else English. */
function chosenLanguage() {
  const kept = localStorage.getItem(LANG);
  if (kept && STRINGS[kept]) return kept;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language];
  for (const tag of wanted) {
    const base = String(tag || "").toLowerCase().split("-")[0];
    if (STRINGS[base]) return base;
  }
  return "en";
}

function applyLanguage(lang) {
  strings = STRINGS[lang] ?? STRINGS.en;
  document.documentElement.lang = STRINGS[lang] ? lang : "en";
  $("lang").value = document.documentElement.lang;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
}

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function humanBytes(n) {
  const units = ["bytes", "KB", "MB", "GB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${n} bytes` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

// -- key ------------------------------------------------------------------------------------------
let session = 0; // bumped when the key changes: work started under an older key stops
let info = null; // /v1/info for the current key

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
  $("key-state").className = "muted";
  $("key-state").textContent = key
    ? (tenant ? t("key.keptTenant", { tail: key.slice(-4), tenant }) : t("key.kept", { tail: key.slice(-4) }))
    : t("key.none");
}

async function saveKey(event) {
  event.preventDefault();
  const key = $("key").value.trim();
  const tenant = $("tenant-field").hidden ? "" : $("tenant").value.trim();
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
  if (tenant) sessionStorage.setItem(TENANT, tenant); else sessionStorage.removeItem(TENANT);
  newSession();
  showKeyState();
  $("key-state").textContent = t("key.checking");
  await start(true);
}

function forgetKey() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TENANT);
  newSession();
  info = null;
  $("tenant-field").hidden = true;
  $("info").textContent = t("key.needed");
  showKeyState();
  $("empty").textContent = t("docs.noKey");
  $("empty").hidden = false;
  hideMessage();
}

function newSession() {
  session += 1;
  rows.clear();
  $("uploads").tBodies[0].replaceChildren();
  $("more").hidden = true;
  nextCursor = null;
  closeChunks();
  $("results").replaceChildren();
  $("search-meta").replaceChildren();
  $("search-error").hidden = true;
}

// -- HTTP -----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && (problem.detail || problem.title);
    super(status ? `${status}${detail ? ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)) : ""}`
      : t("err.network"));
    this.status = status;
    this.problem = problem;
  }
}

function errorText(err) {
  return err.message + (err.status === 401 ? t("err.401") : "");
}

function parse(text) {
  try { return text ? JSON.parse(text) : null; } catch { return { detail: text }; }
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, null);
  }
  const data = parse(await response.text());
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** One file's upload with progress (fetch has none for request bodies): resolves with the JSON. */
function send(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/documents");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      const data = parse(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) resolve(data); else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null)));
    xhr.send(form);
  });
}

function showMessage(text, ok = false) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "error";
  box.hidden = false;
}

function hideMessage() { $("message").hidden = true; }

// -- info -----------------------------------------------------------------------------------------
function modelName(model) {
  // a path to a local model: its last part (".../multilingual-e5-small" → "multilingual-e5-small");
  // a hub name such as intfloat/multilingual-e5-small is shown as it is
  if (!model) return "";
  if (model.startsWith("/") || model.startsWith(".") || model.includes("\\") || model.split("/").length > 2) {
    const parts = model.split(/[\\/]+/).filter(Boolean);
    return parts[parts.length - 1] || model;
  }
  return model;
}

async function loadInfo(fromKeyForm = false) {
  const mine = session;
  try {
    const got = await api("GET", "/v1/info");
    if (mine !== session) return false;
    info = got;
    const parts = [];
    if (info.model) parts.push(t("info.model", { model: modelName(info.model) }));
    if (info.dimension) parts.push(t("info.dims", { n: info.dimension }));
    if (info.max_input_tokens) parts.push(t("info.tokens", { n: info.max_input_tokens }));
    if (info.mode) parts.push(t("info.mode", { mode: info.mode }));
    if (info.tenant) parts.push(t("info.tenant", { tenant: info.tenant }));
    $("info").textContent = parts.join(" · ") || t("info.connected");
    $("info").title = info.model || "";
    const admin = info.tenant === null || info.tenant === undefined || !!sessionStorage.getItem(TENANT);
    // the tenant field is for admin keys only: another key's tenant comes from the key (#18)
    $("tenant-field").hidden = !admin;
    if (!admin) sessionStorage.removeItem(TENANT);
    const types = Array.isArray(info.file_types) ? info.file_types : [];
    const limit = info.limits ? info.limits.max_file_bytes : null;
    $("accepted").textContent = t("docs.accepted", { types: types.join(" "), size: limit ? humanBytes(limit) : "?" });
    $("files").accept = types.filter((x) => x.startsWith(".")).join(",");
    if (info.limits) {
      $("query").maxLength = info.limits.max_query_chars;
      $("k").max = info.limits.max_k;
    }
    if (fromKeyForm && sessionStorage.getItem(KEY)) {
      const state = $("key-state");
      state.className = "ok";
      state.textContent = info.tenant ? t("key.okTenant", { tenant: info.tenant })
        : (sessionStorage.getItem(TENANT) ? t("key.okTenant", { tenant: sessionStorage.getItem(TENANT) }) : t("key.okAdmin"));
    }
    return true;
  } catch (err) {
    if (mine !== session) return false;
    if (err.status === 400 && sessionStorage.getItem(TENANT)) {
      // X-Korag-Tenant with a key that is not an admin key: drop the tenant and ask again (#18)
      sessionStorage.removeItem(TENANT);
      $("tenant").value = "";
      return loadInfo(fromKeyForm);
    }
    info = null;
    $("info").textContent = err.status === 401 ? t("key.needed") : t("info.service", { error: err.message });
    if (err.status === 401 || err.status === 400) {
      if (sessionStorage.getItem(KEY) || fromKeyForm) {
        const state = $("key-state");
        state.className = "error";
        state.textContent = err.status === 401 ? t("key.refused", { status: err.status }) : errorText(err);
      }
      $("empty").textContent = t("docs.noKey");
      $("empty").hidden = false;
    }
    return false;
  }
}

async function start(fromKeyForm = false) {
  if (await loadInfo(fromKeyForm)) await listDocuments(true);
}

// -- documents ------------------------------------------------------------------------------------
const rows = new Map(); // doc_id -> <tr>
let nextCursor = null;
let localIds = 0;

function statusCell(status, stage, label) {
  const shown = label ?? (stage && stage !== status ? `${status} (${stage})` : status);
  return el("span", { className: `status status-${status}`, textContent: shown });
}

function td(className, label, ...children) {
  const cell = el("td", { className }, ...children);
  cell.dataset.label = label;
  return cell;
}

function newRow(atTop) {
  const row = el("tr");
  const body = $("uploads").tBodies[0];
  if (atTop) body.prepend(row); else body.append(row);
  $("empty").hidden = true;
  return row;
}

/** A document's row: ``doc`` from the API (a listing, an upload's outcome or a status). */
function renderRow(doc, { atTop = false, row = null, watch = true } = {}) {
  let existing = rows.get(doc.doc_id);
  if (row && existing && existing !== row) { existing.remove(); existing = null; }
  row = existing || row || newRow(atTop);
  if (atTop && row.parentNode && row !== row.parentNode.firstChild) row.parentNode.prepend(row);
  row.dataset.docId = doc.doc_id;
  rows.set(doc.doc_id, row);
  row.dataset.status = doc.status;
  const source = doc.source ?? "";
  const actions = el("td", { className: "actions" });
  actions.dataset.label = "";
  if (doc.status === "indexed" || doc.status === "unchanged") {
    const open = el("button", { type: "button", className: "open-chunks", textContent: t("row.chunks") });
    open.setAttribute("aria-label", t("row.chunksName", { source }));
    open.addEventListener("click", () => openChunks(doc.doc_id, source));
    actions.append(open);
  }
  if (doc.status !== "deleted") {
    const remove = el("button", { type: "button", className: "delete", textContent: t("row.delete") });
    remove.setAttribute("aria-label", t("row.deleteName", { source }));
    remove.addEventListener("click", () => deleteDocument(doc.doc_id, source, doc.chunks ?? 0));
    actions.append(remove);
  }
  row.replaceChildren(
    td("source", t("col.source"), source),
    td("status-cell", t("col.status"), statusCell(doc.status, doc.stage)),
    td("chunks", t("col.chunks"), String(doc.chunks ?? "")),
    td("doc-id", t("col.docId"), doc.doc_id),
    td("error", t("col.error"), doc.error ?? ""),
    actions,
  );
  if (watch && !FINAL.has(doc.status)) poll(doc.doc_id, source);
  return row;
}

/** A row for a file that has no document (yet): uploading, or refused in the browser or by the service. */
function renderFileRow(row, name, status, label, error = "") {
  row.dataset.status = status;
  delete row.dataset.docId;
  const cells = [
    td("source", t("col.source"), name),
    td("status-cell", t("col.status"), statusCell(status, null, label)),
    td("chunks", t("col.chunks"), ""),
    td("doc-id", t("col.docId"), ""),
    td("error", t("col.error"), error),
    td("actions", ""),
  ];
  row.replaceChildren(...cells);
  return row;
}

const polling = new Set();

async function poll(docId, source) {
  if (polling.has(docId)) return;
  polling.add(docId);
  const mine = session;
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (mine !== session) return; // the key changed: this document is no longer the console's
      let doc;
      try {
        doc = await api("GET", `/v1/documents/${encodeURIComponent(docId)}`);
      } catch (err) {
        if (mine !== session) return;
        if (err.status === 404) {
          renderRowStatus(docId, "deleted");
          return;
        }
        if (err.status && err.status < 500 && err.status !== 429) { // 401, 400, 403: asking again will not help
          renderRowStatus(docId, "unknown", t("poll.stopped", { error: errorText(err) }));
          return;
        }
        continue; // a transient error: keep watching
      }
      if (mine !== session) return;
      if (rows.has(docId)) renderRow(doc, { watch: false }); // a row a new listing left out stays out
      if (FINAL.has(doc.status)) {
        announce(t("up.done", { source: doc.source ?? source, status: doc.status }), doc.status !== "failed");
        return;
      }
    }
  } finally {
    polling.delete(docId);
  }
}

function announce(text, ok = true) { showMessage(text, ok); }

function renderRowStatus(docId, status, error) {
  const row = rows.get(docId);
  if (!row) return;
  row.dataset.status = status;
  row.querySelector(".status-cell").replaceChildren(statusCell(status));
  if (error !== undefined) row.querySelector(".error").textContent = error;
  if (status === "deleted") {
    for (const button of row.querySelectorAll("button")) button.remove();
  }
}

function refusal(file) {
  const types = info && Array.isArray(info.file_types) ? info.file_types : null;
  const dot = file.name.lastIndexOf(".");
  const suffix = dot > 0 ? file.name.slice(dot).toLowerCase() : "";
  if (types && !types.includes(suffix)) return t("up.type", { types: types.join(" ") });
  const limit = info && info.limits ? info.limits.max_file_bytes : null;
  if (limit && file.size > limit) return t("up.size", { size: humanBytes(file.size), limit: humanBytes(limit) });
  return null;
}

async function upload(files) {
  if (!files.length) return;
  if (!info) await loadInfo();
  const mine = session;
  announce(t("up.started", { n: files.length }));
  const prefix = $("source-prefix").value.trim();
  const meta = metadata();
  // one request per file: a refusal (size, type) is that file's alone, and each gets its own row
  const sends = [];
  for (const file of files) {
    const row = newRow(true);
    row.dataset.local = String(++localIds);
    const refused = refusal(file);
    if (refused) {
      renderFileRow(row, file.name, "refused", t("up.refused"), refused);
      continue;
    }
    renderFileRow(row, file.name, "uploading", t("up.uploading"));
    const bar = el("progress", { max: 1, value: 0 });
    bar.setAttribute("aria-label", t("up.progress", { source: file.name }));
    row.querySelector(".status-cell").append(" ", bar);
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("source", prefix + file.name); // the name as typed: a multipart filename turns " into %22
    if (meta) form.append("metadata", JSON.stringify(meta)); // a field: a Blob would be a file part
    sends.push(send(form, (part) => { bar.value = part; }).then((data) => {
      if (mine !== session) return;
      for (const doc of data.documents) renderRow(doc, { row, atTop: true });
    }, (err) => {
      if (mine !== session) return;
      renderFileRow(row, file.name, "refused", t("up.refused"),
        err.status === 413 ? t("up.size", { size: humanBytes(file.size), limit: humanBytes(info?.limits?.max_file_bytes ?? 0) })
          : t("up.failed", { error: errorText(err) }));
    }));
  }
  await Promise.all(sends);
}

async function deleteDocument(docId, source, chunks) {
  if (!window.confirm(t("row.confirm", { source, chunks }))) return;
  try {
    const data = await api("DELETE", `/v1/documents/${encodeURIComponent(docId)}`);
    renderRowStatus(docId, "deleted");
    announce(t("row.deleted", { source, chunks: data.deleted_chunks }));
  } catch (err) {
    if (err.status === 404) {
      renderRowStatus(docId, "deleted", t("row.gone"));
      return;
    }
    announce(t("row.deleteFailed", { source, error: errorText(err) }), false);
  }
}

function listQuery(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE), order: "newest" });
  const status = $("status-filter").value;
  const prefix = $("prefix-filter").value;
  if (status) params.set("status", status);
  if (prefix) params.set("source_prefix", prefix);
  if (cursor) params.set("cursor", cursor);
  return `/v1/documents?${params}`;
}

async function listDocuments(reset = true) {
  const mine = session;
  const more = $("more");
  more.disabled = true;
  if (reset) { // now, not when the answer comes: rows of uploads started meanwhile stay
    rows.clear();
    $("uploads").tBodies[0].replaceChildren();
    more.hidden = true;
  }
  try {
    const data = await api("GET", listQuery(reset ? null : nextCursor));
    if (mine !== session) return;
    for (const doc of data.documents) renderRow(doc);
    nextCursor = data.next_cursor;
    more.hidden = !nextCursor;
    const filtered = $("status-filter").value || $("prefix-filter").value;
    const empty = $("uploads").tBodies[0].rows.length === 0;
    $("empty").textContent = filtered ? t("docs.emptyFiltered") : t("docs.empty");
    $("empty").hidden = !empty;
    if (!reset) announce(t(nextCursor ? "docs.shownMore" : "docs.shown", { n: $("uploads").tBodies[0].rows.length }));
  } catch (err) {
    if (mine !== session) return;
    announce(t("docs.listFailed", { error: errorText(err) }), false);
  } finally {
    more.disabled = false;
  }
}

/** The metadata rows as one object ({} → null: nothing sent); a row without a key is left out. */
function metadata() {
  const meta = {};
  for (const row of $("meta-rows").children) {
    const key = row.querySelector(".meta-key").value.trim();
    if (key) meta[key] = row.querySelector(".meta-value").value;
  }
  return Object.keys(meta).length ? meta : null;
}

function addMetaRow() {
  const n = $("meta-rows").children.length + 1;
  const key = el("input", { type: "text", className: "meta-key", spellcheck: false, placeholder: t("opt.key") });
  const value = el("input", { type: "text", className: "meta-value", placeholder: t("opt.value") });
  key.setAttribute("aria-label", t("opt.keyN", { n }));
  value.setAttribute("aria-label", t("opt.valueN", { n }));
  const remove = el("button", { type: "button", textContent: "×", className: "meta-remove" });
  remove.setAttribute("aria-label", t("opt.removeN", { n }));
  const row = el("div", { className: "meta-row" }, key, " ", value, " ", remove);
  remove.addEventListener("click", () => { row.remove(); $("add-meta").focus(); });
  $("meta-rows").append(row);
  key.focus();
}

function setUpDrop() {
  const zone = $("drop");
  const choose = () => $("files").click();
  zone.addEventListener("click", choose);
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      choose();
    }
  });
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

// -- chunks ---------------------------------------------------------------------------------------
let chunkDoc = null;
let chunkCursor = null;

function closeChunks() {
  chunkDoc = null;
  chunkCursor = null;
  $("chunks-section").hidden = true;
  $("chunks").replaceChildren();
}

async function openChunks(docId, source) {
  chunkDoc = docId;
  chunkCursor = null;
  $("chunks").replaceChildren();
  $("chunks-title").textContent = t("chunks.title", { source });
  $("chunks-meta").textContent = "";
  $("chunks-section").hidden = false;
  $("chunks-title").focus();
  await moreChunks();
}

function renderChunk(chunk) {
  const meta = chunk.metadata ?? {};
  const where = el("div", { className: "where" },
    el("span", { className: "index", textContent: `#${(meta.chunk_index ?? 0) + 1}` }),
    meta.page_number !== undefined && meta.page_number !== null
      ? el("span", { className: "page", textContent: t("chunks.page", { n: meta.page_number }) }) : null,
    meta.section ? el("span", { className: "section", textContent: meta.section }) : null,
    meta.token_count !== undefined && meta.token_count !== null
      ? el("span", { className: "tokens", textContent: t("chunks.tokens", { n: meta.token_count }) }) : null,
  );
  return el("li", { className: "chunk" }, where, el("p", { className: "text", textContent: chunk.text }));
}

async function moreChunks() {
  const docId = chunkDoc;
  const mine = session;
  const params = new URLSearchParams({ limit: String(CHUNK_PAGE) });
  if (chunkCursor) params.set("cursor", chunkCursor);
  try {
    const data = await api("GET", `/v1/documents/${encodeURIComponent(docId)}/chunks?${params}`);
    if (mine !== session || docId !== chunkDoc) return;
    $("chunks").append(...data.chunks.map(renderChunk));
    chunkCursor = data.next_cursor;
    $("chunks-more").hidden = !chunkCursor;
    const shown = $("chunks").children.length;
    const total = data.chunks.length ? data.chunks[0].metadata?.chunk_count ?? shown : shown;
    $("chunks-meta").textContent = shown ? t("chunks.meta", { shown, total }) : t("chunks.none");
  } catch (err) {
    if (mine !== session || docId !== chunkDoc) return;
    $("chunks-meta").textContent = t("chunks.failed", { error: errorText(err) });
  }
}

// -- search ---------------------------------------------------------------------------------------
function rankOf(result, channel) {
  // korag.schemas.SearchHit: "ranks": {"dense": n, "sparse": n}, null when not in that channel's candidates
  const value = result.ranks ? result.ranks[channel] : null;
  return value === null || value === undefined ? "–" : String(value);
}

/** ``text`` as text nodes, with each of the query's Kiwi ``terms`` marked (<mark>, its text as text). */
function highlighted(text, terms) {
  const words = [...new Set((terms || []).filter((w) => typeof w === "string" && w.trim()))]
    .sort((a, b) => b.length - a.length)
    .map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!words.length) return [text];
  const pattern = new RegExp(words.join("|"), "giu");
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (!match[0]) continue;
    if (match.index > last) parts.push(text.slice(last, match.index));
    parts.push(el("mark", { textContent: match[0] }));
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  return parts;
}

function renderResult(result, index, explained, terms) {
  const meta = result.metadata ?? {};
  const where = el("div", { className: "where" },
    el("span", { className: "rank", textContent: `#${index + 1}` }),
    el("span", { className: "score", textContent: t("search.score", { score: Number(result.score).toFixed(4) }) }),
    el("span", { className: "source", textContent: meta.source ?? meta.filename ?? "" }),
    meta.section ? el("span", { className: "section", textContent: meta.section }) : null,
    meta.page_number !== undefined && meta.page_number !== null
      ? el("span", { className: "page", textContent: `p. ${meta.page_number}` }) : null,
  );
  const ranks = explained
    ? el("div", { className: "ranks", textContent: t("search.ranks", { dense: rankOf(result, "dense"), sparse: rankOf(result, "sparse") }) })
    : null;
  return el("li", { className: "result" }, where, ranks, el("p", { className: "text" }, ...highlighted(result.text ?? "", terms)));
}

function searchError(text) {
  $("results").replaceChildren();
  $("search-meta").replaceChildren();
  const box = $("search-error");
  box.textContent = text;
  box.hidden = false;
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value;
  if (!query.trim()) {
    searchError(t("search.empty"));
    $("query").focus();
    return;
  }
  const body = {
    query,
    k: Math.round(Number($("k").value)) || 5,
    mode: $("mode").value,
    explain: $("explain").checked,
  };
  const filter = $("filter").value.trim();
  if (filter) {
    try {
      body.filter = JSON.parse(filter);
      if (body.filter === null || typeof body.filter !== "object" || Array.isArray(body.filter)) {
        throw new Error(filter.slice(0, 40));
      }
    } catch (err) {
      searchError(t("search.badFilter", { error: err.message }));
      $("filter").focus();
      return;
    }
  }
  const mine = session;
  $("search-button").disabled = true;
  $("search-error").hidden = true;
  try {
    const data = await api("POST", "/v1/search", body);
    if (mine !== session) return;
    const terms = data.explain ? data.explain.terms : null;
    const meta = $("search-meta");
    meta.replaceChildren(t("search.count", { n: data.results.length, ms: data.took_ms }));
    if (data.notice) meta.append(` — ${data.notice}`);
    if (data.explain) meta.append(t("search.explained", { mode: data.explain.mode, candidates: data.explain.candidates }));
    if (body.explain && Array.isArray(terms)) {
      const span = el("span", { className: "terms" }, t("search.terms"));
      for (const term of terms) span.append(el("code", { textContent: typeof term === "string" ? term : JSON.stringify(term) }));
      meta.append(span);
    }
    $("results").replaceChildren(...data.results.map((r, i) => renderResult(r, i, body.explain, terms)));
  } catch (err) {
    if (mine !== session) return;
    searchError(t("search.failed", { error: errorText(err) }));
  } finally {
    $("search-button").disabled = false;
  }
}

// -- start ----------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  applyLanguage(chosenLanguage());
  $("lang").addEventListener("change", () => {
    localStorage.setItem(LANG, $("lang").value);
    applyLanguage($("lang").value);
    showKeyState();
    if (info) start(); else if (!sessionStorage.getItem(KEY)) $("info").textContent = t("key.needed");
  });
  $("key-form").addEventListener("submit", saveKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("search-form").addEventListener("submit", search);
  $("filter-form").addEventListener("submit", (event) => { event.preventDefault(); listDocuments(true); });
  $("more").addEventListener("click", () => listDocuments(false));
  $("chunks-more").addEventListener("click", moreChunks);
  $("chunks-close").addEventListener("click", closeChunks);
  $("add-meta").addEventListener("click", addMetaRow);
  setUpDrop();
  showKeyState();
  start();
});
