// Export page: dataset, columns (a preset or one's own choice), filters, format.
//
// A small result downloads at once (a direct export). Over the API's row limit the
// direct export answers 413 with the `export_request` to send instead: it becomes a
// background job with live progress, a cancel button, and a download button and a
// notification when it is done. Background exports live on while the person visits
// other pages, so their notification still comes.

import * as api from "./api.js";
import {
  announce, askToNotify, badge, clear, errorText, fmtBytes, fmtDate, fmtInt, field, h,
  newId, progressMeter, toast,
} from "./ui.js";

const FORMAT_LABELS = {
  csv: "CSV", xlsx: "Excel (XLSX)", json: "JSON", ndjson: "NDJSON", parquet: "Parquet",
};
const PACKED = new Set(["xlsx", "parquet"]); // compressed already: no gzip on top
const CUSTOM = "";

const background = []; // background exports of this tab: {job, el, stop}
const remembered = { dataset: null, columns: null, format: "csv" }; // while the tab lives

export function render(main) {
  const status = h("div", { class: "form-status", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "stack", novalidate: true });
  const jobsBox = h("section", { class: "stack", "aria-label": "Background exports" });
  clear(main,
    h("div", { class: "page-head" },
      h("h1", { tabindex: -1 }, "Export"),
      h("p", { class: "lead" },
        "Choose the records and the columns. Small exports download at once; large ones "
        + "run in the background and tell you when they are ready.")),
    form, status, jobsBox);
  for (const entry of background) jobsBox.append(entry.el);

  api.datasets().then((all) => {
    const readable = all.filter((d) => d.permissions.read);
    if (!readable.length) {
      clear(form, h("p", { class: "notice" }, "This token may not read any dataset."));
      return;
    }
    buildForm(form, status, jobsBox, readable);
  }).catch((err) => clear(form, h("p", { class: "error", role: "alert" }, errorText(err))));
}

function buildForm(form, status, jobsBox, datasets) {
  const byName = Object.fromEntries(datasets.map((d) => [d.name, d]));
  const datasetSelect = h("select", { name: "dataset" },
    datasets.map((d) => h("option", { value: d.name }, d.label)));
  if (remembered.dataset && byName[remembered.dataset]) datasetSelect.value = remembered.dataset;
  const account = h("input", { name: "account_id", type: "text", autocomplete: "off", placeholder: "every account" });
  const columnsBox = h("fieldset", { class: "card" });
  const filtersBox = h("details", { class: "card filters" });
  const formatBox = h("fieldset", { class: "card" });
  const submit = h("button", { class: "primary", type: "submit" }, "Export");

  clear(form,
    h("section", { class: "card grid-2" },
      field("Dataset", datasetSelect),
      field("Account", account, "Leave empty to export every account.")),
    columnsBox, filtersBox, formatBox,
    h("div", { class: "actions" }, submit));

  let state;
  const draw = () => {
    const ds = byName[datasetSelect.value];
    remembered.dataset = ds.name;
    state = { ds, columns: columnsPicker(columnsBox, ds), filters: filterInputs(filtersBox, ds),
      format: formatPicker(formatBox, ds) };
  };
  datasetSelect.addEventListener("change", draw);
  draw();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const columns = state.columns.value();
    if (!columns.length) {
      status.replaceChildren(h("p", { class: "error", role: "alert" }, "Choose at least one column."));
      return;
    }
    const params = { account_id: account.value.trim(), ...state.filters.value(), ...state.format.value() };
    if (state.columns.preset()) params.preset = state.columns.preset();
    else params.columns = columns.join(",");
    submit.disabled = true;
    status.replaceChildren(h("p", { class: "muted" }, "Counting the records…"));
    try {
      await exportNow(state.ds, state.format.format(), params, status, jobsBox);
    } finally {
      submit.disabled = false;
    }
  });
}

async function exportNow(ds, format, params, status, jobsBox) {
  try {
    const file = await api.directExport(ds.name, format, params);
    api.saveBlob(file.blob, file.filename);
    status.replaceChildren(h("p", { class: "ok" },
      `Downloaded ${file.filename}: ${fmtInt(file.rows)} records, ${fmtBytes(file.blob.size)}.`));
  } catch (err) {
    if (err.status !== 413 || !err.problem.export_request) {
      status.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(err)));
      return;
    }
    await askToNotify();
    try {
      const job = await api.startExport(err.problem.export_request);
      status.replaceChildren();
      watch(job, jobsBox,
        `${fmtInt(err.problem.rows)} records are more than a direct download allows `
        + `(${fmtInt(err.problem.limit)}), so this export runs in the background. You may `
        + "leave this page: you will be told when the file is ready.");
    } catch (err2) {
      status.replaceChildren(h("p", { class: "error", role: "alert" }, errorText(err2)));
    }
  }
}

// --- columns --------------------------------------------------------------------------

function columnsPicker(box, ds) {
  const boxes = new Map();
  const presetSelect = h("select", { name: "preset" });
  const saveName = h("input", { type: "text", maxlength: 60, autocomplete: "off", placeholder: "e.g. Monthly review" });
  const saveError = h("p", { class: "error", role: "alert", hidden: true });
  const deleteButton = h("button", { type: "button", class: "link danger", hidden: true }, "Delete this preset");
  let mine = [];

  const checked = () => ds.fields.filter((f) => boxes.get(f.name).checked).map((f) => f.name);
  const setChecked = (names) => { for (const [n, b] of boxes) b.checked = names.includes(n); };
  const selected = () => {
    const v = presetSelect.value;
    if (v.startsWith("ds:")) return { builtin: v.slice(3), columns: ds.presets[v.slice(3)] };
    if (v.startsWith("me:")) return { mine: mine.find((p) => p.id === v.slice(3)) };
    return {};
  };
  const syncPreset = () => {
    // A hand-made choice that equals a preset shows as that preset.
    const now = checked().join(",");
    const match = [...Object.entries(ds.presets).map(([n, c]) => [`ds:${n}`, c]),
      ...mine.map((p) => [`me:${p.id}`, p.columns])].find(([, c]) => c.join(",") === now);
    presetSelect.value = match ? match[0] : CUSTOM;
    deleteButton.hidden = !presetSelect.value.startsWith("me:");
    remembered.columns = checked();
  };
  const fillPresets = () => {
    clear(presetSelect,
      h("optgroup", { label: "Presets" },
        Object.keys(ds.presets).map((n) => h("option", { value: `ds:${n}` }, titleCase(n)))),
      mine.length ? h("optgroup", { label: "My presets" },
        mine.map((p) => h("option", { value: `me:${p.id}` }, p.name))) : null,
      h("option", { value: CUSTOM }, "Custom selection"));
  };

  const grid = h("div", { class: "checks" },
    ds.fields.map((f) => {
      const input = h("input", { type: "checkbox", name: "column", value: f.name, onchange: syncPreset });
      boxes.set(f.name, input);
      return h("label", { class: "check", title: f.description || null },
        input, h("span", {}, f.label),
        f.computed ? h("span", { class: "tag", title: f.description || "computed" }, "computed") : null);
    }));

  presetSelect.addEventListener("change", () => {
    const choice = selected();
    if (choice.columns) setChecked(choice.columns);
    if (choice.mine) setChecked(choice.mine.columns);
    syncPreset();
  });

  const save = async () => {
    saveError.hidden = true;
    try {
      const preset = await api.savePreset({ dataset: ds.name, name: saveName.value, columns: checked() });
      mine = await api.presets(ds.name);
      fillPresets();
      presetSelect.value = `me:${preset.id}`;
      syncPreset();
      saveName.value = "";
      toast(`Saved the preset “${preset.name}”.`, { tone: "ok" });
    } catch (err) {
      saveError.textContent = err.fields?.name || err.fields?.columns || errorText(err);
      saveError.hidden = false;
    }
  };
  saveName.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); save(); } });
  deleteButton.addEventListener("click", async () => {
    const { mine: preset } = selected();
    if (!preset) return;
    try {
      await api.deletePreset(preset.id);
      mine = mine.filter((p) => p.id !== preset.id);
      fillPresets();
      syncPreset();
      toast(`Deleted the preset “${preset.name}”.`);
    } catch (err) {
      toast(errorText(err), { tone: "bad" });
    }
  });

  clear(box,
    h("legend", {}, "Columns"),
    h("div", { class: "row" },
      field("Preset", presetSelect),
      h("div", { class: "row-end" },
        h("button", { type: "button", class: "link", onclick: () => { setChecked(ds.fields.map((f) => f.name)); syncPreset(); } }, "Select all"),
        h("button", { type: "button", class: "link", onclick: () => { setChecked([]); syncPreset(); } }, "Clear"),
        deleteButton)),
    grid,
    h("div", { class: "save-preset" },
      field("Save this selection as a preset", saveName),
      h("button", { type: "button", onclick: save }, "Save preset"),
      saveError));

  fillPresets();
  const start = remembered.dataset === ds.name && remembered.columns ? remembered.columns : ds.presets.all || ds.fields.map((f) => f.name);
  setChecked(start);
  syncPreset();
  api.presets(ds.name).then((items) => {
    mine = items;
    const keep = checked();
    fillPresets();
    setChecked(keep);
    syncPreset();
  }).catch((err) => toast(errorText(err), { tone: "bad" }));

  return {
    value: checked,
    preset: () => selected().builtin || null,
  };
}

// --- filters --------------------------------------------------------------------------

const FILTERS = {
  date: (f) => range(f, "date", "from", "to"),
  datetime: (f) => range(f, "datetime-local", "from", "to"),
  money: (f) => range(f, "number", "min", "max", "0.01"),
  int: (f) => range(f, "number", "min", "max", "1"),
  text: (f) => {
    const input = h("input", { type: "search", name: `${f.name}_contains`, autocomplete: "off" });
    return { el: field(`${f.label} contains`, input), value: () => ({ [input.name]: input.value.trim() }) };
  },
  enum: (f) => {
    const boxes = f.values.map((v) => h("input", { type: "checkbox", value: v }));
    const el = h("fieldset", { class: "filter-enum" }, h("legend", {}, f.label),
      h("div", { class: "chips" }, f.values.map((v, i) => h("label", { class: "chip" }, boxes[i], titleCase(v)))));
    return { el, value: () => ({ [f.name]: boxes.filter((b) => b.checked).map((b) => b.value).join(",") }) };
  },
  bool: (f) => {
    const select = h("select", { name: f.name },
      h("option", { value: "" }, "Any"), h("option", { value: "true" }, "Yes"), h("option", { value: "false" }, "No"));
    return { el: field(f.label, select), value: () => ({ [f.name]: select.value }) };
  },
};

function range(f, type, lo, hi, step) {
  const make = (op) => h("input", { type, step: step || null, name: `${f.name}_${op}`, "aria-label": `${f.label} ${op}` });
  const a = make(lo), b = make(hi);
  const el = h("fieldset", { class: "filter-range" }, h("legend", {}, f.label),
    h("div", { class: "pair" }, a, h("span", { "aria-hidden": "true" }, "–"), b));
  a.placeholder = lo;
  b.placeholder = hi;
  return { el, value: () => ({ [a.name]: a.value, [b.name]: b.value }) };
}

function filterInputs(box, ds) {
  const filters = ds.fields.filter((f) => FILTERS[f.type]).map((f) => FILTERS[f.type](f));
  const count = h("span", { class: "tag" });
  const value = () => {
    const out = {};
    for (const f of filters) for (const [k, v] of Object.entries(f.value())) if (v) out[k] = v;
    return out;
  };
  const recount = () => {
    const n = Object.keys(value()).length;
    count.textContent = n ? `${n} active` : "none";
  };
  clear(box,
    h("summary", {}, h("span", { class: "summary-title" }, "Filters"), count),
    h("div", { class: "filter-grid", oninput: recount, onchange: recount }, filters.map((f) => f.el)));
  recount();
  return { value };
}

// --- format ---------------------------------------------------------------------------

function formatPicker(box, ds) {
  const formats = ds.export_formats || ["csv", "xlsx", "json", "ndjson"];
  const name = newId("format");
  const radios = formats.map((f) => h("input", { type: "radio", name, value: f, checked: f === (formats.includes(remembered.format) ? remembered.format : formats[0]) }));
  const gzip = h("input", { type: "checkbox", name: "gzip" });
  const gzipLabel = h("label", { class: "check" }, gzip, h("span", {}, "Compress with gzip (.gz)"));
  const format = () => radios.find((r) => r.checked).value;
  const sync = () => {
    remembered.format = format();
    gzip.disabled = PACKED.has(format());
    if (gzip.disabled) gzip.checked = false;
    gzipLabel.classList.toggle("disabled", gzip.disabled);
  };
  clear(box,
    h("legend", {}, "Format"),
    h("div", { class: "segmented", role: "radiogroup", "aria-label": "File format", onchange: sync },
      formats.map((f, i) => h("label", {}, radios[i], h("span", {}, FORMAT_LABELS[f] || f.toUpperCase())))),
    gzipLabel);
  sync();
  return { format, value: () => (gzip.checked ? { gzip: "true" } : {}) };
}

// --- background exports -------------------------------------------------------------------

function watch(job, jobsBox, why) {
  const meter = progressMeter("rows");
  const state = h("span", {}, badge(job.status));
  const detail = h("p", { class: "muted" }, why);
  const buttons = h("div", { class: "actions" });
  const heading = h("h2", { id: newId("job"), tabindex: -1 },
    `Background export · ${FORMAT_LABELS[job.params?.format] || job.params?.format || ""}`);
  const el = h("article", { class: "card job-card", "aria-labelledby": heading.id, "data-job": job.id },
    h("div", { class: "job-head" }, heading, state),
    meter.el, detail, buttons);
  jobsBox.prepend(el);
  heading.focus();
  const entry = { job, el };
  background.unshift(entry);

  const cancelButton = h("button", {
    class: "danger-outline",
    onclick: async () => {
      cancelButton.disabled = true;
      try { show("status", await api.cancel(job.id)); } catch (err) { toast(errorText(err), { tone: "bad" }); }
    },
  }, "Cancel export");
  buttons.append(cancelButton);

  const downloadNow = () => api.download(`/v1/exports/${job.id}/download`).catch((err) => toast(errorText(err), { tone: "bad" }));
  const show = (type, data) => {
    if (type === "progress") {
      meter.update(data);
      return;
    }
    if (type === "error") {
      detail.textContent = errorText(data);
      return;
    }
    entry.job = data;
    clear(state, badge(data.status));
    if (data.status === "queued") {
      meter.update(undefined, data.queue_position ? `Waiting: number ${data.queue_position} in your queue` : "Waiting for a worker…");
    } else if (data.status === "running") {
      meter.start(data.started_at);
      if (data.progress) meter.update(data.progress);
      else meter.update(undefined, "Started…");
    }
    if (data.status === "succeeded") {
      const r = data.result;
      meter.finish(`${fmtInt(r.rows)} rows · ${fmtBytes(r.bytes)}`);
      detail.textContent = `${r.filename} · kept until ${fmtDate(r.expires_at)}`;
      clear(buttons, h("button", { class: "primary", onclick: downloadNow }, "Download"));
      announce("Export ready", `${r.filename} (${fmtInt(r.rows)} rows)`, { label: "Download", run: downloadNow });
    } else if (data.status === "failed") {
      meter.finish("Failed");
      detail.textContent = data.error?.message || "The export failed.";
      clear(buttons);
      announce("Export failed", data.error?.message || "The export failed.");
    } else if (data.status === "cancelled") {
      meter.finish("Cancelled");
      clear(buttons);
    } else if (data.cancel_requested) {
      cancelButton.disabled = true;
      detail.textContent = "Stopping…";
    }
  };
  show("status", job);
  entry.stop = api.follow(job, show);
}

function titleCase(s) {
  return s ? s.charAt(0).toUpperCase() + s.slice(1).replace(/_/g, " ") : s;
}
