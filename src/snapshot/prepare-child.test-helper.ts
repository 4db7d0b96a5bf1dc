// Test helper (run as a child process by snapshots.test.ts): prepare the layers given as JSON
// from an OCI layout into a store's snapshot area; print how many layers this process
// extracted. With a fourth argument `slow`, layer bytes trickle in (1 KiB every 5 ms), so
// that the parent can kill this process in the middle of an extraction.

import { Transform } from 'node:stream';
import type { Fetcher } from '../content/types.js';
import { openLayout } from '../layout/layout.js';
import { type SnapshotLayer, Snapshots } from './snapshots.js';

const [store, layoutDir, layersJson, mode] = process.argv.slice(2);
const layout = await openLayout(layoutDir as string);
const fetcher: Fetcher =
  mode === 'slow'
    ? {
        async fetch(desc, opts) {
          const trickle = new Transform({
            async transform(chunk: Buffer, _enc, cb) {
              for (let i = 0; i < chunk.length; i += 1024) {
                this.push(chunk.subarray(i, i + 1024));
                await new Promise((r) => setTimeout(r, 5));
              }
              cb();
            },
          });
          return (await layout.fetch(desc, opts)).pipe(trickle);
        },
      }
    : layout;
const snapshots = await Snapshots.open(store as string);
let extracted = 0;
await snapshots.prepare(JSON.parse(layersJson as string) as SnapshotLayer[], fetcher, {
  onProgress: (e) => {
    if (e.type === 'layer-done') extracted++;
  },
});
process.stdout.write(`${extracted}\n`);
