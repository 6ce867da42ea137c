// Import page: upload a file, see what Ferry understood of it, fix the column
// mapping, look at the first records with their errors, then commit — all or
// nothing, or the valid rows only — and follow the commit to its batch.

import * as api from "./api.js";
import {
  badge, clear, errorText, field, fmtBytes, fmtDate, fmtInt, fmtRelative, h, newId,
  progressMeter, tableFrame, toast,
} from "./ui.js";

const ACCEPT = ".csv,.tsv,.txt,.xlsx,text/csv,text/tab-separated-values,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const ACCOUNT_KEY = "ferry.account";
const DELIMITERS = { ",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar" };

let current = null; // {id} of this tab's import, shown again when coming back

export function render(main, [id]) {
  const view = h("div", { class: "stack" });
  clear(main,
    h("div", { class: "page-head" },
      h("h1", { tabindex: -1 }, "Import"),
      h("p", { class: "lead" },
        "Upload a CSV, TSV or Excel file. Ferry reads it, maps its columns and checks every "
        + "row before anything is written; you decide what to commit.")),
    view);
  const page = { view, stop: null, datasets: [], fields: {} };
  page.ready = api.datasets().then((all) => {
    page.datasets = all;
    page.fields = Object.fromEntries(all.map((d) => [d.name, d.fields]));
  });
  const importId = id || current?.id;
  if (importId) open(page, importId);
  else uploadForm(page);
  return () => page.stop?.();
}

// --- upload -----------------------------------------------------------------------------

async function uploadForm(page, { dataset, accountId } = {}) {
  page.stop?.();
  current = null;
  const datasetSelect = h("select", { name: "dataset" });
  const account = h("input", {
    name: "account_id", type: "text", required: true, autocomplete: "off",
    value: accountId || localStorage.getItem(ACCOUNT_KEY) || "",
  });
  const input = h("input", { type: "file", accept: ACCEPT, class: "file-input", id: newId("file") });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const meter = progressMeter("bytes");
  meter.el.hidden = true;
  const zone = h("label", { class: "dropzone", for: input.id },
    h("span", { class: "dropzone-title" }, "Drop a file here, or choose one"),
    h("span", { class: "muted" }, "CSV, TSV or XLSX · the first row need not be the header"));

  const start = async (chosen) => {
    error.hidden = true;
    if (!account.value.trim()) {
      error.textContent = "Name the account the records belong to.";
      error.hidden = false;
      account.focus();
      return;
    }
    localStorage.setItem(ACCOUNT_KEY, account.value.trim());
    meter.el.hidden = false;
    zone.classList.add("busy");
    try {
      const doc = await api.upload({
        file: chosen, dataset: datasetSelect.value, accountId: account.value.trim(),
        onProgress: (sent, total) => meter.update({ done: sent, total }),
      });
      current = { id: doc.id };
      history.replaceState(null, "", `#/import/${doc.id}`);
      show(page, doc);
    } catch (err) {
      zone.classList.remove("busy");
      meter.el.hidden = true;
      error.textContent = errorText(err);
      error.hidden = false;
    }
  };
  input.addEventListener("change", () => input.files[0] && start(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files[0]) start(e.dataTransfer.files[0]);
  });

  clear(page.view,
    h("section", { class: "card stack" },
      h("h2", {}, "Upload"),
      h("div", { class: "grid-2" }, field("Dataset", datasetSelect), field("Account", account, "The account the imported records belong to.")),
      h("div", {}, input, zone),
      meter.el, error));
  try {
    await page.ready;
    const writable = page.datasets.filter((d) => d.permissions.write);
    clear(datasetSelect, writable.map((d) => h("option", { value: d.name }, d.label)));
    if (dataset) datasetSelect.value = dataset;
    if (!writable.length) {
      error.textContent = "This token may not import into any dataset.";
      error.hidden = false;
    }
  } catch (err) {
    error.textContent = errorText(err);
    error.hidden = false;
  }
}

// --- following the import ---------------------------------------------------------------------

async function open(page, id) {
  clear(page.view, h("p", { class: "muted" }, "Loading the import…"));
  try {
    const doc = await api.importDoc(id);
    current = { id };
    show(page, doc);
  } catch (err) {
    clear(page.view, h("p", { class: "error", role: "alert" }, errorText(err)),
      h("button", { onclick: () => uploadForm(page) }, "Upload a file"));
  }
}

const WORKING = {
  uploaded: "Waiting for a worker to read the file…",
  validating: "Reading and checking every row…",
  committing: "Committing the records…",
};

// Show an import; while a worker has it, follow its events and show progress.
function show(page, doc) {
  page.stop?.();
  page.stop = null;
  if (WORKING[doc.status]) {
    const meter = progressMeter(doc.status === "committing" ? "rows" : "bytes");
    meter.update(doc.progress?.done === undefined ? undefined : doc.progress, WORKING[doc.status]);
    const title = h("h2", {}, doc.status === "committing" ? "Committing" : "Checking the file");
    clear(page.view, h("section", { class: "card stack", "aria-busy": "true" },
      h("div", { class: "job-head" }, title, badge(doc.status)),
      h("p", { class: "muted" }, doc.source?.filename || ""), meter.el));
    page.stop = api.follow(doc, async (type, data) => {
      if (type === "progress") return meter.update(data);
      if (type === "error") return toast(errorText(data), { tone: "bad" });
      if (WORKING[data.status] && data.status !== doc.status) return show(page, { ...doc, ...data });
      if (!WORKING[data.status]) show(page, await api.importDoc(doc.id));
    });
    return;
  }
  page.ready
    .then(() => clear(page.view, review(page, doc)))
    .catch((err) => clear(page.view, h("p", { class: "error", role: "alert" }, errorText(err))));
}

// --- the review ------------------------------------------------------------------------------

function review(page, doc) {
  const parts = [summary(page, doc)];
  if (doc.status === "failed" || doc.status === "cancelled") {
    parts.push(h("div", { class: "callout bad", role: "alert" },
      doc.error?.message || `This import was ${doc.status}.`));
    return parts;
  }
  if (doc.status === "committed" || doc.status === "rolled_back") parts.push(outcome(page, doc));
  parts.push(understood(page, doc));
  if (doc.mapping) parts.push(mappingTable(page, doc));
  if (doc.preview) parts.push(previewTable(page, doc));
  if (doc.status === "validated") parts.push(commitForm(page, doc));
  return parts;
}

function summary(page, doc) {
  const t = doc.totals || {};
  const stat = (label, value, tone) => h("div", { class: `stat ${tone || ""}` },
    h("span", { class: "stat-value" }, fmtInt(value)), h("span", { class: "stat-label" }, label));
  return h("section", { class: "card stack", "aria-labelledby": "import-title" },
    h("div", { class: "job-head" },
      h("h2", { id: "import-title" }, doc.source?.filename || "Import"),
      badge(doc.status)),
    doc.totals ? h("div", { class: "stats" },
      stat("records", t.rows),
      stat("valid", t.valid, "ok"),
      stat("invalid", t.invalid, t.invalid ? "bad" : ""),
      stat("lines skipped", t.skipped_lines)) : null,
    h("div", { class: "actions" },
      doc.links?.error_report ? h("button", {
        onclick: () => api.download(doc.links.error_report).catch((err) => toast(errorText(err), { tone: "bad" })),
      }, "Download the error report") : null,
      h("button", { class: "link", onclick: () => uploadForm(page, { dataset: doc.dataset, accountId: doc.account_id }) }, "Import another file")));
}

function understood(page, doc) {
  const s = doc.source || {};
  const labels = Object.fromEntries((page.fields[doc.dataset] || []).map((f) => [f.name, f.label]));
  const items = [
    ["File", `${s.filename || "—"} · ${fmtBytes(s.bytes)}${s.kind ? ` · ${s.kind.toUpperCase()}` : ""}`],
  ];
  if (s.encoding) items.push(["Encoding", h("span", {}, h("strong", {}, s.encoding), s.encoding_reason ? ` — ${s.encoding_reason}` : "")]);
  if (s.delimiter) items.push(["Delimiter", `${DELIMITERS[s.delimiter] || s.delimiter} (${JSON.stringify(s.delimiter)})`]);
  const sheets = (s.sheets || []).map((x) => (typeof x === "string" ? { name: x } : x));
  if (s.sheet) items.push(["Sheet", sheets.length > 1 ? sheetPicker(page, doc, sheets) : s.sheet]);
  if (s.header_line) items.push(["Header", `line ${s.header_line}`]);
  for (const [name, info] of Object.entries(doc.formats || {})) {
    const seen = Object.keys(info.formats || {}).join(", ");
    const extra = [info.order && `order ${info.order}`, info.decimal && `decimal mark “${info.decimal}”`].filter(Boolean).join(", ");
    if (seen || extra) items.push([`${labels[name] || name} format`, [seen, extra].filter(Boolean).join(" · ")]);
  }
  const skipped = doc.skipped || { count: 0, lines: [] };
  items.push(["Skipped lines", skipped.count ? `${fmtInt(skipped.count)}` : "none"]);
  return h("section", { class: "card stack" },
    h("h2", {}, "What Ferry understood"),
    h("dl", { class: "facts" }, items.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    skipped.count ? h("details", { class: "skipped" },
      h("summary", {}, `Why ${fmtInt(skipped.count)} line${skipped.count === 1 ? " was" : "s were"} skipped`),
      h("ul", { class: "plain" }, (skipped.lines || []).map((l) => h("li", {},
        h("span", { class: "line-no" }, `line ${l.line}`), ` ${l.reason}`,
        l.text ? h("code", { class: "excerpt" }, l.text) : null)))) : null);
}

function sheetPicker(page, doc, sheets) {
  // A sheet the workbook's reader refused, or one without records, cannot be chosen.
  const usable = (x) => x.score !== null && (x.rows === undefined || x.rows > 0);
  const select = h("select", { "aria-label": "Sheet", disabled: doc.status !== "validated" },
    sheets.map((x) => h("option", { value: x.name, selected: x.name === doc.source.sheet, disabled: !usable(x) },
      x.score !== undefined && x.score !== null ? `${x.name} (${Math.round(x.score * 100)} %)` : x.name)));
  select.addEventListener("change", async () => {
    select.disabled = true;
    try {
      show(page, await api.chooseSheet(doc.id, select.value));
    } catch (err) {
      toast(errorText(err), { tone: "bad" });
      show(page, await api.importDoc(doc.id));
    }
  });
  return h("span", { class: "inline" }, select);
}

// --- mapping ---------------------------------------------------------------------------------

function mappingTable(page, doc) {
  const editable = doc.status === "validated";
  const options = (page.fields[doc.dataset] || []).filter((f) => f.importable);
  const columns = doc.source?.headers?.filter((c) => c in doc.mapping) || Object.keys(doc.mapping);
  const table = h("table", { class: "data mapping" },
    h("caption", { class: "visually-hidden" }, "Column mapping"),
    h("thead", {}, h("tr", {}, ["Column in the file", "Imported as", "Confidence", "Why"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, columns.map((column) => {
      const m = doc.mapping[column];
      const select = h("select", { "aria-label": `Field for column ${column}`, disabled: !editable },
        h("option", { value: "" }, "— not imported —"),
        options.map((f) => h("option", { value: f.name, selected: m?.field === f.name }, `${f.label}${f.required ? " *" : ""}`)));
      select.addEventListener("change", () => remap(page, doc, column, select.value || null, table));
      const confidence = m ? Math.round((m.confidence ?? 0) * 100) : null;
      return h("tr", { class: m ? "" : "unmapped" },
        h("th", { scope: "row" }, column),
        h("td", {}, select),
        h("td", {}, confidence === null ? h("span", { class: "muted" }, "—")
          : h("span", { class: `confidence ${confidence >= 90 ? "high" : confidence >= 60 ? "mid" : "low"}` },
            h("meter", { min: 0, max: 100, low: 60, high: 90, optimum: 100, value: confidence, "aria-hidden": "true" }),
            `${confidence} %`)),
        h("td", { class: "muted" }, m ? reasonText(m) : "no field matched"));
    })));
  const missing = doc.unmapped_required || [];
  const label = Object.fromEntries(options.map((f) => [f.name, f.label]));
  return h("section", { class: "card stack" },
    h("div", { class: "job-head" },
      h("h2", {}, "Columns"),
      h("span", { class: "muted small" }, "* required field")),
    missing.length ? h("div", { class: "callout bad", role: "alert" },
      h("strong", {}, "Required fields with no column: "), missing.map((n) => label[n] || n).join(", "),
      ". Choose the column that holds each, or fix the file.") : null,
    tableFrame(table, "Column mapping"));
}

const REASONS = {
  alias: "a known name for this field", label: "the field's label", "field name": "the field's name",
  remembered: "your earlier choice for these headers", chosen: "your choice",
};
const reasonText = (m) => REASONS[m.reason] || m.reason || "";

async function remap(page, doc, column, fieldName, table) {
  for (const select of table.querySelectorAll("select")) select.disabled = true;
  try {
    const next = await api.putMapping(doc.id, { [column]: fieldName });
    show(page, next);
  } catch (err) {
    toast(errorText(err), { tone: "bad" });
    show(page, await api.importDoc(doc.id));
  }
}

// --- preview ---------------------------------------------------------------------------------

function previewTable(page, doc) {
  const mapped = new Set(Object.values(doc.mapping || {}).filter(Boolean).map((m) => m.field));
  const fields = (page.fields[doc.dataset] || []).filter((f) => mapped.has(f.name));
  const rows = doc.preview || [];
  const bad = rows.filter((r) => Object.keys(r.errors || {}).length).length;
  const table = h("table", { class: "data preview" },
    h("caption", { class: "visually-hidden" }, "The first records as they would be imported"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Line"),
      fields.map((f) => h("th", { scope: "col", class: f.type === "money" || f.type === "int" ? "num" : null }, f.label)),
      h("th", { scope: "col" }, "Problems"))),
    h("tbody", {}, rows.map((r) => {
      const errors = r.errors || {};
      const label = (name) => fields.find((f) => f.name === name)?.label || name;
      const messages = Object.entries(errors).map(([f, m]) => (f === "row" ? m : `${label(f)}: ${m}`));
      return h("tr", { class: messages.length ? "invalid" : "" },
        h("th", { scope: "row", class: "line-no" }, r.line),
        fields.map((f) => {
          const wrong = errors[f.name];
          const value = r.values?.[f.name];
          const numeric = f.type === "money" || f.type === "int";
          return h("td", { class: [wrong && "cell-invalid", numeric && "num"].filter(Boolean).join(" ") || null, title: wrong || null, "data-field": f.name },
            value === null || value === undefined || value === "" ? h("span", { class: "muted" }, "∅")
              : h("span", { class: "cell-text" }, String(value)),
            wrong ? h("span", { class: "cell-error visually-hidden" }, ` (${wrong})`) : null);
        }),
        h("td", { class: messages.length ? "error-text" : "muted" }, messages.length ? messages.join("; ") : "—"));
    })));
  return h("section", { class: "card stack" },
    h("div", { class: "job-head" },
      h("h2", {}, "Preview"),
      h("span", { class: "muted small" },
        `first ${fmtInt(rows.length)} records${bad ? ` · ${fmtInt(bad)} with problems, marked in red` : ""}`)),
    h("div", { class: "tall" }, tableFrame(table, "Preview")),
    (doc.errors || []).length > bad ? h("details", {},
      h("summary", {}, "First errors in the whole file"),
      h("ul", { class: "plain" }, doc.errors.map((e) => h("li", {}, h("span", { class: "line-no" }, `line ${e.line}`), ` ${e.field ? `${e.field}: ` : ""}${e.message}`)))) : null);
}

// --- commit ------------------------------------------------------------------------------------

// What a row whose key names a record the account has already does, per commit mode.
const MODES = [
  ["insert", "Add new records only", (n) => (n
    ? ` — the ${fmtInt(n)} rows already in the account count as invalid.`
    : " — every row becomes a new record; a row already in the account would be invalid.")],
  ["upsert", "Update existing records (upsert)", (n) => (n
    ? ` — the ${fmtInt(n)} records already in the account get this file's values; the others are added. A rollback restores them as they were.`
    : " — a row already in the account updates that record instead; a rollback restores it.")],
  ["skip_existing", "Skip existing records", (n) => (n
    ? ` — the ${fmtInt(n)} rows already in the account are left out, those records untouched; the others are added.`
    : " — a row already in the account is left out and that record untouched.")],
];

function commitForm(page, doc) {
  const t = doc.totals || {};
  const existing = doc.existing || 0;
  const modeName = newId("mode");
  const radios = MODES.map(([value]) => h("input", { type: "radio", name: modeName, value, checked: value === "insert" }));
  const mode = () => radios.find((r) => r.checked).value;
  const name = newId("on-error");
  const all = h("input", { type: "radio", name, value: "abort" });
  const skip = h("input", { type: "radio", name, value: "skip" });
  const rowChoices = h("div", { class: "choices" });
  const note = h("p", { class: "muted" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const button = h("button", { class: "primary", type: "submit" }, "Commit");
  // The valid and invalid rows depend on the mode: rows already in the account are
  // invalid only when inserting.
  const update = () => {
    const c = doc.modes?.[mode()] || { valid: t.valid, invalid: t.invalid };
    all.checked = !c.invalid;
    skip.checked = Boolean(c.invalid);
    clear(rowChoices,
      h("label", { class: "choice" }, all, h("span", {},
        h("strong", {}, "All or nothing"),
        h("span", { class: "muted" }, c.invalid
          ? ` — with ${fmtInt(c.invalid)} invalid rows, nothing would be committed.`
          : ` — all ${fmtInt(c.valid)} rows, or none if anything goes wrong.`))),
      c.invalid ? h("label", { class: "choice" }, skip, h("span", {},
        h("strong", {}, `Skip the ${fmtInt(c.invalid)} invalid rows`),
        h("span", { class: "muted" }, ` — commit the ${fmtInt(c.valid)} valid rows only.`))) : null);
    const blocked = (doc.unmapped_required || []).length ? "Map every required field first."
      : !c.valid ? "No row is valid; fix the file and upload it again." : null;
    note.textContent = blocked || "";
    note.hidden = !blocked;
    button.disabled = Boolean(blocked);
  };
  for (const r of radios) r.addEventListener("change", update);
  update();
  const form = h("form", { class: "card stack" },
    h("h2", {}, "Commit"),
    h("fieldset", { class: "choices" },
      h("legend", {}, existing
        ? `${fmtInt(existing)} row${existing === 1 ? " names a record" : "s name records"} already in account ${doc.account_id}`
        : "Rows whose order is already in the account"),
      MODES.map(([value, label, sentence], i) => h("label", { class: "choice" }, radios[i],
        h("span", {}, h("strong", {}, label), h("span", { class: "muted" }, sentence(existing)))))),
    h("fieldset", { class: "choices" },
      h("legend", { class: "visually-hidden" }, "What to commit"),
      rowChoices),
    note,
    error,
    h("div", { class: "actions" }, button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      show(page, await api.commit(doc.id, skip.checked ? "skip" : "abort", mode()));
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
      button.disabled = false;
    }
  });
  return form;
}

// "5 inserted, 7 updated, 2 skipped as existing" — the parts a commit mode produced.
function batchCounts(b) {
  const inserted = b.inserted ?? (b.rows || 0) - (b.updated || 0);
  return [
    [inserted, "inserted"], [b.updated, "updated"], [b.skipped_existing, "skipped as already there"],
  ].filter(([n], i) => n || i === 0).map(([n, what]) => `${fmtInt(n)} ${what}`).join(", ");
}

function outcome(page, doc) {
  const b = doc.batch || {};
  const plain = (b.mode || "insert") === "insert";
  if (doc.status === "rolled_back") {
    return h("section", { class: "callout muted" },
      h("strong", {}, "Rolled back. "), plain
        ? `The ${fmtInt(b.rows)} records of this import were removed ${fmtDate(b.rolled_back_at)}.`
        : `The ${fmtInt(b.inserted ?? 0)} records it added were removed and the ${fmtInt(b.updated ?? 0)} it updated restored ${fmtDate(b.rolled_back_at)}.`);
  }
  return h("section", { class: "callout ok", role: "status" },
    h("strong", {}, `Committed ${fmtInt(b.rows)} records`),
    plain ? "" : ` (${batchCounts(b)})`,
    b.skipped ? `, skipped ${fmtInt(b.skipped)} invalid rows` : "",
    `. You can undo it until ${fmtDate(b.rollback_until)} (${fmtRelative(b.rollback_until)}) in `,
    h("a", { href: "#/history" }, "Import history"), ".");
}
