// One stratum layer diff, as its own process so that GNU time measures it like the other
// tools: `node stratum-diff.js LOWER|- UPPER OUT [gzip|zstd|none] [parallel|stream|-] [LEVEL]`.
// Prints the DiffResult as JSON.

import { diffTrees } from '../../dist/layer/diff.js';

const [lower, upper, out, compression, engine, level] = process.argv.slice(2);
if (upper === undefined || out === undefined) {
  process.stderr.write(
    'usage: stratum-diff LOWER|- UPPER OUT [gzip|zstd|none] [parallel|stream|-] [LEVEL]\n',
  );
  process.exit(2);
}
const r = await diffTrees(lower === '-' ? undefined : lower, upper, {
  destination: out,
  compression: (compression ?? 'gzip') as 'gzip' | 'zstd' | 'none',
  ...(engine === 'stream' || engine === 'parallel' ? { gzipEngine: engine } : {}),
  ...(level === undefined ? {} : { level: Number(level) }),
});
process.stdout.write(`${JSON.stringify(r)}\n`);
