// Test doubles: a scripted fetch that records requests, and an in-memory localStorage.

/** A Storage over a Map; share one between two clients to simulate a page reload. */
export class FakeStorage {
  constructor() {
    this.map = new Map();
  }
  get length() {
    return this.map.size;
  }
  key(i) {
    return [...this.map.keys()][i] ?? null;
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
  /** Every message in every stored queue. */
  queued() {
    return [...this.map].filter(([k]) => k.includes(':q:')).flatMap(([, v]) => JSON.parse(v));
  }
}

/** A Response-like object. */
export function response(status, body = { success: true }, headers = {}) {
  const h = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), String(v)]));
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: (k) => h.get(k.toLowerCase()) ?? null },
    json: async () => body,
  };
}

/**
 * fetch that records { url, init, body } and answers with `answer(request, n)` (a response, an
 * Error to throw, or undefined for 200 {success: true} / the query's segments).
 */
export function fakeFetch(answer = () => undefined) {
  const calls = [];
  const fn = async (url, init = {}) => {
    const call = { url, init, body: init.body ? JSON.parse(init.body) : undefined };
    calls.push(call);
    const a = answer(call, calls.length);
    if (a instanceof Error) throw a;
    if (a) return a;
    if (url.includes('/segments')) return response(200, { userId: 'x', segments: [] });
    return response(200, { success: true, accepted: call.body.batch.length, rejected: [] });
  };
  fn.calls = calls;
  fn.batches = () => calls.filter((c) => c.url.endsWith('/v1/batch'));
  fn.messages = () => fn.batches().flatMap((c) => c.body.batch);
  return fn;
}

/** Let pending promise callbacks run (fetch answers are promises). */
export const settle = async (n = 5) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

export const HOST = 'http://ingest.test';
export const QUERY = 'http://query.test';
export const KEY = 'wk_test_0123456789abcdef';
