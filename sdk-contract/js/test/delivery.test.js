// Delivery: batching, retries with backoff and Retry-After, persistence across reloads,
// stable messageIds, the queue's size cap, page hide.
import { test, mock, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../segments.js';
import { fakeFetch, FakeStorage, response, settle, HOST, KEY } from '../testing/fakes.js';

afterEach(() => mock.timers.reset());

function client(fetch, storage = new FakeStorage(), extra = {}) {
  const c = createClient();
  c.init({ writeKey: KEY, host: HOST + '/', fetch, storage, ...extra });
  return c;
}

test('calls within the flush interval go out as one batch to /v1/batch', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  c.identify('u1', { plan: 'pro' });
  c.track('Clicked', { n: 1 });
  c.updateUser({ logins: { add: 1 } });
  await c.flush();
  assert.equal(fetch.batches().length, 1);
  const [call] = fetch.batches();
  assert.equal(call.url, HOST + '/v1/batch');
  assert.equal(call.init.method, 'POST');
  assert.equal(call.init.headers['Content-Type'], 'text/plain'); // no CORS preflight
  assert.equal(call.body.writeKey, KEY);
  assert.deepEqual(call.body.batch.map((m) => m.type), ['identify', 'track', 'identify']);
});

test('a batch is sent after the flush interval without flush()', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  const fetch = fakeFetch();
  const c = client(fetch);
  c.track('A');
  c.track('B');
  await settle();
  assert.equal(fetch.calls.length, 0, 'nothing before the interval');
  mock.timers.tick(50);
  await settle();
  assert.equal(fetch.batches().length, 1);
  assert.equal(fetch.messages().length, 2);
});

test('100 messages are sent at once, more go in further batches of at most 100', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  const fetch = fakeFetch();
  const c = client(fetch);
  for (let i = 0; i < 100; i++) c.track('E', { i });
  await settle();
  assert.equal(fetch.batches().length, 1, 'a full batch does not wait for the interval');
  for (let i = 100; i < 250; i++) c.track('E', { i });
  const done = c.flush();
  await settle(20);
  await done;
  const sizes = fetch.batches().map((b) => b.body.batch.length);
  assert.ok(sizes.every((n) => n <= 100), String(sizes));
  assert.deepEqual(
    fetch.messages().map((m) => m.properties.i),
    [...Array(250).keys()],
  );
});

test('every message carries messageId, timestamp, sentAt, anonymousId and the library', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  c.identify('u1', {});
  c.track('E');
  await c.flush();
  for (const m of fetch.messages()) {
    assert.match(m.messageId, /^[0-9a-f-]{36}$/);
    assert.ok(!Number.isNaN(Date.parse(m.timestamp)));
    assert.ok(!Number.isNaN(Date.parse(m.sentAt)));
    assert.ok(Date.parse(m.sentAt) >= Date.parse(m.timestamp));
    assert.equal(m.userId, 'u1');
    assert.ok(m.anonymousId);
    assert.equal(m.context.library.name, 'segments-js');
  }
  assert.equal(new Set(fetch.messages().map((m) => m.messageId)).size, 2);
});

test('a 503 is retried no sooner than Retry-After, with the same messageIds', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  const fetch = fakeFetch((_, n) => (n === 1 ? response(503, { error: 'down' }, { 'Retry-After': '2' }) : undefined));
  const c = client(fetch, new FakeStorage(), { retryBase: 10 });
  const acked = c.identify('u1', { plan: 'pro' });
  c.track('E');
  mock.timers.tick(50);
  await settle();
  assert.equal(fetch.calls.length, 1);
  mock.timers.tick(1999);
  await settle();
  assert.equal(fetch.calls.length, 1, 'not before Retry-After');
  mock.timers.tick(1);
  await settle();
  assert.equal(fetch.calls.length, 2);
  await acked;
  const [first, second] = fetch.batches().map((b) => b.body.batch.map((m) => m.messageId));
  assert.deepEqual(second, first, 'a retry resends the same messageIds');
});

test('an HTTP-date Retry-After is honoured too', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  const later = new Date(Date.now() + 5000).toUTCString();
  const fetch = fakeFetch((_, n) => (n === 1 ? response(429, {}, { 'Retry-After': later }) : undefined));
  const c = client(fetch, new FakeStorage(), { retryBase: 10 });
  c.track('E');
  mock.timers.tick(50);
  await settle();
  mock.timers.tick(3000);
  await settle();
  assert.equal(fetch.calls.length, 1);
  mock.timers.tick(3000);
  await settle();
  assert.equal(fetch.calls.length, 2);
});

test("ingest's rate limit (429 with Retry-After in seconds) is waited out, nothing lost", async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  // the answer ingest gives when a write key or an address is over its rate limit
  const limited = response(
    429,
    { error: 'too many requests for this API key: at most 10000 per second; retry after 3 s', field: 'authorization' },
    { 'Retry-After': '3' },
  );
  const fetch = fakeFetch((_, n) => (n <= 2 ? limited : undefined));
  const c = client(fetch, new FakeStorage(), { retryBase: 10 });
  const acked = c.identify('u1', { plan: 'pro' });
  mock.timers.tick(50);
  await settle();
  assert.equal(fetch.calls.length, 1);
  mock.timers.tick(2999);
  await settle();
  assert.equal(fetch.calls.length, 1, 'not before Retry-After');
  mock.timers.tick(1);
  await settle();
  assert.equal(fetch.calls.length, 2, 'limited again');
  mock.timers.tick(2999);
  await settle();
  assert.equal(fetch.calls.length, 2, 'again not before Retry-After');
  mock.timers.tick(1);
  await settle();
  assert.equal(fetch.calls.length, 3);
  await acked;
  const ids = fetch.batches().map((b) => b.body.batch.map((m) => m.messageId));
  assert.deepEqual(ids[2], ids[0], 'the same message, once acknowledged');
});

test('network errors back off exponentially with jitter, then deliver once', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  mock.method(Math, 'random', () => 0.999); // jitter at its top: delay ~ base * 2^n
  const fetch = fakeFetch((_, n) => (n <= 3 ? new TypeError('fetch failed') : undefined));
  const c = client(fetch, new FakeStorage(), { retryBase: 100 });
  const acked = c.track('E');
  mock.timers.tick(50);
  await settle();
  const times = [];
  for (let t = 0; t < 2000 && fetch.calls.length < 4; t += 10) {
    mock.timers.tick(10);
    await settle(2);
    if (fetch.calls.length > times.length + 1) times.push(t + 10);
  }
  await acked;
  assert.equal(fetch.calls.length, 4);
  // waits of about 100, 200, 400 ms after each failure: each at least double the previous one
  const gaps = times.map((t, i) => t - (times[i - 1] ?? 0));
  assert.ok(gaps[1] >= gaps[0] * 1.8 && gaps[2] >= gaps[1] * 1.8, String(gaps));
  assert.equal(new Set(fetch.messages().map((m) => m.messageId)).size, 1);
  Math.random.mock?.restore?.();
});

test('jitter spreads retry delays between half and all of the backoff', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  mock.method(Math, 'random', () => 0);
  const fetch = fakeFetch((_, n) => (n === 1 ? new TypeError('fetch failed') : undefined));
  const c = client(fetch, new FakeStorage(), { retryBase: 1000 });
  c.track('E');
  mock.timers.tick(50);
  await settle();
  mock.timers.tick(499);
  await settle();
  assert.equal(fetch.calls.length, 1);
  mock.timers.tick(1);
  await settle();
  assert.equal(fetch.calls.length, 2, 'random() = 0: half the backoff');
  Math.random.mock?.restore?.();
});

test('refused messages (4xx other than 408/429) are dropped, not retried', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  const fetch = fakeFetch(() => response(400, { error: 'batch[0]: bad', field: 'batch[0]', rejected: [] }));
  const storage = new FakeStorage();
  const c = client(fetch, storage);
  const acked = c.track('E');
  mock.timers.tick(50);
  await settle();
  await acked;
  mock.timers.tick(120000);
  await settle();
  assert.equal(fetch.calls.length, 1);
  assert.deepEqual(storage.queued(), []);
});

test('messages a batch rejects by index leave the queue with the accepted ones', async () => {
  const fetch = fakeFetch((call) =>
    response(200, { success: true, accepted: 1, rejected: [{ index: 0, field: 'userId', error: 'userId: bad' }] }),
  );
  const storage = new FakeStorage();
  const c = client(fetch, storage);
  mock.method(console, 'warn', () => {});
  c.track('A');
  c.track('B');
  await c.flush();
  assert.equal(fetch.calls.length, 1);
  assert.deepEqual(storage.queued(), []);
  console.warn.mock.restore();
});

test('unsent messages survive a reload and are sent by the next page with their ids', async () => {
  const storage = new FakeStorage();
  mock.timers.enable({ apis: ['setTimeout'] });
  const down = fakeFetch(() => new TypeError('fetch failed'));
  const page1 = client(down, storage);
  page1.identify('u1', { plan: 'pro' });
  page1.track('E');
  mock.timers.tick(50);
  await settle();
  const stored = storage.queued();
  assert.equal(stored.length, 2, 'the queue is in localStorage');
  mock.timers.reset();

  // the page is reloaded: a new client over the same storage
  const up = fakeFetch();
  const page2 = client(up, storage);
  await page2.flush();
  assert.deepEqual(
    up.messages().map((m) => m.messageId),
    stored.map((m) => m.messageId),
  );
  assert.deepEqual(storage.queued(), [], 'acknowledged messages leave localStorage');
  assert.equal(page2.user().userId, 'u1', 'the identity survives the reload too');
});

test('two queues left by earlier pages are adopted once, without duplicate messageIds', async () => {
  const storage = new FakeStorage();
  const m = (id) => ({ type: 'track', event: 'E', messageId: id, anonymousId: 'a', timestamp: new Date().toISOString() });
  storage.setItem(`segments:${KEY.slice(-12)}:q:old1`, JSON.stringify([m('1'), m('2')]));
  storage.setItem(`segments:${KEY.slice(-12)}:q:old2`, JSON.stringify([m('2'), m('3')]));
  storage.setItem('segments:otherkey0000:q:x', JSON.stringify([m('other')]));
  const fetch = fakeFetch();
  const c = client(fetch, storage);
  await c.flush();
  assert.deepEqual(fetch.messages().map((x) => x.messageId), ['1', '2', '3']);
  assert.ok(storage.getItem('segments:otherkey0000:q:x'), "another write key's queue is left alone");
});

test('the stored queue is capped in size, dropping the oldest messages', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  const storage = new FakeStorage();
  mock.method(console, 'warn', () => {});
  const c = client(fakeFetch(() => new TypeError('down')), storage, { maxQueueBytes: 4000 });
  for (let i = 0; i < 100; i++) c.track('E', { i, pad: 'x'.repeat(50) });
  const stored = storage.queued();
  const text = [...storage.map].find(([k]) => k.includes(':q:'))[1];
  assert.ok(text.length <= 4000, String(text.length));
  assert.ok(stored.length > 5 && stored.length < 100);
  assert.equal(stored.at(-1).properties.i, 99, 'the newest are kept');
  console.warn.mock.restore();
});

test('a message over 32 KB is refused locally, not queued', async () => {
  const fetch = fakeFetch();
  mock.method(console, 'warn', () => {});
  const c = client(fetch);
  await c.track('Big', { blob: 'x'.repeat(40000) });
  await c.flush();
  assert.equal(fetch.calls.length, 0);
  console.warn.mock.restore();
});

test('page hide sends at once with fetch keepalive, or a beacon while a request is in flight', async () => {
  const doc = new EventTarget();
  doc.visibilityState = 'visible';
  const beacons = [];
  globalThis.document = doc;
  Object.defineProperty(globalThis, 'navigator', {
    value: { sendBeacon: (url, body) => beacons.push({ url, body: JSON.parse(body) }) },
    configurable: true,
  });
  try {
    mock.timers.enable({ apis: ['setTimeout'] });
    let release;
    const fetch = fakeFetch((_, n) => (n === 2 ? new Promise((r) => (release = r)).then(() => response(200)) : undefined));
    const c = client(fetch);
    c.track('A');
    doc.visibilityState = 'hidden';
    doc.dispatchEvent(new Event('visibilitychange'));
    await settle();
    assert.equal(fetch.calls.length, 1, 'sent without waiting for the interval');
    assert.equal(fetch.calls[0].init.keepalive, true);

    c.track('B'); // its request hangs (n === 2)
    mock.timers.tick(50);
    await settle();
    c.track('C');
    doc.dispatchEvent(new Event('visibilitychange'));
    assert.equal(beacons.length, 1);
    assert.equal(beacons[0].url, HOST + '/v1/batch');
    assert.deepEqual(beacons[0].body.batch.map((m) => m.event), ['B', 'C']);
    release();
    await c.flush();
  } finally {
    delete globalThis.document;
    delete globalThis.navigator;
  }
});
