// Drives the SDK against the real services; tests/sdk/test_js_sdk.py runs it and checks the
// results through the admin API. Prints one JSON object per line (progress, then the result).
//
// Environment: INGEST_URL, QUERY_URL, WRITE_KEY, SCENARIO (vector | batched | retry | reload |
// loader), VECTOR (a vector file, for "vector"), STORAGE_FILE (localStorage kept in a file, so a
// second run is a reloaded page), USER_ID, COUNT.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createClient } from '../segments.js';
import { FakeStorage } from '../testing/fakes.js';

const env = process.env;
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

/** localStorage persisted in a JSON file: what survives a page reload. */
class FileStorage extends FakeStorage {
  constructor(path) {
    super();
    this.path = path;
    if (path && existsSync(path)) this.map = new Map(Object.entries(JSON.parse(readFileSync(path, 'utf8'))));
  }
  setItem(k, v) {
    super.setItem(k, v);
    this.save();
  }
  removeItem(k) {
    super.removeItem(k);
    this.save();
  }
  save() {
    if (this.path) writeFileSync(this.path, JSON.stringify(Object.fromEntries(this.map)));
  }
}

/** fetch that reports each failed attempt (so the driver knows the SDK is retrying). */
function watchedFetch() {
  const stats = { attempts: 0, failures: 0 };
  const fn = async (url, init) => {
    if (url.endsWith('/v1/batch')) stats.attempts++;
    try {
      const r = await fetch(url, init);
      if (r.status >= 500) stats.failures++;
      return r;
    } catch (e) {
      if (stats.failures++ === 0) say({ event: 'failing', error: String(e.cause?.code ?? e) });
      throw e;
    }
  };
  return { fn, stats };
}

function options(extra = {}) {
  return {
    writeKey: env.WRITE_KEY,
    host: env.INGEST_URL,
    queryHost: env.QUERY_URL,
    storage: new FileStorage(env.STORAGE_FILE),
    retryBase: 100,
    retryMax: 500,
    cacheTtl: 100,
    ...extra,
  };
}

async function vector() {
  const v = JSON.parse(readFileSync(env.VECTOR, 'utf8'));
  const clients = new Map(); // one per device (browser); device-less steps: one per userId
  const clientFor = (step) => {
    const key = step.device ?? `~${step.userId}`;
    if (!clients.has(key)) {
      const c = createClient();
      c.init(options({ anonymousId: step.device, storage: new FakeStorage() }));
      clients.set(key, c);
    }
    return clients.get(key);
  };
  for (const step of v.steps) {
    const c = clientFor(step);
    const opts = { timestamp: step.timestamp, messageId: step.messageId };
    if (['group', 'track'].includes(step.call) && c.user().userId !== String(step.userId)) await c.identify(step.userId);
    switch (step.call) {
      case 'identify':
        await c.identify(step.userId, step.attributes, { ...opts, segments: step.segments });
        break;
      case 'identifyAnonymous':
        await c.identifyAnonymous(step.attributes, opts);
        break;
      case 'group':
        await c.group(step.groupId, step.attributes, { ...opts, membership: step.membership });
        break;
      case 'track':
        await c.track(step.event, step.properties, opts);
        break;
      case 'alias':
        await c.alias(step.userId, step.previousId, opts);
        break;
      default:
        throw new Error(`unknown call ${step.call}`);
    }
  }
  say({ ok: true, steps: v.steps.length });
}

// Many calls at once: they go out in batches of at most 100, each applied exactly once.
async function batched() {
  const { fn, stats } = watchedFetch();
  const c = createClient();
  c.init(options({ fetch: fn }));
  const n = Number(env.COUNT);
  c.identify(env.USER_ID, { plan: 'pro', source: 'batched' });
  for (let i = 0; i < n; i++) {
    if (i % 2) c.updateUser({ counter: { add: 1 } });
    else c.track('Tick', { i });
  }
  c.updateUser({ counter: { add: (n - Math.floor(n / 2)) } }); // tracks count too, in one go
  await c.flush();
  // the check a page makes before showing a tour: poll until the membership is computed
  let member = false;
  for (let i = 0; i < 150 && !member; i++) {
    member = await c.isInSegment(env.SEGMENT);
    if (!member) await new Promise((r) => setTimeout(r, 100));
  }
  say({ ok: true, requests: stats.attempts, member, segments: (await c.segments()).map((s) => s.key) });
}

// Ingest is down when the calls are made; the driver restarts it once we say "failing".
async function retry() {
  const { fn, stats } = watchedFetch();
  const c = createClient();
  c.init(options({ fetch: fn }));
  const n = Number(env.COUNT);
  c.identify(env.USER_ID, { plan: 'pro' });
  for (let i = 0; i < n; i++) c.updateUser({ counter: { add: 1 } });
  await c.flush(); // resolves once everything is acknowledged, however many retries it took
  say({ ok: true, ...stats });
}

// A page that makes calls and goes away before they are delivered (ingest unreachable), or the
// page after it (same STORAGE_FILE), which delivers what the first one left.
async function reload() {
  const { fn, stats } = watchedFetch();
  const c = createClient();
  c.init(options({ fetch: fn }));
  if (env.PHASE === 'leave') {
    c.identify(env.USER_ID, { plan: 'pro' });
    for (let i = 0; i < Number(env.COUNT); i++) c.updateUser({ counter: { add: 1 } });
    while (stats.failures === 0) await new Promise((r) => setTimeout(r, 20));
    say({ ok: true, left: JSON.parse(readFileSync(env.STORAGE_FILE, 'utf8')) && stats });
    process.exit(0); // the tab is closed: nothing more runs
  }
  await c.flush();
  say({ ok: true, ...stats, user: c.user() });
}

// The loader snippet queues calls before the SDK loads; the SDK replays them against the real
// services, and a queued isInSegment gets its answer.
async function loader() {
  const scripts = [];
  globalThis.window = globalThis;
  globalThis.document = { createElement: () => ({}), head: { appendChild: (e) => scripts.push(e) } };
  new Function(readFileSync(new URL('../snippet.js', import.meta.url), 'utf8'))();
  const s = globalThis.segments;
  s.init(options({ storage: new FakeStorage() }));
  s.identify(env.USER_ID, { plan: 'pro', via: 'loader' });
  s.track('Loaded');
  s.updateUser({ visits: { add: 1 } });
  const early = s.isInSegment(env.SEGMENT);
  const queued = s.length;
  // what the snippet's <script type="module"> does (a fresh instance: this script imported one)
  await import('../segments.js?loaded-by-snippet');
  const firstAnswer = await early;
  await globalThis.segments.flush();
  let member = firstAnswer;
  for (let i = 0; i < 150 && !member; i++) {
    await new Promise((r) => setTimeout(r, 100));
    member = await globalThis.segments.isInSegment(env.SEGMENT);
  }
  say({ ok: true, queued, scripts: scripts.length, member, replaced: !Array.isArray(globalThis.segments) });
}

const scenarios = { vector, batched, retry, reload, loader };
const run = scenarios[env.SCENARIO];
if (!run) throw new Error(`SCENARIO must be one of ${Object.keys(scenarios).join(', ')}`);
await run();
