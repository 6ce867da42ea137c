// Small DOM and formatting helpers shared by the pages.

// h("button", {class: "primary", onclick}, "Save") → an element. Attributes named on*
// become listeners; `false`/`null` attributes and children are left out.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export const clear = (el, ...children) => {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
};

let uid = 0;
export const newId = (prefix = "f") => `${prefix}-${++uid}`;

// A labelled form control: field("Account", input) → <div class=field><label/>input</div>.
export function field(label, control, hint) {
  control.id ||= newId();
  const hintEl = hint ? h("p", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

// --- formatting -----------------------------------------------------------------------

const numberFormat = new Intl.NumberFormat();
export const fmtInt = (n) => (n === null || n === undefined ? "—" : numberFormat.format(n));

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function fmtDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return "under a second";
  const s = Math.round(seconds);
  if (s >= 2 * 86400) return `${Math.round(s / 86400)} days`;
  const hours = Math.floor(s / 3600), minutes = Math.floor((s % 3600) / 60), secs = s % 60;
  if (hours) return `${hours} h ${minutes} min`;
  if (minutes) return `${minutes} min ${secs} s`;
  return `${secs} s`;
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export const fmtDate = (iso) => (iso ? dateFormat.format(new Date(iso)) : "—");

// "in 23 h 59 min" / "5 min ago"
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = (new Date(iso).getTime() - now) / 1000;
  return seconds >= 0 ? `in ${fmtDuration(seconds)}` : `${fmtDuration(-seconds)} ago`;
}

const STATUS_LABELS = {
  queued: "Queued", running: "Running", succeeded: "Ready", failed: "Failed",
  cancelled: "Cancelled", expired: "Expired", uploaded: "Uploaded", validating: "Checking",
  validated: "Checked", committing: "Committing", committed: "Committed",
  rolled_back: "Rolled back",
};

const TONES = {
  succeeded: "ok", committed: "ok", validated: "info", failed: "bad", cancelled: "muted",
  expired: "muted", rolled_back: "muted", running: "info", committing: "info", validating: "info",
};

export const badge = (status) =>
  h("span", { class: `badge ${TONES[status] || "neutral"}` }, STATUS_LABELS[status] || status);

// --- progress ---------------------------------------------------------------------------

// A progress bar with "done of total · rate · time left", fed with `update({done, total})`.
// The rate is measured from `since` (when the work started, e.g. a job's `started_at`)
// until a second update arrives, then between updates.
export function progressMeter(unit = "rows") {
  const bar = h("progress", { max: 1, value: 0 });
  const text = h("span", { class: "progress-text" }, "Waiting to start…");
  const el = h("div", { class: "progress" }, bar, text);
  let first = null;
  let since = null;
  const update = ({ done, total } = {}, note) => {
    if (done === undefined || done === null) {
      bar.removeAttribute("value");
      text.textContent = note || "Waiting to start…";
      return;
    }
    const now = Date.now();
    let rate = null;
    if (first && now > first.at + 250) rate = ((done - first.done) / (now - first.at)) * 1000;
    else if (since && now > since) rate = (done / (now - since)) * 1000;
    first ??= { at: now, done };
    if (total) {
      bar.max = total;
      bar.value = Math.min(done, total);
    } else {
      bar.removeAttribute("value");
    }
    const parts = [total ? `${fmtInt(done)} of ${fmtInt(total)} ${unit}` : `${fmtInt(done)} ${unit}`];
    if (rate > 0) parts.push(`${fmtInt(Math.round(rate))} ${unit}/s`);
    if (rate > 0 && total && done < total) {
      const left = (total - done) / rate;
      parts.push(left < 1 ? "less than a second left" : `about ${fmtDuration(left)} left`);
    }
    text.textContent = parts.join(" · ");
  };
  const start = (iso) => { since = iso ? new Date(iso).getTime() : Date.now(); };
  const finish = (note) => {
    bar.max = 1;
    bar.value = 1;
    text.textContent = note;
  };
  return { el, update, start, finish };
}

// --- toasts, notifications, dialogs -------------------------------------------------------

export function toast(message, { tone = "info", action, timeout = 8000 } = {}) {
  const box = document.getElementById("toasts");
  const close = () => item.remove();
  const item = h(
    "div",
    { class: `toast ${tone}` },
    h("p", {}, message),
    action ? h("button", { class: "link", onclick: () => { close(); action.run(); } }, action.label) : null,
    h("button", { class: "icon", "aria-label": "Dismiss", onclick: close }, "×"),
  );
  box.append(item);
  if (timeout) setTimeout(close, timeout);
  return close;
}

export const errorText = (err) => (err && err.message) || String(err);

// Ask for permission to notify; only ever from a user's action (a background export).
export async function askToNotify() {
  if (!("Notification" in window) || Notification.permission !== "default") return;
  try { await Notification.requestPermission(); } catch { /* older browsers: callback form */ }
}

// Tell the person something finished: a system notification while the tab is hidden
// (clicking it brings the tab back and runs `action`), a toast while it is visible.
export function announce(title, body, action) {
  if (document.visibilityState === "hidden" && "Notification" in window
      && Notification.permission === "granted") {
    const note = new Notification(title, { body, tag: `ferry-${title}-${body}` });
    note.onclick = () => {
      window.focus();
      note.close();
      action?.run();
    };
    return;
  }
  toast(`${title}: ${body}`, { tone: "ok", action, timeout: 15000 });
}

// A modal <dialog>: resolves with true when `confirmLabel` is pressed, false otherwise.
export function confirmDialog({ title, body, confirmLabel, danger = false }) {
  return new Promise((resolve) => {
    const heading = h("h2", { id: newId("dlg") }, title);
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": heading.id },
      heading,
      h("div", { class: "dialog-body" }, body),
      h(
        "div",
        { class: "actions" },
        h("button", { value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel"),
        h("button", { class: danger ? "danger" : "primary", onclick: () => dialog.close("ok") }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "ok");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// A table in a horizontally scrolling frame (narrow windows keep the page width).
export const tableFrame = (table, label) =>
  h("div", { class: "table-frame", role: "region", "aria-label": label, tabindex: 0 }, table);
