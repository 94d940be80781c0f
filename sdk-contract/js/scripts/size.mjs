// Prints the SDK's size minified (esbuild) and gzipped (zlib, level 9); exits 1 over the budget.
//   node scripts/size.mjs [--write dist/segments.min.js]
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

export const BUDGET = 5 * 1024;
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** { raw, min, gzip } byte counts of segments.js, and the minified code. */
export async function measure() {
  let esbuild;
  try {
    esbuild = await import('esbuild');
  } catch {
    throw new Error('esbuild is not installed: run `npm ci` in sdk-contract/js first');
  }
  const source = readFileSync(join(root, 'segments.js'), 'utf8');
  const { code } = await esbuild.transform(source, { minify: true, format: 'esm', target: 'es2020' });
  return {
    code,
    raw: Buffer.byteLength(source),
    min: Buffer.byteLength(code),
    gzip: gzipSync(code, { level: 9 }).length,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { code, raw, min, gzip } = await measure();
  console.log(`segments.js: ${raw} B source, ${min} B minified, ${gzip} B minified+gzip (budget ${BUDGET} B)`);
  const out = process.argv[process.argv.indexOf('--write') + 1];
  if (process.argv.includes('--write') && out) {
    mkdirSync(dirname(join(root, out)), { recursive: true });
    writeFileSync(join(root, out), code);
  }
  process.exit(gzip <= BUDGET ? 0 : 1);
}
