// The stratum side of two bench/unpack scenarios, as its own process so that GNU time measures
// it like the other tools:
//
//   node driver.js apply ROOT BLOB...   applyLayer (plain form) of each layer blob in order,
//                                       read from the file as the layout store reads blobs
//   node driver.js diff UPPER OUT       diffTrees(no lower, UPPER) into OUT, gzip (defaults)
//
// Prints one JSON line per layer / the DiffResult.

import { createReadStream } from 'node:fs';
import { applyLayer } from '../../dist/layer/apply.js';
import { diffTrees } from '../../dist/layer/diff.js';

const [cmd, first, ...rest] = process.argv.slice(2);
if (cmd === 'apply' && first !== undefined && rest.length > 0) {
  for (const blob of rest) {
    const r = await applyLayer(first, createReadStream(blob, { highWaterMark: 512 * 1024 }), {
      form: 'plain',
    });
    process.stdout.write(
      `${JSON.stringify({ blob, diffID: r.diffID, entries: r.entries, bytes: r.bytes, warnings: r.warnings.length })}\n`,
    );
  }
} else if (cmd === 'diff' && first !== undefined && rest.length === 1) {
  const r = await diffTrees(undefined, first, { destination: rest[0] as string, compression: 'gzip' });
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  process.stderr.write('usage: driver.js apply ROOT BLOB... | driver.js diff UPPER OUT\n');
  process.exit(2);
}
