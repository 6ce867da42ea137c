// Import history: committed imports with their undo deadline counting down, and
// rollback — confirmed once, and again, with the list, when records of the import
// were edited since (the API's 409 `requires_confirmation`).

import * as api from "./api.js";
import {
  badge, clear, confirmDialog, errorText, fmtDate, fmtInt, h, tableFrame, toast,
} from "./ui.js";

const STATUSES = "committing,committed,rolled_back";
const PAGE = 25;

export function render(main) {
  const body = h("tbody");
  const note = h("p", { class: "muted", role: "status" });
  const more = h("button", { hidden: true }, "Show older imports");
  const table = h("table", { class: "data history" },
    h("caption", { class: "visually-hidden" }, "Committed imports, newest first"),
    h("thead", {}, h("tr", {},
      ["File", "Committed", "Records", "Status", "Undo window", ""].map((t) => h("th", { scope: "col" }, t)))),
    body);
  clear(main,
    h("div", { class: "page-head" },
      h("h1", { tabindex: -1 }, "Import history"),
      h("p", { class: "lead" },
        "Every committed import can be rolled back while its undo window is open: the "
        + "records it added are removed again, those it updated restored as they were.")),
    h("section", { class: "card flush" }, tableFrame(table, "Import history"), note),
    h("div", { class: "actions" }, more));

  const stops = new Set();
  let cursor = null;
  const put = (job) => {
    const tr = row(job, put, stops);
    const old = body.querySelector(`tr[data-id="${job.id}"]`);
    if (old) old.replaceWith(tr);
    else body.append(tr);
  };
  const load = async () => {
    note.textContent = "Loading…";
    try {
      const page = await api.jobs({ kind: "import", status: STATUSES, limit: PAGE, cursor });
      for (const job of page.items) put(job);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      note.textContent = body.children.length ? "" : "No committed imports yet.";
    } catch (err) {
      note.textContent = errorText(err);
    }
  };
  more.addEventListener("click", load);
  load();

  const tick = setInterval(() => countdown(body), 1000);
  return () => {
    clearInterval(tick);
    for (const stop of stops) stop();
  };
}

function countdown(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll("[data-deadline]")) {
    const left = (new Date(el.dataset.deadline).getTime() - now) / 1000;
    el.textContent = left > 0 ? `${clock(left)} left` : "closed";
    if (left <= 0) {
      el.removeAttribute("data-deadline");
      el.closest("tr")?.querySelector("button.rollback")?.setAttribute("disabled", "");
    }
  }
}

function clock(seconds) {
  const s = Math.floor(seconds);
  const pad = (n) => String(n).padStart(2, "0");
  return `${Math.floor(s / 3600)}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function row(job, put, stops) {
  const batch = job.result?.batch || {};
  const open = job.status === "committed" && batch.rollback_until && new Date(batch.rollback_until) > new Date();
  const undo = job.status === "committed"
    ? h("span", { class: "countdown", title: `until ${fmtDate(batch.rollback_until)}`, "data-deadline": open ? batch.rollback_until : null },
      open ? "" : "closed")
    : h("span", { class: "muted" }, job.status === "rolled_back" ? `rolled back ${fmtDate(batch.rolled_back_at)}` : "—");
  const button = h("button", {
    class: "small danger-outline rollback",
    disabled: !open,
    onclick: () => rollback(job, put, stops, button),
  }, "Roll back");
  const tr = h("tr", { "data-id": job.id, "data-status": job.status },
    h("td", {}, h("a", { href: `#/import/${job.id}`, class: "strong" }, job.params?.filename || "import"),
      h("div", { class: "muted small" }, `${job.dataset} · account ${job.params?.account_id || "—"}`)),
    h("td", { class: "nowrap" }, fmtDate(batch.created_at || job.finished_at)),
    h("td", {}, `${fmtInt(batch.rows)}${batch.updated ? ` (${fmtInt(batch.updated)} updated)` : ""}${batch.skipped ? ` (${fmtInt(batch.skipped)} skipped)` : ""}`),
    h("td", {}, badge(job.status)),
    h("td", { class: "nowrap" }, undo),
    h("td", {}, job.status === "committed" ? button : null));
  countdown(tr);
  return tr;
}

async function rollback(job, put, stops, button) {
  const batch = job.result?.batch || {};
  const file = job.params?.filename || "this import";
  const sure = await confirmDialog({
    title: "Roll back this import?",
    body: h("p", {}, rollbackText(batch, file)),
    confirmLabel: "Roll back",
    danger: true,
  });
  if (!sure) return;
  button.disabled = true;
  try {
    let done;
    try {
      done = await api.rollback(job.id);
    } catch (err) {
      if (!(err.status === 409 && err.problem.requires_confirmation)) throw err;
      if (!(await confirmEdited(err.problem, file))) {
        button.disabled = false;
        return;
      }
      done = await api.rollback(job.id, true);
    }
    finish(done, put, stops);
  } catch (err) {
    toast(errorText(err), { tone: "bad" });
    button.disabled = false;
  }
}

// What a rollback does: an upsert's batch also updated records, which get their
// earlier values back rather than being removed.
function rollbackText(batch, file) {
  if (!batch.updated) return `The ${fmtInt(batch.rows)} records that ${file} added will be removed.`;
  const added = batch.inserted ?? batch.rows - batch.updated;
  return `The ${fmtInt(batch.updated)} record${batch.updated === 1 ? "" : "s"} that ${file} updated will be `
    + `restored as ${batch.updated === 1 ? "it was" : "they were"} before the import, and the `
    + `${fmtInt(added)} it added will be removed.`;
}

function confirmEdited(problem, file) {
  const ids = problem.records || [];
  const count = problem.edited_count ?? ids.length;
  return confirmDialog({
    title: `${fmtInt(count)} record${count === 1 ? " was" : "s were"} edited since the import`,
    body: [
      h("p", { class: "callout warn" },
        `Rolling back ${file} removes ${count === 1 ? "this record" : "these records"} too, `
        + `and ${count === 1 ? "its edits are" : "their edits are"} lost.`),
      h("ul", { class: "record-list", "aria-label": "Edited records" },
        ids.map((id) => h("li", {}, `Record #${id}`))),
      count > ids.length ? h("p", { class: "muted" }, `… and ${fmtInt(count - ids.length)} more.`) : null,
    ],
    confirmLabel: "Roll back anyway",
    danger: true,
  });
}

// A rollback may answer at once (200) or as a job still running (202): follow it.
function finish(doc, put, stops) {
  put(doc);
  if (api.isFinal(doc.status)) {
    if (doc.status === "rolled_back") toast(`Rolled back: ${doc.params?.filename || "the import"}.`, { tone: "ok" });
    return;
  }
  const stop = api.follow(doc, (type, data) => {
    if (type === "status" || api.isFinal(data?.status)) put(data);
    if (data?.status === "rolled_back") toast(`Rolled back: ${doc.params?.filename || "the import"}.`, { tone: "ok" });
  });
  stops.add(stop);
}
