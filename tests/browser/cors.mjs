// Calls the API from a page of another origin in headless Chromium, as a browser
// app would: with a bearer token, a JSON body, an idempotency key and a CloudEvents
// binary-mode header, each of which needs a CORS preflight.
//   node cors.mjs BASE TOKEN PORT
// The server runs with --cors-origin http://localhost:PORT. This script serves an
// empty page on 127.0.0.1:PORT, which the browser opens as http://localhost:PORT
// (allowed) and as http://127.0.0.1:PORT (another origin, not allowed); both are
// loopback, as the server is, so only CORS decides. Exits non-zero with the
// reasons on failure.
import http from 'node:http';
import { chromium } from 'playwright-core';

const [base, token, port] = process.argv.slice(2);
const failures = [];
const check = (ok, why) => { if (!ok) failures.push(why); };

const pages = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><title>app</title>');
});
await new Promise((resolve) => pages.listen(Number(port), '127.0.0.1', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
});

// Chromium still lets `Access-Control-Allow-Headers: *` cover Authorization, with
// a deprecation issue (the Fetch standard, and other browsers, do not): any such
// issue counts as a failure, so the answer must name the headers.
const issues = [];
async function pageAt(origin) {
  const page = await browser.newPage();
  const cdp = await page.context().newCDPSession(page);
  cdp.on('Audits.issueAdded', ({ issue }) => issues.push(issue));
  await cdp.send('Audits.enable');
  await page.goto(`${origin}/`);
  return page;
}

// What the page's fetch calls give: status and body, or the error a blocked call
// throws.
const calls = async (page) => page.evaluate(async ({ base, token }) => {
  const auth = { authorization: `Bearer ${token}` };
  const call = async (path, init) => {
    try {
      const res = await fetch(base + path, init);
      return { status: res.status, body: await res.text(), etag: res.headers.get('etag') };
    } catch (err) {
      return { error: String(err) };
    }
  };
  return {
    create: await call('/v1/topics', {
      method: 'POST', headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'web', partitions: 1 }),
    }),
    produce: await call('/v1/topics/web/records', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'idempotency-key': 'k-1' },
      body: JSON.stringify({ key: 'a', value: { n: 1 } }),
    }),
    event: await call('/v1/topics/web/records', {
      method: 'POST',
      headers: {
        ...auth, 'content-type': 'application/json', 'ce-specversion': '1.0', 'ce-id': 'e-1',
        'ce-source': '/app', 'ce-type': 'clicked',
      },
      body: JSON.stringify({ n: 2 }),
    }),
    fetch: await call('/v1/topics/web/partitions/0/records?offset=0', { headers: auth }),
  };
}, { base, token });

const app = await calls(await pageAt(`http://localhost:${port}`));
check(app.create.status === 201, `create from the allowed origin: ${JSON.stringify(app.create)}`);
check(app.produce.status === 200, `produce with Idempotency-Key: ${JSON.stringify(app.produce)}`);
check(app.event.status === 200, `CloudEvent in binary mode: ${JSON.stringify(app.event)}`);
check(app.fetch.status === 200, `fetch with a token: ${JSON.stringify(app.fetch)}`);
if (app.fetch.status === 200) {
  const records = JSON.parse(app.fetch.body).records;
  check(records.length === 2, `two records were written: ${app.fetch.body}`);
}

const wildcard = issues.filter((i) => JSON.stringify(i).includes('AuthorizationCoveredByWildcard'));
check(wildcard.length === 0, `Authorization passed only by the wildcard: ${JSON.stringify(wildcard)}`);

const evil = await calls(await pageAt(`http://127.0.0.1:${port}`));
for (const [name, r] of Object.entries(evil)) {
  check(r.error !== undefined, `${name} from an origin not allowed was not blocked: ${JSON.stringify(r)}`);
}

await browser.close();
pages.close();
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log('cors: ok');
