// Jobs page: the caller's history, newest first, a page at a time (`next_cursor`),
// kept current by the caller's event feed (`links.events` of GET /v1/jobs); running
// jobs also stream their progress.

import * as api from "./api.js";
import {
  badge, clear, errorText, fmtBytes, fmtDate, fmtInt, fmtRelative, h, tableFrame, toast,
} from "./ui.js";

const PAGE = 25;
const LIVE_PROGRESS = 3; // progress streams at once (browsers allow few connections)
const MOVING = new Set(["running", "validating", "committing"]);

export function render(main) {
  const kind = h("select", { id: "jobs-kind" },
    h("option", { value: "" }, "All jobs"),
    h("option", { value: "export" }, "Exports"),
    h("option", { value: "import" }, "Imports"));
  const body = h("tbody");
  const more = h("button", { hidden: true }, "Show older jobs");
  const note = h("p", { class: "muted", role: "status" });
  const table = h("table", { class: "data jobs" },
    h("caption", { class: "visually-hidden" }, "Your jobs, newest first"),
    h("thead", {}, h("tr", {},
      ["Started", "Job", "Status", "Progress", "Result", "Available until", ""].map((t) => h("th", { scope: "col" }, t)))),
    body);
  clear(main,
    h("div", { class: "page-head" },
      h("h1", { tabindex: -1 }, "Jobs"),
      h("p", { class: "lead" }, "Your exports and imports. This list updates by itself.")),
    h("div", { class: "toolbar" },
      h("label", { for: kind.id }, "Show"), kind),
    h("section", { class: "card flush" }, tableFrame(table, "Jobs"), note),
    h("div", { class: "actions" }, more));

  const rows = new Map(); // job id → {tr, job, stop}
  let cursor = null;
  let stopFeed = null;

  const live = () => [...rows.values()].filter((r) => r.stop).length;
  const put = (job, { prepend = false } = {}) => {
    const old = rows.get(job.id);
    const tr = jobRow(job, put);
    if (old) old.tr.replaceWith(tr);
    else if (prepend) body.prepend(tr);
    else body.append(tr);
    const entry = { tr, job, stop: old?.stop || null };
    rows.set(job.id, entry);
    if (!MOVING.has(job.status) && entry.stop) {
      entry.stop();
      entry.stop = null;
    } else if (MOVING.has(job.status) && !entry.stop && live() < LIVE_PROGRESS) {
      entry.stop = api.follow(job, (type, data) => {
        const now = rows.get(job.id);
        if (type === "progress") setProgress(now.tr, data);
        else if (type !== "error") put({ ...now.job, ...data, links: { ...now.job.links, ...data.links } });
      });
    }
  };

  const load = async (reset) => {
    if (reset) {
      for (const r of rows.values()) r.stop?.();
      rows.clear();
      body.replaceChildren();
      cursor = null;
    }
    note.textContent = "Loading…";
    try {
      const page = await api.jobs({ limit: PAGE, kind: kind.value, cursor });
      for (const job of page.items) put(job);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      note.textContent = rows.size ? "" : "No jobs yet. Start an export or an import.";
      if (!stopFeed) stopFeed = api.feed(page.links.events, onEvent);
    } catch (err) {
      note.textContent = errorText(err);
    }
  };

  // Feed events carry the job without its view's extras (queue position, event link):
  // merged into a known row; a new job is read in full first.
  const onEvent = async (type, data) => {
    if (type === "resync") return load(true);
    if (type === "error" || !data?.id) return;
    const known = rows.get(data.id);
    if (known) put({ ...known.job, ...data, links: { ...known.job.links, ...data.links } });
    else if (!kind.value || kind.value === data.kind) {
      try {
        const job = await api.job(data.id);
        if (!rows.has(job.id)) put(job, { prepend: true });
        note.textContent = "";
      } catch { /* gone meanwhile */ }
    }
  };

  kind.addEventListener("change", () => load(true));
  more.addEventListener("click", () => load(false));
  load(true);

  const tick = setInterval(() => {
    for (const el of body.querySelectorAll("[data-until]")) el.textContent = fmtRelative(el.dataset.until);
  }, 30_000);
  return () => {
    clearInterval(tick);
    stopFeed?.();
    for (const r of rows.values()) r.stop?.();
  };
}

function setProgress(tr, progress) {
  const cell = tr.querySelector(".progress-cell");
  if (cell) clear(cell, progressCell(progress));
}

function progressCell(progress) {
  if (!progress || progress.done === undefined) return h("span", { class: "muted" }, "—");
  const { done, total } = progress;
  const unit = progress.unit || "rows";
  const bar = h("progress", { max: total || 1, value: total ? Math.min(done, total) : 0 });
  if (!total) bar.removeAttribute("value");
  return h("div", { class: "mini-progress" }, bar,
    h("span", {}, total ? `${fmtInt(done)} / ${fmtInt(total)} ${unit}` : `${fmtInt(done)} ${unit}`));
}

function resultText(job) {
  const r = job.result;
  if (job.status === "failed") return h("span", { class: "error-text" }, job.error?.message || "failed");
  if (!r) return "—";
  if (job.kind === "export") return r.rows === undefined ? "—" : `${fmtInt(r.rows)} rows · ${fmtBytes(r.bytes)}`;
  const batch = r.batch;
  if (batch) return `${fmtInt(batch.rows)} records added${batch.skipped ? `, ${fmtInt(batch.skipped)} skipped` : ""}`;
  const t = r.totals;
  return t ? `${fmtInt(t.valid)} valid, ${fmtInt(t.invalid)} invalid` : "—";
}

function until(job) {
  const iso = job.kind === "export"
    ? (job.status === "succeeded" ? job.result?.expires_at : null)
    : (job.status === "committed" ? job.result?.batch?.rollback_until : null);
  if (!iso) return h("span", { class: "muted" }, job.status === "expired" ? "expired" : "—");
  const label = job.kind === "export" ? "download" : "undo";
  return h("span", { title: fmtDate(iso) }, `${label} `, h("span", { "data-until": iso }, fmtRelative(iso)));
}

function jobRow(job, put) {
  const name = job.kind === "export"
    ? `Export · ${(job.params?.format || "").toUpperCase()}`
    : `Import · ${job.params?.filename || job.source?.filename || ""}`;
  const actions = h("div", { class: "row-actions" });
  if (job.kind === "export" && job.status === "succeeded") {
    actions.append(h("button", {
      class: "small primary",
      onclick: () => api.download(`/v1/exports/${job.id}/download`).catch((err) => toast(errorText(err), { tone: "bad" })),
    }, "Download"));
  }
  if (job.kind === "import") {
    actions.append(h("a", { class: "button small", href: `#/import/${job.id}` }, "Open"));
  }
  if (!api.isFinal(job.status) && !job.cancel_requested) {
    actions.append(h("button", {
      class: "small danger-outline",
      onclick: async (e) => {
        e.target.disabled = true;
        try { put(await api.cancel(job.id)); } catch (err) { toast(errorText(err), { tone: "bad" }); e.target.disabled = false; }
      },
    }, "Cancel"));
  }
  return h("tr", { "data-id": job.id, "data-status": job.status },
    h("td", { class: "nowrap" }, fmtDate(job.created_at)),
    h("td", {}, h("div", { class: "strong" }, name), h("div", { class: "muted small" }, job.dataset)),
    h("td", {}, badge(job.status)),
    h("td", { class: "progress-cell" }, progressCell(job.progress)),
    h("td", { class: "nowrap" }, resultText(job)),
    h("td", { class: "nowrap" }, until(job)),
    h("td", {}, actions));
}
