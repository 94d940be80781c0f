// The published surface: TypeScript declarations for every export, and the bundle size budget.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as sdk from '../segments.js';
import { measure, BUDGET } from '../scripts/size.mjs';

const DTS = readFileSync(new URL('../segments.d.ts', import.meta.url), 'utf8');

test('segments.d.ts declares every export and every client method', () => {
  for (const name of Object.keys(sdk)) {
    if (name === 'default') continue;
    assert.match(DTS, new RegExp(`export declare (function|const) ${name}\\b`), `export ${name}`);
  }
  const iface = DTS.slice(DTS.indexOf('export interface Client'), DTS.indexOf('/** Change-object helpers'));
  for (const [name, value] of Object.entries(sdk.createClient())) {
    if (typeof value === 'function') assert.match(iface, new RegExp(`\\n  ${name}\\(`), `Client.${name}`);
  }
  for (const name of Object.keys(sdk.change)) assert.match(DTS, new RegExp(`\\n  ${name}\\(`), `change.${name}`);
});

test(`minified and gzipped, the SDK is at most ${BUDGET} bytes`, async () => {
  const { raw, min, gzip } = await measure();
  console.log(`# segments.js: ${raw} B source, ${min} B minified, ${gzip} B minified+gzip`);
  assert.ok(gzip <= BUDGET, `${gzip} B > ${BUDGET} B`);
});
