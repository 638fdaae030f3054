// Arbiter's dashboard: a page per hash route (#/, #/reviews, #/reviews/ID, #/repos, #/jobs),
// each drawn from the operator API. No build step, no framework.
//
// Everything shown from the API goes into the page as text (textContent, text nodes) or as
// attribute values set one by one: pull request titles, findings and errors are written by
// other people and by a model, so none of it is ever parsed as HTML. Links from the API are
// kept only when they are http(s).

const SESSION_KEY = "arbiter.session";
const CONFIG = window.ARBITER_DASHBOARD || {};
const SEVERITIES = ["critical", "major", "minor", "nit"];
const OUTCOMES = ["success", "failure", "error", "skipped"];
const PERIODS = [7, 30, 90];
const COLORS = {
  accent: "#4f46e5",
  accentSoft: "rgba(79, 70, 229, 0.18)",
  green: "#16a34a",
  amber: "#d97706",
  red: "#dc2626",
  grey: "#94a3b8",
  slate: "#475569",
  critical: "#b91c1c",
  major: "#ea580c",
  minor: "#ca8a04",
  nit: "#64748b",
};

const main = document.getElementById("main");
let charts = [];
let renderId = 0;

// --- Session -----------------------------------------------------------------------------

function session() {
  try {
    const value = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return value && typeof value.token === "string" ? value : null;
  } catch {
    return null;
  }
}

function saveSession(value) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
}

function signOut(message) {
  sessionStorage.removeItem(SESSION_KEY);
  showSignIn(message);
}

// --- The API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function apiRoot(base) {
  const root = (base || "").trim();
  if (!root) return new URL(".", document.baseURI);
  return new URL(root.endsWith("/") ? root : root + "/");
}

function apiUrl(path, params, base) {
  const url = new URL("api/" + path, apiRoot(base));
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  return url;
}

async function api(path, { method = "GET", params, token, base } = {}) {
  const current = session();
  const bearer = token ?? current?.token;
  const url = apiUrl(path, params, base ?? current?.apiBaseUrl);
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = "Bearer " + bearer;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (error) {
    throw new ApiError(0, "network", `Cannot reach the API at ${url.origin} (${error.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.message === "string" ? body.message : response.statusText;
    const error = new ApiError(
      response.status,
      body && typeof body.error === "string" ? body.error : "http",
      message,
      response.headers.get("Retry-After"),
    );
    if (response.status === 401 && !token) {
      signOut("Your session's token is no longer accepted. Sign in again.");
    }
    throw error;
  }
  return body;
}

// --- Building the page, safely -----------------------------------------------------------

// h("a", {href, class, text, onclick}, ...children): an element; strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "href") el.setAttribute("href", safeHref(value));
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Only our own routes and http(s) pages may become links.
function safeHref(value) {
  const text = String(value);
  if (text.startsWith("#/")) return text;
  try {
    const url = new URL(text);
    if (url.protocol === "https:" || url.protocol === "http:") return url.href;
  } catch {
    // not a URL
  }
  return "#/";
}

function externalLink(url, label) {
  if (!url) return null;
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, label);
}

function show(...nodes) {
  for (const chart of charts) chart.destroy();
  charts = [];
  main.replaceChildren(...nodes.flat().filter((node) => node !== null && node !== undefined));
}

function notice(text, kind = "info") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

function failure(error) {
  if (error instanceof ApiError && error.status === 429) {
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    return notice(`Too many requests: ${error.message}.${wait}`, "error");
  }
  return notice(error.message || String(error), "error");
}

function loading(title) {
  show(h("h1", {}, title), notice("Loading…"));
}

// --- Formatting --------------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US");

function usd(value) {
  if (value === null || value === undefined) return "–";
  const digits = value !== 0 && Math.abs(value) < 1 ? 4 : 2;
  return "$" + value.toFixed(digits);
}

function percent(fraction) {
  return fraction === null || fraction === undefined ? "–" : `${(fraction * 100).toFixed(1)} %`;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return `${value.toFixed(1)} s`;
  return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())} UTC`
  );
}

function shortDay(isoDate) {
  const [, month, day] = isoDate.split("-");
  return `${day}/${month}`;
}

function badge(text, kind) {
  return h("span", { class: `badge ${kind || text || "none"}` }, text || "in progress");
}

function severityChips(counts) {
  const entries = Object.entries(counts || {}).filter(([, n]) => n > 0);
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h(
    "span",
    { class: "chips" },
    entries.map(([severity, n]) => h("span", { class: `chip ${severity}` }, `${n} ${severity}`)),
  );
}

function prLabel(review) {
  return `${review.repo} #${review.number}`;
}

// --- Sign in -----------------------------------------------------------------------------

async function showSignIn(message) {
  setChrome(null);
  const token = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    placeholder: "a token of ARBITER_API_TOKENS",
  });
  const base = h("input", {
    id: "api-url",
    name: "api-url",
    type: "url",
    placeholder: CONFIG.apiBaseUrl || "this server",
    value: session()?.apiBaseUrl ?? CONFIG.apiBaseUrl ?? "",
  });
  const status = h("div", { id: "sign-in-status" }, message ? notice(message, "error") : null);
  const form = h(
    "form",
    { class: "card sign-in", id: "sign-in" },
    h("h1", {}, "Sign in to Arbiter"),
    h("p", { class: "muted" }, "Use an API token. It is kept for this browser tab only."),
    h("label", { for: "token" }, "API token"),
    token,
    h("label", { for: "api-url" }, "API URL ", h("span", { class: "muted" }, "(optional)")),
    base,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren(notice("Checking the token…"));
    const apiBaseUrl = base.value.trim();
    try {
      const me = await api("me", { token: token.value.trim(), base: apiBaseUrl });
      saveSession({ token: token.value.trim(), apiBaseUrl, role: me.role });
      if (location.hash === "" || location.hash === "#/" || location.hash === "#/sign-in") {
        location.hash = "#/";
      }
      route();
    } catch (error) {
      const text =
        error.status === 401 ? "That token is not accepted by this server." : error.message;
      status.replaceChildren(notice(text, "error"));
    }
  });
  show(form);
  token.focus();
  // Say at once when the server refuses everyone, and why.
  try {
    const index = await api("", { token: "", base: base.value });
    if (!index.auth.configured) {
      status.replaceChildren(
        notice(
          `This server's API is disabled: no API token is configured. Set ${index.auth.setting} ` +
            "(TOKEN:ROLE entries, ROLE read or admin) and restart it.",
          "error",
        ),
      );
    }
  } catch {
    // the sign-in itself will say what is wrong
  }
}

function setChrome(current) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const signedIn = session();
  nav.hidden = !signedIn;
  who.hidden = !signedIn;
  if (signedIn) document.getElementById("role").textContent = `${signedIn.role} token`;
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.route === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// --- Overview ----------------------------------------------------------------------------

async function showOverview(params) {
  const days = PERIODS.includes(Number(params.get("days"))) ? Number(params.get("days")) : 30;
  loading("Overview");
  const id = renderId;
  const [stats, jobs, recent] = await Promise.all([
    api("stats", { params: { days } }),
    api("jobs"),
    api("reviews", { params: { limit: 8 } }),
  ]);
  if (id !== renderId) return;

  const periodLinks = h(
    "div",
    { class: "segmented", role: "group", "aria-label": "Period" },
    PERIODS.map((n) =>
      h("a", { href: `#/?days=${n}`, "aria-current": n === days ? "page" : null }, `${n} days`),
    ),
  );
  const c = jobs.counts;
  const queueHealthy = c.dead === 0;
  const budget = stats.budget;
  const cards = h(
    "section",
    { class: "cards", "aria-label": "Totals" },
    card("Reviews", integer.format(stats.totals.reviews), outcomeLine(stats.outcomes)),
    card("LLM cost", usd(stats.totals.cost_usd), `${days} days, reviews and follow-ups`),
    card(
      "Tokens",
      integer.format(stats.totals.input_tokens + stats.totals.output_tokens),
      `${integer.format(stats.totals.input_tokens)} in · ${integer.format(stats.totals.output_tokens)} out`,
    ),
    card(
      "Cache hit rate",
      percent(stats.cache.hit_rate),
      `${integer.format(stats.cache.cached_calls)} cached of ${plural(
        stats.cache.calls + stats.cache.cached_calls,
        "model answer",
      )}`,
    ),
    card(
      "Budget used today",
      budget.daily_budget_usd === null ? usd(budget.spent_today_usd) : percent(budget.used_fraction),
      budget.daily_budget_usd === null
        ? "no daily budget set"
        : `${usd(budget.spent_today_usd)} of ${usd(budget.daily_budget_usd)}`,
      budget.used_fraction !== null && budget.used_fraction >= 1 ? "bad" : null,
    ),
    card(
      "Review time",
      seconds(stats.duration.p50_seconds),
      `median · p95 ${seconds(stats.duration.p95_seconds)} · ${plural(stats.duration.reviews, "review")}`,
    ),
    card(
      "Queue",
      queueHealthy ? "healthy" : `${c.dead} dead`,
      `${c.queued} queued · ${c.running} running · ${c.dead} dead`,
      queueHealthy ? "good" : "bad",
    ),
  );

  const labels = stats.per_day.map((d) => shortDay(d.date));
  const reviewsChart = chartBox("Reviews per day", "chart-reviews");
  const costChart = chartBox("Cost per day (USD)", "chart-cost");
  const cacheChart = chartBox("Cache hit rate", "chart-cache", "small");
  const budgetChart = chartBox("Budget used today", "chart-budget", "small");
  const queueChart = chartBox("Queue health", "chart-queue", "small");
  const severityChart = chartBox("Findings by severity", "chart-severity", "small");

  show(
    h("div", { class: "page-head" }, h("h1", {}, "Overview"), periodLinks),
    cards,
    h("section", { class: "charts two" }, reviewsChart.box, costChart.box),
    h(
      "section",
      { class: "charts four" },
      cacheChart.box,
      budgetChart.box,
      queueChart.box,
      severityChart.box,
    ),
    h(
      "section",
      { class: "card" },
      h(
        "div",
        { class: "section-head" },
        h("h2", {}, "Recent reviews"),
        h("a", { href: "#/reviews" }, "All reviews →"),
      ),
      reviewsTable(recent.items),
    ),
  );

  charts.push(
    new Chart(reviewsChart.canvas, {
      type: "bar",
      data: {
        labels,
        datasets: [
          {
            label: "Reviews",
            data: stats.per_day.map((d) => d.reviews),
            backgroundColor: COLORS.accent,
            borderRadius: 3,
          },
        ],
      },
      options: baseOptions({ integerTicks: true }),
    }),
    new Chart(costChart.canvas, {
      type: "line",
      data: {
        labels,
        datasets: [
          {
            label: "Cost (USD)",
            data: stats.per_day.map((d) => d.cost_usd),
            borderColor: COLORS.accent,
            backgroundColor: COLORS.accentSoft,
            fill: true,
            cubicInterpolationMode: "monotone",
            pointRadius: 2,
          },
        ],
      },
      options: baseOptions({ money: true }),
    }),
  );
  const answers = stats.cache.calls + stats.cache.cached_calls;
  charts.push(
    doughnut(
      cacheChart,
      answers ? ["From cache", "Billed calls"] : ["No model calls yet"],
      answers ? [stats.cache.cached_calls, stats.cache.calls] : [1],
      answers ? [COLORS.green, COLORS.grey] : ["#e2e8f0"],
      percent(stats.cache.hit_rate),
    ),
  );
  if (budget.daily_budget_usd === null) {
    charts.push(
      doughnut(
        budgetChart,
        ["Spent today (no budget)"],
        [1],
        ["#e2e8f0"],
        usd(budget.spent_today_usd),
      ),
    );
  } else {
    const spent = Math.min(budget.spent_today_usd, budget.daily_budget_usd);
    const left = Math.max(budget.daily_budget_usd - budget.spent_today_usd, 0);
    charts.push(
      doughnut(
        budgetChart,
        ["Spent", "Left"],
        [spent, left],
        [budget.used_fraction >= 1 ? COLORS.red : COLORS.amber, "#e2e8f0"],
        percent(budget.used_fraction),
        true,
      ),
    );
  }
  charts.push(
    new Chart(queueChart.canvas, {
      type: "bar",
      data: {
        labels: ["queued", "running", "dead", "cancelled"],
        datasets: [
          {
            label: "Jobs",
            data: [c.queued, c.running, c.dead, c.cancelled],
            backgroundColor: [COLORS.accent, COLORS.green, COLORS.red, COLORS.grey],
            borderRadius: 3,
          },
        ],
      },
      options: baseOptions({ integerTicks: true, horizontal: true }),
    }),
    new Chart(severityChart.canvas, {
      type: "bar",
      data: {
        labels: SEVERITIES,
        datasets: [
          {
            label: "Findings",
            data: SEVERITIES.map((s) => stats.findings_by_severity[s] || 0),
            backgroundColor: SEVERITIES.map((s) => COLORS[s]),
            borderRadius: 3,
          },
        ],
      },
      options: baseOptions({ integerTicks: true, horizontal: true }),
    }),
  );
}

function card(label, value, detail, tone) {
  return h(
    "div",
    { class: `card stat ${tone || ""}` },
    h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value),
    h("div", { class: "stat-detail" }, detail),
  );
}

function outcomeLine(outcomes) {
  const parts = Object.entries(outcomes || {}).map(([name, n]) => `${n} ${name}`);
  return parts.length ? parts.join(" · ") : "none in this period";
}

function chartBox(title, id, size) {
  const canvas = h("canvas", { id, role: "img", "aria-label": title });
  const box = h(
    "figure",
    { class: `card chart ${size || ""}` },
    h("figcaption", {}, title),
    h("div", { class: "chart-area" }, canvas),
  );
  return { box, canvas };
}

function baseOptions({ integerTicks = false, money = false, horizontal = false } = {}) {
  const valueAxis = {
    beginAtZero: true,
    grid: { color: "#eef2f7" },
    ticks: {
      precision: integerTicks ? 0 : undefined,
      callback: money ? moneyTick : undefined,
    },
  };
  const categoryAxis = { grid: { display: false } };
  return {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    indexAxis: horizontal ? "y" : "x",
    plugins: { legend: { display: false } },
    scales: horizontal ? { x: valueAxis, y: categoryAxis } : { x: categoryAxis, y: valueAxis },
  };
}

// Axis labels for dollars: two significant digits below a dollar, so small ticks stay distinct.
function moneyTick(value) {
  const v = Number(value);
  if (v === 0) return "$0";
  return "$" + (Math.abs(v) < 1 ? String(Number(v.toPrecision(2))) : v.toFixed(2));
}

function plural(n, word) {
  return `${integer.format(n)} ${word}${n === 1 ? "" : "s"}`;
}

function doughnut(box, labels, data, colors, centre, half = false) {
  box.box.querySelector(".chart-area").append(h("div", { class: "centre" }, centre));
  return new Chart(box.canvas, {
    type: "doughnut",
    data: { labels, datasets: [{ data, backgroundColor: colors, borderWidth: 0 }] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      cutout: "70%",
      rotation: half ? -90 : 0,
      circumference: half ? 180 : 360,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
  });
}

// --- Reviews -----------------------------------------------------------------------------

function reviewsTable(items) {
  if (!items.length) return notice("No reviews yet.");
  return h(
    "table",
    { class: "table reviews" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Started", "Pull request", "Outcome", "Findings", "Cost", "Model", "Took"].map((t) =>
          h("th", { scope: "col" }, t),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      items.map((r) =>
        h(
          "tr",
          { "data-review": r.id },
          h("td", {}, when(r.created_at)),
          h("td", {}, h("a", { href: `#/reviews/${r.id}` }, prLabel(r))),
          h("td", {}, badge(r.outcome)),
          h("td", {}, severityChips(r.severity_counts)),
          h("td", { class: "num" }, usd(r.cost_usd)),
          h("td", {}, r.model || "–"),
          h("td", { class: "num" }, seconds(r.duration_seconds)),
        ),
      ),
    ),
  );
}

async function showReviews(params) {
  loading("Reviews");
  const id = renderId;
  const filters = {
    platform: params.get("platform") || "",
    repo: params.get("repo") || "",
    outcome: params.get("outcome") || "",
    since: params.get("since") || "",
  };
  const query = {
    platform: filters.platform,
    repo: filters.repo,
    outcome: filters.outcome,
    since: filters.since ? `${filters.since}T00:00:00Z` : "",
    limit: 25,
  };
  const page = await api("reviews", { params: query });
  if (id !== renderId) return;

  const select = (name, options) =>
    h(
      "select",
      { name, id: `filter-${name}` },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === filters[name] }, o)),
    );
  const form = h(
    "form",
    { class: "filters card", id: "filters" },
    h("label", {}, "Platform", select("platform", ["github", "gitlab"])),
    h(
      "label",
      {},
      "Repository",
      h("input", {
        name: "repo",
        id: "filter-repo",
        value: filters.repo,
        placeholder: "owner/name",
      }),
    ),
    h("label", {}, "Outcome", select("outcome", OUTCOMES)),
    h(
      "label",
      {},
      "Since (UTC)",
      h("input", { name: "since", id: "filter-since", type: "date", value: filters.since }),
    ),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("a", { href: "#/reviews", class: "button" }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) next.set(key, value);
    location.hash = "#/reviews" + (next.size ? "?" + next : "");
  });

  const table = reviewsTable(page.items);
  const more = h("div", { class: "more" });
  let cursor = page.next_cursor;
  const addMore = () => {
    more.replaceChildren();
    if (!cursor) return;
    const button = h("button", { type: "button" }, "Load more");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const next = await api("reviews", { params: { ...query, cursor } });
        table.querySelector("tbody").append(...reviewsTable(next.items).querySelectorAll("tr[data-review]"));
        cursor = next.next_cursor;
        addMore();
      } catch (error) {
        more.replaceChildren(failure(error));
      }
    });
    more.append(button);
  };
  addMore();
  show(h("h1", {}, "Reviews"), form, h("section", { class: "card" }, table, more));
}

async function showReview(reviewId) {
  loading("Review");
  const id = renderId;
  const r = await api(`reviews/${encodeURIComponent(reviewId)}`);
  if (id !== renderId) return;
  const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "–")];
  const facts = h(
    "dl",
    { class: "facts" },
    fact("Outcome", badge(r.outcome)),
    fact("Status", r.reason),
    fact("State", r.state),
    fact("Mode", r.mode),
    fact("Head", h("code", {}, r.head_sha.slice(0, 12))),
    fact("Base", r.base_sha ? h("code", {}, r.base_sha.slice(0, 12)) : "–"),
    fact("Model", r.model),
    fact(
      "Tokens",
      `${integer.format(r.input_tokens)} in · ${integer.format(r.output_tokens)} out`,
    ),
    fact("Cost", usd(r.cost_usd)),
    fact("Model calls", `${r.calls} billed · ${r.cached_calls} from cache`),
    fact("Took", seconds(r.duration_seconds)),
    fact("Started", when(r.created_at)),
    fact("Finished", when(r.finished_at)),
    fact("Findings not posted", String(r.dropped)),
  );
  const findings = r.findings.length
    ? h(
        "ol",
        { class: "findings" },
        r.findings.map((f) =>
          h(
            "li",
            { class: `finding ${f.severity}` },
            h(
              "div",
              { class: "finding-head" },
              h("span", { class: `chip ${f.severity}` }, f.severity),
              h("span", { class: "category" }, f.category),
              h(
                "code",
                { class: "where" },
                `${f.path}:${f.start_line && f.start_line !== f.line ? `${f.start_line}–` : ""}${f.line}`,
              ),
              h("span", { class: "muted" }, `confidence ${Math.round(f.confidence * 100)} %`),
              f.posted ? null : h("span", { class: "muted" }, "not posted"),
            ),
            h("h3", { class: "finding-title" }, f.title),
            h("div", { class: "finding-body" }, f.body),
          ),
        ),
      )
    : notice("This review reported no new findings.");
  const notReviewed = r.not_reviewed.length
    ? h(
        "table",
        { class: "table not-reviewed" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "File"), h("th", { scope: "col" }, "Why not"))),
        h(
          "tbody",
          {},
          r.not_reviewed.map((n) =>
            h("tr", {}, h("td", {}, h("code", {}, n.path)), h("td", {}, n.reason)),
          ),
        ),
      )
    : notice("Every changed file was reviewed.");
  show(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, `${prLabel(r)} `, h("span", { class: "muted" }, `review ${r.id}`)),
      h(
        "div",
        { class: "links" },
        externalLink(r.pr_url, "Pull request ↗"),
        externalLink(r.summary_url, "Summary comment ↗"),
      ),
    ),
    h("section", { class: "card" }, facts, h("div", {}, severityChips(r.severity_counts))),
    h(
      "section",
      { class: "card" },
      h("h2", {}, `Findings (${r.findings.length})`),
      findings,
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, `Not reviewed (${r.not_reviewed.length})`),
      notReviewed,
    ),
  );
}

// --- Repositories ------------------------------------------------------------------------

async function showRepos() {
  loading("Repositories");
  const id = renderId;
  const data = await api("repos");
  if (id !== renderId) return;
  const installations = data.installations.length
    ? h(
        "table",
        { class: "table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Platform", "Account", "Installation", "State", "Repositories"].map((t) =>
              h("th", { scope: "col" }, t),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          data.installations.map((i) =>
            h(
              "tr",
              {},
              h("td", {}, i.platform),
              h("td", {}, i.account),
              h("td", { class: "num" }, String(i.installation_id)),
              h("td", {}, badge(i.state, i.state === "active" ? "success" : "error")),
              h(
                "td",
                { class: "num" },
                i.repository_selection === "all" ? "all" : String(i.repositories),
              ),
            ),
          ),
        ),
      )
    : notice("No installations recorded yet.");
  const repos = data.repos.length
    ? h(
        "table",
        { class: "table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Repository", "Platform", "Reviews", "Findings", "Cost", "Last review"].map((t) =>
              h("th", { scope: "col" }, t),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          data.repos.map((r) =>
            h(
              "tr",
              {},
              h(
                "td",
                {},
                h(
                  "a",
                  { href: `#/reviews?${new URLSearchParams({ platform: r.platform, repo: r.repo })}` },
                  r.repo,
                ),
                " ",
                externalLink(r.url, "↗"),
              ),
              h("td", {}, r.platform),
              h("td", { class: "num" }, integer.format(r.reviews)),
              h("td", { class: "num" }, integer.format(r.findings)),
              h("td", { class: "num" }, usd(r.cost_usd)),
              h("td", {}, when(r.last_review_at)),
            ),
          ),
        ),
      )
    : notice("No repositories yet.");
  show(
    h("h1", {}, "Repositories"),
    h("section", { class: "card" }, h("h2", {}, "Repositories"), repos),
    h("section", { class: "card" }, h("h2", {}, "Installations"), installations),
  );
}

// --- Jobs --------------------------------------------------------------------------------

async function showJobs(flash) {
  loading("Jobs");
  const id = renderId;
  const [data, recovery] = await Promise.all([api("jobs"), api("recovery")]);
  if (id !== renderId) return;
  const admin = session()?.role === "admin";
  const c = data.counts;
  const counts = h(
    "section",
    { class: "cards" },
    ["queued", "running", "dead", "cancelled", "done"].map((state) =>
      card(state, integer.format(c[state]), "jobs", state === "dead" && c.dead ? "bad" : null),
    ),
  );
  const subject = (j) =>
    j.repo
      ? `${j.platform || ""} ${j.repo}${j.number !== null ? " #" + j.number : ""}`.trim()
      : "–";
  const rows = data.dead.map((j) => {
    const cell = h("td", {});
    if (admin) {
      const button = h("button", { type: "button", class: "primary", "data-retry": j.id }, "Retry");
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const result = await api(`jobs/${j.id}/retry`, { method: "POST" });
          renderId += 1;
          await showJobs(notice(result.message, "success"));
        } catch (error) {
          button.disabled = false;
          cell.append(failure(error));
        }
      });
      cell.append(button);
    }
    return h(
      "tr",
      { "data-job": j.id },
      h("td", { class: "num" }, String(j.id)),
      h("td", {}, j.kind, j.event ? h("div", { class: "muted" }, j.event) : null),
      h("td", {}, subject(j)),
      h("td", { class: "num" }, `${j.attempts}/${j.max_attempts}`),
      h("td", {}, h("pre", { class: "error-text" }, j.last_error || "–")),
      h("td", {}, when(j.finished_at || j.updated_at)),
      cell,
    );
  });
  const dead = rows.length
    ? h(
        "table",
        { class: "table jobs" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Job", "Kind", "About", "Attempts", "Error", "Died", admin ? "" : "Retry (admin)"].map(
              (t) => h("th", { scope: "col" }, t),
            ),
          ),
        ),
        h("tbody", {}, rows),
      )
    : notice("No dead jobs.", "success");
  show(
    h("h1", {}, "Jobs"),
    flash || null,
    counts,
    h("section", { class: "card" }, h("h2", {}, `Dead jobs (${c.dead})`), dead),
    recoverySection(recovery),
  );
}

// --- Recovery: redelivery of failed deliveries, and the reconcile sweep ------------------

const RECOVERY_TITLES = {
  redelivery: ["Redeliveries requested", "Failed webhook deliveries asked for again"],
  reconcile: ["Reviews queued by the sweep", "Open pull requests whose head was never reviewed"],
};

function recoveryCard(pass) {
  const [title, what] = RECOVERY_TITLES[pass.name];
  const last = pass.last_run;
  const state = !pass.enabled ? "off" : pass.running ? "running now" : "idle";
  const lines = [
    h("p", { class: "muted" }, what),
    h("div", { class: "stat-value", "data-total": pass.name }, integer.format(pass.total)),
    h("p", { class: "muted" }, `all processes, all time · ${pass.metric} counts per process`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "State"),
      h("dd", {}, pass.enabled ? `${state}, every ${seconds(pass.interval_seconds)}` : state),
      h("dt", {}, "Covers"),
      h("dd", {}, pass.covers.length ? pass.covers.join(", ") : "nothing yet"),
      h("dt", {}, "Last run"),
      h(
        "dd",
        {},
        last
          ? `${when(pass.last_finished_at)}: ${last.done} done, ${last.due} due, ` +
              `${last.listed} read, ${last.errors} errors`
          : "never",
      ),
      h("dt", {}, "Next"),
      h("dd", {}, pass.enabled ? when(pass.next_due_at) : "–"),
    ),
  ];
  if (last && (last.error || last.stopped)) {
    const text = last.error || `Stopped early: ${last.stopped}`;
    lines.push(notice(text, last.error ? "error" : "info"));
  }
  for (const reason of pass.off) lines.push(notice(reason, "info"));
  return h("section", { class: "card", "data-recovery": pass.name }, h("h2", {}, title), lines);
}

function recoverySection(recovery) {
  const rows = recovery.redeliveries.map((r) =>
    h(
      "tr",
      {},
      h("td", {}, when(r.requested_at)),
      h("td", {}, `${r.platform} ${r.webhook}`),
      h("td", {}, h("code", {}, r.delivery_id)),
      h("td", {}, badge(r.state, r.state === "refused" ? "failure" : "success")),
      h("td", { class: "num" }, String(r.attempts)),
      h("td", {}, r.error ? h("pre", { class: "error-text" }, r.error) : "–"),
    ),
  );
  const table = rows.length
    ? h(
        "table",
        { class: "table redeliveries" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Asked", "Webhook", "Delivery", "Answer", "Times", "Error"].map((t) =>
              h("th", { scope: "col" }, t),
            ),
          ),
        ),
        h("tbody", {}, rows),
      )
    : notice("No delivery had to be asked for again.");
  return h(
    "section",
    { class: "recovery" },
    h("h2", {}, "Recovery"),
    h(
      "div",
      { class: "cards wide" },
      recoveryCard(recovery.redelivery),
      recoveryCard(recovery.reconcile),
    ),
    h("section", { class: "card" }, h("h2", {}, "Latest redelivery requests"), table),
  );
}

// --- Routing -----------------------------------------------------------------------------

async function route() {
  renderId += 1;
  if (!session()) {
    showSignIn();
    return;
  }
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const section = parts[0] || "overview";
  setChrome(section);
  try {
    if (section === "overview" || section === "sign-in") await showOverview(params);
    else if (section === "reviews" && parts[1]) await showReview(parts[1]);
    else if (section === "reviews") await showReviews(params);
    else if (section === "repos") await showRepos();
    else if (section === "jobs") await showJobs();
    else show(h("h1", {}, "Not found"), notice("No such page.", "error"));
  } catch (error) {
    if (!session()) return; // signed out on the way (401): the sign-in form is up
    show(h("h1", {}, "Something went wrong"), failure(error));
  }
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
if (window.Chart) {
  Chart.defaults.font.family =
    'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  Chart.defaults.color = COLORS.slate;
}
route();
