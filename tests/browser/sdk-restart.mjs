// A page that imports the gateway's /sdk/sluice.js follows a topic while the
// server restarts.
//   node sdk-restart.mjs BASE
// Prints "restart now" once the page is subscribed and has seen the first
// records, then waits for a line "restarted" on stdin (the harness kills the
// server, starts it again and points BASE at it). Meanwhile the page produces a
// record, retried across the restart. Exits non-zero with the reasons on failure.
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const [base] = process.argv.slice(2);
const failures = [];
const check = (ok, why) => { if (!ok) failures.push(why); };
const lines = readline.createInterface({ input: process.stdin });
const restarted = new Promise((resolve) => lines.on('line', (l) => { if (l.trim() === 'restarted') resolve(); }));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/`);
  await page.evaluate(async () => {
    const { Sluice } = await import('/sdk/sluice.js');
    const sluice = new Sluice({ retries: 30 });
    window.sluice = sluice;
    await sluice.request('POST', '/v1/topics', { body: { name: 'live', partitions: 2 } });
    window.got = [];
    window.epochChanged = false;
    window.sub = sluice.subscribe({ topic: 'live', from: 'earliest' }, {
      onRecords: (rs) => { window.got.push(...rs); },
      onEpochChange: () => { window.epochChanged = true; },
    });
    // The same over Server-Sent Events, as where there is no WebSocket.
    window.gotSse = [];
    window.subSse = new Sluice({ WebSocket: null }).subscribe({ topic: 'live', from: 'earliest' }, {
      onRecords: (rs) => { window.gotSse.push(...rs); },
    });
    await sluice.produce('live', Array.from({ length: 20 }, (_, i) => ({ key: `k${i % 5}`, value: i })));
  });
  await page.waitForFunction(() => window.got.length === 20 && window.gotSse.length === 20, null, { timeout: 20000 });
  console.log('restart now');
  // Produced while the server goes down and comes back: retried until it lands.
  await page.evaluate(() => {
    window.during = window.sluice.produce('live', { key: 'k0', value: 'during' })
      .then((o) => { window.duringOffsets = o; }, (e) => { window.duringError = String(e); });
  });
  await restarted;
  await page.evaluate(() => window.during);
  check(!(await page.evaluate(() => window.duringError)), `the produce across the restart failed: ${await page.evaluate(() => window.duringError)}`);
  await page.evaluate(() => window.sluice.produce('live', Array.from({ length: 20 }, (_, i) => ({ key: `k${i % 5}`, value: 20 + i }))));
  await page.waitForFunction(() => window.got.length >= 41 && window.gotSse.length >= 41, null, { timeout: 30000 }).catch(() => {});
  // Let anything extra arrive before counting.
  await page.waitForTimeout(500);
  for (const [name, list] of [['WebSocket', 'got'], ['SSE', 'gotSse']]) {
    const got = await page.evaluate((l) => window[l].map((r) => [r.partition, r.offset, r.value]), list);
    check(got.length === 41, `over ${name} the page saw ${got.length} records, not 41`);
    for (const p of [0, 1]) {
      const offsets = got.filter((r) => r[0] === p).map((r) => r[1]);
      check(offsets.every((o, i) => o === i), `over ${name}, partition ${p} offsets ${offsets.join(',')}: a gap or a duplicate`);
    }
    check(got.filter((r) => r[2] === 'during').length === 1, `over ${name} the produce across the restart was seen other than once`);
  }
  let stored = 0;
  for (const p of [0, 1]) {
    const r = await page.evaluate(async (p) => (await window.sluice.fetch('live', p, { offset: 0, maxRecords: 1000 })).records.length, p);
    stored += r;
  }
  check(stored === 41, `the topic holds ${stored} records, not 41`);
  check(!(await page.evaluate(() => window.epochChanged)), 'a restart on the same data was taken for an epoch change');
  check(!errors.length, `page errors: ${errors.join(' | ')}`);
  await page.evaluate(() => { window.sub.close(); window.subSse.close(); });
} catch (err) {
  failures.push(String(err));
} finally {
  await browser.close();
  lines.close();
}
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log('sdk restart ok');
