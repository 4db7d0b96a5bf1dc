// BlobFileStream: a stored blob read as a stream (pieces the consumer owns) or taken
// directly (one buffer read into again); wrong sizes and digests fail before the end, and
// the file is closed however the stream ends.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestBytes } from '../digest/digest.js';
import { sinkToFile } from '../internal/direct.js';
import { tempDir } from '../testing/tmp.js';
import { BlobFileStream } from './blob-file-stream.js';

const data = randomBytes(3 * 512 * 1024 + 777);
const digest = digestBytes(data);
const openFds = () => readdirSync('/proc/self/fd').length;

async function blobFile(
  t: { after: (fn: () => Promise<void>) => void },
  bytes: Buffer = data,
): Promise<string> {
  const path = join(await tempDir(t), 'blob');
  await writeFile(path, bytes);
  return path;
}

async function stream(path: string, opts: { signal?: AbortSignal; onProgress?: (n: number) => void } = {}) {
  return new BlobFileStream(await open(path, 'r'), { digest, size: data.length, what: 'blob', ...opts });
}

it('read as a stream: every byte, in pieces the consumer may keep, and the progress', async (t) => {
  const path = await blobFile(t);
  let progress = 0;
  const pieces: Buffer[] = [];
  for await (const c of await stream(path, { onProgress: (n) => (progress += n) })) pieces.push(c as Buffer);
  assert.ok(pieces.length > 1);
  // kept pieces were not read into again
  assert.deepEqual(Buffer.concat(pieces), data);
  assert.equal(progress, data.length);
});

it('taken directly into a file: every byte', async (t) => {
  const path = await blobFile(t);
  const out = join(await tempDir(t), 'copy');
  const fd = openSync(out, 'wx');
  try {
    assert.equal(await sinkToFile(await stream(path), fd), data.length);
  } finally {
    closeSync(fd);
  }
  assert.deepEqual(readFileSync(out), data);
});

for (const [name, bytes, code] of [
  [
    'a flipped byte',
    Buffer.concat([data.subarray(0, 1000), Buffer.from([(data[1000] ?? 0) ^ 1]), data.subarray(1001)]),
    'ERR_DIGEST_MISMATCH',
  ],
  ['a short file', data.subarray(0, data.length - 5), 'ERR_SIZE_MISMATCH'],
  ['a long file', Buffer.concat([data, Buffer.alloc(5)]), 'ERR_SIZE_MISMATCH'],
] as const) {
  it(`${name} fails before the end, read either way, and the file is closed`, async (t) => {
    const path = await blobFile(t, bytes);
    const before = openFds();
    let passed = 0;
    await assert.rejects(
      async () => {
        for await (const c of await stream(path)) passed += (c as Buffer).length;
      },
      { code },
    );
    // a consumer that counts to the size (an upload) never holds all of it
    assert.ok(passed < data.length, `${passed} of ${data.length} bytes were passed on`);
    const out = join(await tempDir(t), 'copy');
    const fd = openSync(out, 'wx');
    try {
      await assert.rejects(sinkToFile(await stream(path), fd), { code });
    } finally {
      closeSync(fd);
    }
    await sleep(10);
    assert.equal(openFds(), before);
  });
}

it('dropped half way, or aborted, the file is closed', async (t) => {
  const path = await blobFile(t);
  const before = openFds();
  const s = await stream(path);
  for await (const _ of s) break; // destroys the stream
  const ac = new AbortController();
  const s2 = await stream(path, { signal: ac.signal });
  const reading = (async () => {
    for await (const _ of s2) ac.abort();
  })();
  await assert.rejects(reading, { code: 'ERR_ABORTED' });
  await sleep(10);
  assert.equal(openFds(), before);
});
