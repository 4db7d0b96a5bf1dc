import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { type Digest, digestBytes, isDigest, parseDigest, VerifyingStream, verifyBytes } from './digest.js';

const EMPTY = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' as Digest;

describe('digest', () => {
  it('validates sha256 and sha512 digests', () => {
    assert.equal(parseDigest(EMPTY), EMPTY);
    assert.equal(digestBytes(''), EMPTY);
    assert.ok(isDigest(digestBytes('x', 'sha512')));
    for (const bad of [
      '',
      'sha256:',
      'sha256:../x',
      `sha256:${'a'.repeat(63)}`,
      `sha256:${'A'.repeat(64)}`,
      `sha256:${'a'.repeat(64)}/..`,
      42,
    ]) {
      assert.throws(() => parseDigest(bad), { code: 'ERR_INVALID_DIGEST' }, String(bad));
    }
    assert.throws(() => parseDigest('md5:d41d8cd98f00b204e9800998ecf8427e'), {
      code: 'ERR_UNSUPPORTED_ALGORITHM',
    });
  });

  it('verifies while streaming and fails before the end on mismatch', async () => {
    const data = Buffer.alloc(100_000, 7);
    const good = new VerifyingStream({ digest: digestBytes(data), size: data.length });
    const sink: Buffer[] = [];
    await pipeline(Readable.from([data]), good, async (src: AsyncIterable<Buffer>) => {
      for await (const c of src) sink.push(c);
    });
    assert.equal(Buffer.concat(sink).length, data.length);
    await assert.rejects(
      pipeline(
        Readable.from([data]),
        new VerifyingStream({ digest: EMPTY, size: data.length }),
        async (src: AsyncIterable<Buffer>) => {
          for await (const _ of src);
        },
      ),
      { code: 'ERR_DIGEST_MISMATCH' },
    );
    await assert.rejects(
      pipeline(
        Readable.from([data]),
        new VerifyingStream({ digest: digestBytes(data), size: 10 }),
        async (src: AsyncIterable<Buffer>) => {
          for await (const _ of src);
        },
      ),
      { code: 'ERR_SIZE_MISMATCH' },
    );
    assert.throws(() => verifyBytes(data, EMPTY), { code: 'ERR_DIGEST_MISMATCH' });
  });

  it('never passes on every byte of wrong content (a Content-Length upload would complete)', async () => {
    const data = Buffer.alloc(100_000, 7);
    let passed = 0;
    await assert.rejects(
      pipeline(
        Readable.from([data.subarray(0, 60_000), data.subarray(60_000)]),
        new VerifyingStream({ digest: EMPTY, size: data.length }),
        async (src: AsyncIterable<Buffer>) => {
          for await (const c of src) passed += c.length;
        },
      ),
      { code: 'ERR_DIGEST_MISMATCH' },
    );
    assert.ok(passed < data.length, `${passed} of ${data.length} bytes were passed on`);
    assert.throws(() => verifyBytes(data, EMPTY, 3), { code: 'ERR_SIZE_MISMATCH' });
  });
});
