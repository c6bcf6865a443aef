// The client's tokens against a server with auth on (SLUICE_URL, SLUICE_JWT_SECRET):
// a provider asked again before expiry and after a 401.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { Sluice, SluiceError } from '../../web/sdk/sluice.js';

const url = process.env.SLUICE_URL;
const secret = process.env.SLUICE_JWT_SECRET;
assert.ok(url && secret, 'SLUICE_URL and SLUICE_JWT_SECRET name the server under test');

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
function token(claims, key = secret) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  const sig = createHmac('sha256', key).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const now = () => Math.floor(Date.now() / 1000);
const admin = (exp) => token({ sub: 'app', exp, sluice: { admin: true } });

test('no token: a typed 401', async () => {
  const client = new Sluice({ url });
  await assert.rejects(client.request('GET', '/v1/topics'), (err) => {
    assert.ok(err instanceof SluiceError);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'unauthorized');
    return true;
  });
});

test('a provider is asked again after a 401 and before expiry', async () => {
  let asked = 0;
  const client = new Sluice({
    url,
    // First a token the server refuses, then a good one for a minute.
    getToken: () => { asked += 1; return asked === 1 ? token({ sub: 'app', exp: now() + 600 }, 'wrong') : admin(now() + 60); },
  });
  await client.request('POST', '/v1/topics', { body: { name: 'authed', partitions: 1 } });
  assert.equal(asked, 2, 'asked again after the 401');
  await client.produce('authed', { value: 1 });
  assert.equal(asked, 2, 'a token good for a minute is kept');
  // Tokens within 30 s of expiry are renewed before they are used.
  let short = 0;
  const renewing = new Sluice({ url, getToken: () => { short += 1; return admin(now() + 20); } });
  await renewing.produce('authed', { value: 2 });
  await renewing.produce('authed', { value: 3 });
  assert.equal(short, 2, 'asked before each use of a token about to expire');
  const sub = client.subscribe({ topic: 'authed', from: 'earliest' }, {});
  const got = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no records over the authed socket')), 10000);
    sub.handlers.onRecords = (rs) => { clearTimeout(t); resolve(rs); };
  });
  sub.close();
  assert.ok(got.length >= 1);
});
