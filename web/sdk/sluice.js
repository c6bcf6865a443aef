// Sluice's JavaScript client: one ES module, no dependencies, for browsers,
// Node >= 20 and React Native (fetch and WebSocket). Served by the gateway at
// /sdk/sluice.js; types in sluice.d.ts.
//
//   import { Sluice } from '/sdk/sluice.js';
//   const sluice = new Sluice({ url: 'https://gateway.example.com', token });
//   await sluice.produce('orders', { key: 'o1', value: { amount: 12 } });
//   for await (const batch of sluice.consume({ group: 'billing', topic: 'orders', consumer: 'w1' })) { ... }
//   const sub = sluice.subscribe({ topic: 'orders', from: 'latest' }, { onRecords(records) { ... } });

/** An answer of the API that is not a success: its problem `code`, status and detail. */
export class SluiceError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = 'SluiceError';
    this.status = status;
    this.code = problem?.code || (status ? `http_${status}` : 'network_error');
    this.problem = problem || null;
  }
}

const RETRY_STATUS = new Set([429, 502, 503, 504]);

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  if (signal?.aborted) { reject(signal.reason); return; }
  const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
  const onAbort = () => { clearTimeout(t); reject(signal.reason); };
  signal?.addEventListener('abort', onAbort, { once: true });
});

const newKey = () => (globalThis.crypto?.randomUUID
  ? globalThis.crypto.randomUUID()
  : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`);

// Seconds until a JWT expires (Infinity when it says nothing).
function expiresIn(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const { exp } = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof exp === 'number' ? exp - Date.now() / 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

// `from` of a subscription as the positions it resumes from.
const fromPositions = (positions) => ({ offset: Object.fromEntries(positions) });

export class Sluice {
  /**
   * @param {object} options see sluice.d.ts
   */
  constructor(options = {}) {
    this.url = (options.url || globalThis.location?.origin || '').replace(/\/$/, '');
    this.token = options.token || null;
    this.getToken = options.getToken || null;
    this.retries = options.retries ?? 6;
    this.fetchImpl = options.fetch || globalThis.fetch.bind(globalThis);
    this.WebSocketImpl = options.WebSocket === undefined ? globalThis.WebSocket : options.WebSocket;
    this.EventSourceImpl = options.EventSource === undefined ? globalThis.EventSource : options.EventSource;
    this.tables = new Tables(this);
  }

  // The bearer token to send, asked of the provider again when it is about
  // to expire or the server refused it.
  async bearer(refresh = false) {
    if (this.getToken && (refresh || !this.token || expiresIn(this.token) < 30)) {
      this.token = await this.getToken();
    }
    return this.token;
  }

  /**
   * One API call: retried with backoff on 429, 502-504 and network errors
   * (honouring Retry-After) when `retry` is set, asked again with a new token
   * after a 401. Answers the parsed body (or null), or throws a SluiceError.
   */
  async request(method, path, { body, headers = {}, retry = false, signal, raw = false } = {}) {
    let refreshed = false;
    for (let attempt = 0; ; attempt += 1) {
      const h = { ...headers };
      const token = await this.bearer();
      if (token) h.authorization = `Bearer ${token}`;
      let text = body;
      if (body !== undefined && typeof body !== 'string') {
        text = JSON.stringify(body);
        h['content-type'] = 'application/json';
      }
      let res;
      try {
        res = await this.fetchImpl(this.url + path, { method, headers: h, body: text, signal });
      } catch (err) {
        if (signal?.aborted) throw err;
        if (!retry || attempt >= this.retries) throw new SluiceError(0, { detail: String(err?.message || err) });
        await sleep(backoff(attempt), signal);
        continue;
      }
      if (res.status === 401 && this.getToken && !refreshed) {
        refreshed = true;
        await this.bearer(true);
        continue;
      }
      if (retry && RETRY_STATUS.has(res.status) && attempt < this.retries) {
        const after = Number(res.headers.get('retry-after'));
        await res.arrayBuffer().catch(() => {});
        await sleep(Number.isFinite(after) && after > 0 ? after * 1000 : backoff(attempt), signal);
        continue;
      }
      if (raw) return res;
      const out = await res.text();
      const parsed = out ? safeJson(out) : null;
      if (!res.ok && res.status !== 304) throw new SluiceError(res.status, parsed);
      return parsed;
    }
  }

  /**
   * Produces one record, or several in one request. An idempotency key is made
   * per call, so every retry is safe: a retry of what was written answers the
   * first offsets. Answers `[{partition, offset}]`.
   */
  async produce(topic, records, { idempotencyKey = newKey(), signal } = {}) {
    const list = Array.isArray(records) ? records : [records];
    const r = await this.request('POST', `/v1/topics/${enc(topic)}/records`, {
      body: { records: list }, headers: { 'idempotency-key': idempotencyKey }, retry: true, signal,
    });
    return r.offsets;
  }

  /** Produces records as NDJSON (one JSON record per line), retried safely. */
  async produceNdjson(topic, records, { idempotencyKey = newKey(), signal } = {}) {
    const lines = records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n');
    const r = await this.request('POST', `/v1/topics/${enc(topic)}/records`, {
      body: lines, headers: { 'content-type': 'application/x-ndjson', 'idempotency-key': idempotencyKey }, retry: true, signal,
    });
    return r.offsets;
  }

  /** Reads a partition from an offset (waiting up to `waitMs` for records). */
  fetch(topic, partition, { offset, maxRecords, waitMs, signal } = {}) {
    const q = query({ offset, max_records: maxRecords, wait_ms: waitMs });
    return this.request('GET', `/v1/topics/${enc(topic)}/partitions/${partition}/records${q}`, { retry: true, signal });
  }

  /**
   * A group consumer: yields each poll's records (`{records, generation,
   * assignment}`, empty polls skipped) and commits them once the loop body
   * returns (at the next poll), or on `batch.commit()`. Stops when `signal`
   * aborts; then the last batch is committed if its body returned.
   */
  async* consume({ group, topic, consumer = `c-${newKey()}`, limit, waitMs = 10000, signal } = {}) {
    const path = `/v1/groups/${enc(group)}/topics/${enc(topic)}/records`;
    let pending = null;
    try {
      while (!signal?.aborted) {
        if (pending) await pending.commit();
        pending = null;
        let poll;
        try {
          poll = await this.request('GET', path + query({ consumer, limit, wait_ms: waitMs }), { retry: true, signal });
        } catch (err) {
          if (signal?.aborted) return;
          throw err;
        }
        if (!poll.records.length) continue;
        const batch = new Batch(this, group, topic, consumer, poll);
        pending = batch;
        yield batch;
      }
    } finally {
      if (pending && !pending.failed) await pending.commit().catch(() => {});
    }
  }

  /**
   * Follows a topic (from `earliest`, `latest`, offsets or a time), a group's
   * share of one, or a table's row changes, over WebSocket (Server-Sent Events
   * where there is no WebSocket, for topics). Reconnects with backoff and resumes
   * after the last record delivered, so nothing is missed or repeated; a change
   * of the server's epoch (its data replaced) stops the subscription and is
   * reported to `onEpochChange` instead of reading again from the start.
   */
  subscribe(spec, handlers = {}) {
    return new Subscription(this, spec, handlers);
  }
}

function backoff(attempt) {
  const base = Math.min(5000, 100 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

const enc = encodeURIComponent;
const safeJson = (t) => { try { return JSON.parse(t); } catch { return { detail: t }; } };

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

class Batch {
  constructor(client, group, topic, consumer, poll) {
    this.client = client;
    this.group = group;
    this.topic = topic;
    this.consumer = consumer;
    this.records = poll.records;
    this.generation = poll.generation;
    this.assignment = poll.assignment;
    this.committed = false;
    this.failed = false;
  }

  /** Commits the offsets after this batch's records (once). */
  async commit() {
    if (this.committed) return;
    const next = new Map();
    for (const r of this.records) next.set(r.partition, Math.max(next.get(r.partition) ?? 0, r.offset + 1));
    const offsets = [...next].map(([partition, offset]) => ({ topic: this.topic, partition, offset }));
    try {
      await this.client.request('POST', `/v1/groups/${enc(this.group)}/offsets`, {
        body: { consumer: this.consumer, generation: this.generation, offsets }, retry: true,
      });
      this.committed = true;
    } catch (err) {
      this.failed = true;
      throw err;
    }
  }
}

class Subscription {
  constructor(client, spec, handlers) {
    this.client = client;
    this.spec = { ...spec };
    this.handlers = handlers;
    this.id = `s${Math.random().toString(36).slice(2, 10)}`;
    /** Per partition, the offset after the last record delivered. */
    this.positions = new Map();
    this.epoch = null;
    this.closed = false;
    this.attempt = 0;
    this.socket = null;
    this.events = null;
    this.queue = Promise.resolve();
    this.open();
  }

  /** Stops following; nothing more is delivered. */
  close() {
    this.closed = true;
    this.socket?.close();
    this.events?.close();
  }

  async open() {
    if (this.closed) return;
    const token = await this.client.bearer().catch(() => this.client.token);
    const qs = token ? `?access_token=${enc(token)}` : '';
    if (!this.client.WebSocketImpl && this.client.EventSourceImpl && this.spec.topic && !this.spec.group) {
      this.openEvents(qs);
      return;
    }
    if (!this.client.WebSocketImpl) {
      this.closed = true;
      this.handlers.onError?.(new SluiceError(0, {
        code: 'no_websocket',
        detail: 'no WebSocket here: pass one as the WebSocket option (Node 20: --experimental-websocket, or the ws package)',
      }));
      return;
    }
    const ws = new this.client.WebSocketImpl(`${this.client.url.replace(/^http/, 'ws')}/v1/ws${qs}`);
    this.socket = ws;
    ws.onopen = () => ws.send(JSON.stringify(this.frame()));
    ws.onmessage = (m) => this.onFrame(JSON.parse(m.data));
    ws.onclose = () => {
      if (!this.closed) this.handlers.onState?.('reconnecting');
      this.again();
    };
    ws.onerror = () => {};
  }

  // The subscribe frame: resuming after what was delivered.
  frame() {
    const { topic, table, group, consumer, partitions, keyPrefix, reset } = this.spec;
    const f = { op: 'subscribe', id: this.id };
    if (table) {
      f.table = table;
      if (keyPrefix) f.key_prefix = keyPrefix;
      return f;
    }
    f.topic = topic;
    if (group) {
      Object.assign(f, { group, consumer: consumer || (this.spec.consumer = `c-${newKey()}`) });
      if (reset) f.reset = reset;
      return f;
    }
    if (partitions) f.partitions = partitions;
    f.from = this.positions.size ? fromPositions(this.positions) : (this.spec.from || 'latest');
    return f;
  }

  again() {
    this.socket = null;
    if (this.closed) return;
    const wait = backoff(this.attempt);
    this.attempt += 1;
    setTimeout(() => this.open(), wait);
  }

  onFrame(f) {
    const h = this.handlers;
    switch (f.type) {
      case 'subscribed':
        this.attempt = 0;
        if (this.epoch && f.log_epoch && f.log_epoch !== this.epoch) {
          this.close();
          h.onEpochChange?.(this.epoch, f.log_epoch);
          return;
        }
        this.epoch = f.log_epoch || this.epoch;
        h.onState?.('live');
        if (f.positions && !this.spec.group) {
          for (const [p, o] of Object.entries(f.positions)) if (!this.positions.has(Number(p))) this.positions.set(Number(p), o);
        }
        h.onSubscribed?.(f);
        break;
      case 'records': {
        const fresh = f.records.filter((r) => this.spec.group || r.offset >= (this.positions.get(f.partition) ?? 0));
        this.positions.set(f.partition, Math.max(this.positions.get(f.partition) ?? 0, f.next_offset));
        if (!fresh.length) break;
        // Handlers run one at a time, in order; a group's records are committed
        // once the handler is done with them.
        this.queue = this.queue.then(async () => {
          await h.onRecords?.(fresh, { topic: f.topic, partition: f.partition });
          if (this.spec.group && this.socket?.readyState === 1) {
            this.socket.send(JSON.stringify({ op: 'commit', id: this.id, offsets: { [f.partition]: f.next_offset } }));
          }
        }).catch((err) => h.onError?.(err));
        break;
      }
      case 'row':
        this.queue = this.queue.then(() => h.onRow?.(f.key, f.row)).catch((err) => h.onError?.(err));
        break;
      case 'assigned':
        h.onAssigned?.(f.assignment, f.generation);
        break;
      case 'error':
        h.onError?.(new SluiceError(0, { code: f.code, detail: f.message }));
        break;
      default:
        break;
    }
  }

  openEvents(qs) {
    const from = this.positions.size
      ? [...this.positions].map(([p, o]) => `${p}:${o}`).join(',')
      : (typeof this.spec.from === 'string' ? this.spec.from : 'latest');
    const sep = qs ? '&' : '?';
    const es = new this.client.EventSourceImpl(`${this.client.url}/v1/topics/${enc(this.spec.topic)}/events${qs}${sep}from=${enc(from)}`);
    this.events = es;
    es.addEventListener('record', (e) => {
      const r = JSON.parse(e.data);
      this.onFrame({ type: 'records', topic: this.spec.topic, partition: r.partition, next_offset: r.offset + 1, records: [r] });
    });
    es.onerror = () => {
      es.close();
      this.events = null;
      if (!this.closed) setTimeout(() => this.open(), backoff(this.attempt++));
    };
  }
}

class Tables {
  constructor(client) {
    this.client = client;
  }

  /**
   * One row (`null` when there is none). `after`: the offsets a produce
   * answered, so the row reflects that write (read your writes).
   */
  async get(table, key, { after, waitMs, signal } = {}) {
    const a = Array.isArray(after) ? after.map((o) => `${o.partition}:${o.offset}`).join(',') : after;
    try {
      const r = await this.client.request('GET', `/v1/tables/${enc(table)}/rows/${enc(key)}${query({ after: a, wait_ms: waitMs })}`, { retry: true, signal });
      return r.row;
    } catch (err) {
      if (err.code === 'row_not_found') return null;
      throw err;
    }
  }

  /** Yields a row each time it changes (long-polling with its ETag); stops on `signal`. */
  async* watch(table, key, { waitMs = 30000, signal } = {}) {
    let etag = null;
    while (!signal?.aborted) {
      let res;
      try {
        res = await this.client.request('GET', `/v1/tables/${enc(table)}/rows/${enc(key)}${etag ? query({ wait_ms: waitMs }) : ''}`, {
          headers: etag ? { 'if-none-match': etag } : {}, retry: true, signal, raw: true,
        });
      } catch (err) {
        if (signal?.aborted) return;
        throw err;
      }
      if (res.status === 304) continue;
      const body = safeJson(await res.text());
      if (res.status === 404 && body?.code === 'row_not_found') {
        if (etag !== '"none"') { etag = '"none"'; yield null; }
        await sleep(Math.min(waitMs, 1000), signal).catch(() => {});
        continue;
      }
      if (!res.ok) throw new SluiceError(res.status, body);
      etag = res.headers.get('etag');
      yield body.row;
    }
  }

  /** Yields the rows whose keys start with `prefix`, a page at a time, in key order. */
  async* browse(table, { prefix, limit = 100, signal } = {}) {
    let after;
    do {
      const page = await this.client.request('GET', `/v1/tables/${enc(table)}/rows${query({ prefix, limit, after })}`, { retry: true, signal });
      for (const r of page.rows) yield r;
      after = page.next;
    } while (after);
  }
}
