// The dashboard walked through in a real headless Chromium, as a person would use it.
// Started by crates/zipkit-api/tests/browser.rs, which runs the API, a worker, PostgreSQL,
// RabbitMQ, the S3-compatible store, a source server and a webhook receiver, and passes their
// addresses in the environment. The main walk runs with JavaScript turned off: every page and
// form must work without it. Screenshots go to ZIPKIT_SCREENSHOTS.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (this script is started by tests/browser.rs)`);
  return value;
}

const BASE = env("ZIPKIT_BASE_URL");
const EMAIL = env("ZIPKIT_EMAIL");
const PASSWORD = env("ZIPKIT_PASSWORD");
const PROJECT = env("ZIPKIT_PROJECT");
const BUCKET = env("ZIPKIT_BUCKET");
const S3_ENDPOINT = env("ZIPKIT_S3_ENDPOINT");
const S3_ACCESS_KEY = env("ZIPKIT_S3_ACCESS_KEY");
const S3_SECRET_KEY = env("ZIPKIT_S3_SECRET_KEY");
const SOURCE_URL = env("ZIPKIT_SOURCE_URL");
const RECEIVER_URL = env("ZIPKIT_RECEIVER_URL");
const SHOTS = env("ZIPKIT_SCREENSHOTS");
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const noScript = await browser.newContext({
  javaScriptEnabled: false,
  viewport: { width: 1100, height: 760 },
});
const page = await noScript.newPage();
const visited = new Set();
page.on("framenavigated", (frame) => {
  if (frame === page.mainFrame()) visited.add(new URL(frame.url()).pathname);
});

let current = "";
async function step(name, body) {
  current = name;
  console.log(`- ${name}`);
  await body();
}
async function shot(name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}
const link = (name) => page.getByRole("link", { name, exact: true });
const button = (name) => page.getByRole("button", { name, exact: true });
async function text(selector) {
  return (await page.locator(selector).first().textContent()) ?? "";
}
/** Reloads until `selector` contains `pattern` (pages refresh themselves too; this is faster). */
async function waitFor(selector, pattern, seconds = 30) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const found = await page.locator(selector).allTextContents();
    if (found.some((t) => pattern.test(t))) return;
    if (Date.now() > deadline) {
      throw new Error(`${selector} never matched ${pattern}; last seen: ${JSON.stringify(found)}`);
    }
    await page.waitForTimeout(500);
    await page.reload();
  }
}

try {
  await step("every page sends a stranger to the sign-in page", async () => {
    await page.goto(`${BASE}/dashboard`);
    assert.match(page.url(), /\/dashboard\/login$/);
    await shot("01-sign-in");
  });

  await step("sign in and pick the project", async () => {
    await page.fill("#email", EMAIL);
    await page.fill("#password", "not the password");
    await button("Sign in").click();
    assert.match(await text("p.error"), /Wrong email or password/);
    assert.equal(await page.inputValue("#email"), EMAIL);
    await page.fill("#password", PASSWORD);
    await button("Sign in").click();
    await page.waitForURL(`${BASE}/dashboard`);
    await shot("02-projects");
    await page.getByRole("link", { name: PROJECT }).click();
    await page.waitForURL(/\/zips$/);
  });

  await step("add an S3-style bucket with a wrong secret and read why it failed", async () => {
    await link("Buckets").click();
    await link("Add Bucket").click();
    await page.fill("#f-name", BUCKET);
    await page.fill("#f-region", "us-east-1");
    await page.fill("#f-access_key_id", S3_ACCESS_KEY);
    await page.fill("#f-secret_access_key", "a-wrong-secret");
    await page.locator("summary").click();
    await page.fill("#f-endpoint_url", S3_ENDPOINT);
    await page.check("#f-path_style");
    await button("Save and Test").click();
    assert.match(await text(".notice.bad"), /The secret access key does not match the access key ID/);
    // What was typed is kept; the secret is not sent back.
    assert.equal(await page.inputValue("#f-name"), BUCKET);
    assert.equal(await page.inputValue("#f-region"), "us-east-1");
    assert.equal(await page.inputValue("#f-endpoint_url"), S3_ENDPOINT);
    assert.equal(await page.inputValue("#f-secret_access_key"), "");
    assert.ok(!(await page.content()).includes("a-wrong-secret"));
    await shot("03-bucket-test-failed");
  });

  await step("fix the secret; the bucket is listed with name, service, date and region", async () => {
    await page.fill("#f-secret_access_key", S3_SECRET_KEY);
    await button("Save and Test").click();
    await page.waitForURL(/\/buckets\?notice=added$/);
    const row = page.locator("table.list tbody tr", { hasText: BUCKET });
    const cells = await row.locator("td").allTextContents();
    assert.equal(cells[0], BUCKET);
    assert.match(cells[1], /^S3-compatible \(127\.0\.0\.1\)$/);
    assert.equal(cells[2], "us-east-1");
    assert.match(cells[3], /^\d{4}-\d{2}-\d{2}$/);
    assert.ok(!(await page.content()).includes(S3_SECRET_KEY));
    await shot("04-buckets");
  });

  await step("edit the bucket's credentials (retested on save)", async () => {
    await page.locator("table.list tbody tr", { hasText: BUCKET }).getByRole("link", { name: "Edit" }).click();
    // What Save and Test found the keys may do: everything, on the local store.
    const capabilities = await text("dl.facts");
    for (const line of ["Read", "List", "Abort multipart uploads", "UploadPartCopy"]) {
      assert.match(capabilities, new RegExp(`${line}\\s*yes`), capabilities);
    }
    await page.fill("#f-access_key_id", S3_ACCESS_KEY);
    await page.fill("#f-secret_access_key", "still-wrong");
    await button("Save and Test").click();
    assert.match(await text(".notice.bad"), /does not match/);
    await shot("05-bucket-edit-refused");
    await page.fill("#f-secret_access_key", S3_SECRET_KEY);
    await button("Save and Test").click();
    await page.waitForURL(/\/buckets\?notice=updated$/);
    assert.match(await text(".notice.ok"), /new credentials passed the write test/);
  });

  let token = "";
  await step("create an access token; it is shown once", async () => {
    await link("Access tokens").click();
    await page.fill("#f-name", "browser export");
    await button("Create token").click();
    token = await page.inputValue("#shown-once");
    assert.match(token, /^zk_/);
    await shot("06-token-created");
    await link("Done — back to the tokens").click();
    assert.ok(!(await page.content()).includes(token), "the token is not shown again");
    await shot("07-tokens");
  });

  let zipId = "";
  await step("create a zip through the API with that token", async () => {
    const response = await fetch(`${BASE}/v1/zips`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        urls: [{ url: SOURCE_URL, filename: "reports/Übersicht 2026.txt" }],
        bucket_name: BUCKET,
        key: "browser/monthly.zip",
      }),
    });
    const body = await response.json();
    assert.equal(response.status, 202, JSON.stringify(body));
    zipId = body.data.id;
    assert.match(zipId, /^[0-9a-f-]{36}$/);
  });

  await step("deleting the bucket is refused, saying how many jobs use it", async () => {
    await link("Buckets").click();
    await page.locator("table.list tbody tr", { hasText: BUCKET }).getByRole("link", { name: "Delete" }).click();
    await shot("08-bucket-delete-confirm");
    await button("Delete bucket").click();
    assert.match(await text(".notice.bad"), /was not deleted: 1 zip job still refers to it/);
    assert.equal(await page.locator("table.list tbody tr", { hasText: BUCKET }).count(), 1);
    await shot("09-bucket-delete-refused");
  });

  await step("the zip's status shows in the Zips section, then its detail", async () => {
    await link("Zips").click();
    await waitFor("table.zips tbody tr", /succeeded/);
    const row = await page.locator("table.zips tbody tr", { hasText: zipId }).textContent();
    assert.match(row, new RegExp(BUCKET));
    await shot("10-zips");
    await page.getByRole("link", { name: zipId }).click();
    assert.match(await text("dl.facts"), /browser\/monthly\.zip/);
    assert.match(await text("table.entries"), /reports\/Übersicht 2026\.txt/);
    assert.match(await text("table.entries"), /done/);
    // The keys passed every check of Save and Test, so the page links the archive itself.
    const download = await page.getByRole("link", { name: "Download the archive" }).getAttribute("href");
    const archive = await fetch(download);
    assert.equal(archive.status, 200);
    assert.equal(archive.headers.get("content-disposition"), 'attachment; filename="monthly.zip"');
    assert.equal(Buffer.from(await archive.arrayBuffer()).subarray(0, 2).toString(), "PK");
    await shot("11-zip-detail");
    await page.goto(`${page.url().replace(/\/zips\/.*$/, "/zips")}?status=failed`);
    assert.equal(await page.locator("table.zips").count(), 0, "no failed zip to list");
  });

  await step("create and revoke a token", async () => {
    await link("Access tokens").click();
    await page.fill("#f-name", "short-lived");
    await button("Create token").click();
    await link("Done — back to the tokens").click();
    await page.getByRole("button", { name: "Revoke short-lived" }).click();
    await page.waitForURL(/notice=revoked$/);
    const row = await page.locator("table.list tbody tr", { hasText: "short-lived" }).textContent();
    assert.match(row, /revoked/);
  });

  let signingSecret = "";
  await step("add a webhook and send a test event to the local receiver", async () => {
    await link("Webhooks").click();
    await page.fill("#f-url", "ftp://nowhere");
    await page.fill("#f-description", "orders service");
    await button("Add endpoint").click();
    assert.match(await text(".field-error"), /not a URL/i);
    assert.equal(await page.inputValue("#f-description"), "orders service");
    await page.fill("#f-url", RECEIVER_URL);
    await button("Add endpoint").click();
    signingSecret = await page.inputValue("#shown-once");
    assert.match(signingSecret, /^whsec_/);
    await link("Done — go to the endpoint").click();
    await button("Send test event").click();
    await waitFor("table.deliveries tbody tr", /delivered · HTTP 200/);
    assert.ok(!(await page.content()).includes(signingSecret));
    await shot("12-webhook");
  });

  await step("sign out; every page visited now redirects to sign-in", async () => {
    await button("Sign out").click();
    await page.waitForURL(/\/dashboard\/login$/);
    const pages = [...visited].filter((p) => p !== "/dashboard/login");
    assert.ok(pages.length >= 8, `visited ${pages.length} pages`);
    for (const path of pages) {
      await page.goto(`${BASE}${path}`);
      assert.match(page.url(), /\/dashboard\/login$/, `${path} after signing out`);
    }
  });

  await step("with JavaScript on, a secret shown once gets a working Copy button", async () => {
    const withScript = await browser.newContext({ viewport: { width: 1100, height: 760 } });
    await withScript.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    const js = await withScript.newPage();
    await js.goto(`${BASE}/dashboard/login`);
    await js.fill("#email", EMAIL);
    await js.fill("#password", PASSWORD);
    await js.getByRole("button", { name: "Sign in" }).click();
    await js.getByRole("link", { name: PROJECT }).click();
    await js.getByRole("link", { name: "Access tokens", exact: true }).click();
    await js.fill("#f-name", "copied");
    await js.getByRole("button", { name: "Create token" }).click();
    const shown = await js.inputValue("#shown-once");
    await js.getByRole("button", { name: "Copy" }).click();
    await js.getByRole("button", { name: "Copied" }).waitFor();
    assert.equal(await js.evaluate(() => navigator.clipboard.readText()), shown);
    // A narrow screen: the same page, laid out for a phone.
    await js.setViewportSize({ width: 390, height: 800 });
    await js.getByRole("link", { name: "Done — back to the tokens" }).click();
    await js.screenshot({ path: `${SHOTS}/13-tokens-phone.png`, fullPage: true });
    await withScript.close();
  });

  // For the Rust side, which checks the webhook's signature and the archive.
  console.log(`RESULT ${JSON.stringify({ zip_id: zipId, signing_secret: signingSecret })}`);
} catch (error) {
  console.error(`FAILED at "${current}": ${error.stack || error}`);
  await shot("failure").catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
