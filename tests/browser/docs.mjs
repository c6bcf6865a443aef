// Opens /docs in headless Chromium against a running server (argv[2] is its base
// URL), blocks and records every request to a host other than the loopback server,
// and checks that the page renders the API with no console errors. Writes a
// screenshot to argv[3]. Exits non-zero with the reason on failure.
import { chromium } from 'playwright-core';

const base = process.argv[2];
const shot = process.argv[3];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
});
const failures = [];
try {
  const page = await browser.newPage();
  const origin = new URL(base).origin;
  const foreign = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(origin) || url.startsWith('data:') || url.startsWith('blob:')) {
      return route.continue();
    }
    foreign.push(url);
    return route.abort();
  });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/docs/`, { waitUntil: 'networkidle' });
  await page.waitForSelector('.swagger-ui .info .title', { timeout: 20000 });
  const title = await page.textContent('.swagger-ui .info .title');
  if (!title.includes('Sluice')) failures.push(`title is ${JSON.stringify(title)}`);
  const ops = await page.locator('.opblock').count();
  if (ops < 10) failures.push(`only ${ops} operations rendered`);
  if (foreign.length) failures.push(`requests to other hosts: ${foreign.join(', ')}`);
  if (errors.length) failures.push(`console errors: ${errors.join(' | ')}`);
  if (shot) await page.screenshot({ path: shot, fullPage: false });
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log('docs page ok');
