// The Sluice dashboard: a single page over the public HTTP and WebSocket API,
// through the gateway's own JavaScript client (/sdk/sluice.js). No framework and
// no build step; every element is built with `h`, so text from the server never
// becomes markup.
import { Sluice } from '/sdk/sluice.js';

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const enc = encodeURIComponent;
const num = (n) => (n === undefined || n === null ? '–' : Number(n).toLocaleString('en-US'));

function bytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

function rate(n) {
  if (!Number.isFinite(n)) return '–';
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M/s`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k/s`;
  return `${n >= 10 ? Math.round(n) : n.toFixed(1)}/s`;
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

function time(ms) {
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function pretty(v) {
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

// ---------- token and API ----------

const TOKEN_KEY = 'sluice.token';
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

// Every call goes through the client, with the token of this browser tab.
const sluice = new Sluice({ url: location.origin, token: token() || undefined });

function api(method, path, body) {
  return sluice.request(method, path, { body, headers: { Accept: 'application/json' } });
}

// What to tell a person about a failed call.
function explain(err) {
  if (err.status === 401) return 'This server needs a token: paste one into the field at the top (an operator can make one with `sluice token`).';
  if (err.status === 403) return `Your token does not allow this: ${err.message}`;
  if (err.status === 429) return 'Too many requests: the server asked to slow down.';
  return err.message || String(err);
}

function banner(message, kind) {
  const el = document.getElementById('banner');
  if (!message) { el.hidden = true; return; }
  el.hidden = false;
  el.className = kind || '';
  el.textContent = message;
}

// A result line under a form.
function say(el, message, ok) {
  el.className = `result ${ok ? 'ok' : 'err'}`;
  el.textContent = message;
}

// ---------- live server statistics (polled once a second) ----------

const HISTORY = 300; // samples kept for charts: five minutes
const live = {
  stats: null,
  history: [], // {t, produced, delivered, topics: {name: {produced, delivered}}, groups: {name: lag}}
  listeners: new Set(),
};

function onStats(fn) {
  live.listeners.add(fn);
  if (live.stats) fn(live.stats);
  return () => live.listeners.delete(fn);
}

async function pollStats() {
  try {
    const s = await api('GET', '/v1/stats');
    const sample = { t: s.now_ms, produced: 0, delivered: 0, topics: {}, groups: {} };
    for (const t of s.topics) {
      sample.produced += t.produced_total;
      sample.delivered += t.delivered_total;
      sample.topics[t.name] = { produced: t.produced_total, delivered: t.delivered_total };
    }
    for (const g of s.groups) sample.groups[g.group] = g.lag;
    live.history.push(sample);
    if (live.history.length > HISTORY + 1) live.history.shift();
    live.stats = s;
    footer(s);
    if (document.getElementById('banner').dataset.stats) banner(null);
    for (const fn of live.listeners) fn(s);
  } catch (err) {
    const el = document.getElementById('banner');
    el.dataset.stats = '1';
    banner(explain(err));
  } finally {
    setTimeout(pollStats, 1000);
  }
}

function footer(s) {
  document.getElementById('footer').textContent =
    `Sluice ${s.version} · up ${duration(s.uptime_ms)} · data ${bytes(s.data_bytes)}`;
}

// Per-second rates between consecutive samples of `pick(sample)`.
function rates(pick) {
  const out = [];
  const hist = live.history;
  for (let i = 1; i < hist.length; i += 1) {
    const a = pick(hist[i - 1]);
    const b = pick(hist[i]);
    const dt = (hist[i].t - hist[i - 1].t) / 1000;
    out.push(a === undefined || b === undefined || dt <= 0 ? 0 : Math.max(0, (b - a) / dt));
  }
  return out;
}

const lastRate = (pick) => {
  const r = rates(pick);
  return r.length ? r[r.length - 1] : NaN;
};

// ---------- charts (inline SVG) ----------

const SVG = 'http://www.w3.org/2000/svg';

// A line chart of `values`, one sample every `period` ms, newest last.
function chart(title, values, format, period = 1000) {
  const w = 300;
  const hgt = 80;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', title);
  const max = Math.max(1, ...values);
  // One reading is drawn as a level line.
  const drawn = values.length === 1 ? [values[0], values[0]] : values;
  const n = Math.max(drawn.length, 2);
  const pts = drawn.map((v, i) => [(i / (n - 1)) * w, hgt - 2 - (v / max) * (hgt - 6)]);
  if (pts.length) {
    const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ');
    const area = document.createElementNS(SVG, 'polygon');
    area.setAttribute('class', 'area');
    area.setAttribute('points', `0,${hgt} ${line} ${pts[pts.length - 1][0].toFixed(1)},${hgt}`);
    const poly = document.createElementNS(SVG, 'polyline');
    poly.setAttribute('class', 'line');
    poly.setAttribute('points', line);
    svg.append(area, poly);
  }
  const now = values.length ? values[values.length - 1] : NaN;
  return h('div', { class: 'chart-box' },
    h('div', { class: 'chart-head' }, h('span', { class: 'muted' }, title),
      h('span', { class: 'now' }, format(now))),
    svg,
    h('div', { class: 'muted' }, `peak ${format(Math.max(0, ...values))} · last ${duration(values.length * period)}`));
}

// ---------- pages ----------

function table(columns, rows, empty) {
  if (!rows.length) return h('div', { class: 'empty' }, empty);
  return h('div', { class: 'scroll' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.num ? 'num' : '' }, c.label)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.num ? 'num' : '' }, c.cell(r))))))));
}

function panel(title, ...children) {
  return h('section', { class: 'panel' }, title ? h('h2', {}, title) : null, children);
}

// A panel whose body is rebuilt by `render` on every stats reading.
function livePanel(title, render, cleanup) {
  const body = h('div', {});
  const el = panel(title, body);
  cleanup.push(onStats((s) => body.replaceChildren(render(s))));
  return el;
}

function topicsTable(s) {
  return table([
    { label: 'Topic', cell: (t) => h('a', { href: `#/topics/${enc(t.name)}` }, t.name) },
    { label: 'Partitions', num: true, cell: (t) => t.partitions },
    { label: 'Records', num: true, cell: (t) => num(t.records) },
    { label: 'Bytes', num: true, cell: (t) => bytes(t.bytes) },
    { label: 'In', num: true, cell: (t) => rate(lastRate((x) => x.topics[t.name]?.produced)) },
    { label: 'Out', num: true, cell: (t) => rate(lastRate((x) => x.topics[t.name]?.delivered)) },
  ], s.topics, 'No topics yet. Create one below or with POST /v1/topics.');
}

function groupsTable(s) {
  return table([
    { label: 'Group', cell: (g) => h('a', { href: `#/groups/${enc(g.group)}` }, g.group) },
    { label: 'Members', num: true, cell: (g) => g.members },
    { label: 'Lag', num: true, cell: (g) => num(g.lag) },
  ], s.groups, 'No consumer groups yet. A group appears with its first poll.');
}

function tablesTable(s) {
  return table([
    { label: 'Table', cell: (t) => h('a', { href: `#/tables/${enc(t.name)}` }, t.name) },
    { label: 'State', cell: (t) => h('span', { class: `badge ${t.state}` }, t.state) },
    { label: 'Rows', num: true, cell: (t) => num(t.rows) },
    { label: 'Lag', num: true, cell: (t) => num(t.lag) },
  ], s.tables, 'No tables yet.');
}

function createTopicForm() {
  const out = h('div', { class: 'result' });
  const form = h('form', { class: 'inline' },
    h('label', {}, 'Name', h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]{1,249}', placeholder: 'orders' })),
    h('label', {}, 'Partitions', h('input', { name: 'partitions', type: 'number', min: 1, max: 1024, value: 3 })),
    h('label', {}, 'Retention (hours, optional)', h('input', { name: 'hours', type: 'number', min: 1 })),
    h('label', {}, 'Cleanup', h('select', { name: 'cleanup' },
      h('option', { value: 'delete' }, 'keep every record'),
      h('option', { value: 'compact' }, 'compact: latest per key'))),
    h('button', { type: 'submit' }, 'Create topic'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { name: f.get('name'), partitions: Number(f.get('partitions')), cleanup: f.get('cleanup') };
    if (f.get('hours')) body.retention_ms = Number(f.get('hours')) * 3600000;
    try {
      await api('POST', '/v1/topics', body);
      say(out, `Created ${body.name}.`, true);
      form.reset();
    } catch (err) { say(out, explain(err), false); }
  });
  return panel('New topic', form, out);
}

function createTableForm() {
  const out = h('div', { class: 'result' });
  const text = h('textarea', { name: 'definition', rows: 5, placeholder: 'CREATE TABLE per_customer AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY customer\n\nor a JSON definition: {"name": ..., "source": ..., "key": ...}' });
  const form = h('form', {}, h('label', {}, 'SQL or JSON definition', text),
    h('div', { class: 'result' }, h('button', { type: 'submit' }, 'Create table')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const src = text.value.trim();
    let body;
    if (src.startsWith('{')) {
      try { body = JSON.parse(src); } catch (err) { say(out, `Not valid JSON: ${err.message}`, false); return; }
    } else {
      body = { sql: src };
    }
    try {
      const t = await api('POST', '/v1/tables', body);
      say(out, `Created ${t.name}; it is ${t.state}.`, true);
      text.value = '';
    } catch (err) { say(out, explain(err), false); }
  });
  return panel('New table', form, out);
}

function overview(main, cleanup) {
  const cards = h('div', { class: 'cards' });
  const charts = h('div', { class: 'grid' });
  cleanup.push(onStats((s) => {
    const totalLag = s.groups.reduce((a, g) => a + g.lag, 0);
    cards.replaceChildren(...[
      ['Produced', rate(lastRate((x) => x.produced))],
      ['Delivered', rate(lastRate((x) => x.delivered))],
      ['Topics', num(s.topics.length)],
      ['Group lag', num(totalLag)],
      ['WebSockets', num(s.websocket_connections)],
      ['Data on disk', bytes(s.data_bytes)],
      ['Disk free', s.disk_free_bytes < s.min_free_disk_bytes
        ? h('span', { class: 'bad', title: 'Below --min-free-disk-mb: appends are refused until space is freed' }, `${bytes(s.disk_free_bytes)}, appends refused`)
        : bytes(s.disk_free_bytes)],
      ['Uptime', duration(s.uptime_ms)],
      ['Version', s.version],
    ].map(([label, value]) => h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value))));
    charts.replaceChildren(
      panel(null, chart('Produced records/s', rates((x) => x.produced), rate)),
      panel(null, chart('Delivered records/s', rates((x) => x.delivered), rate)),
      panel(null, chart('Total group lag', live.history.map((x) => Object.values(x.groups).reduce((a, b) => a + b, 0)), num)),
    );
  }));
  append(main, h('h1', {}, 'Overview'), cards, charts, h('div', { class: 'stack' },
    h('div', {}),
    livePanel('Topics', topicsTable, cleanup),
    h('div', { class: 'grid' }, livePanel('Consumer groups', groupsTable, cleanup), livePanel('Tables', tablesTable, cleanup))));
}

function topicsPage(main, cleanup) {
  append(main, h('h1', {}, 'Topics'), livePanel(null, topicsTable, cleanup), createTopicForm());
}

function groupsPage(main, cleanup) {
  append(main, h('h1', {}, 'Consumer groups'), livePanel(null, groupsTable, cleanup));
}

function tablesPage(main, cleanup) {
  append(main, h('h1', {}, 'Tables'), livePanel(null, tablesTable, cleanup), createTableForm());
}

// A button that asks, deletes `path` and goes to `then`.
function deleteButton(label, question, path, then) {
  const del = h('button', { class: 'danger', type: 'button' }, label);
  del.addEventListener('click', async () => {
    if (!window.confirm(question)) return;
    try { await api('DELETE', path); location.hash = then; } catch (err) { banner(explain(err)); }
  });
  return del;
}

// A definition list of [term, description] pairs.
function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, v, attrs]) => [h('dt', {}, k), h('dd', attrs || {}, v)]));
}

// Re-runs `load` every `ms` until the page goes away; errors go to the banner.
function every(ms, load, cleanup) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    try { await load(); } catch (err) { banner(explain(err)); }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  cleanup.push(() => { stopped = true; clearTimeout(timer); });
}

function topicPage(main, cleanup, name) {
  const title = h('h1', {}, 'Topic ', h('span', {}, name));
  const summary = h('div', {});
  const parts = h('div', {});
  every(2000, async () => {
    const t = await api('GET', `/v1/topics/${enc(name)}`);
    const retention = [t.retention_ms && duration(t.retention_ms), t.retention_bytes && bytes(t.retention_bytes)];
    summary.replaceChildren(kv([
      ['Records', num(t.records)],
      ['Bytes', bytes(t.bytes)],
      ['Retention', retention.filter(Boolean).join(', ') || 'forever'],
      ['Cleanup', t.cleanup === 'compact' ? `compacted (tombstones kept ${duration(t.tombstone_retention_ms)})` : 'delete'],
      ['Created', time(t.created_ms)]]));
    parts.replaceChildren(table([
      { label: 'Partition', cell: (p) => p.partition },
      { label: 'Start offset', num: true, cell: (p) => num(p.start_offset) },
      { label: 'End offset', num: true, cell: (p) => num(p.end_offset) },
      { label: 'Records', num: true, cell: (p) => num(p.end_offset - p.start_offset) },
      { label: 'Bytes', num: true, cell: (p) => bytes(p.bytes) },
    ], t.partitions, ''));
  }, cleanup);

  title.append(deleteButton('Delete topic', `Delete topic ${name} and all its records?`, `/v1/topics/${enc(name)}`, '#/topics'));

  const rateChart = h('div', {});
  cleanup.push(onStats(() => rateChart.replaceChildren(
    chart('Produced records/s', rates((x) => x.topics[name]?.produced), rate))));

  append(main, title, h('div', { class: 'grid' }, panel('Summary', summary), panel(null, rateChart)),
    h('div', { class: 'grid' }, panel('Partitions', parts), produceForm(name)),
    tailPanel(name, cleanup));
}

function produceForm(topic) {
  const out = h('div', { class: 'result' });
  const value = h('textarea', { name: 'value', rows: 4, placeholder: '{"amount": 42}' });
  const form = h('form', {},
    h('div', { class: 'inline' },
      h('label', {}, 'Key (optional)', h('input', { name: 'key', placeholder: 'customer-1' })),
      h('label', {}, 'Partition (optional)', h('input', { name: 'partition', type: 'number', min: 0 }))),
    h('label', {}, 'Value: JSON, or any text (sent as a string)', value),
    h('div', { class: 'result' }, h('button', { type: 'submit' }, 'Produce')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const record = {};
    if (f.get('key')) record.key = f.get('key');
    if (f.get('partition') !== '') record.partition = Number(f.get('partition'));
    const raw = value.value;
    try { record.value = JSON.parse(raw); } catch { record.value = raw; }
    try {
      const r = await api('POST', `/v1/topics/${enc(topic)}/records`, record);
      const o = r.offsets[0];
      say(out, `Written to partition ${o.partition} at offset ${o.offset}.`, true);
    } catch (err) { say(out, explain(err), false); }
  });
  return panel('Produce a record', form, out);
}

function tailPanel(topic, cleanup) {
  const KEEP = 500;
  let records = []; // newest first
  let paused = false;
  let from = 'latest';
  const list = h('div', { class: 'tail', 'aria-live': 'polite' });
  const status = h('span', { class: 'badge' }, 'connecting');
  const count = h('span', { class: 'muted' }, '');
  const filter = h('input', { placeholder: 'key contains…', 'aria-label': 'Filter by key' });
  const pause = h('button', { type: 'button', class: 'secondary' }, 'Pause');
  const mode = h('select', { 'aria-label': 'Start from' },
    h('option', { value: 'latest' }, 'New records'),
    h('option', { value: 'earliest' }, 'From the start'),
    h('option', { value: 'offset' }, 'From offset'),
    h('option', { value: 'time' }, 'From time'));
  const offset = h('input', { type: 'number', min: 0, placeholder: 'offset', 'aria-label': 'Offset' });
  const when = h('input', { type: 'datetime-local', step: 1, 'aria-label': 'Time' });
  const go = h('button', { type: 'button', class: 'secondary' }, 'Go');

  const render = () => {
    const f = filter.value;
    const shown = records.filter((r) => !f || (r.key || '').includes(f)).slice(0, 200);
    count.textContent = `${records.length} received${f ? `, ${shown.length} shown` : ''}`;
    if (paused) return;
    list.replaceChildren(...(shown.length ? shown.map((r) => r.el) : [h('div', { class: 'empty rec' }, 'Waiting for records…')]));
  };

  const recordEl = (r) => h('div', { class: 'rec fresh' },
    h('div', { class: 'meta' },
      h('span', {}, `p${r.partition}`), h('span', {}, `#${r.offset}`), h('span', {}, time(r.timestamp)),
      r.key !== undefined ? h('span', { class: 'key' }, r.key) : h('span', {}, 'no key'),
      r.headers ? h('span', {}, Object.entries(r.headers).map(([k, v]) => `${k}=${v}`).join(' ')) : null),
    r.value_base64 !== undefined ? h('pre', {}, `base64: ${r.value_base64}`) : h('pre', {}, pretty(r.value)));

  // The client resumes after the last record shown when the socket drops.
  let sub = null;
  cleanup.push(() => sub?.close());
  const start = () => {
    sub?.close();
    records = [];
    render();
    sub = sluice.subscribe({ topic, from }, {
      onRecords(rs) {
        for (const r of rs) {
          r.el = recordEl(r);
          records.unshift(r);
        }
        if (records.length > KEEP) records = records.slice(0, KEEP);
        render();
      },
      onState(s) { status.textContent = s; status.className = `badge ${s === 'live' ? 'live' : 'backfilling'}`; },
      onError(err) { banner(`Live tail: ${err.message}`); },
    });
  };

  go.addEventListener('click', () => {
    if (mode.value === 'offset') {
      const n = Number(offset.value || 0);
      const all = {};
      const parts = live.stats?.topics.find((t) => t.name === topic)?.partitions || 1;
      for (let p = 0; p < parts; p += 1) all[p] = n;
      from = { offset: all };
    } else if (mode.value === 'time') {
      from = { timestamp: when.value ? new Date(when.value).getTime() : Date.now() };
    } else {
      from = mode.value;
    }
    start();
  });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    render();
  });
  filter.addEventListener('input', render);
  start();

  return panel(null,
    h('div', { class: 'chart-head' }, h('h2', {}, 'Live tail'), h('span', {}, status, ' ', count)),
    h('div', { class: 'tail-controls' },
      h('label', {}, 'Start', mode), h('label', {}, 'Offset (every partition)', offset), h('label', {}, 'Time', when), go,
      h('label', {}, 'Filter', filter), pause),
    list);
}

function groupPage(main, cleanup, name) {
  const title = h('h1', {}, 'Group ', h('span', {}, name));
  const summary = h('div', {});
  const members = h('div', {});
  const topics = h('div', {});
  const lagChart = h('div', {});
  const topicSelect = h('select', { name: 'topic', 'aria-label': 'Topic' });
  const lags = [];
  every(2000, async () => {
    const g = await api('GET', `/v1/groups/${enc(name)}`);
    const total = g.topics.reduce((a, t) => a + t.lag, 0);
    lags.push(total);
    if (lags.length > 150) lags.shift();
    lagChart.replaceChildren(chart('Lag (records)', lags, num, 2000));
    summary.replaceChildren(kv([
      ['Generation', g.generation ?? '–'],
      ['Members', g.members.length],
      ['Total lag', num(total), { 'data-lag': total }]]));
    members.replaceChildren(table([
      { label: 'Consumer', cell: (m) => m.consumer },
      { label: 'Topic', cell: (m) => m.topic },
      { label: 'Last seen', cell: (m) => `${(m.last_seen_ms_ago / 1000).toFixed(1)} s ago` },
      { label: 'Session', cell: (m) => `${m.session_timeout_ms / 1000} s` },
      { label: 'Partitions', cell: (m) => m.assignment.join(', ') || 'none' },
    ], g.members, 'No live members: nobody polled within the session timeout.'));
    topics.replaceChildren(...g.topics.map((t) => h('div', {},
      h('h2', {}, h('a', { href: `#/topics/${enc(t.topic)}` }, t.topic), ` · lag ${num(t.lag)}`),
      table([
        { label: 'Partition', cell: (p) => p.partition },
        { label: 'Owner', cell: (p) => p.owner || '–' },
        { label: 'Committed', num: true, cell: (p) => num(p.committed) },
        { label: 'End offset', num: true, cell: (p) => num(p.end_offset) },
        { label: 'Lag', num: true, cell: (p) => num(p.lag) },
      ], t.partitions, ''))));
    const have = [...topicSelect.options].map((o) => o.value).join();
    if (have !== g.topics.map((t) => t.topic).join()) {
      topicSelect.replaceChildren(...g.topics.map((t) => h('option', { value: t.topic }, t.topic)));
    }
  }, cleanup);

  title.append(deleteButton('Delete group', `Delete group ${name}: its members and committed offsets?`, `/v1/groups/${enc(name)}`, '#/groups'));

  const out = h('div', { class: 'result' });
  const to = h('select', { name: 'to', 'aria-label': 'To' },
    h('option', { value: 'earliest' }, 'earliest'), h('option', { value: 'latest' }, 'latest'),
    h('option', { value: 'offset' }, 'offset'), h('option', { value: 'timestamp' }, 'time'));
  const at = h('input', { name: 'at', placeholder: 'offset, or time as 2026-01-31T12:00', 'aria-label': 'Offset or time' });
  const reset = h('form', { class: 'inline' }, h('label', {}, 'Topic', topicSelect), h('label', {}, 'To', to),
    h('label', {}, 'Offset or time', at),
    h('button', { type: 'submit', class: 'danger' }, 'Reset offsets'));
  reset.addEventListener('submit', async (e) => {
    e.preventDefault();
    let target = to.value;
    if (target === 'offset') target = { offset: Number(at.value) };
    if (target === 'timestamp') target = { timestamp: new Date(at.value).getTime() };
    if (!window.confirm(`Move group ${name}'s offsets on ${topicSelect.value} to ${JSON.stringify(target)}?`)) return;
    try {
      const r = await api('POST', `/v1/groups/${enc(name)}/offsets/reset`, { topic: topicSelect.value, to: target });
      say(out, `Committed ${r.offsets.map((o) => `p${o.partition}→${o.offset}`).join(', ')}.`, true);
    } catch (err) { say(out, explain(err), false); }
  });

  append(main, title, h('div', { class: 'grid' }, panel('Summary', summary), panel(null, lagChart)),
    panel('Members', members), panel('Offsets and lag', topics), panel('Reset offsets', reset, out));
}

function tablePage(main, cleanup, name) {
  const title = h('h1', {}, 'Table ', h('span', {}, name));
  const summary = h('div', {});
  const definition = h('div', {});
  every(2000, async () => {
    const t = await api('GET', `/v1/tables/${enc(name)}`);
    const rows = [
      ['State', [h('span', { class: `badge ${t.state}` }, t.state), t.reason ? ` ${t.reason}` : '']],
      ['Source', h('a', { href: `#/topics/${enc(t.definition.source)}` }, t.definition.source)],
      ['Rows', num(t.rows)],
      ['Skipped records', num(t.skipped)],
      ['Lag', num(t.lag)],
      ['Created', time(t.created_ms)]];
    // Over a cluster, the gateways share the folding of a table's partitions;
    // each serves its copy of all of it.
    if (t.written_here !== undefined) {
      const here = t.partitions.filter((p) => p.folded_here).map((p) => p.partition);
      const text = !t.written_here ? 'another gateway (this one serves its copy)'
        : here.length === t.partitions.length ? 'this gateway'
          : `this gateway: partition${here.length > 1 ? 's' : ''} ${here.join(', ')}; other gateways the rest`;
      rows.push(['Folded by', h('span', { 'data-written-here': String(t.written_here) }, text)]);
    }
    summary.replaceChildren(kv(rows));
    const text = t.sql || JSON.stringify(t.definition, null, 2);
    if (definition.textContent !== text) definition.replaceChildren(h('pre', {}, text));
  }, cleanup);

  title.append(deleteButton('Delete table', `Delete table ${name}? Creating it again rebuilds it from the topic.`, `/v1/tables/${enc(name)}`, '#/tables'));

  // Key lookup.
  const found = h('div', { class: 'result' });
  const key = h('input', { name: 'key', required: true, placeholder: 'key', 'aria-label': 'Key' });
  const lookup = h('form', { class: 'inline' }, key, h('button', { type: 'submit' }, 'Look up'));
  lookup.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const r = await api('GET', `/v1/tables/${enc(name)}/rows/${enc(key.value)}`);
      found.className = 'result';
      found.replaceChildren(h('pre', { class: 'row' }, pretty(r.row)));
    } catch (err) {
      say(found, err.status === 404 ? `No row with key ${key.value}.` : explain(err), false);
    }
  });

  // Prefix browse, a page at a time.
  const rows = h('div', {});
  const prefix = h('input', { name: 'prefix', placeholder: 'key prefix (optional)', 'aria-label': 'Key prefix' });
  const next = h('button', { type: 'button', class: 'secondary', disabled: true }, 'Next page');
  let after = null;
  const browse = async (from) => {
    const q = new URLSearchParams({ limit: '20' });
    if (prefix.value) q.set('prefix', prefix.value);
    if (from) q.set('after', from);
    try {
      const page = await api('GET', `/v1/tables/${enc(name)}/rows?${q}`);
      after = page.next || null;
      next.disabled = !after;
      rows.replaceChildren(table([
        { label: 'Key', cell: (r) => r.key },
        { label: 'Row', cell: (r) => h('pre', {}, JSON.stringify(r.row)) },
      ], page.rows, 'No rows.'));
    } catch (err) { banner(explain(err)); }
  };
  const browseForm = h('form', { class: 'inline' }, prefix, h('button', { type: 'submit' }, 'Browse'), next);
  browseForm.addEventListener('submit', (e) => { e.preventDefault(); browse(null); });
  next.addEventListener('click', () => browse(after));
  browse(null);

  // Live row changes.
  const changes = h('div', {}, h('div', { class: 'empty' }, 'Row changes appear here as they happen.'));
  let n = 0;
  const sub = sluice.subscribe({ table: name }, {
    onRow(key, row) {
      if (n === 0) changes.replaceChildren();
      n += 1;
      changes.prepend(h('div', { class: 'row-change' }, `${new Date().toLocaleTimeString()} ${key}: `,
        row === null ? 'deleted' : JSON.stringify(row)));
      while (changes.childElementCount > 100) changes.lastElementChild.remove();
    },
    onError(err) { banner(`Live rows: ${err.message}`); },
  });
  cleanup.push(() => sub.close());

  append(main, title, h('div', { class: 'grid' }, panel('Status', summary), panel('Definition', definition)),
    h('div', { class: 'grid' }, panel('Look up a key', lookup, found), panel('Live changes', changes)),
    panel('Rows', browseForm, rows));
}

// ---------- sinks ----------

// A sink's source, linked: a topic, or a table's row changes.
function sinkSource(k) {
  const { topic, table: t } = k.definition.source;
  return topic ? h('a', { href: `#/topics/${enc(topic)}` }, topic)
    : ['rows of ', h('a', { href: `#/tables/${enc(t)}` }, t)];
}

function sinksTable(list) {
  return table([
    { label: 'Sink', cell: (k) => h('a', { href: `#/sinks/${enc(k.name)}` }, k.name) },
    { label: 'Source', cell: (k) => sinkSource(k) },
    { label: 'State', cell: (k) => h('span', { class: `badge ${k.state}` }, k.state.replace('_', ' ')) },
    { label: 'Lag', num: true, cell: (k) => num(k.lag_records) },
    { label: 'Delivered', num: true, cell: (k) => num(k.delivered) },
    { label: 'Dead letters', num: true, cell: (k) => num(k.dead_lettered) },
    { label: 'Endpoint', cell: (k) => k.definition.url },
  ], list, 'No sinks yet. Make one below or with POST /v1/sinks.');
}

function createSinkForm() {
  const out = h('div', { class: 'result' });
  const form = h('form', { class: 'inline' },
    h('label', {}, 'Name', h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]{1,200}', placeholder: 'orders-to-erp' })),
    h('label', {}, 'Topic', h('input', { name: 'topic', required: true, placeholder: 'orders' })),
    h('label', {}, 'Endpoint URL', h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://erp.example.com/hooks' })),
    h('label', {}, 'Order', h('select', { name: 'ordering' },
      h('option', { value: 'key' }, 'per key'),
      h('option', { value: 'partition' }, 'per partition'),
      h('option', { value: 'none' }, 'none'))),
    h('label', {}, 'Start', h('select', { name: 'start' },
      h('option', { value: 'latest' }, 'new records'),
      h('option', { value: 'earliest' }, 'the earliest record'))),
    h('button', { type: 'submit' }, 'Create sink'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = {
      name: f.get('name'), source: { topic: f.get('topic') }, url: f.get('url'),
      ordering: f.get('ordering'), start: f.get('start'),
    };
    try {
      const k = await api('POST', '/v1/sinks', body);
      out.className = 'result ok';
      out.replaceChildren();
      append(out, `Created ${k.name}. `, k.secret
        ? ['Its signing secret, shown only now: ', h('code', { class: 'secret' }, k.secret)] : '');
      form.reset();
    } catch (err) { say(out, explain(err), false); }
  });
  return panel('New sink', form, out);
}

function sinksPage(main, cleanup) {
  const body = h('div', {});
  every(2000, async () => body.replaceChildren(sinksTable((await api('GET', '/v1/sinks')).sinks)), cleanup);
  append(main, h('h1', {}, 'Sinks'), panel(null, body), createSinkForm());
}

function sinkPage(main, cleanup, name) {
  const path = `/v1/sinks/${enc(name)}`;
  const title = h('h1', {}, 'Sink ', h('span', {}, name));
  const summary = h('div', {});
  const parts = h('div', {});
  const attempts = h('div', {});
  const definition = h('div', {});
  const out = h('div', { class: 'result' });
  const load = async () => {
    const k = await api('GET', path);
    const rows = [
      ['State', [h('span', { class: `badge ${k.state}`, 'data-state': k.state }, k.state.replace('_', ' ')),
        k.disabled_reason ? ` ${k.disabled_reason}` : '']],
      ['Source', sinkSource(k)],
      ['Endpoint', k.definition.url],
      ['Lag', num(k.lag_records)],
      ['Delivered', num(k.delivered)],
      ['Retried', num(k.retried)],
      ['Dead letters', [num(k.dead_lettered), ' in ',
        h('a', { href: `#/topics/${enc(k.dead_letter_topic)}` }, k.dead_letter_topic)]],
    ];
    if (k.skipped_by_retention) rows.push(['Lost to retention', num(k.skipped_by_retention)]);
    if (k.next_attempt_ms) rows.push(['Next attempt', time(k.next_attempt_ms)]);
    if (k.last_error) {
      rows.push(['Last error', `${time(k.last_error.at_ms)}: ${k.last_error.message}`, { class: 'err' }]);
    }
    summary.replaceChildren(kv(rows));
    parts.replaceChildren(table([
      { label: 'Partition', cell: (p) => p.partition },
      { label: 'Cursor', num: true, cell: (p) => num(p.cursor) },
      { label: 'End offset', num: true, cell: (p) => num(p.end_offset) },
      { label: 'Lag', num: true, cell: (p) => num(p.lag_records) },
      { label: 'Behind', num: true, cell: (p) => (p.lag_seconds === undefined ? '–' : `${p.lag_seconds.toFixed(1)} s`) },
      { label: 'Delivered', num: true, cell: (p) => num(p.delivered) },
      { label: 'Dead letters', num: true, cell: (p) => num(p.dead_lettered) },
    ], k.partitions, ''));
    pause.textContent = k.state === 'paused' || k.state === 'disabled' ? 'Resume' : 'Pause';
    pause.dataset.action = pause.textContent === 'Resume' ? 'resume' : 'pause';
    const text = JSON.stringify(k.definition, null, 2);
    if (definition.textContent !== text) definition.replaceChildren(h('pre', {}, text));
    const a = await api('GET', `${path}/attempts`);
    attempts.replaceChildren(table([
      { label: 'Time', cell: (x) => time(x.at_ms) },
      { label: 'Offsets', cell: (x) => (x.records === 0 ? 'test event' : x.records > 1 ? `${x.partition}:${x.first_offset}–${x.last_offset}` : `${x.partition}:${x.first_offset}`) },
      { label: 'Attempt', num: true, cell: (x) => x.attempt },
      { label: 'Status', cell: (x) => h('span', { class: x.status >= 200 && x.status < 300 ? 'ok' : 'err' }, x.status || x.error || '–') },
      { label: 'Latency', num: true, cell: (x) => `${x.latency_ms.toFixed(1)} ms` },
      { label: 'Answer', cell: (x) => h('code', {}, x.answer.slice(0, 80)) },
    ], a.attempts.slice(0, 20), 'No attempts on this gateway yet.'));
  };
  const act = async (what, body) => {
    try {
      await api('POST', `${path}/${what}`, body);
      say(out, `Done: ${what.replace('/', ' ')}.`, true);
      await load();
    } catch (err) { say(out, explain(err), false); }
  };
  const pause = h('button', { type: 'button', class: 'secondary' }, 'Pause');
  pause.addEventListener('click', () => act(pause.dataset.action || 'pause'));
  const test = h('button', { type: 'button', class: 'secondary' }, 'Send a test');
  test.addEventListener('click', async () => {
    try {
      const r = await api('POST', `${path}/test`);
      say(out, r.ok ? `The endpoint answered ${r.attempt.status}.` : `Failed: ${r.attempt.error || r.attempt.status}`, r.ok);
      await load();
    } catch (err) { say(out, explain(err), false); }
  });
  const from = h('input', { name: 'from', type: 'datetime-local', 'aria-label': 'Replay from' });
  const replay = h('form', { class: 'inline' }, h('label', {}, 'Replay from (empty: the earliest record)', from),
    h('button', { type: 'submit' }, 'Replay'));
  replay.addEventListener('submit', (e) => {
    e.preventDefault();
    const start = from.value ? { timestamp: new Date(from.value).getTime() } : 'earliest';
    if (window.confirm(`Deliver ${name}'s records again from ${from.value || 'the earliest'}?`)) act('cursor/reset', { start });
  });
  every(2000, load, cleanup);
  title.append(deleteButton('Delete sink', `Delete sink ${name}? Its dead-letter topic stays.`, path, '#/sinks'));
  append(main, title, h('div', { class: 'grid' }, panel('Status', summary, h('div', { class: 'inline' }, pause, test), out),
    panel('Definition', definition)),
  panel('Partitions', parts), panel('Replay', replay), panel('Recent attempts (this gateway)', attempts));
}

// ---------- processors ----------

function processorsTable(list) {
  return table([
    { label: 'Processor', cell: (x) => h('a', { href: `#/processors/${enc(x.name)}` }, x.name) },
    { label: 'Source', cell: (x) => h('a', { href: `#/topics/${enc(x.definition.source)}` }, x.definition.source) },
    { label: 'State', cell: (x) => h('span', { class: `badge ${x.state}` }, x.state) },
    { label: 'Lag', num: true, cell: (x) => num(x.lag) },
    { label: 'Read', num: true, cell: (x) => num(x.counts.read) },
    { label: 'Written', num: true, cell: (x) => num(x.counts.written) },
    { label: 'Dead letters', num: true, cell: (x) => num(x.counts.dead_lettered) },
  ], list, 'No processors yet. Make one below or with POST /v1/processors.');
}

function createProcessorForm() {
  const out = h('div', { class: 'result' });
  const sql = h('textarea', {
    name: 'sql', required: true, rows: 3, 'aria-label': 'SQL',
    placeholder: 'CREATE STREAM big_orders AS SELECT id, customer_id, amount * 100 AS cents FROM orders WHERE amount > 1000 PARTITION BY customer_id',
  });
  const form = h('form', {}, sql,
    h('div', { class: 'inline' },
      h('label', {}, 'A record that is not JSON', h('select', { name: 'on_error' },
        h('option', { value: 'dead_letter' }, 'goes to the dead-letter topic'),
        h('option', { value: 'skip' }, 'is skipped'),
        h('option', { value: 'stop' }, 'stops the processor'))),
      h('button', { type: 'submit' }, 'Create processor')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const x = await api('POST', '/v1/processors', { sql: sql.value, on_error: new FormData(form).get('on_error') });
      say(out, `Created ${x.name}: it writes the topic ${x.name}.`, true);
      form.reset();
    } catch (err) { say(out, explain(err), false); }
  });
  return panel('New processor', form, out);
}

function processorsPage(main, cleanup) {
  const body = h('div', {});
  every(2000, async () => body.replaceChildren(processorsTable((await api('GET', '/v1/processors')).processors)), cleanup);
  append(main, h('h1', {}, 'Processors'), panel(null, body), createProcessorForm());
}

function processorPage(main, cleanup, name) {
  const path = `/v1/processors/${enc(name)}`;
  const title = h('h1', {}, 'Processor ', h('span', {}, name));
  const summary = h('div', {});
  const parts = h('div', {});
  const definition = h('div', {});
  every(2000, async () => {
    const x = await api('GET', path);
    const c = x.counts;
    summary.replaceChildren(kv([
      ['State', [h('span', { class: `badge ${x.state}`, 'data-state': x.state }, x.state), x.reason ? ` ${x.reason}` : '']],
      ['Source', h('a', { href: `#/topics/${enc(x.definition.source)}` }, x.definition.source)],
      ['Output', h('a', { href: `#/topics/${enc(x.name)}` }, x.name)],
      ['Lag', num(x.lag)],
      ['Read', num(c.read)],
      ['Written', num(c.written)],
      ['Filtered out', num(c.filtered)],
      ['Dead letters', [num(c.dead_lettered), ' in ',
        h('a', { href: `#/topics/${enc(`${x.name}.dead-letters`)}` }, `${x.name}.dead-letters`)]],
      ['Skipped', num(c.skipped)],
      ['Created', time(x.created_ms)],
    ]));
    parts.replaceChildren(table([
      { label: 'Partition', cell: (p) => p.partition },
      { label: 'Processed to', num: true, cell: (p) => num(p.processed_offset) },
      { label: 'End offset', num: true, cell: (p) => num(p.end_offset) },
      { label: 'Lag', num: true, cell: (p) => num(p.lag) },
      { label: 'Here', cell: (p) => (p.processed_here === undefined ? '–' : p.processed_here ? 'yes' : 'another gateway') },
    ], x.partitions, ''));
    const text = x.sql || JSON.stringify(x.definition, null, 2);
    if (definition.textContent !== text) definition.replaceChildren(h('pre', {}, text));
  }, cleanup);
  title.append(deleteButton('Delete processor', `Delete processor ${name}? Its output topic stays, as an ordinary topic.`, path, '#/processors'));
  append(main, title, h('div', { class: 'grid' }, panel('Status', summary), panel('Definition', definition)),
    panel('Source partitions', parts));
}

// ---------- sources ----------

function sourcesTable(list) {
  return table([
    { label: 'Source', cell: (x) => h('a', { href: `#/sources/${enc(x.name)}` }, x.name) },
    { label: 'Topic', cell: (x) => h('a', { href: `#/topics/${enc(x.definition.topic)}` }, x.definition.topic) },
    { label: 'Verified by', cell: (x) => x.definition.verify.scheme },
    { label: 'Senders post to', cell: (x) => h('code', {}, location.origin + x.hook_path) },
    { label: 'Accepted', num: true, cell: (x) => num(x.counts.accepted) },
    { label: 'Refused', num: true, cell: (x) => num(x.counts.refused) },
  ], list, 'No sources yet. Make one below or with POST /v1/sources.');
}

function createSourceForm() {
  const out = h('div', { class: 'result' });
  const form = h('form', { class: 'inline' },
    h('label', {}, 'Name', h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]{1,200}', placeholder: 'github' })),
    h('label', {}, 'Topic', h('input', { name: 'topic', required: true, placeholder: 'repo-events' })),
    h('label', {}, 'Senders sign with', h('select', { name: 'scheme' },
      ...['standard-webhooks', 'github', 'stripe', 'slack', 'hmac', 'token'].map((v) => h('option', { value: v }, v)))),
    h('label', {}, 'Secret', h('input', { name: 'secret', type: 'password', required: true, autocomplete: 'off' })),
    h('label', {}, 'Key (optional)', h('input', { name: 'key', placeholder: '$.repository.full_name' })),
    h('button', { type: 'submit' }, 'Create source'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    const body = { name: f.get('name'), topic: f.get('topic'), verify: { scheme: f.get('scheme'), secret: f.get('secret') } };
    if (f.get('key')) body.key = f.get('key');
    try {
      const x = await api('POST', '/v1/sources', body);
      say(out, `Created ${x.name}: senders post to ${location.origin}${x.hook_path}.`, true);
      form.reset();
    } catch (err) { say(out, explain(err), false); }
  });
  return panel('New source', form, out);
}

function sourcesPage(main, cleanup) {
  const body = h('div', {});
  every(2000, async () => body.replaceChildren(sourcesTable((await api('GET', '/v1/sources')).sources)), cleanup);
  append(main, h('h1', {}, 'Sources'), panel(null, body), createSourceForm());
}

function sourcePage(main, cleanup, name) {
  const path = `/v1/sources/${enc(name)}`;
  const title = h('h1', {}, 'Source ', h('span', {}, name));
  const summary = h('div', {});
  const definition = h('div', {});
  every(2000, async () => {
    const x = await api('GET', path);
    summary.replaceChildren(kv([
      ['Topic', h('a', { href: `#/topics/${enc(x.definition.topic)}` }, x.definition.topic)],
      ['Senders post to', h('code', { 'data-hook': x.hook_path }, location.origin + x.hook_path)],
      ['Verified by', x.definition.verify.scheme],
      ['Deduplicated by', x.definition.dedupe || 'nothing (every request is written)'],
      ['Secrets accepted', x.secrets.map((k) => (k.expires_ms ? `one until ${time(k.expires_ms)}` : 'the current one')).join(', ')],
      ['Accepted here', num(x.counts.accepted)],
      ['Refused here', num(x.counts.refused)],
      ['Created', time(x.created_ms)],
    ]));
    const text = JSON.stringify(x.definition, null, 2);
    if (definition.textContent !== text) definition.replaceChildren(h('pre', {}, text));
  }, cleanup);
  const out = h('div', { class: 'result' });
  const secret = h('input', { name: 'secret', type: 'password', required: true, autocomplete: 'off', 'aria-label': 'New secret' });
  const rotate = h('form', { class: 'inline' }, h('label', {}, 'New secret (the old one works for a day more)', secret),
    h('button', { type: 'submit' }, 'Rotate'));
  rotate.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('POST', `${path}/secret/rotate`, { secret: secret.value });
      say(out, 'Rotated.', true);
      rotate.reset();
    } catch (err) { say(out, explain(err), false); }
  });
  title.append(deleteButton('Delete source', `Delete source ${name}? Its topic and records stay.`, path, '#/sources'));
  append(main, title, h('div', { class: 'grid' }, panel('Status', summary), panel('Definition', definition)),
    panel('Rotate the secret', rotate, out));
}

// ---------- routing ----------

const routes = [
  [/^#?\/?$/, overview, 'overview'],
  [/^#\/topics$/, topicsPage, 'topics'],
  [/^#\/groups$/, groupsPage, 'groups'],
  [/^#\/tables$/, tablesPage, 'tables'],
  [/^#\/topics\/(.+)$/, topicPage, 'topics'],
  [/^#\/groups\/(.+)$/, groupPage, 'groups'],
  [/^#\/tables\/(.+)$/, tablePage, 'tables'],
  [/^#\/sinks$/, sinksPage, 'sinks'],
  [/^#\/sinks\/(.+)$/, sinkPage, 'sinks'],
  [/^#\/processors$/, processorsPage, 'processors'],
  [/^#\/processors\/(.+)$/, processorPage, 'processors'],
  [/^#\/sources$/, sourcesPage, 'sources'],
  [/^#\/sources\/(.+)$/, sourcePage, 'sources'],
];

let cleanup = [];

function route() {
  for (const fn of cleanup) fn();
  cleanup = [];
  banner(null);
  const main = document.getElementById('main');
  main.replaceChildren();
  const hash = location.hash || '#/';
  for (const [re, page, nav] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === nav);
    page(main, cleanup, m[1] ? decodeURIComponent(m[1]) : undefined);
    return;
  }
  append(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
}

function setup() {
  const input = document.getElementById('token');
  input.value = token();
  document.getElementById('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    sluice.token = token() || null;
    banner('Token saved for this browser tab.', 'info');
    setTimeout(route, 600);
  });
  document.getElementById('token-clear').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    sluice.token = null;
    input.value = '';
    route();
  });
  window.addEventListener('hashchange', route);
  route();
  pollStats();
}

setup();
