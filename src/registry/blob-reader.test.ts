// resumableBlobStream over fake answers: bytes survive a drop at any
// point (the next request starts exactly after the last byte received), a slow consumer
// holds the body back, and the result is the blob or an error.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { digestBytes } from '../digest/digest.js';
import { resumableBlobStream } from './blob-reader.js';
import type { RegistryResponse } from './client.js';

const blobBytes = randomBytes(3 * 1024 * 1024 + 12345);
const digest = digestBytes(blobBytes);

/** A body giving `bytes` in 64 KiB chunks (or `chunk`), failing after `failAfter` bytes if set. */
function body(bytes: Buffer, opts: { failAfter?: number; chunk?: number } = {}): Readable {
  const chunk = opts.chunk ?? 64 * 1024;
  const end = opts.failAfter ?? bytes.length;
  let at = 0;
  return new Readable({
    highWaterMark: chunk,
    read() {
      if (at >= end) {
        // fail once what was sent has been taken, as a socket that closes after its last bytes
        if (opts.failAfter !== undefined) setTimeout(() => this.destroy(new Error('connection dropped')), 5);
        else this.push(null);
        return;
      }
      const n = Math.min(chunk, end - at);
      this.push(bytes.subarray(at, at + n));
      at += n;
    },
  });
}

function answer(status: number, b: Readable, headers: Record<string, string> = {}): RegistryResponse {
  return { status, headers, body: b, url: new URL('http://registry.test/v2/app/blobs/x') };
}

async function readAllSlowly(s: Readable, pauseEvery = 0): Promise<Buffer> {
  const out: Buffer[] = [];
  let n = 0;
  for await (const c of s) {
    out.push(c as Buffer);
    if (pauseEvery && ++n % pauseEvery === 0) await sleep(2);
  }
  return Buffer.concat(out);
}

for (const failAfter of [1, 65_536, 524_288, 524_289, 1_000_000, 2_100_000]) {
  it(`a drop after ${failAfter} bytes is resumed from exactly there`, async () => {
    const offsets: number[] = [];
    let progress = 0;
    const s = resumableBlobStream({
      first: answer(200, body(blobBytes, { failAfter })),
      digest,
      size: blobBytes.length,
      reopen: async (offset) => {
        offsets.push(offset);
        return answer(206, body(blobBytes.subarray(offset)), {
          'content-range': `bytes ${offset}-${blobBytes.length - 1}/${blobBytes.length}`,
        });
      },
      attempts: 3,
      what: 'test blob',
      onProgress: (n) => {
        progress += n;
      },
    });
    assert.deepEqual(await readAllSlowly(s), blobBytes);
    assert.deepEqual(offsets, [failAfter]);
    assert.equal(progress, blobBytes.length);
  });
}

it('a slow consumer holds the body back instead of buffering it all', async () => {
  const source = body(blobBytes);
  let most = 0;
  const s = resumableBlobStream({
    first: answer(200, source),
    digest,
    size: blobBytes.length,
    reopen: () => Promise.reject(new Error('no need')),
    attempts: 0,
    what: 'test blob',
  });
  const out: Buffer[] = [];
  for await (const c of s) {
    out.push(c as Buffer);
    most = Math.max(most, s.readableLength);
    await sleep(1);
  }
  assert.deepEqual(Buffer.concat(out), blobBytes);
  assert.ok(most <= 2 * 1024 * 1024, `${most} bytes were waiting in the stream`);
});

it('tiny chunks are verified too; wrong bytes fail before the end', async () => {
  const wrong = Buffer.from(blobBytes);
  wrong[2_000_000] = (wrong[2_000_000] ?? 0) ^ 1;
  const s = resumableBlobStream({
    first: answer(200, body(wrong, { chunk: 777 })),
    digest,
    size: blobBytes.length,
    reopen: () => Promise.reject(new Error('no need')),
    attempts: 0,
    what: 'test blob',
  });
  await assert.rejects(readAllSlowly(s), { code: 'ERR_DIGEST_MISMATCH' });
});

it('taken directly, wrong bytes fail before the consumer holds all of them', async () => {
  const wrong = Buffer.from(blobBytes);
  wrong[2_000_000] = (wrong[2_000_000] ?? 0) ^ 1;
  const s = resumableBlobStream({
    first: answer(200, body(wrong)),
    digest,
    size: blobBytes.length,
    reopen: () => Promise.reject(new Error('no need')),
    attempts: 0,
    what: 'test blob',
  });
  let passed = 0;
  await assert.rejects(
    new Promise((resolve, reject) => {
      s.sinkTo({
        write: (view) => {
          passed += view.byteLength;
          return true;
        },
        end: () => resolve(undefined),
        error: reject,
      });
    }),
    { code: 'ERR_DIGEST_MISMATCH' },
  );
  // a consumer that counts to the size (an upload with Content-Length) never holds all of it
  assert.ok(passed < blobBytes.length, `${passed} of ${blobBytes.length} bytes were passed on`);
});

it('a body that ends short, with no attempts left, is a size mismatch', async () => {
  const s = resumableBlobStream({
    first: answer(200, body(blobBytes.subarray(0, 700_000))),
    digest,
    size: blobBytes.length,
    reopen: () => Promise.reject(new Error('no more')),
    attempts: 0,
    what: 'test blob',
  });
  await assert.rejects(readAllSlowly(s), { code: 'ERR_SIZE_MISMATCH' });
});

it('a first body that fails before anyone reads is resumed, not an uncaught error', async () => {
  const early = new Readable({ read() {} });
  const s = resumableBlobStream({
    first: answer(200, early),
    digest,
    size: blobBytes.length,
    reopen: async (offset) => {
      assert.equal(offset, 0);
      return answer(200, body(blobBytes));
    },
    attempts: 1,
    what: 'test blob',
  });
  early.destroy(Object.assign(new Error('connection dropped'), { code: 'ECONNRESET' }));
  await sleep(20); // the failure comes and goes before the stream is read
  assert.deepEqual(await readAllSlowly(s), blobBytes);
});
