// parallelGzipStream: several blocks in, one gzip member out that gunzip reads back exactly;
// the same bytes whatever the input's chunking; bad levels refused before anything runs.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { GZIP_BLOCK_SIZE, parallelGzipStream } from './parallel-gzip.js';

/** Compressible but not trivial: random words, repeated. */
function sample(size: number): Buffer {
  const words = Array.from({ length: 512 }, () => randomBytes(6).toString('hex'));
  const out = Buffer.alloc(size);
  let at = 0;
  let i = 0;
  while (at < size) at += out.write(`${words[(i++ * 7919) % words.length]} `, at);
  return out;
}

async function gzipIn(data: Buffer, chunk: number, concurrency?: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let at = 0; at < data.length; at += chunk) pieces.push(data.subarray(at, at + chunk));
  const gz = parallelGzipStream(concurrency === undefined ? {} : { concurrency });
  return readAll(Readable.from(pieces).pipe(gz), 1 << 30);
}

describe('parallelGzipStream', () => {
  it('makes one gzip member of many blocks, the same bytes for any chunking and concurrency', async () => {
    const data = sample(2 * GZIP_BLOCK_SIZE + 12_345);
    const a = await gzipIn(data, 65_536);
    const b = await gzipIn(data, 1_000_003, 1);
    assert.ok(a.length < data.length / 2, 'compressed');
    assert.deepEqual(gunzipSync(a), data);
    assert.deepEqual(a, b);
  });

  it('handles empty input and input of exactly one block', async () => {
    assert.deepEqual(gunzipSync(await gzipIn(Buffer.alloc(0), 1)), Buffer.alloc(0));
    const one = sample(GZIP_BLOCK_SIZE);
    assert.deepEqual(gunzipSync(await gzipIn(one, 300_000)), one);
  });

  it('refuses a level out of range', () => {
    assert.throws(
      () => parallelGzipStream({ level: 11 }),
      (e) => e instanceof StratumError && e.code === 'ERR_INVALID_ARGUMENT',
    );
  });
});
