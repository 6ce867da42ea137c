// Every call the console makes to Ferry's public API, and nothing else.
//
// The bearer token lives in sessionStorage (this tab only). Errors arrive as RFC 9457
// problems and are thrown as ApiError. 429 and 503 are retried after their
// Retry-After. Work that the API answers with a job (200 or 202 alike) is followed
// over its `links.events` stream until the job reaches a state the caller waits for.

const TOKEN_KEY = "ferry.token";
const RETRIES = 3;
const MAX_WAIT_S = 30;

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
  // Who the token names (for display only; the API checks it).
  get claims() {
    try {
      const part = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch {
      return null;
    }
  },
};

// Hooks the app sets: a retry is being waited for; the token was refused.
export const hooks = { onRetry: () => {}, onUnauthorized: () => {} };

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  // The message of each field named by the problem, e.g. {name: "already taken"}.
  get fields() {
    const out = {};
    for (const e of this.problem.errors || []) out[e.field] ??= e.message;
    return out;
  }
}

function retryAfter(response) {
  const value = response.headers.get("Retry-After");
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.min(Math.max(seconds, 1), MAX_WAIT_S);
  const at = Date.parse(value);
  return Number.isNaN(at) ? 2 : Math.min(Math.max((at - Date.now()) / 1000, 1), MAX_WAIT_S);
}

async function problemOf(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return { title: response.statusText, detail: text.slice(0, 300) || `HTTP ${response.status}` };
  }
}

const wait = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// A fetch with the bearer token; the Response when it is 2xx, an ApiError otherwise.
async function send(method, path, { json, body, headers = {}, signal } = {}) {
  const init = { method, signal, headers: { Authorization: `Bearer ${session.token}`, ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, init);
    if ((response.status === 429 || response.status === 503) && attempt < RETRIES) {
      const seconds = retryAfter(response);
      hooks.onRetry(response.status, seconds);
      await wait(seconds);
      continue;
    }
    if (response.ok) return response;
    const problem = await problemOf(response);
    if (response.status === 401) hooks.onUnauthorized(problem);
    throw new ApiError(response.status, problem);
  }
}

async function call(method, path, options) {
  const response = await send(method, path, options);
  return response.status === 204 ? null : response.json();
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
};

const newKey = () => crypto.randomUUID();

// --- datasets and presets -------------------------------------------------------------

export const datasets = async () => (await call("GET", "/v1/datasets")).items;
export const presets = async (dataset) => (await call("GET", `/v1/presets${query({ dataset })}`)).items;
export const savePreset = (preset) => call("POST", "/v1/presets", { json: preset });
export const deletePreset = (id) => call("DELETE", `/v1/presets/${id}`);

// --- exports ---------------------------------------------------------------------------

// A direct download: {blob, filename} — or an ApiError; a 413 carries `export_request`.
export async function directExport(dataset, format, params) {
  const path = `/v1/datasets/${encodeURIComponent(dataset)}/export.${format}${query(params)}`;
  const response = await send("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*=UTF-8''([^;]+)/i.exec(disposition) || /filename="?([^";]+)"?/i.exec(disposition);
  const filename = match ? decodeURIComponent(match[1]) : `export.${format}`;
  return { blob: await response.blob(), filename, rows: Number(response.headers.get("X-Ferry-Rows")) };
}

export const startExport = (request) =>
  call("POST", "/v1/exports", { json: request, headers: { "Idempotency-Key": newKey() } });

// --- jobs ------------------------------------------------------------------------------

export const jobs = (params = {}) => call("GET", `/v1/jobs${query(params)}`);
export const job = (id) => call("GET", `/v1/jobs/${id}`);
export const cancel = (id) => call("POST", `/v1/jobs/${id}/cancel`);

// --- imports ---------------------------------------------------------------------------

export const importDoc = (id) => call("GET", `/v1/imports/${id}`);
export const putMapping = (id, changes) => call("PUT", `/v1/imports/${id}/mapping`, { json: changes });
// Read another sheet of the uploaded workbook: no new upload, the import validates again.
export const chooseSheet = (id, sheet) => call("PUT", `/v1/imports/${id}/sheet`, { json: { sheet } });
export const commit = (id, onError, mode = "insert") =>
  call("POST", `/v1/imports/${id}/commit`, {
    json: { on_error: onError, mode },
    headers: { "Idempotency-Key": newKey() },
  });
export const rollback = (id, confirm = false) =>
  call("POST", `/v1/imports/${id}/rollback`, { json: { confirm } });

// Upload a file as a form; `onProgress(sent, total)` as it goes (XMLHttpRequest, because
// fetch reports no upload progress). Resolves with the import; 429/503 are retried.
export function upload({ file, dataset, accountId, sheet, onProgress, signal }) {
  const form = new FormData();
  form.set("dataset", dataset);
  form.set("account_id", accountId);
  if (sheet) form.set("sheet", sheet);
  form.set("file", file, file.name);
  const key = newKey();
  const attempt = (left) =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/imports");
      xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
      xhr.setRequestHeader("Idempotency-Key", key);
      xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : file.size);
      xhr.onerror = () => reject(new ApiError(0, { title: "Network error", detail: "the upload did not reach Ferry" }));
      xhr.onabort = () => reject(new DOMException("upload cancelled", "AbortError"));
      xhr.onload = async () => {
        let body;
        try { body = JSON.parse(xhr.responseText); } catch { body = { detail: xhr.responseText.slice(0, 300) }; }
        if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
        if ((xhr.status === 429 || xhr.status === 503) && left > 0) {
          const seconds = retryAfter({ headers: { get: (h) => xhr.getResponseHeader(h) } });
          hooks.onRetry(xhr.status, seconds);
          await wait(seconds);
          return attempt(left - 1).then(resolve, reject);
        }
        if (xhr.status === 401) hooks.onUnauthorized(body);
        reject(new ApiError(xhr.status, body));
      };
      signal?.addEventListener("abort", () => xhr.abort(), { once: true });
      xhr.send(form);
    });
  return attempt(RETRIES);
}

// --- files -----------------------------------------------------------------------------

// Let the browser save a file of the API (an export, an error report): a one-minute
// link, followed by navigation, so the file streams to disk (and may come from S3).
export async function download(href) {
  const link = await call("POST", "/v1/links", { json: { href } });
  const a = document.createElement("a");
  a.href = link.href;
  a.download = "";
  document.body.append(a);
  a.click();
  a.remove();
}

export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// --- events ----------------------------------------------------------------------------

const FINAL = new Set(["succeeded", "failed", "cancelled", "expired", "committed", "rolled_back"]);
export const isFinal = (status) => FINAL.has(status);

// Follow one job: `on(type, data)` gets `status` and terminal events (data: the job) and
// `progress` ({done, total}). The stream ends with the job's next resting state; when the
// link's token expired or the connection broke for good, the job is read again and a
// fresh stream opened. Returns a function that stops following.
export function follow(jobDoc, on) {
  let source = null;
  let stopped = false;
  const open = (url) => {
    source = new EventSource(url);
    const handle = (type) => (e) => {
      const data = JSON.parse(e.data);
      on(type, data);
      if (type !== "status" && type !== "progress") stop();
    };
    for (const type of ["status", "progress", "succeeded", "failed", "cancelled", "expired",
      "validated", "committed", "rolled_back"]) {
      source.addEventListener(type, handle(type));
    }
    source.onerror = async () => {
      if (stopped || source.readyState !== EventSource.CLOSED) return; // it reconnects itself
      try {
        const fresh = await job(jobDoc.id);
        on("status", fresh);
        if (!stopped && !isFinal(fresh.status)) open(fresh.links.events);
      } catch (err) {
        on("error", err);
      }
    };
  };
  const stop = () => {
    stopped = true;
    source?.close();
  };
  open(jobDoc.links.events);
  return stop;
}

// The caller's feed of job events (links.events of GET /v1/jobs); reopened with a fresh
// link when it closes for good. Returns a function that stops it.
export function feed(url, on) {
  let source = null;
  let stopped = false;
  const open = (link) => {
    source = new EventSource(link);
    for (const type of ["status", "succeeded", "failed", "cancelled", "expired", "validated",
      "committed", "rolled_back"]) {
      source.addEventListener(type, (e) => on(type, JSON.parse(e.data)));
    }
    source.onerror = async () => {
      if (stopped || source.readyState !== EventSource.CLOSED) return;
      try {
        const page = await jobs({ limit: 1 });
        on("resync", null);
        if (!stopped) open(page.links.events);
      } catch (err) {
        on("error", err);
      }
    };
  };
  open(url);
  return () => {
    stopped = true;
    source?.close();
  };
}
