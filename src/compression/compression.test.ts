// Tests for compression streams: detection, peeking, round trips through every engine this
// machine has, interop with the system's gzip/zstd programs, corrupt input, backpressure, and
// that destroying a program-backed stream leaves no child process behind.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { StratumError } from '../errors/errors.js';
import {
  type CodecOptions,
  type Compression,
  compressStream,
  decompressStream,
  detectCompression,
  findProgram,
  nodeHasZstd,
  peekCompression,
  zstdSupport,
} from './compression.js';

const HAVE_PIGZ = findProgram('pigz') !== undefined;
const HAVE_ZSTD = findProgram('zstd') !== undefined;

// --- data ------------------------------------------------------------------------------

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Deterministic text-like data that compresses well. */
function compressible(size: number): Buffer {
  const words = [
    'layer',
    'blob',
    'manifest',
    'tar',
    'usr',
    'bin',
    'lib',
    'etc',
    'config',
    '\n',
    'digest',
    ' ',
  ];
  const out = Buffer.alloc(size);
  let x = 12345;
  let i = 0;
  while (i < size) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const w = words[x % words.length] as string;
    i += out.write(w, i, 'latin1');
  }
  return out;
}

/** Split bytes into irregular chunks (1 byte to ~100 KiB) to exercise chunk boundaries. */
function* irregular(b: Buffer): Generator<Buffer> {
  let off = 0;
  let x = 7;
  while (off < b.length) {
    x = (x * 48271) % 0x7fffffff;
    const n = x % 7 === 0 ? 1 : (x % 100_000) + 1;
    yield b.subarray(off, off + n);
    off += n;
  }
}

async function collect(stream: Readable | AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

async function compressBytes(
  data: Buffer,
  c: Compression,
  opts: CodecOptions & { level?: number } = {},
): Promise<Buffer> {
  const z = compressStream(c, opts);
  const [out] = await Promise.all([collect(z), pipeline(Readable.from(irregular(data)), z)]);
  return out;
}

async function decompressBytes(data: Buffer, c: Compression, opts: CodecOptions = {}): Promise<Buffer> {
  const z = decompressStream(c, opts);
  const [out] = await Promise.all([collect(z), pipeline(Readable.from(irregular(data)), z)]);
  return out;
}

async function expectCompressionError(
  p: Promise<unknown>,
  codec: string,
  pattern?: RegExp,
): Promise<StratumError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof StratumError, `expected a StratumError, got ${String(caught)}`);
  assert.equal(caught.code, 'ERR_COMPRESSION', caught.message);
  assert.ok(caught.message.includes(codec), `message should name ${codec}: ${caught.message}`);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** Children of this process whose command is `name` (zombies included: they are children too). */
function childrenNamed(name: string): number[] {
  const pids: number[] = [];
  for (const task of readdirSync('/proc/self/task')) {
    let text = '';
    try {
      text = readFileSync(`/proc/self/task/${task}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const p of text.trim().split(/\s+/)) {
      if (p === '') continue;
      try {
        if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === name) pids.push(Number(p));
      } catch {
        // already gone
      }
    }
  }
  return pids;
}

/** Wait (no deadline: the test runner's timeout is the failure) until `pred` holds. */
async function eventually(pred: () => boolean): Promise<void> {
  while (!pred()) await new Promise((r) => setTimeout(r, 10));
}

// --- engines under test ---------------------------------------------------------------

interface Engine {
  readonly name: string;
  readonly codec: 'gzip' | 'zstd';
  readonly opts: CodecOptions;
  readonly skip: string | false;
}

const engines: Engine[] = [
  { name: 'gzip (node zlib)', codec: 'gzip', opts: { engine: 'node' }, skip: false },
  {
    name: 'gzip (pigz)',
    codec: 'gzip',
    opts: { engine: 'program' },
    skip: HAVE_PIGZ ? false : 'pigz is not installed',
  },
  {
    name: 'zstd (zstd program)',
    codec: 'zstd',
    opts: { engine: 'program' },
    skip: HAVE_ZSTD ? false : 'zstd is not installed',
  },
  {
    name: 'zstd (node zlib)',
    codec: 'zstd',
    opts: { engine: 'node' },
    skip: nodeHasZstd() ? false : `Node ${process.version} has no built-in zstd`,
  },
];

// --- detection -----------------------------------------------------------------------------

describe('detectCompression', () => {
  it('recognises magic bytes', () => {
    assert.equal(detectCompression(gzipSync(Buffer.from('x'))), 'gzip');
    assert.equal(detectCompression(Uint8Array.of(0x1f, 0x8b)), 'gzip');
    assert.equal(detectCompression(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd, 0)), 'zstd');
    assert.equal(detectCompression(Uint8Array.of(0x50, 0x2a, 0x4d, 0x18)), 'zstd'); // skippable frame
    assert.equal(detectCompression(Uint8Array.of(0x5f, 0x2a, 0x4d, 0x18)), 'zstd');
  });
  it('says none for anything else', () => {
    assert.equal(detectCompression(new Uint8Array()), 'none');
    assert.equal(detectCompression(Uint8Array.of(0x1f)), 'none');
    assert.equal(detectCompression(Uint8Array.of(0x28, 0xb5, 0x2f)), 'none');
    assert.equal(detectCompression(Uint8Array.of(0x28, 0xb5, 0x2f, 0xfe)), 'none');
    assert.equal(detectCompression(Uint8Array.of(0x60, 0x2a, 0x4d, 0x18)), 'none');
    assert.equal(detectCompression(Buffer.from('ustar\0')), 'none');
    assert.equal(detectCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0])), 'none'); // xz
    assert.equal(detectCompression(Buffer.from('BZh91AY')), 'none');
  });
});

describe('peekCompression', () => {
  it('loses no bytes when the head arrives one byte at a time', async () => {
    const data = gzipSync(compressible(10_000));
    const src = Readable.from([...data].map((b) => Buffer.of(b)));
    const { compression, stream } = await peekCompression(src);
    assert.equal(compression, 'gzip');
    assert.equal(stream, src);
    assert.ok((await collect(stream)).equals(data));
  });
  it('works on a single-chunk stream and hands it on to a decoder', async () => {
    const original = compressible(100_000);
    const { compression, stream } = await peekCompression(Readable.from([gzipSync(original)]));
    assert.equal(compression, 'gzip');
    const out = decompressStream(compression);
    const [got] = await Promise.all([collect(out), pipeline(stream, out)]);
    assert.ok(got.equals(original));
  });
  it('handles streams shorter than the magic, and empty ones', async () => {
    for (const bytes of [Buffer.of(0x1f, 0x8b), Buffer.from('ab'), Buffer.alloc(0)]) {
      const { compression, stream } = await peekCompression(Readable.from(bytes.length ? [bytes] : []));
      assert.equal(compression, bytes.length === 2 && bytes[0] === 0x1f ? 'gzip' : 'none');
      assert.ok((await collect(stream)).equals(bytes));
    }
  });
  it('detects plain data as none and keeps it intact', async () => {
    const data = randomBytes(300_000);
    data[0] = 0; // not a magic
    const { compression, stream } = await peekCompression(Readable.from(irregular(data)));
    assert.equal(compression, 'none');
    assert.equal(sha256(await collect(stream)), sha256(data));
  });
  it('rejects when the source fails before four bytes', async () => {
    const src = new Readable({
      read() {
        this.destroy(new Error('disk on fire'));
      },
    });
    await assert.rejects(peekCompression(src), /disk on fire/);
  });
  it('refuses a destroyed stream and gives an ended one as empty', async () => {
    const gone = Readable.from([Buffer.from('abcd')]);
    gone.destroy();
    await assert.rejects(peekCompression(gone));
    const ended = Readable.from([]);
    await collect(ended);
    const { compression, stream } = await peekCompression(ended);
    assert.equal(compression, 'none');
    assert.equal((await collect(stream)).length, 0);
  });
});

// --- round trips -------------------------------------------------------------------------

const RANDOM = randomBytes(4 * 1024 * 1024);
const TEXT = compressible(8 * 1024 * 1024);

for (const e of engines) {
  describe(`round trips: ${e.name}`, { skip: e.skip }, () => {
    it('random data (4 MiB)', async () => {
      const packed = await compressBytes(RANDOM, e.codec, e.opts);
      assert.equal(detectCompression(packed), e.codec);
      assert.equal(sha256(await decompressBytes(packed, e.codec, e.opts)), sha256(RANDOM));
    });
    it('compressible data (8 MiB) gets smaller and comes back equal', async () => {
      const packed = await compressBytes(TEXT, e.codec, e.opts);
      assert.ok(packed.length < TEXT.length / 3, `compressed to ${packed.length} bytes`);
      assert.equal(sha256(await decompressBytes(packed, e.codec, e.opts)), sha256(TEXT));
    });
    it('empty input gives a valid, empty stream', async () => {
      const packed = await compressBytes(Buffer.alloc(0), e.codec, e.opts);
      assert.ok(packed.length > 0);
      assert.equal((await decompressBytes(packed, e.codec, e.opts)).length, 0);
    });
    it('the level is applied', async () => {
      const lo = await compressBytes(TEXT, e.codec, { ...e.opts, level: 1 });
      const hi = await compressBytes(TEXT, e.codec, { ...e.opts, level: 9 });
      assert.ok(hi.length < lo.length, `level 9 gave ${hi.length} bytes, level 1 ${lo.length}`);
      assert.ok((await decompressBytes(hi, e.codec, e.opts)).equals(TEXT));
    });
    it('output is readable by the system program', {
      skip: e.codec === 'gzip' ? false : HAVE_ZSTD ? false : 'no zstd program',
    }, async () => {
      const packed = await compressBytes(TEXT.subarray(0, 1 << 20), e.codec, e.opts);
      const out = execFileSync(e.codec === 'gzip' ? 'gzip' : 'zstd', ['-d', '-c', '-q'], {
        input: packed,
        maxBuffer: 1 << 24,
      });
      assert.ok(out.equals(TEXT.subarray(0, 1 << 20)));
    });
    it('decodes what the system program wrote', {
      skip: e.codec === 'gzip' ? false : HAVE_ZSTD ? false : 'no zstd program',
    }, async () => {
      const input = TEXT.subarray(0, 1 << 20);
      const packed = execFileSync(e.codec === 'gzip' ? 'gzip' : 'zstd', ['-c', '-q'], {
        input,
        maxBuffer: 1 << 24,
      });
      assert.ok((await decompressBytes(packed, e.codec, e.opts)).equals(input));
    });
    it('decodes concatenated members / frames fully', async () => {
      const parts = [TEXT.subarray(0, 100_000), RANDOM.subarray(0, 50_000), Buffer.from('tail')];
      const packed = Buffer.concat(await Promise.all(parts.map((p) => compressBytes(p, e.codec, e.opts))));
      assert.ok((await decompressBytes(packed, e.codec, e.opts)).equals(Buffer.concat(parts)));
    });
  });
}

describe('multi-member gzip (as pigz and concatenation produce)', () => {
  it('node zlib decodes members from zlib, gzip and pigz back to back', {
    skip: HAVE_PIGZ ? false : 'pigz is not installed',
  }, async () => {
    const a = TEXT.subarray(0, 300_000);
    const b = RANDOM.subarray(0, 200_000);
    const c = TEXT.subarray(300_000, 900_000);
    const members = [
      gzipSync(a),
      execFileSync('gzip', ['-c', '-n'], { input: b }),
      execFileSync('pigz', ['-c', '-n', '-b', '32'], { input: c, maxBuffer: 1 << 24 }),
    ];
    const got = await decompressBytes(Buffer.concat(members), 'gzip', { engine: 'node' });
    assert.equal(sha256(got), sha256(Buffer.concat([a, b, c])));
  });
});

// --- corrupt input ----------------------------------------------------------------------

for (const e of engines) {
  describe(`corrupt input: ${e.name}`, { skip: e.skip }, () => {
    it('garbage', async () => {
      const junk = randomBytes(100_000);
      await expectCompressionError(decompressBytes(junk, e.codec, e.opts), e.codec);
    });
    it('valid magic followed by garbage', async () => {
      const magic = e.codec === 'gzip' ? Buffer.of(0x1f, 0x8b, 8, 0) : Buffer.of(0x28, 0xb5, 0x2f, 0xfd);
      await expectCompressionError(
        decompressBytes(Buffer.concat([magic, randomBytes(50_000)]), e.codec, e.opts),
        e.codec,
      );
    });
    it('truncated', async () => {
      const packed = await compressBytes(TEXT.subarray(0, 2_000_000), e.codec, e.opts);
      await expectCompressionError(
        decompressBytes(packed.subarray(0, packed.length >> 1), e.codec, e.opts),
        e.codec,
      );
    });
    it('one flipped byte in the middle', async () => {
      const packed = await compressBytes(TEXT.subarray(0, 2_000_000), e.codec, e.opts);
      const bad = Buffer.from(packed);
      const at = bad.length >> 1;
      bad[at] = (bad[at] as number) ^ 0x55;
      await expectCompressionError(decompressBytes(bad, e.codec, e.opts), e.codec);
    });
    it('garbage after a valid stream', async () => {
      const packed = await compressBytes(Buffer.from('hello'), e.codec, e.opts);
      await expectCompressionError(
        decompressBytes(Buffer.concat([packed, Buffer.from('this is not compressed data')]), e.codec, e.opts),
        e.codec,
      );
    });
    it('empty input', async () => {
      await expectCompressionError(decompressBytes(Buffer.alloc(0), e.codec, e.opts), e.codec);
    });
  });
}

// --- programs: missing, destroyed, killed ---------------------------------------------------

// a child that is never reaped would make `eventually` wait forever: the timeout turns that into a failure
describe('program engines', { skip: HAVE_ZSTD ? false : 'zstd is not installed', timeout: 60_000 }, () => {
  it('a missing zstd program is ERR_ZSTD_UNAVAILABLE with the package to install', () => {
    for (const make of [
      () => decompressStream('zstd', { engine: 'program', program: '/nonexistent/zstd' }),
      () => compressStream('zstd', { engine: 'program', program: 'no-such-zstd-program' }),
    ]) {
      assert.throws(make, (err: unknown) => {
        assert.ok(err instanceof StratumError);
        assert.equal(err.code, 'ERR_ZSTD_UNAVAILABLE');
        assert.match(err.message, /install the zstd package \(apt-get install zstd\)/);
        return true;
      });
    }
  });

  it('a missing pigz is ERR_UNSUPPORTED saying what to install', () => {
    assert.throws(
      () => compressStream('gzip', { engine: 'program', program: '/nonexistent/pigz' }),
      (err: unknown) =>
        err instanceof StratumError &&
        err.code === 'ERR_UNSUPPORTED' &&
        /apt-get install pigz/.test(err.message),
    );
  });

  it('node engine for zstd on a Node without it says so', {
    skip: nodeHasZstd() ? 'this Node has zstd' : false,
  }, () => {
    assert.throws(
      () => decompressStream('zstd', { engine: 'node' }),
      (err: unknown) => err instanceof StratumError && err.code === 'ERR_ZSTD_UNAVAILABLE',
    );
  });

  it('zstdSupport reports what is here', () => {
    const s = zstdSupport();
    assert.equal(s.node, nodeHasZstd());
    assert.ok(s.program?.endsWith('/zstd'));
  });

  it('destroying a decompressor early kills its program (no child left, not even a zombie)', async () => {
    assert.deepEqual(childrenNamed('zstd'), []);
    const packed = await compressBytes(TEXT, 'zstd', { engine: 'program' });
    const d = decompressStream('zstd', { engine: 'program' });
    d.on('error', () => {});
    // give it input but never read: the program blocks writing its output
    d.write(packed.subarray(0, 500_000));
    await eventually(() => childrenNamed('zstd').length === 1);
    d.destroy();
    await eventually(() => childrenNamed('zstd').length === 0);
  });

  it('an aborted pipeline kills the program', async () => {
    const ac = new AbortController();
    const c = compressStream('zstd', { engine: 'program' });
    let seen = 0;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        seen += chunk.length;
        if (seen > 0) ac.abort();
        cb();
      },
    });
    const endless = new Readable({
      read() {
        this.push(randomBytes(65536));
      },
    });
    await assert.rejects(pipeline(endless, c, sink, { signal: ac.signal }), { name: 'AbortError' });
    await eventually(() => childrenNamed('zstd').length === 0);
  });

  it('a consumer error ends the program too', async () => {
    const d = compressStream('zstd', { engine: 'program' });
    const sink = new Writable({
      write(_c, _e, cb) {
        cb(new Error('disk full'));
      },
    });
    await assert.rejects(pipeline(Readable.from(irregular(TEXT)), d, sink), /disk full/);
    await eventually(() => childrenNamed('zstd').length === 0);
  });

  it('a failed decode leaves no child', async () => {
    await expectCompressionError(
      decompressBytes(randomBytes(10_000), 'zstd', { engine: 'program' }),
      'zstd',
      /exit status/,
    );
    await eventually(() => childrenNamed('zstd').length === 0);
  });
});

// --- backpressure ----------------------------------------------------------------------

for (const e of engines) {
  describe(`backpressure: ${e.name}`, { skip: e.skip }, () => {
    it('a slow reader holds the decoder back (a 64 MiB expansion is never buffered)', async () => {
      const big = Buffer.alloc(64 * 1024 * 1024, 0x61);
      const packed = await compressBytes(big, e.codec, e.opts);
      assert.ok(packed.length < 1024 * 1024);
      const d = decompressStream(e.codec, e.opts);
      let maxBuffered = 0;
      let total = 0;
      const hash = createHash('sha256');
      const slow = new Writable({
        highWaterMark: 16 * 1024,
        write(chunk: Buffer, _enc, cb) {
          maxBuffered = Math.max(maxBuffered, d.readableLength);
          total += chunk.length;
          hash.update(chunk);
          // several turns of the event loop per chunk: slower than any engine produces
          setImmediate(() => setImmediate(() => setImmediate(() => setImmediate(cb))));
        },
      });
      await pipeline(Readable.from([packed]), d, slow);
      assert.equal(total, big.length);
      assert.equal(hash.digest('hex'), sha256(big));
      assert.ok(maxBuffered <= 256 * 1024, `decoder buffered ${maxBuffered} bytes`);
    });
  });
}

describe('backpressure on the writing side', () => {
  it('a slow reader holds the writer back (node gzip)', async () => {
    let produced = 0;
    let consumed = 0;
    let maxAhead = 0;
    const chunk = randomBytes(64 * 1024); // incompressible: output ≈ input
    let left = 1024; // 64 MiB
    const source = new Readable({
      read() {
        if (left-- === 0) {
          this.push(null);
          return;
        }
        produced += chunk.length;
        this.push(chunk);
      },
    });
    const slow = new Writable({
      highWaterMark: 16 * 1024,
      write(c: Buffer, _enc, cb) {
        consumed += c.length;
        maxAhead = Math.max(maxAhead, produced - consumed);
        setImmediate(cb);
      },
    });
    await pipeline(source, compressStream('gzip', { engine: 'node', level: 1 }), slow);
    assert.ok(consumed >= produced, `consumed ${consumed} of ${produced}`);
    assert.ok(maxAhead < 8 * 1024 * 1024, `the writer ran ${maxAhead} bytes ahead of the reader`);
  });
});

// --- arguments -------------------------------------------------------------------------

describe('arguments', () => {
  it("'none' passes bytes through", async () => {
    const data = randomBytes(100_000);
    assert.ok((await compressBytes(data, 'none')).equals(data));
    assert.ok((await decompressBytes(data, 'none')).equals(data));
  });
  it('refuses unknown codecs, engines and levels', () => {
    const bad = (f: () => unknown): void => {
      assert.throws(f, (e: unknown) => e instanceof StratumError && e.code === 'ERR_INVALID_ARGUMENT');
    };
    bad(() => compressStream('xz' as Compression));
    bad(() => decompressStream('bzip2' as Compression));
    bad(() => compressStream('gzip', { engine: 'wasm' as 'node' }));
    bad(() => compressStream('gzip', { level: 10 }));
    bad(() => compressStream('gzip', { level: -1 }));
    bad(() => compressStream('gzip', { level: 1.5 }));
    bad(() => compressStream('zstd', { level: 0 }));
    bad(() => compressStream('zstd', { level: 23 }));
  });
  it('auto engine round trips both codecs', {
    skip: HAVE_ZSTD || nodeHasZstd() ? false : 'no zstd here',
  }, async () => {
    for (const c of ['gzip', 'zstd'] as const) {
      const data = TEXT.subarray(0, 500_000);
      assert.ok((await decompressBytes(await compressBytes(data, c), c)).equals(data));
    }
  });
  it('pigz output is the same bytes every time (no name or time in the header)', {
    skip: HAVE_PIGZ ? false : 'pigz is not installed',
  }, async () => {
    const data = TEXT.subarray(0, 200_000);
    const a = await compressBytes(data, 'gzip', { engine: 'program' });
    await new Promise((r) => setTimeout(r, 1100)); // a second later: a stored mtime would differ
    const b = await compressBytes(data, 'gzip', { engine: 'program' });
    assert.ok(a.equals(b));
    assert.equal(a.readUInt32LE(4), 0, 'mtime field is zero');
  });
});
