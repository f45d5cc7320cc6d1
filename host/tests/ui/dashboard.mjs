// The dashboard in a real browser (Debian's Chromium, headless, driven by
// Playwright): host/tests/dashboard.rs starts the host with a canary of
// `user` under traffic and runs this with
//   ADMIN_URL  http://127.0.0.1:PORT of the admin listener
//   TOKEN      the admin token
//   CHROMIUM   the browser binary
//   SHOTS      a directory for the screenshots
// Every step waits with a bound and fails with what it saw.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const { ADMIN_URL, TOKEN, CHROMIUM, SHOTS } = process.env;
for (const [k, v] of Object.entries({ ADMIN_URL, TOKEN, CHROMIUM, SHOTS })) {
  if (!v) throw new Error(`${k} is not set`);
}
mkdirSync(SHOTS, { recursive: true });
const STEP = { timeout: 20000 };

function step(what) {
  console.log(`- ${what}`);
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1360, height: 1000 } });
const page = await context.newPage();
const problems = [];
page.on("pageerror", e => problems.push(`page error: ${e.message}`));
page.on("console", m => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`); });

try {
  step("without a session, /ui is the login form");
  await page.goto(`${ADMIN_URL}/ui`);
  assert.match(page.url(), /\/ui\/login$/);

  step("a wrong token is refused, with the reason, and sets no cookie");
  await page.fill("#token", "not-the-token");
  const [refused] = await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.equal(refused.status(), 401);
  await page.locator(".message").filter({ hasText: "Wrong admin token" }).waitFor(STEP);
  assert.equal((await context.cookies()).length, 0);
  const api = await page.request.get(`${ADMIN_URL}/admin/services`);
  assert.equal(api.status(), 401);

  step("an expired session cookie is refused as expired");
  const expiry = Math.floor(Date.now() / 1000) - 60;
  const mac = createHmac("sha256", TOKEN).update(`wasmhost-session:${expiry}`).digest("hex");
  await context.addCookies([{ name: "wasmhost_session", value: `${expiry}.${mac}`, url: ADMIN_URL }]);
  await page.goto(`${ADMIN_URL}/ui`);
  assert.match(page.url(), /\/ui\/login\?why=expired$/);
  await page.locator(".message").filter({ hasText: "session expired" }).waitFor(STEP);
  const expired = await page.request.get(`${ADMIN_URL}/admin/services`);
  assert.equal(expired.status(), 401);
  assert.match((await expired.json()).error, /expired/);
  await context.clearCookies();

  step("the right token logs in, with an HttpOnly, SameSite=Strict cookie");
  await page.goto(`${ADMIN_URL}/ui/login`);
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(/\/ui$/), page.click("button[type=submit]")]);
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, "wasmhost_session");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie), "", "the page's scripts cannot read the session");

  step("the user service shows both versions and its canary");
  const row = v => page.locator(`#versions tr[data-version="${v}"]`);
  await row("1.0.0").waitFor(STEP);
  await row("1.1.0").waitFor(STEP);
  await page.locator("#canary").filter({ hasText: "1.1.0 beside 1.0.0: step 1, 10% of traffic" }).waitFor(STEP);
  assert.equal(await row("1.1.0").locator(".weight").textContent(), "10%");
  assert.equal(await row("1.0.0").locator(".weight").textContent(), "90%");

  step("a file that did not load is shown with the loader's reason");
  await page.locator("#load-errors li").filter({ hasText: "broken@1.0.0.wasm did not load" }).waitFor(STEP);

  step("the numbers move while traffic flows");
  const requests = async v => Number(await row(v).locator(".requests").textContent());
  const before = { stable: await requests("1.0.0"), candidate: await requests("1.1.0") };
  await page.waitForFunction(
    b => {
      const n = v => Number(document.querySelector(`#versions tr[data-version="${v}"] .requests`)?.textContent);
      return n("1.0.0") > b.stable && n("1.1.0") > b.candidate;
    },
    before,
    STEP,
  );
  step("each chart draws a line per version, the candidate beside the stable one");
  for (const chart of ["Requests per second", "Error rate (5xx)", "p99 latency", "p50 latency"]) {
    const lines = page.locator(`[data-chart="${chart}"] polyline`);
    await page.waitForFunction(
      c => document.querySelectorAll(`[data-chart="${c}"] polyline`).length === 2,
      chart,
      STEP,
    );
    assert.deepEqual((await lines.evaluateAll(ls => ls.map(l => l.dataset.version))).sort(), ["1.0.0", "1.1.0"]);
  }
  // A few more points, for a screenshot worth looking at.
  await page.waitForFunction(
    () => {
      const l = document.querySelector('[data-chart="Requests per second"] polyline');
      return l && l.getAttribute("points").split(" ").length >= 6;
    },
    null,
    { timeout: 30000 },
  );
  await page.screenshot({ path: `${SHOTS}/dashboard-canary.png`, fullPage: true });

  step("pause holds the canary");
  await page.click("#pause");
  await page.locator("#notice").filter({ hasText: "Canary paused" }).waitFor(STEP);
  await page.locator("#canary .tag").filter({ hasText: "paused" }).waitFor(STEP);
  await page.locator("#resume").waitFor(STEP);

  step("a weight change the API refuses shows the API's message and changes nothing");
  const bad = { weights: { "1.0.0": 80, "1.1.0": 30 } };
  const said = await page.request.put(`${ADMIN_URL}/admin/services/user/release`, {
    data: bad, headers: { "x-wasmhost-ui": "1" },
  });
  assert.ok(said.status() >= 400 && said.status() < 500, `the API refused with a 4xx: ${said.status()}`);
  const message = (await said.json()).error;
  await page.fill('#weights input[name="1.0.0"]', "80");
  await page.fill('#weights input[name="1.1.0"]', "30");
  await page.click("#apply-weights");
  await page.locator("#error").filter({ hasText: `Weight change refused: ${message}` }).waitFor(STEP);
  // The next poll still shows the old split.
  const polled = await page.locator("#updated").textContent();
  await page.waitForFunction(t => document.querySelector("#updated").textContent !== t, polled, STEP);
  assert.equal(await row("1.1.0").locator(".weight").textContent(), "10%");

  step("a change without the dashboard header is refused, even with the session");
  const forged = await page.request.post(`${ADMIN_URL}/admin/services/user/rollback`);
  assert.equal(forged.status(), 403);

  step("a good weight change applies");
  await page.fill('#weights input[name="1.0.0"]', "70");
  await page.fill('#weights input[name="1.1.0"]', "30");
  await page.click("#apply-weights");
  await page.locator("#notice").filter({ hasText: "Weights set: 1.1.0=30, 1.0.0=70" }).waitFor(STEP);
  await row("1.1.0").locator(".weight").filter({ hasText: "30%" }).waitFor(STEP);
  await page.locator("#history li[data-action=release]").filter({ hasText: "1.0.0=70" }).waitFor(STEP);

  step("promote gives the candidate all the traffic and is in the history");
  await page.click('button[data-action=promote][data-version="1.1.0"]');
  await page.locator("#notice").filter({ hasText: "Promoted 1.1.0" }).waitFor(STEP);
  await row("1.1.0").locator(".weight").filter({ hasText: "100%" }).waitFor(STEP);
  await page.locator("#history li[data-action=promote]").filter({ hasText: "1.1.0" }).waitFor(STEP);
  await page.screenshot({ path: `${SHOTS}/dashboard-promoted.png`, fullPage: true });

  step("log out ends the session");
  await Promise.all([page.waitForURL(/why=logout/), page.click("header form button")]);
  await page.locator(".message").filter({ hasText: "Logged out" }).waitFor(STEP);
  assert.equal((await page.request.get(`${ADMIN_URL}/admin/services`)).status(), 401);

  assert.deepEqual(problems, [], "the page logged no error");
  console.log("dashboard: all steps passed");
} catch (e) {
  await page.screenshot({ path: `${SHOTS}/dashboard-failure.png`, fullPage: true }).catch(() => {});
  console.error(`dashboard test failed at ${page.url()}:`, e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
