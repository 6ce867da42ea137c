// The console's shell: sign-in, the page router and the bar at the top.
//
// Pages are routes of the fragment (#/export, #/jobs, #/import, #/import/<id>,
// #/history). `make run` prints a link whose fragment carries the token
// (#token=…): fragments never reach the server, and the token moves at once into
// sessionStorage and out of the address bar and the history.

import * as api from "./api.js";
import { clear, errorText, field, h, toast } from "./ui.js";
import * as exportPage from "./export.js";
import * as jobsPage from "./jobs.js";
import * as importPage from "./import.js";
import * as historyPage from "./history.js";

const PAGES = {
  export: exportPage,
  jobs: jobsPage,
  import: importPage,
  history: historyPage,
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let leave = null; // the current page's clean-up

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (!token) return;
  api.session.token = token;
  history.replaceState(null, "", `${location.pathname}#/export`);
}

function signInPage(message) {
  const input = h("textarea", {
    rows: 4, required: true, spellcheck: false, autocomplete: "off", class: "mono",
    placeholder: "eyJhbGciOi…",
  });
  const error = h("p", { class: "error", role: "alert", hidden: !message }, message || "");
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: async (e) => {
        e.preventDefault();
        api.session.token = input.value.trim();
        try {
          await api.datasets();
          location.hash = "#/export";
          route();
        } catch (err) {
          api.session.token = null;
          error.textContent = errorText(err);
          error.hidden = false;
        }
      },
    },
    h("h1", { tabindex: -1 }, "Sign in to Ferry"),
    h("p", { class: "lead" },
      "Paste a bearer token, or open the console link that ",
      h("code", {}, "make run"), " prints."),
    field("Bearer token", input, "Kept in this tab only, until you close it or sign out."),
    error,
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit" }, "Sign in")),
  );
  return form;
}

function showWho() {
  const claims = api.session.claims;
  clear(who,
    h("span", { class: "who-name" }, claims ? `${claims.sub} · ${claims.org}` : "signed in"),
    h("button", {
      class: "link",
      onclick: () => {
        api.session.token = null;
        route();
      },
    }, "Sign out"));
}

function route() {
  takeTokenFromFragment();
  leave?.();
  leave = null;
  const signedIn = Boolean(api.session.token);
  nav.hidden = who.hidden = !signedIn;
  if (!signedIn) {
    clear(main, signInPage());
    main.querySelector("h1").focus();
    return;
  }
  showWho();
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = PAGES[name] ? name : "export";
  for (const link of nav.querySelectorAll("a")) {
    const current = link.getAttribute("href") === `#/${page}`;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  leave = PAGES[page].render(main, rest) || null;
  document.title = `${main.querySelector("h1")?.textContent || "Ferry"} · Ferry console`;
  main.querySelector("h1")?.focus({ preventScroll: true });
}

api.hooks.onRetry = (status, seconds) =>
  toast(`Ferry is ${status === 429 ? "busy with your requests" : "unavailable"}; trying again in ${Math.round(seconds)} s.`, { tone: "warn", timeout: seconds * 1000 });

api.hooks.onUnauthorized = (problem) => {
  api.session.token = null;
  leave?.();
  leave = null;
  nav.hidden = who.hidden = true;
  clear(main, signInPage(`Please sign in again: ${problem.detail || "the token was refused"}.`));
};

window.addEventListener("hashchange", route);
route();
