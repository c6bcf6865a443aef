// The client's types against the OpenAPI document: every field the client
// reads or sends, and every field its declarations promise, is in the schema
// it comes from. Renaming or removing one in the API fails this test.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const root = new URL('../../', import.meta.url);
const doc = JSON.parse(readFileSync(new URL('openapi/openapi.json', root), 'utf8'));
const dts = readFileSync(new URL('web/sdk/sluice.d.ts', root), 'utf8');
const schemas = doc.components.schemas;

// Declared interface -> the schema whose fields it mirrors.
const mirrors = {
  FetchedRecord: 'FetchedRecord',
  RecordOffset: 'RecordOffset',
  FetchResponse: 'FetchResponse',
  Problem: 'Problem',
};

// Fields the client's code uses, by the schema they belong to.
const used = {
  ProduceResponse: ['offsets'],
  PollResponse: ['records', 'generation', 'assignment'],
  CommitRequest: ['consumer', 'generation', 'offsets'],
  TopicOffset: ['topic', 'partition', 'offset'],
  RowResponse: ['row'],
  RowPage: ['rows', 'next'],
  Row: ['key', 'row'],
  SubscribedFrame: ['id', 'log_epoch', 'positions'],
  SubscribeFrame: ['op', 'id', 'topic', 'table', 'from', 'partitions', 'group', 'consumer', 'reset', 'key_prefix'],
  CommitFrame: ['op', 'id', 'offsets'],
  ProduceRecord: ['key', 'value', 'value_base64', 'headers', 'partition', 'timestamp'],
};

function fieldsOf(name) {
  const body = dts.match(new RegExp(`export interface ${name} \\{([\\s\\S]*?)\\n\\}`));
  assert.ok(body, `sluice.d.ts declares ${name}`);
  return [...body[1].matchAll(/^ {2}([a-z_]+)\??:/gm)].map((m) => m[1]);
}

function properties(schema) {
  const s = schemas[schema];
  assert.ok(s, `the OpenAPI document defines ${schema}`);
  const all = { ...(s.properties || {}) };
  for (const part of s.allOf || s.oneOf || []) {
    const ref = part.$ref ? schemas[part.$ref.split('/').pop()] : part;
    Object.assign(all, ref.properties || {});
  }
  return Object.keys(all);
}

test('declared types mirror their schemas', () => {
  for (const [iface, schema] of Object.entries(mirrors)) {
    const have = properties(schema);
    for (const f of fieldsOf(iface)) assert.ok(have.includes(f), `${iface}.${f} is not in ${schema}: ${have}`);
  }
  // A record to produce has the fields of a produced record.
  const produce = properties('ProduceRecord');
  for (const f of fieldsOf('NewRecord')) assert.ok(produce.includes(f), `NewRecord.${f}`);
});

test('fields the client uses exist', () => {
  for (const [schema, fields] of Object.entries(used)) {
    const have = properties(schema);
    for (const f of fields) assert.ok(have.includes(f), `${schema}.${f} is not in the document: ${have}`);
  }
});
