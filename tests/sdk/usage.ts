// A typed use of the client: `tsc --noEmit` checks it against sluice.d.ts.
import { Sluice, SluiceError, type Batch, type FetchedRecord, type RecordOffset } from '../../web/sdk/sluice.js';

async function main(): Promise<void> {
  const sluice = new Sluice({ url: 'http://localhost:8080', getToken: async () => 'token' });
  const offsets: RecordOffset[] = await sluice.produce('orders', { key: 'o1', value: { amount: 12 } });
  await sluice.produce('orders', [{ value: 1 }, { value_base64: 'AA==', headers: { source: 'web' } }]);
  const page = await sluice.fetch('orders', 0, { offset: offsets[0].offset, maxRecords: 10 });
  const first: FetchedRecord | undefined = page.records[0];
  const stop = new AbortController();
  for await (const batch of sluice.consume({ group: 'billing', topic: 'orders', signal: stop.signal })) {
    const b: Batch = batch;
    for (const r of b.records) console.log(r.partition, r.offset, r.value);
    await b.commit();
  }
  const sub = sluice.subscribe({ topic: 'orders', from: { offset: { '0': 10 } } }, {
    onRecords(records, { partition }) { console.log(partition, records.length); },
    onEpochChange(before, now) { console.log(before, now); },
  });
  sub.close();
  sluice.subscribe({ table: 'customers', keyPrefix: 'eu-' }, { onRow: (key, row) => console.log(key, row) });
  const row = await sluice.tables.get('customers', 'c1', { after: offsets });
  for await (const r of sluice.tables.browse('customers', { prefix: 'eu-' })) console.log(r.key, r.row);
  try {
    await sluice.produce('missing', { value: 1 });
  } catch (err) {
    if (err instanceof SluiceError && err.code === 'topic_not_found') console.log(err.status, row, first);
  }
}

void main();
