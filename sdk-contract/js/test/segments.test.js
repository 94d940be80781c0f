// isInSegment / segments(): answered by the query service, cached briefly, invalidated by the
// user's own changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../segments.js';
import { fakeFetch, FakeStorage, response, HOST, QUERY, KEY } from '../testing/fakes.js';

const PRO = { id: '7', key: 'pro', name: 'Pro' };

function setup(answer, extra = {}) {
  const fetch = fakeFetch(answer);
  const c = createClient();
  c.init({ writeKey: KEY, host: HOST, queryHost: QUERY + '/', fetch, storage: new FakeStorage(), ...extra });
  const queries = () => fetch.calls.filter((x) => x.url.startsWith(QUERY));
  return { c, fetch, queries };
}

const segmentsAnswer = (list) => (call) =>
  call.url.startsWith(QUERY) ? response(200, { userId: 'u', segments: list() }) : undefined;

test('isInSegment asks the query service with the write key, by key or id', async () => {
  const { c, queries } = setup(segmentsAnswer(() => [PRO]));
  await c.identify('user/1', {}, { identityToken: 'jwt' });
  assert.equal(await c.isInSegment('pro'), true);
  assert.equal(await c.isInSegment('7'), true);
  assert.equal(await c.isInSegment('beta'), false);
  const [q] = queries();
  assert.equal(q.url, `${QUERY}/v1/users/user%2F1/segments`);
  assert.equal(q.init.headers.Authorization, `Bearer ${KEY}`);
  assert.equal(q.init.headers['X-Identity-Token'], 'jwt');
  assert.equal(queries().length, 1, 'answers are cached');
});

test('concurrent checks share one request', async () => {
  const { c, queries } = setup(segmentsAnswer(() => [PRO]));
  const answers = await Promise.all([c.isInSegment('pro'), c.isInSegment('x'), c.segments()]);
  assert.deepEqual(answers, [true, false, [PRO]]);
  assert.equal(queries().length, 1);
});

test("the user's own identify invalidates the cache, and the next answer waits for its ack", async () => {
  let list = [];
  const order = [];
  const { c, queries } = setup((call) => {
    order.push(call.url.startsWith(QUERY) ? 'query' : 'ingest');
    return segmentsAnswer(() => list)(call);
  });
  await c.identify('u1', { plan: 'free' });
  assert.equal(await c.isInSegment('pro'), false);
  list = [PRO];
  assert.equal(await c.isInSegment('pro'), false, 'still cached');
  c.identify('u1', { plan: 'pro' }); // not awaited
  assert.equal(await c.isInSegment('pro'), true);
  assert.equal(queries().length, 2);
  assert.deepEqual(order, ['ingest', 'query', 'ingest', 'query'], 'the query came after the ack');
});

test('reset() and another user get their own answers', async () => {
  const { c, queries } = setup(segmentsAnswer(() => [PRO]));
  await c.identify('u1');
  await c.segments();
  c.reset();
  await c.segments();
  assert.match(queries()[1].url, /\/v1\/anonymous\/[0-9a-f-]{36}\/segments$/, 'the anonymous id, in its own namespace');
});

test('answers expire after cacheTtl', async () => {
  const { c, queries } = setup(segmentsAnswer(() => []), { cacheTtl: 0 });
  await c.segments();
  await new Promise((r) => setTimeout(r, 2));
  await c.segments();
  assert.equal(queries().length, 2);
});

test('a failed query rejects and is not cached', async () => {
  let fail = true;
  const { c, queries } = setup((call) =>
    call.url.startsWith(QUERY) ? (fail ? response(401, { error: 'unknown API key' }) : response(200, { segments: [PRO] })) : undefined,
  );
  await assert.rejects(c.isInSegment('pro'), /401/);
  fail = false;
  assert.equal(await c.isInSegment('pro'), true);
  assert.equal(queries().length, 2);
});
