// The loader snippet queues calls made before segments.js has loaded; the SDK replays them in
// order and takes the stub's place.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { METHODS } from '../segments.js';
import { fakeFetch, FakeStorage, response, HOST, QUERY, KEY } from '../testing/fakes.js';

const SNIPPET = readFileSync(new URL('../snippet.js', import.meta.url), 'utf8');

test('calls made before the SDK loads are replayed in order, promises included', async () => {
  const scripts = [];
  globalThis.window = globalThis;
  globalThis.document = { createElement: () => ({}), head: { appendChild: (e) => scripts.push(e) } };
  try {
    new Function(SNIPPET)(); // what the page runs
    const stub = globalThis.segments;
    assert.ok(Array.isArray(stub));
    assert.equal(scripts.length, 1);
    assert.equal(scripts[0].type, 'module');

    const fetch = fakeFetch((call) =>
      call.url.startsWith(QUERY) ? response(200, { userId: 'u1', segments: [{ id: '1', key: 'beta', name: 'Beta' }] }) : undefined,
    );
    const early = [
      segments.init({ writeKey: KEY, host: HOST, queryHost: QUERY, fetch, storage: new FakeStorage() }),
      segments.identify('u1', { plan: 'pro' }),
      segments.track('First'),
      segments.updateUser({ n: { add: 1 } }),
      segments.isInSegment('beta'),
    ];
    assert.equal(fetch.calls.length, 0, 'nothing is sent before the SDK loads');

    // the script tag loads the module: it finds the queue and replays it
    const sdk = await import('../segments.js?loaded-by-snippet');
    assert.equal(globalThis.segments, sdk.default, 'the SDK replaced the stub');
    const results = await Promise.all(early);
    assert.equal(results[4], true, "the queued isInSegment's promise got the answer");
    segments.track('After load');
    await segments.flush();
    assert.deepEqual(
      fetch.messages().map((m) => m.event ?? m.type),
      ['identify', 'First', 'identify', 'After load'],
    );
    assert.equal(fetch.messages()[0].userId, 'u1');
  } finally {
    delete globalThis.segments;
    delete globalThis.document;
    delete globalThis.window;
  }
});

test('a queued call that throws rejects its promise, and the rest still run', async () => {
  globalThis.window = globalThis;
  globalThis.document = { createElement: () => ({}), head: { appendChild: () => {} } };
  try {
    new Function(SNIPPET)();
    const fetch = fakeFetch();
    const bad = segments.track('too early'); // before init: throws in the SDK
    segments.init({ writeKey: KEY, host: HOST, fetch, storage: new FakeStorage() });
    const good = segments.track('fine');
    await import('../segments.js?second-load');
    await assert.rejects(bad, /init/);
    await good;
    assert.deepEqual(fetch.messages().map((m) => m.event), ['fine']);
  } finally {
    delete globalThis.segments;
    delete globalThis.document;
    delete globalThis.window;
  }
});

test("the snippet's method list is the SDK's", () => {
  const listed = SNIPPET.match(/"(init [^"]+)"/)[1].split(' ');
  assert.deepEqual(listed, METHODS);
});
