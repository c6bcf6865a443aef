// Drives the dashboard at `/` in headless Chromium against a running server.
//   node dashboard.mjs BASE SHOTS_DIR            the pages, with auth off
//   node dashboard.mjs BASE SHOTS_DIR TOKEN NARROW_TOKEN
//                                                the token field, with auth on
// Data is made through the HTTP API (Node's fetch); every request the page makes
// to a host other than the server is blocked and reported. Exits non-zero with the
// reasons on failure; screenshots go to SHOTS_DIR.
import http from 'node:http';
import { chromium } from 'playwright-core';

const [base, shots, token, narrowToken] = process.argv.slice(2);
const failures = [];
const check = (ok, why) => { if (!ok) failures.push(why); };

async function api(method, path, body, bearer = token) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
});

async function openPage(width = 1280, height = 900) {
  const page = await browser.newPage({ viewport: { width, height } });
  const origin = new URL(base).origin;
  page.foreign = [];
  page.errors = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    page.foreign.push(url);
    return route.abort();
  });
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(m.text()); });
  // Which request a failed resource load was: the console message does not say.
  page.failed = [];
  page.on('response', (r) => {
    if (r.status() >= 400) page.failed.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
  // Confirmations (reset, delete) are accepted.
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => page.errors.push(String(e)));
  return page;
}

async function step(name, fn) {
  try {
    await fn();
  } catch (err) {
    failures.push(`${name}: ${err.message.split('\n')[0]}`);
  }
}

const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

async function pages() {
  // Data, through the API.
  await api('POST', '/v1/topics', { name: 'orders', partitions: 3 });
  const orders = [];
  for (let i = 0; i < 30; i += 1) orders.push({ key: `c-${i % 3}`, value: { customer: `c-${i % 3}`, amount: i } });
  await api('POST', '/v1/topics/orders/records', { records: orders });
  await api('POST', '/v1/tables', { sql: 'CREATE TABLE per_customer AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer' });
  // The group reads 5 records and commits them: 25 left.
  const poll = await api('GET', '/v1/groups/billing/topics/orders/records?consumer=c1&limit=5');
  const offsets = {};
  for (const r of poll.records) offsets[r.partition] = Math.max(offsets[r.partition] ?? 0, r.offset + 1);
  await api('POST', '/v1/groups/billing/offsets', {
    consumer: 'c1',
    generation: poll.generation,
    offsets: Object.entries(offsets).map(([p, o]) => ({ topic: 'orders', partition: Number(p), offset: o })),
  });

  const page = await openPage();
  await step('overview lists the topic', async () => {
    await page.goto(`${base}/`, { waitUntil: 'load' });
    await page.locator('a[href="#/topics/orders"]').first().waitFor({ timeout: 10000 });
    await page.locator('a[href="#/groups/billing"]').first().waitFor({ timeout: 10000 });
    await page.locator('a[href="#/tables/per_customer"]').first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(2500); // a few readings for the charts
    await shot(page, 'dashboard-overview');
    const stats = await api('GET', '/v1/stats');
    const disk = page.locator('.card', { hasText: 'Disk free' });
    await disk.waitFor({ timeout: 10000 });
    const shown = await disk.locator('.value').innerText();
    check(/[0-9]/.test(shown) && !shown.includes('refused'), `disk free card shows "${shown}"`);
    check(stats.disk_free_bytes >= stats.min_free_disk_bytes, `stats: ${JSON.stringify([stats.disk_free_bytes, stats.min_free_disk_bytes])}`);
  });

  await step('live tail shows a record produced through the API', async () => {
    await page.goto(`${base}/#/topics/orders`);
    await page.locator('.badge', { hasText: 'live' }).first().waitFor({ timeout: 10000 });
    const marker = `tail-${Date.now()}`;
    await api('POST', '/v1/topics/orders/records', { key: 'tail-key', value: { marker } });
    await page.locator('.rec', { hasText: marker }).waitFor({ timeout: 10000 });
    const partitions = await page.locator('table tbody tr').count();
    check(partitions >= 3, `the topic page lists ${partitions} partition rows`);
    // From the start: the 30 earlier records and the new one.
    await page.selectOption('select[aria-label="Start from"]', 'earliest');
    await page.click('button:has-text("Go")');
    await page.waitForFunction(() => document.querySelectorAll('.rec').length >= 31, null, { timeout: 10000 });
    // Filtering by key leaves only that key's records.
    await page.fill('input[aria-label="Filter by key"]', 'c-2');
    const keys = await page.locator('.rec .key').allTextContents();
    check(keys.length === 10 && keys.every((k) => k === 'c-2'), `filter c-2 shows ${JSON.stringify(keys)}`);
    await page.fill('input[aria-label="Filter by key"]', '');
  });

  await step('the produce form writes a record the API returns', async () => {
    const marker = `form-${Date.now()}`;
    await page.fill('input[name="key"]', 'form-key');
    await page.fill('textarea[name="value"]', JSON.stringify({ marker, amount: 7 }));
    await page.click('button:has-text("Produce")');
    const result = page.locator('.result.ok', { hasText: 'Written to partition' });
    await result.waitFor({ timeout: 10000 });
    const [, p, o] = (await result.textContent()).match(/partition (\d+) at offset (\d+)/);
    const got = await api('GET', `/v1/topics/orders/partitions/${p}/records?offset=${o}&limit=1`);
    check(got.records[0]?.key === 'form-key' && got.records[0]?.value?.marker === marker,
      `the API returned ${JSON.stringify(got.records[0])} at ${p}/${o}`);
    await page.locator('.rec', { hasText: marker }).waitFor({ timeout: 10000 });
    await shot(page, 'dashboard-topic');
  });

  await step('the groups page shows the lag', async () => {
    const g = await api('GET', '/v1/groups/billing');
    const lag = g.topics.reduce((a, t) => a + t.lag, 0);
    await page.goto(`${base}/#/groups/billing`);
    await page.locator(`[data-lag="${lag}"]`).waitFor({ timeout: 10000 });
    check(lag > 0, `the group's lag is ${lag}`);
    await page.locator('td', { hasText: 'c1' }).first().waitFor({ timeout: 10000 });
    await shot(page, 'dashboard-group');
    // Reset to the end: refused while the member is live, done once it left; the
    // lag drops to 0.
    await page.selectOption('select[aria-label="To"]', 'latest');
    await page.click('button:has-text("Reset offsets")');
    await page.locator('.result.err', { hasText: 'live members' }).waitFor({ timeout: 10000 });
    await api('DELETE', '/v1/groups/billing/consumers/c1');
    await page.click('button:has-text("Reset offsets")');
    await page.locator('.result.ok', { hasText: 'Committed' }).waitFor({ timeout: 10000 });
    await page.locator('[data-lag="0"]').waitFor({ timeout: 10000 });
  });

  await step('a table made with the form', async () => {
    await page.goto(`${base}/#/tables`);
    await page.fill('textarea[name="definition"]', 'CREATE TABLE biggest AS SELECT customer, MAX(amount) AS top FROM orders GROUP BY customer');
    await page.click('button:has-text("Create table")');
    await page.locator('.result.ok', { hasText: 'Created biggest' }).waitFor({ timeout: 10000 });
    await page.locator('a[href="#/tables/biggest"]').first().waitFor({ timeout: 10000 });
    const t = await api('GET', '/v1/tables/biggest');
    check(t.definition.source === 'orders', `the table's definition is ${JSON.stringify(t.definition)}`);
  });

  await step('the tables page returns a row', async () => {
    await page.goto(`${base}/#/tables/per_customer`);
    await page.locator('.badge.live').first().waitFor({ timeout: 15000 });
    await page.fill('input[name="key"]', 'c-1');
    await page.click('button:has-text("Look up")');
    const row = page.locator('pre.row');
    await row.waitFor({ timeout: 10000 });
    const got = JSON.parse(await row.textContent());
    // c-1: amounts 1, 4, ..., 28 — ten orders summing to 145.
    check(got.n === 10 && got.total === 145, `row c-1 is ${JSON.stringify(got)}`);
    await api('POST', '/v1/topics/orders/records', { key: 'c-1', value: { customer: 'c-1', amount: 5 } });
    await page.locator('.row-change', { hasText: '"n":11' }).waitFor({ timeout: 10000 });
    // Over a cluster the page says which gateway folds the table: this one, the
    // only one here. On one machine it says nothing of it.
    const t = await api('GET', '/v1/tables/per_customer');
    if (t.written_here === undefined) {
      check(await page.locator('[data-written-here]').count() === 0, 'a single server shows which gateway folds the table');
    } else {
      await page.locator('[data-written-here="true"]').waitFor({ timeout: 15000 });
    }
    await shot(page, 'dashboard-table');
  });

  await step('a sink made with the form delivers, pauses, resumes and tests', async () => {
    const got = [];
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => { got.push({ id: req.headers['webhook-id'], body }); res.end('ok'); });
    });
    await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      await page.goto(`${base}/#/sinks`);
      await page.locator('.empty', { hasText: 'No sinks yet' }).waitFor({ timeout: 10000 });
      await page.fill('input[name="name"]', 'to-hook');
      await page.fill('input[name="topic"]', 'orders');
      await page.fill('input[name="url"]', `http://127.0.0.1:${receiver.address().port}/hook`);
      await page.selectOption('select[name="start"]', 'earliest');
      await page.click('button:has-text("Create sink")');
      await page.locator('.result.ok', { hasText: 'Created to-hook' }).waitFor({ timeout: 10000 });
      const secret = await page.locator('code.secret').textContent();
      check(secret.startsWith('whsec_'), `the secret shown is ${secret}`);
      await page.locator('a[href="#/sinks/to-hook"]').first().waitFor({ timeout: 10000 });
      await page.goto(`${base}/#/sinks/to-hook`);
      await page.locator('[data-state="running"]').waitFor({ timeout: 10000 });
      const end = (await api('GET', '/v1/topics/orders')).partitions.reduce((a, p) => a + p.end_offset, 0);
      for (let i = 0; i < 200 && got.length < end; i += 1) await page.waitForTimeout(50);
      check(got.length >= end, `the receiver got ${got.length} of ${end} records`);
      await page.locator('td', { hasText: '200' }).first().waitFor({ timeout: 10000 });
      await page.click('button:has-text("Pause")');
      await page.locator('[data-state="paused"]').waitFor({ timeout: 10000 });
      await page.click('button:has-text("Resume")');
      await page.locator('[data-state="running"]').waitFor({ timeout: 10000 });
      await page.click('button:has-text("Send a test")');
      await page.locator('.result.ok', { hasText: 'answered 200' }).waitFor({ timeout: 10000 });
      check(got.some((g) => g.body.includes('sluice.test')), 'the test event reached the receiver');
      await shot(page, 'dashboard-sink');
    } finally {
      receiver.close();
    }
  });

  await step('a processor made with the form derives its topic', async () => {
    await page.goto(`${base}/#/processors`);
    await page.locator('.empty', { hasText: 'No processors yet' }).waitFor({ timeout: 10000 });
    await page.fill('textarea[name="sql"]', 'CREATE STREAM orders_copy AS SELECT * FROM orders');
    await page.click('button:has-text("Create processor")');
    await page.locator('.result.ok', { hasText: 'Created orders_copy' }).waitFor({ timeout: 10000 });
    await page.locator('a[href="#/processors/orders_copy"]').first().waitFor({ timeout: 10000 });
    await page.goto(`${base}/#/processors/orders_copy`);
    await page.locator('[data-state="running"]').waitFor({ timeout: 10000 });
    const ends = async (t) => (await api('GET', `/v1/topics/${t}`)).partitions.reduce((a, p) => a + p.end_offset, 0);
    const want = await ends('orders');
    let have = 0;
    for (let i = 0; i < 200 && have < want; i += 1) {
      have = await ends('orders_copy');
      if (have < want) await page.waitForTimeout(50);
    }
    check(have === want, `the processor wrote ${have} of ${want} records`);
    await page.locator('a[href="#/topics/orders_copy"]').first().waitFor({ timeout: 10000 });
    await shot(page, 'dashboard-processor');
  });

  await step('a source made with the form takes a signed webhook', async () => {
    await page.goto(`${base}/#/sources`);
    await page.locator('.empty', { hasText: 'No sources yet' }).waitFor({ timeout: 10000 });
    await page.fill('input[name="name"]', 'inbound');
    await page.fill('input[name="topic"]', 'orders');
    await page.selectOption('select[name="scheme"]', 'token');
    await page.fill('input[name="secret"]', 'sesame');
    await page.click('button:has-text("Create source")');
    await page.locator('.result.ok', { hasText: 'Created inbound' }).waitFor({ timeout: 10000 });
    const before = (await api('GET', '/v1/topics/orders')).partitions.reduce((a, p) => a + p.end_offset, 0);
    const res = await fetch(`${base}/v1/hooks/inbound`, {
      method: 'POST', headers: { authorization: 'Bearer sesame', 'content-type': 'application/json' }, body: '{"from":"hook"}',
    });
    check(res.status === 200, `the hook answered ${res.status}`);
    const after = (await api('GET', '/v1/topics/orders')).partitions.reduce((a, p) => a + p.end_offset, 0);
    check(after === before + 1, `the hook wrote ${after - before} records`);
    await page.goto(`${base}/#/sources/inbound`);
    await page.locator('[data-hook="/v1/hooks/inbound"]').waitFor({ timeout: 10000 });
    await page.locator('dd', { hasText: /^1$/ }).first().waitFor({ timeout: 10000 });
    await shot(page, 'dashboard-source');
  });

  await step('phone width', async () => {
    const phone = await openPage(390, 844);
    await phone.goto(`${base}/`);
    await phone.locator('a[href="#/topics/orders"]').first().waitFor({ timeout: 10000 });
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `the overview is ${overflow}px wider than a phone screen`);
    await shot(phone, 'dashboard-phone');
    check(!phone.errors.length, `console errors at phone width: ${phone.errors.join(' | ')}`);
    await phone.close();
  });

  check(!page.foreign.length, `requests to other hosts: ${page.foreign.join(', ')}`);
  // The refused reset (409 while the member was live) is reported as a failed
  // resource load; anything else is a real error.
  const other = page.errors.filter((e) => !/status of 409/.test(e));
  check(!other.length, `console errors: ${other.join(' | ')} (answers of 400 and above: ${page.failed.join(' | ')})`);
}

async function withAuth() {
  await api('POST', '/v1/topics', { name: 'secured', partitions: 1 });
  await api('POST', '/v1/topics', { name: 'hidden', partitions: 1 });
  const page = await openPage();
  await step('without a token the page says one is needed', async () => {
    await page.goto(`${base}/`);
    await page.locator('#banner', { hasText: 'needs a token' }).waitFor({ timeout: 10000 });
  });
  await step('with a token it shows what the token covers', async () => {
    await page.fill('#token', narrowToken);
    await page.click('#token-form button[type="submit"]');
    await page.locator('a[href="#/topics/secured"]').first().waitFor({ timeout: 10000 });
    check(await page.locator('a[href="#/topics/hidden"]').count() === 0, 'a topic the token does not cover is listed');
    const kept = await page.evaluate(() => sessionStorage.getItem('sluice.token'));
    check(kept === narrowToken, 'the token is not kept in session storage');
  });
  await step('a forbidden action is explained', async () => {
    await page.goto(`${base}/#/topics`);
    await page.fill('input[name="name"]', 'not-allowed');
    await page.click('button:has-text("Create topic")');
    await page.locator('.result.err', { hasText: 'does not allow' }).waitFor({ timeout: 30000 });
    await shot(page, 'dashboard-auth');
  });
  check(!page.foreign.length, `requests to other hosts: ${page.foreign.join(', ')}`);
  // The browser reports each refused request (401 before the token, 403 for the
  // create) as a failed resource load; anything else is a real error.
  const other = page.errors.filter((e) => !/status of 40[13]/.test(e));
  check(!other.length, `console errors: ${other.join(' | ')}`);
}

try {
  if (token) await withAuth(); else await pages();
} catch (err) {
  failures.push(String(err));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log('dashboard ok');
