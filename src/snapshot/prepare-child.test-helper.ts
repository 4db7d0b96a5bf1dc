// Test helper (run as a child process by snapshots.test.ts): prepare the layers given as JSON
// from an OCI layout into a store's snapshot area; print how many layers this process extracted.

import { openLayout } from '../layout/layout.js';
import { type SnapshotLayer, Snapshots } from './snapshots.js';

const [store, layoutDir, layersJson] = process.argv.slice(2);
const layout = await openLayout(layoutDir as string);
const snapshots = await Snapshots.open(store as string);
let extracted = 0;
await snapshots.prepare(JSON.parse(layersJson as string) as SnapshotLayer[], layout, {
  onProgress: (e) => {
    if (e.type === 'layer-done') extracted++;
  },
});
process.stdout.write(`${extracted}\n`);
