// Cross-process safety of index.json updates: two child processes (this same file, run as
// a worker) tag the same layout at once, and no update is lost.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Descriptor } from '../spec/types.js';
import { makeImage, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { openLayout } from './layout.js';

const WORKER_ENV = 'STRATUM_LAYOUT_TAG_WORKER';

interface WorkerJob {
  readonly dir: string;
  readonly prefix: string;
  readonly count: number;
  readonly descriptors: readonly Descriptor[];
}

async function worker(job: WorkerJob): Promise<void> {
  const l = await openLayout(job.dir);
  for (let i = 0; i < job.count; i++) {
    const desc = job.descriptors[i % job.descriptors.length] as Descriptor;
    await l.tag(desc, `${job.prefix}-${i}`);
    // every other step, retag a shared name too, so the writers also collide on one entry
    if (i % 2 === 0) await l.tag(desc, 'shared');
  }
}

function runWorker(job: WorkerJob): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, [WORKER_ENV]: JSON.stringify(job) },
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`tag worker exited with ${code}: ${stderr}`)),
    );
  });
}

const job = process.env[WORKER_ENV];
if (job !== undefined) {
  await worker(JSON.parse(job) as WorkerJob);
} else {
  describe('LayoutTarget across processes', () => {
    it('two processes tagging the same layout at once lose no update', async (t) => {
      const dir = await tempDir(t);
      const l = await openLayout(dir, { create: true });
      const a = await makeImage({ layers: [[{ path: 'a', content: 'a' }]] });
      const b = await makeImage({ layers: [[{ path: 'b', content: 'b' }]] });
      await pushImage(l, a);
      await pushImage(l, b);
      const descriptors = [a.manifest.descriptor, b.manifest.descriptor];
      const count = 30;
      await Promise.all([
        runWorker({ dir, prefix: 'first', count, descriptors }),
        runWorker({ dir, prefix: 'second', count, descriptors }),
        // and this process at the same time
        (async () => {
          for (let i = 0; i < count; i++) await l.tag(descriptors[i % 2] as Descriptor, `third-${i}`);
        })(),
      ]);
      const refs = (await l.roots()).map((r) => r.ref);
      assert.equal(refs.length, 3 * count + 1, 'every tag, plus one entry for the shared name');
      for (const prefix of ['first', 'second', 'third']) {
        for (let i = 0; i < count; i++) assert.ok(refs.includes(`${prefix}-${i}`), `${prefix}-${i}`);
      }
      assert.equal(refs.filter((r) => r === 'shared').length, 1);
    });
  });
}
