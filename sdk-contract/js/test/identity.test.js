// Who the messages are about: anonymous ids, identify, reset, alias, group, change helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, change } from '../segments.js';
import { fakeFetch, FakeStorage, HOST, KEY } from '../testing/fakes.js';

function client(fetch, storage = new FakeStorage(), extra = {}) {
  const c = createClient();
  c.init({ writeKey: KEY, host: HOST, fetch, storage, ...extra });
  return c;
}

test('the anonymous id is stable across reloads and merges on the later identify', async () => {
  const storage = new FakeStorage();
  const fetch = fakeFetch();
  const page1 = client(fetch, storage);
  await page1.identifyAnonymous({ plan: 'trial' });
  const page2 = client(fetch, storage); // reload
  await page2.identify('u1', { email: 'ada@example.com' });
  const [anon, known] = fetch.messages();
  assert.equal(anon.type, 'identify');
  assert.equal(anon.userId, undefined);
  assert.deepEqual(anon.traits, { plan: 'trial' });
  assert.equal(known.userId, 'u1');
  assert.equal(known.anonymousId, anon.anonymousId, 'both ids: ingest merges the anonymous profile');
});

test('an anonymousId given to init is used', async () => {
  const fetch = fakeFetch();
  const c = client(fetch, new FakeStorage(), { anonymousId: 'device-1' });
  await c.track('E');
  assert.equal(fetch.messages()[0].anonymousId, 'device-1');
  assert.deepEqual(c.user(), { userId: null, anonymousId: 'device-1' });
});

test('reset() forgets the user and starts a new anonymous id', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  await c.identify('u1');
  const before = c.user();
  c.reset();
  await c.track('E');
  const after = fetch.messages()[1];
  assert.equal(after.userId, undefined);
  assert.notEqual(after.anonymousId, before.anonymousId);
});

test('identifying another user without reset() uses a new anonymous id', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  await c.identify('u1');
  await c.identify('u2');
  await c.identify('u2', { again: true });
  const [a, b, b2] = fetch.messages();
  assert.notEqual(a.anonymousId, b.anonymousId, "u1's anonymous id is not moved to u2");
  assert.equal(b.anonymousId, b2.anonymousId);
});

test('updateUser, group, track and alias messages', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  assert.throws(() => c.group('acme'), /identified user/);
  await c.identify(42, { plan: 'pro' }, { segments: ['beta', '~old'] });
  await c.updateUser({ logins: change.add(1) });
  await c.group('acme', { seats: 10 }, { membership: { role: 'admin' } });
  await c.track('Clicked', { button: 'upgrade' });
  await c.alias('u-42');
  await c.track('After');
  const [id, up, grp, trk, als, after] = fetch.messages();
  assert.equal(id.userId, '42');
  assert.deepEqual(id.segments, ['beta', '~old']);
  assert.deepEqual(up, { ...up, type: 'identify', userId: '42', traits: { logins: { add: 1 } } });
  assert.deepEqual(
    { groupId: grp.groupId, traits: grp.traits, membership: grp.membership, userId: grp.userId },
    { groupId: 'acme', traits: { seats: 10 }, membership: { role: 'admin' }, userId: '42' },
  );
  assert.deepEqual({ event: trk.event, properties: trk.properties }, { event: 'Clicked', properties: { button: 'upgrade' } });
  assert.deepEqual({ type: als.type, userId: als.userId, previousId: als.previousId }, { type: 'alias', userId: 'u-42', previousId: '42' });
  assert.equal(after.userId, 'u-42');
});

test('timestamp, messageId and context options are sent as given', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  await c.identify('u1', { a: 1 }, { timestamp: '2024-01-02T03:04:05.000Z', messageId: 'mine-1', context: { page: { path: '/' } } });
  const [m] = fetch.messages();
  assert.equal(m.timestamp, '2024-01-02T03:04:05.000Z');
  assert.equal(m.messageId, 'mine-1');
  assert.deepEqual(m.context.page, { path: '/' });
  assert.equal(m.context.library.name, 'segments-js');
});

test('the identity token travels with every message', async () => {
  const fetch = fakeFetch();
  const c = client(fetch);
  await c.identify('u1', {}, { identityToken: 'jwt-1' });
  await c.track('E');
  assert.deepEqual(fetch.messages().map((m) => m.identityToken), ['jwt-1', 'jwt-1']);
});

test('calls before init and missing ids throw', () => {
  const c = createClient();
  assert.throws(() => c.track('E'), /init/);
  assert.throws(() => c.init({ host: HOST }), /writeKey/);
  const d = client(fakeFetch());
  assert.throws(() => d.identify(''), /userId/);
  assert.throws(() => d.track(), /event/);
});

test('change helpers build the change objects ingest understands', () => {
  assert.deepEqual(
    [change.set(1), change.setOnce('x'), change.unset(), change.add(2), change.subtract(3), change.append(['a']), change.prepend('b'), change.remove('c')],
    [{ set: 1 }, { set_once: 'x' }, { unset: true }, { add: 2 }, { subtract: 3 }, { append: ['a'] }, { prepend: 'b' }, { remove: 'c' }],
  );
});
