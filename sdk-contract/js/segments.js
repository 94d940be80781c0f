// segments web SDK: identify users, track what they do, and ask which segments they are in.
// A dependency-free ES module for browsers (and Node >= 18). See segments.d.ts for the API.
//
// Delivery: every call becomes a message with a messageId and a timestamp, appended to a queue
// that is mirrored in localStorage (size-capped) and sent to ingest's /v1/batch every 50 ms or
// 100 messages. A message leaves the queue only when ingest acknowledged it (2xx: committed) or
// refused it for good (4xx); failures are retried with exponential backoff and jitter, never
// sooner than Retry-After. Retries and a reloaded page resend the same messageIds, and ingest
// applies a messageId once: nothing is lost, nothing applies twice.

const VERSION = '0.1.0';
const LIBRARY = { name: 'segments-js', version: VERSION };
// Method names the loader snippet queues before the SDK has loaded (keep in sync with snippet.js).
export const METHODS = [
  'init', 'identify', 'identifyAnonymous', 'updateUser', 'group', 'track', 'alias', 'reset',
  'isInSegment', 'segments', 'flush',
];
// Ingest's limits are 32 KB per message and 500 KB per request; keepalive requests and beacons
// may carry 64 KB in all, so a page-hide send stays under that.
const MAX_MESSAGE = 32 * 1024;
const MAX_REQUEST = 450 * 1024;
const MAX_KEEPALIVE = 60 * 1024;

const DEFAULTS = {
  flushInterval: 50,
  maxBatch: 100,
  retryBase: 1000,
  retryMax: 60000,
  cacheTtl: 5000,
  ackWait: 3000,
  maxQueueBytes: 512 * 1024,
};

const bytes = (s) => new TextEncoder().encode(s).length;
// p settled, or ms elapsed, whichever first (without leaving a timer behind)
const within = (p, ms) =>
  new Promise((r) => {
    const t = setTimeout(r, ms);
    p.then(() => (clearTimeout(t), r()));
  });
const uuid = () =>
  globalThis.crypto?.randomUUID?.() ??
  'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c < 'y' ? r : (r & 3) | 8).toString(16);
  });
const id = (v, what) => {
  const s = v == null ? '' : String(v);
  if (!s.trim()) throw new Error(`segments: ${what} is required`);
  return s;
};
// Seconds or an HTTP date, in milliseconds; undefined when absent or unreadable.
const retryAfter = (h) => {
  if (h == null || h === '') return;
  const ms = /^\d+(\.\d+)?$/.test(h) ? h * 1000 : Date.parse(h) - Date.now();
  return ms >= 0 ? ms : ms < 0 ? 0 : undefined;
};

/** A client with its own queue and identity; the module's named exports are one such client. */
export function createClient() {
  let o; // options, after init
  let prefix; // localStorage key prefix of this write key
  let queueKey; // this page's queue in localStorage
  let q = []; // messages not yet acknowledged, oldest first
  let me = {}; // { u: userId, a: anonymousId, t: identityToken }
  let timer = 0;
  let busy = false; // a request is in flight
  let backoff = false; // waiting to retry
  let failures = 0;
  let cache = null; // { id, exp, v: Promise<segment[]> }
  let lastChange = null; // Promise of the user's latest own change being acknowledged
  const waiters = new Map(); // messageId -> resolve
  let idle = []; // flush() resolvers

  const load = (k) => {
    try {
      return JSON.parse(o.storage?.getItem(k) ?? 'null');
    } catch {
      return null;
    }
  };
  // v: a JSON text, or null to remove
  const store = (k, v) => {
    try {
      v == null ? o.storage?.removeItem(k) : o.storage?.setItem(k, v);
    } catch {
      // full or forbidden storage: the queue still lives in memory
    }
  };
  const saveMe = () => store(prefix + 'id', JSON.stringify(me));

  // Persist the queue, dropping the oldest messages past the size cap.
  function save() {
    let s = JSON.stringify(q);
    if (s.length > o.maxQueueBytes) {
      // '[' + messages joined by ',' + ']': each message costs its length + 1
      let size = s.length;
      let n = 0;
      while (size > o.maxQueueBytes && n < q.length - 1) size -= JSON.stringify(q[n++]).length + 1;
      console.warn(`segments: queue over its size cap, dropped the ${n} oldest messages`);
      settle(q.splice(0, n));
      s = JSON.stringify(q);
    }
    store(queueKey, q.length ? s : null);
  }

  function settle(done) {
    for (const m of done) {
      waiters.get(m.messageId)?.();
      waiters.delete(m.messageId);
    }
  }

  function drained() {
    if (q.length) return;
    for (const r of idle.splice(0)) r();
  }

  function schedule(ms) {
    if (!timer && !busy) timer = setTimeout(pump, ms ?? o.flushInterval);
  }

  // Send the oldest messages (one batch); on page hide, a keepalive request that fits 64 KB.
  async function pump(hide) {
    clearTimeout(timer);
    timer = 0;
    backoff = false;
    if (busy || !q.length) return drained();
    busy = true;
    const limit = hide === true ? MAX_KEEPALIVE : MAX_REQUEST;
    const batch = [];
    let size = 100;
    for (const m of q) {
      const n = bytes(JSON.stringify(m)) + 40;
      if (batch.length >= o.maxBatch || (batch.length && size + n > limit)) break;
      batch.push(m);
      size += n;
    }
    let wait;
    try {
      const r = await o.fetch(o.host + '/v1/batch', {
        method: 'POST',
        // text/plain and the key in the body: a CORS "simple" request, no preflight
        headers: { 'Content-Type': 'text/plain' },
        body: body(batch),
        keepalive: hide === true,
      });
      const s = r.status;
      if (r.ok || (s >= 400 && s < 500 && s !== 408 && s !== 429)) {
        // 2xx: committed. Other 4xx: refused for good, retrying cannot help.
        const answer = await r.json().catch(() => ({}));
        for (const x of answer.rejected ?? [])
          console.warn('segments: message rejected:', x.error, batch[x.index]);
        if (!r.ok && !answer.rejected) console.warn('segments: ingest refused a batch:', s, answer.error);
        failures = 0;
        const sent = new Set(batch.map((m) => m.messageId));
        q = q.filter((m) => !sent.has(m.messageId));
        save();
        settle(batch);
      } else {
        wait = retryAfter(r.headers?.get?.('retry-after')) ?? 0;
      }
    } catch {
      wait = 0; // network error: ingest unreachable
    }
    busy = false;
    if (wait !== undefined) {
      // exponential backoff with jitter (half to all of it), never sooner than Retry-After
      const expo = Math.min(o.retryMax, o.retryBase * 2 ** failures++) * (0.5 + Math.random() / 2);
      backoff = true;
      timer = setTimeout(pump, Math.max(wait, expo));
    } else if (q.length) pump();
    else drained();
  }

  function body(batch) {
    const sentAt = new Date().toISOString();
    return JSON.stringify({ batch: batch.map((m) => ({ ...m, sentAt })), sentAt, writeKey: o.writeKey });
  }

  function hidden() {
    if (!o || !q.length) return;
    save();
    if (!busy) return pump(true);
    // a request is in flight and may die with the page: beacon the rest too; anything not
    // acknowledged stays queued and is resent (same messageIds) by the next page
    globalThis.navigator?.sendBeacon?.(o.host + '/v1/batch', body(q.slice(0, 50)));
  }

  function send(type, fields, opts = {}) {
    if (!o) throw new Error('segments: call init({ writeKey, host }) first');
    const m = {
      type,
      messageId: opts.messageId ?? uuid(),
      timestamp: new Date(opts.timestamp ?? Date.now()).toISOString(),
      userId: me.u,
      anonymousId: me.a,
      ...fields,
      context: { library: LIBRARY, ...opts.context },
    };
    if (me.t) m.identityToken = me.t;
    if (bytes(JSON.stringify(m)) > MAX_MESSAGE) {
      console.warn('segments: message over 32 KB, not sent', m);
      return Promise.resolve();
    }
    const prev = waiters.get(m.messageId); // the same messageId twice: both wait for it
    const acked = new Promise((r) => waiters.set(m.messageId, prev ? () => (prev(), r()) : r));
    q.push(m);
    save();
    q.length >= o.maxBatch && !backoff ? pump() : schedule();
    return acked;
  }

  // A change of the user's own profile: cached memberships no longer hold.
  function changed(p) {
    cache = null;
    lastChange = p;
    return p;
  }

  const api = {
    init(options) {
      if (o) return;
      o = {
        ...DEFAULTS,
        fetch: globalThis.fetch?.bind(globalThis),
        storage: (() => {
          try {
            return globalThis.localStorage;
          } catch {
            return undefined; // sandboxed or disabled storage
          }
        })(),
        ...options,
      };
      id(o.writeKey, 'writeKey');
      o.host = id(o.host, 'host').replace(/\/+$/, '');
      o.queryHost = (o.queryHost || o.host).replace(/\/+$/, '');
      prefix = `segments:${o.writeKey.slice(-12)}:`;
      queueKey = prefix + 'q:' + uuid();
      me = load(prefix + 'id') ?? {};
      if (o.anonymousId) me.a = String(o.anonymousId);
      if (!me.a) me.a = uuid();
      saveMe();
      // adopt the queues earlier pages left (same origin, same write key), then delete them
      const s = o.storage;
      const adopted = [];
      for (let i = 0; i < (s?.length ?? 0); i++) {
        const k = s.key(i);
        if (k?.startsWith(prefix + 'q:')) adopted.push(k);
      }
      const seen = new Set();
      for (const k of adopted) for (const m of load(k) ?? []) q.push(m);
      q = q.filter((m) => m?.messageId && !seen.has(m.messageId) && seen.add(m.messageId));
      save();
      for (const k of adopted) store(k, null);
      globalThis.document?.addEventListener?.('visibilitychange', () => {
        if (globalThis.document.visibilityState === 'hidden') hidden();
      });
      globalThis.addEventListener?.('pagehide', hidden);
      if (q.length) schedule();
    },

    identify(userId, attributes, options = {}) {
      const u = id(userId, 'userId');
      if (me.u && me.u !== u) me = { a: uuid() }; // another person: another anonymous id
      me.u = u;
      if (options.identityToken) me.t = options.identityToken;
      saveMe();
      return changed(send('identify', { userId: u, traits: attributes, segments: options.segments }, options));
    },

    identifyAnonymous(attributes, options = {}) {
      return changed(send('identify', { userId: undefined, traits: attributes }, options));
    },

    updateUser(attributes, options = {}) {
      return changed(send('identify', { traits: attributes, segments: options.segments }, options));
    },

    group(companyId, attributes, options = {}) {
      if (!me.u) throw new Error('segments: group() needs an identified user (call identify first)');
      const fields = { groupId: id(companyId, 'companyId'), traits: attributes, membership: options.membership };
      return changed(send('group', fields, options));
    },

    track(event, properties, options = {}) {
      return send('track', { event: id(event, 'event'), properties }, options);
    },

    alias(userId, previousId, options = {}) {
      const u = id(userId, 'userId');
      const p = send('alias', { userId: u, previousId: id(previousId ?? me.u ?? me.a, 'previousId') }, options);
      me.u = u;
      saveMe();
      return changed(p);
    },

    reset() {
      me = { a: uuid() };
      cache = lastChange = null;
      if (o) saveMe();
    },

    segments() {
      if (!o) return Promise.reject(new Error('segments: call init first'));
      const who = me.u ?? me.a;
      if (cache?.id === who && cache.exp > Date.now()) return cache.v;
      const headers = { Authorization: 'Bearer ' + o.writeKey };
      if (me.t) headers['X-Identity-Token'] = me.t;
      // the first answer after the user's own change waits (briefly) for that change to commit
      const entry = {
        id: who,
        exp: Date.now() + o.cacheTtl,
        v: Promise.resolve(lastChange && within(lastChange, o.ackWait))
          // user ids and anonymous ids are separate namespaces on the server
          .then(() => o.fetch(`${o.queryHost}/v1/${me.u ? 'users' : 'anonymous'}/${encodeURIComponent(who)}/segments`, { headers }))
          .then(async (r) => {
            if (!r.ok) throw new Error(`segments: the query service answered ${r.status}`);
            return (await r.json()).segments;
          }),
      };
      entry.v.catch(() => {
        if (cache === entry) cache = null;
      });
      return (cache = entry).v;
    },

    async isInSegment(key) {
      const list = await api.segments();
      return list.some((s) => s.key === key || s.id === String(key));
    },

    flush() {
      if (!o) return Promise.resolve();
      const p = new Promise((r) => idle.push(r));
      if (!backoff) pump();
      else drained();
      return p;
    },

    user() {
      return { userId: me.u ?? null, anonymousId: me.a ?? null };
    },
  };
  return api;
}

/** Attribute change objects: `identify(id, { logins: change.add(1) })`. */
export const change = {
  set: (v) => ({ set: v }),
  setOnce: (v) => ({ set_once: v }),
  unset: () => ({ unset: true }),
  add: (n) => ({ add: n }),
  subtract: (n) => ({ subtract: n }),
  append: (v) => ({ append: v }),
  prepend: (v) => ({ prepend: v }),
  remove: (v) => ({ remove: v }),
};

const client = createClient();
client.change = change;
export default client;
export const { init, identify, identifyAnonymous, updateUser, group, track, alias, reset, isInSegment, segments, flush, user } = client;

// Loaded by the snippet: replay the calls it queued, in order, then take its place.
const stub = globalThis.segments;
if (Array.isArray(stub)) {
  globalThis.segments = client;
  for (const [method, args, resolve, reject] of stub) {
    try {
      resolve(client[method](...args));
    } catch (e) {
      reject(e);
    }
  }
} else if (stub === undefined && globalThis.document) globalThis.segments = client;
