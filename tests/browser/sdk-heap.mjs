// The JavaScript client's memory over a long subscription in headless Chromium:
//   node sdk-heap.mjs BASE TOPIC SECONDS
// A page imports /sdk/sluice.js and follows TOPIC (which the caller keeps
// producing to), keeping the last 100 records as a page would show them. After
// a warm-up (a tenth of the time) and at the end the heap is measured after a
// garbage collection. Prints one JSON line: records received, heap then and now.
import { chromium } from 'playwright-core';

const [base, topic, seconds] = process.argv.slice(2);
const total = Number(seconds) * 1000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  const cdp = await page.context().newCDPSession(page);
  const heap = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    return (await cdp.send('Runtime.getHeapUsage')).usedSize;
  };
  await page.evaluate(async (topic) => {
    const { Sluice } = await import('/sdk/sluice.js');
    window.count = 0;
    window.shown = [];
    new Sluice().subscribe({ topic, from: 'latest' }, {
      onRecords(records) {
        window.count += records.length;
        window.shown.push(...records);
        if (window.shown.length > 100) window.shown.splice(0, window.shown.length - 100);
      },
    });
  }, topic);
  await page.waitForTimeout(total / 10);
  const first = await heap();
  const firstCount = await page.evaluate(() => window.count);
  let max = first;
  const end = Date.now() + (total * 9) / 10;
  while (Date.now() < end) {
    await page.waitForTimeout(Math.min(30000, Math.max(0, end - Date.now())));
    max = Math.max(max, await heap());
  }
  const last = await heap();
  const count = await page.evaluate(() => window.count);
  console.log(JSON.stringify({ records: count, measured_records: count - firstCount, heap_start: first, heap_end: last, heap_max: max }));
} finally {
  await browser.close();
}
