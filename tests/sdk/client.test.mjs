// The JavaScript client against the real binary (SLUICE_URL), with Node's test
// runner: produce, consume, subscribe, tables, errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Sluice, SluiceError } from '../../web/sdk/sluice.js';

const url = process.env.SLUICE_URL;
assert.ok(url, 'SLUICE_URL names the server under test');
const sluice = new Sluice({ url });
const admin = (method, path, body) => sluice.request(method, path, { body });
const topic = async (name, partitions = 1) => admin('POST', '/v1/topics', { name, partitions });
const until = async (what, check, ms = 20000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('produce one, a batch and NDJSON; a retry with the same key lands once', async () => {
  await topic('p1', 2);
  const [one] = await sluice.produce('p1', { key: 'a', value: { n: 1 } });
  assert.equal(typeof one.offset, 'number');
  const many = await sluice.produce('p1', [{ key: 'a', value: 2 }, { key: 'b', value: 3 }]);
  assert.equal(many.length, 2);
  const nd = await sluice.produceNdjson('p1', [{ key: 'c', value: 4 }, '{"key":"d","value":5}']);
  assert.equal(nd.length, 2);
  const first = await sluice.produce('p1', { value: 'once' }, { idempotencyKey: 'fixed-key' });
  const again = await sluice.produce('p1', { value: 'once' }, { idempotencyKey: 'fixed-key' });
  assert.deepEqual(again, first);
  let total = 0;
  for (const p of [0, 1]) total += (await sluice.fetch('p1', p, { offset: 0 })).records.length;
  assert.equal(total, 6);
});

test('a group consumer commits after each batch and stops on abort', async () => {
  await topic('c1', 3);
  const records = Array.from({ length: 30 }, (_, i) => ({ key: `k${i}`, value: i }));
  await sluice.produce('c1', records);
  const seen = [];
  const stop = new AbortController();
  for await (const batch of sluice.consume({ group: 'g1', topic: 'c1', consumer: 'w1', waitMs: 200, signal: stop.signal })) {
    seen.push(...batch.records.map((r) => r.value));
    if (seen.length >= 30) stop.abort();
  }
  assert.deepEqual([...seen].sort((a, b) => a - b), records.map((r) => r.value));
  // Committed: the group has nothing left for another member.
  const left = [];
  const stop2 = new AbortController();
  setTimeout(() => stop2.abort(), 1500);
  for await (const batch of sluice.consume({ group: 'g1', topic: 'c1', consumer: 'w2', waitMs: 200, signal: stop2.signal })) {
    left.push(...batch.records);
  }
  assert.deepEqual(left, []);
});

test('a topic subscription delivers every record once, in order per partition', async () => {
  await topic('s1', 2);
  await sluice.produce('s1', Array.from({ length: 10 }, (_, i) => ({ key: `k${i % 3}`, value: i })));
  const got = [];
  const sub = sluice.subscribe({ topic: 's1', from: 'earliest' }, { onRecords: (rs) => { got.push(...rs); } });
  await sluice.produce('s1', Array.from({ length: 10 }, (_, i) => ({ key: `k${i % 3}`, value: 10 + i })));
  await until('20 records', () => got.length >= 20);
  sub.close();
  assert.equal(got.length, 20);
  for (const p of [0, 1]) {
    const offsets = got.filter((r) => r.partition === p).map((r) => r.offset);
    assert.deepEqual(offsets, offsets.map((_, i) => i), `partition ${p}`);
  }
  assert.equal(sub.positions.get(0) + sub.positions.get(1), 20);
});

test('a group subscription and a table subscription', async () => {
  await topic('s2', 2);
  await admin('POST', '/v1/tables', { name: 'people', source: 's2', key: 'key' });
  const rows = new Map();
  const tableSub = sluice.subscribe({ table: 'people' }, { onRow: (k, row) => { rows.set(k, row); } });
  const got = [];
  const groupSub = sluice.subscribe({ topic: 's2', group: 'gs', reset: 'earliest' }, { onRecords: (rs) => { got.push(...rs); } });
  await new Promise((r) => setTimeout(r, 300));
  await sluice.produce('s2', [{ key: 'ada', value: { name: 'Ada' } }, { key: 'bob', value: { name: 'Bob' } }]);
  await until('rows', () => rows.size === 2);
  await until('group records', () => got.length === 2);
  assert.deepEqual(rows.get('ada'), { name: 'Ada' });
  tableSub.close();
  groupSub.close();
});

test('tables: read your writes, watch a row, browse by prefix', async () => {
  await topic('t1', 2);
  await admin('POST', '/v1/tables', { name: 'accounts', source: 't1', key: 'key' });
  const offsets = await sluice.produce('t1', [{ key: 'acct-1', value: { balance: 10 } }, { key: 'acct-2', value: { balance: 5 } }, { key: 'other', value: {} }]);
  assert.deepEqual(await sluice.tables.get('accounts', 'acct-1', { after: offsets }), { balance: 10 });
  assert.equal(await sluice.tables.get('accounts', 'nobody'), null);
  const stop = new AbortController();
  const seen = [];
  const watching = (async () => {
    for await (const row of sluice.tables.watch('accounts', 'acct-1', { waitMs: 2000, signal: stop.signal })) {
      seen.push(row);
      if (seen.length === 2) stop.abort();
    }
  })();
  await until('the first row', () => seen.length === 1);
  await sluice.produce('t1', { key: 'acct-1', value: { balance: 11 } });
  await watching;
  assert.deepEqual(seen, [{ balance: 10 }, { balance: 11 }]);
  const keys = [];
  for await (const r of sluice.tables.browse('accounts', { prefix: 'acct-', limit: 1 })) keys.push(r.key);
  assert.deepEqual(keys, ['acct-1', 'acct-2']);
});

test('errors are typed by their problem code', async () => {
  await assert.rejects(sluice.produce('nowhere', { value: 1 }), (err) => {
    assert.ok(err instanceof SluiceError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'topic_not_found');
    return true;
  });
  await assert.rejects(sluice.fetch('nowhere', 0), { code: 'topic_not_found' });
});
