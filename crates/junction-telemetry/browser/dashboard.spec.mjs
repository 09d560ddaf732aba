// Browser steps against a running Junction admin port (or the test fixture).
//
//   ADMIN_URL=http://127.0.0.1:9090 [ADMIN_TOKEN=...] node dashboard.spec.mjs <step>
//
// Steps (each loads the dashboard in a fresh headless Chromium profile):
//   wait-state <upstream> <state>  until that upstream's breaker badge shows <state> (15 s)
//   replay <dlq-id>                click the row's Replay button, wait until the row is gone (15 s)
//   filter-purge <reason> <n>      type <reason> into the DLQ's reason filter, wait until exactly
//                                  <n> rows are listed, all with that reason, then purge all
//                                  matching (two clicks: the second confirms) and wait until
//                                  none is listed
//   screenshot <path.png>          full-page screenshot once data and the graph are drawn
// Exit 0 on success; 1 with a "FAIL:" line on failure; 2 on bad usage.
// A JavaScript error on the page fails any step.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TIMEOUT_MS = 15_000;
const USAGE = "usage: node dashboard.spec.mjs wait-state <upstream> <state> | replay <dlq-id> | filter-purge <reason> <n> | recommendation '<kind> <target>' | drill <route|upstream|subscriber> <name> <status> | message <id> <subscriber> <state> | peek <id> <subscriber> <shown> <hidden> | screenshot <path.png>";

class Failure extends Error {}

function pageUrl() {
  const base = process.env.ADMIN_URL;
  if (!base) throw new Failure("ADMIN_URL is not set (e.g. http://127.0.0.1:9090)");
  const url = new URL("/", base);
  if (process.env.ADMIN_TOKEN) url.searchParams.set("token", process.env.ADMIN_TOKEN);
  return url.toString();
}

async function withPage(fn) {
  const profile = mkdtempSync(join(tmpdir(), "junction-dashboard-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1440, height: 900 },
    deviceScaleFactor: 1,
  });
  const errors = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error" && !/status of 40[14]/.test(m.text())) errors.push(`console error: ${m.text()}`); });
    const resp = await page.goto(pageUrl(), { waitUntil: "domcontentloaded", timeout: TIMEOUT_MS });
    if (!resp || !resp.ok()) throw new Failure(`GET / answered ${resp ? resp.status() : "nothing"}`);
    await waitLive(page);
    await fn(page);
    if (errors.length) throw new Failure(errors.join("\n"));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

// The status pill says live once /admin/overview answered; 401 fails fast.
async function waitLive(page) {
  try {
    await page.waitForFunction(() => {
      const s = document.querySelector("#status");
      return s && (s.dataset.state === "live" || s.dataset.state === "unauthorized");
    }, null, { timeout: TIMEOUT_MS });
  } catch (_) {
    const state = await page.locator("#status").getAttribute("data-state").catch(() => "?");
    throw new Failure(`the dashboard did not get data within ${TIMEOUT_MS / 1000} s (status: ${state})`);
  }
  if ((await page.locator("#status").getAttribute("data-state")) === "unauthorized") {
    throw new Failure("the admin API answered 401: set ADMIN_TOKEN to the admin token");
  }
}

const cssString = (s) => JSON.stringify(String(s));

async function waitState(upstream, state) {
  await withPage(async (page) => {
    const sel = `[data-upstream=${cssString(upstream)}] .state`;
    const want = state.trim().toLowerCase();
    try {
      await page.waitForFunction(([sel, want]) => {
        const el = document.querySelector(sel);
        return Boolean(el) && el.textContent.trim().toLowerCase() === want;
      }, [sel, want], { timeout: TIMEOUT_MS, polling: 100 });
    } catch (_) {
      const seen = await page.locator(sel).textContent({ timeout: 500 }).catch(() => null);
      throw new Failure(seen === null
        ? `no upstream "${upstream}" on the dashboard`
        : `upstream "${upstream}" still shows "${seen.trim()}" after ${TIMEOUT_MS / 1000} s, wanted "${want}"`);
    }
    console.log(`ok: upstream ${upstream} is ${want}`);
  });
}

async function replay(id) {
  await withPage(async (page) => {
    const row = page.locator(`#dlq [data-dlq-id=${cssString(id)}]`);
    try {
      await row.locator("button.replay").waitFor({ state: "visible", timeout: TIMEOUT_MS });
    } catch (_) {
      throw new Failure(`no dead letter "${id}" in the DLQ table`);
    }
    await row.locator("button.replay").click({ timeout: TIMEOUT_MS });
    try {
      await row.waitFor({ state: "detached", timeout: TIMEOUT_MS });
    } catch (_) {
      const toast = await page.locator("#toasts .toast").allTextContents().catch(() => []);
      throw new Failure(`dead letter "${id}" is still listed after replay${toast.length ? `: ${toast.join(" / ")}` : ""}`);
    }
    const toast = await page.locator("#toasts .toast.error").allTextContents();
    if (toast.length) throw new Failure(`replay reported an error: ${toast.join(" / ")}`);
    console.log(`ok: dead letter ${id} replayed`);
  });
}

async function filterPurge(reason, n) {
  const want = Number(n);
  await withPage(async (page) => {
    await page.locator("#dlq-filters input[name=reason]").fill(reason);
    const rows = "#dlq tbody tr[data-dlq-id]";
    try {
      await page.waitForFunction(([rows, want, reason]) => {
        const listed = [...document.querySelectorAll(rows)];
        return listed.length === want && listed.every((tr) =>
          tr.cells[5].textContent.toLowerCase().includes(reason.toLowerCase()));
      }, [rows, want, reason], { timeout: TIMEOUT_MS, polling: 100 });
    } catch (_) {
      const seen = await page.locator(rows).count();
      throw new Failure(`the reason filter "${reason}" listed ${seen} rows, wanted ${want} all matching`);
    }
    const purge = page.locator("#purge-all");
    await purge.click({ timeout: TIMEOUT_MS });
    const label = (await purge.textContent()).trim();
    if (!label.startsWith("Confirm")) throw new Failure(`the first click should ask to confirm, the button says "${label}"`);
    await purge.click({ timeout: TIMEOUT_MS });
    try {
      await page.waitForFunction((rows) => document.querySelectorAll(rows).length === 0 &&
        /matches these filters/.test(document.querySelector("#dlq tbody").textContent), rows,
      { timeout: TIMEOUT_MS, polling: 100 });
    } catch (_) {
      const toast = await page.locator("#toasts .toast").allTextContents().catch(() => []);
      throw new Failure(`rows are still listed after the purge${toast.length ? `: ${toast.join(" / ")}` : ""}`);
    }
    const errors = await page.locator("#toasts .toast.error").allTextContents();
    if (errors.length) throw new Failure(`purge reported an error: ${errors.join(" / ")}`);
    console.log(`ok: ${want} dead letters matching "${reason}" purged`);
  });
}

// A recommendation is listed; opening it shows its evidence and config.
async function recommendation(key) {
  await withPage(async (page) => {
    const sel = `#recs [data-rec=${cssString(key)}]`;
    try {
      await page.locator(sel).waitFor({ timeout: TIMEOUT_MS });
    } catch (_) {
      const seen = await page.locator("#recs").textContent().catch(() => "");
      throw new Failure(`no recommendation "${key}" on the dashboard; it shows: ${seen.replace(/\s+/g, " ").trim().slice(0, 400)}`);
    }
    await page.locator(`${sel} summary`).click({ timeout: TIMEOUT_MS });
    const evidence = await page.locator(`${sel} .rec-body`).textContent();
    const yaml = await page.locator(`${sel} .rec-yaml`).textContent();
    if (!/Evidence/.test(evidence) || !/(routes|upstreams):/.test(yaml)) {
      throw new Failure(`recommendation "${key}" opened without evidence or config: ${evidence} / ${yaml}`);
    }
    console.log(`ok: recommendation ${key} shown with its evidence and config`);
  });
}

// Clicking a row opens its drill-down: the hour's chart has bars and the
// status table counts `status`.
async function drill(kind, name, status) {
  const table = { route: "#routes", upstream: "#upstreams", subscriber: "#subscribers" }[kind];
  if (!table) throw new Failure(`drill: ${kind} is not route, upstream or subscriber`);
  await withPage(async (page) => {
    const row = page.locator(`${table} tr[data-${kind}=${cssString(name)}]`);
    try {
      await row.waitFor({ timeout: TIMEOUT_MS });
      await row.click({ timeout: TIMEOUT_MS });
      await page.locator("#drill .d-calls rect.d-bar").first().waitFor({ timeout: TIMEOUT_MS });
      await page.locator(`#drill .d-status tr[data-status=${cssString(status)}]`).waitFor({ timeout: TIMEOUT_MS });
    } catch (_) {
      const seen = await page.locator("#drill").textContent().catch(() => "");
      throw new Failure(`the drill-down of ${kind} ${name} did not show calls and status ${status}: ${seen.replace(/\s+/g, " ").trim().slice(0, 300)}`);
    }
    const title = (await page.locator("#drill-title").textContent()).trim();
    if (!title.endsWith(name)) throw new Failure(`the drill-down is titled "${title}"`);
    console.log(`ok: drill-down of ${kind} ${name} shows its hour and status ${status}`);
  });
}

// Looking a message up shows `subscriber` in `state` with its attempts.
async function message(id, subscriber, state) {
  await withPage(async (page) => {
    await page.locator("#msg-id").fill(id);
    await page.locator("#msg-search button[type=submit]").click();
    const sec = `#messages .msg-sub[data-subscriber=${cssString(subscriber)}]`;
    try {
      await page.waitForFunction(([sel, want]) => {
        const s = document.querySelector(`${sel} .msg-state`);
        return Boolean(s) && s.textContent.trim() === want;
      }, [sec, state], { timeout: TIMEOUT_MS, polling: 100 });
    } catch (_) {
      const seen = await page.locator("#messages .msg-page").textContent().catch(() => "");
      throw new Failure(`message ${id}: no subscriber ${subscriber} in state ${state}; the page shows: ${seen.replace(/\s+/g, " ").trim().slice(0, 300)}`);
    }
    const attempts = await page.locator(`${sec} .msg-history tbody tr`).count();
    if (attempts < 1) throw new Failure(`message ${id}: no attempts listed for ${subscriber}`);
    console.log(`ok: message ${id} shows ${subscriber} ${state} with ${attempts} attempt(s)`);
  });
}

// A dead delivery's page: its failed attempt opens to the subscriber's answer,
// and "Show payload" (secrets masked) shows `shown` and never `hidden`.
async function peek(id, subscriber, shown, hidden) {
  await withPage(async (page) => {
    await page.locator("#msg-id").fill(id);
    await page.locator("#msg-search button[type=submit]").click();
    const sec = `#messages .msg-sub[data-subscriber=${cssString(subscriber)}]`;
    try {
      await page.locator(`${sec} .msg-response summary`).first().waitFor({ timeout: TIMEOUT_MS });
    } catch (_) {
      const seen = await page.locator("#messages .msg-page").textContent().catch(() => "");
      throw new Failure(`message ${id}: no failed attempt with a response for ${subscriber}; the page shows: ${seen.replace(/\s+/g, " ").trim().slice(0, 300)}`);
    }
    await page.locator(`${sec} .msg-response summary`).first().click();
    const headers = await page.locator(`${sec} .msg-response .msg-headers`).first().textContent();
    if (!/^(date|content-length|content-type): /im.test(headers)) throw new Failure(`the attempt's response shows no headers: ${headers}`);
    await page.locator(`${sec} .msg-peek-show`).click();
    try {
      await page.locator(`${sec} .msg-payload`).waitFor({ timeout: TIMEOUT_MS });
    } catch (_) {
      const seen = await page.locator(`${sec} .msg-peek-out`).textContent().catch(() => "");
      throw new Failure(`no payload shown for ${subscriber}: ${seen}`);
    }
    const payload = await page.locator(`${sec} .msg-payload`).textContent();
    if (!payload.includes(shown) || payload.includes(hidden)) {
      throw new Failure(`the payload should show "${shown}" and hide "${hidden}": ${payload}`);
    }
    const note = await page.locator(`${sec} .msg-peek-note`).textContent();
    // PEEK_SCREENSHOT=path.png keeps a picture of the card (docs/message-page.png).
    if (process.env.PEEK_SCREENSHOT) await page.locator("#messages").screenshot({ path: process.env.PEEK_SCREENSHOT });
    console.log(`ok: message ${id} shows ${subscriber}'s failed answer and its payload (${note.trim()})`);
  });
}

async function screenshot(path) {
  await withPage(async (page) => {
    try {
      await page.locator("#routes tbody tr[data-route]").first().waitFor({ timeout: TIMEOUT_MS });
      await page.locator("#graph svg").waitFor({ timeout: TIMEOUT_MS });
    } catch (_) {
      throw new Failure("routes or the dependency graph never appeared");
    }
    // A few polls, so sparklines have a shape and countdowns move.
    await page.waitForTimeout(Number(process.env.SCREENSHOT_DELAY_MS || 3500));
    await page.screenshot({ path, fullPage: true });
    console.log(`ok: screenshot written to ${path}`);
  });
}

async function main() {
  const [step, ...args] = process.argv.slice(2);
  const steps = {
    "wait-state": [2, () => waitState(args[0], args[1])],
    replay: [1, () => replay(args[0])],
    "filter-purge": [2, () => filterPurge(args[0], args[1])],
    recommendation: [1, () => recommendation(args[0])],
    drill: [3, () => drill(args[0], args[1], args[2])],
    message: [3, () => message(args[0], args[1], args[2])],
    peek: [4, () => peek(args[0], args[1], args[2], args[3])],
    screenshot: [1, () => screenshot(args[0])],
  };
  const entry = steps[step];
  if (!entry || args.length !== entry[0] || args.some((a) => !a)) {
    console.error(USAGE);
    process.exit(2);
  }
  try {
    await entry[1]();
  } catch (e) {
    console.error(`FAIL: ${step} ${args.join(" ")}: ${e instanceof Failure ? e.message : e && e.stack ? e.stack : e}`);
    process.exit(1);
  }
}

await main();
