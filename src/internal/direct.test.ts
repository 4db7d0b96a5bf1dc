// DirectReadable and sinkToFile over a scripted source that lends views of one buffer and
// scribbles over it after every call: what lands in the file (or is read as a stream) must
// still be the source's bytes. Failures of the source, the sink, the file and an abort.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeTempDir } from '../testing/tmp.js';
import { DirectReadable, sinkToFile } from './direct.js';

/** Lends `data` in views of varying size from one reused buffer, asynchronously. */
class Lender extends DirectReadable {
  readonly #data: Buffer;
  readonly #failAt: number | undefined;
  readonly #lent = Buffer.alloc(100_000);
  #at = 0;
  #scheduled = false;
  released = 0;
  readonly #endless: boolean;
  constructor(data: Buffer, failAt?: number, endless = false) {
    super();
    this.#data = data;
    this.#failAt = failAt;
    this.#endless = endless;
  }
  protected startFlow(): void {
    if (this.#scheduled || this.over) return;
    this.#scheduled = true;
    setImmediate(() => this.#pump());
  }
  #pump(): void {
    this.#scheduled = false;
    for (let i = 0; !this.over; i++) {
      if (this.#failAt !== undefined && this.#at >= this.#failAt) {
        this.fail(Object.assign(new Error('source broke'), { code: 'ECONNRESET' }));
        return;
      }
      if (this.#at >= this.#data.length) {
        if (!this.#endless) {
          this.finish();
          return;
        }
        this.#at = 0;
      }
      const n = Math.min(1 + ((this.#at * 7919) % this.#lent.length), this.#data.length - this.#at);
      this.#data.copy(this.#lent, 0, this.#at, this.#at + n);
      this.#at += n;
      const more = this.deliver(this.#lent.subarray(0, n));
      this.#lent.fill(0xee); // the view was only lent
      if (!more) return;
      if (i % 8 === 7) {
        this.startFlow(); // let other work run now and then
        return;
      }
    }
  }
  protected release(): void {
    this.released++;
  }
}

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
before(async () => {
  tmp = await makeTempDir('stratum-direct-');
});
after(() => tmp.cleanup());

let n = 0;
const file = () => join(tmp.path, `f${n++}`);

describe('sinkToFile', () => {
  it('writes every lent byte in order, resolving with the count', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 333);
    const path = file();
    const fd = openSync(path, 'wx');
    let seen = 0;
    try {
      const written = await sinkToFile(new Lender(data), fd, { onChunk: (v) => (seen += v.byteLength) });
      assert.equal(written, data.length);
    } finally {
      closeSync(fd);
    }
    assert.equal(seen, data.length);
    assert.deepEqual(readFileSync(path), data);
  });

  it("rejects with the source's error once writes in flight settled", async () => {
    const fd = openSync(file(), 'wx');
    try {
      await assert.rejects(sinkToFile(new Lender(randomBytes(3_000_000), 2_000_000), fd), {
        message: 'source broke',
      });
    } finally {
      closeSync(fd);
    }
  });

  it('an onChunk that throws stops the source and rejects with its error', async () => {
    const fd = openSync(file(), 'wx');
    const src = new Lender(randomBytes(3_000_000));
    let total = 0;
    try {
      await assert.rejects(
        sinkToFile(src, fd, {
          onChunk: (v) => {
            total += v.byteLength;
            if (total > 1_000_000) throw new Error('too much');
          },
        }),
        { message: 'too much' },
      );
    } finally {
      closeSync(fd);
    }
    assert.equal(src.released, 1);
  });

  it('an abort stops the source', async () => {
    const fd = openSync(file(), 'wx');
    const src = new Lender(randomBytes(50_000_000));
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 5);
    try {
      await assert.rejects(sinkToFile(src, fd, { signal: ac.signal }), { code: 'ERR_ABORTED' });
    } finally {
      closeSync(fd);
    }
    assert.equal(src.released, 1);
  });

  it('a write error (a read-only descriptor) stops the source and rejects with it', async () => {
    const path = file();
    closeSync(openSync(path, 'wx'));
    const fd = openSync(path, 'r');
    // a source that never ends: only the failed write can stop it
    const src = new Lender(randomBytes(3_000_000), undefined, true);
    try {
      await assert.rejects(sinkToFile(src, fd), { code: 'EBADF' });
    } finally {
      closeSync(fd);
    }
    assert.equal(src.released, 1);
  });
});

describe('DirectReadable', () => {
  it('read as a stream, it gives copies of what it lends', async () => {
    const data = randomBytes(1_000_000);
    const out: Buffer[] = [];
    for await (const c of new Lender(data)) out.push(c as Buffer);
    assert.deepEqual(Buffer.concat(out), data);
  });

  it('a stream already being read cannot also be taken directly', async () => {
    const src = new Lender(randomBytes(10));
    src.on('data', () => {});
    assert.throws(() => src.sinkTo({ write: () => true, end() {}, error() {} }), /already being read/);
  });

  it("taken directly, a failure reaches the stream's error listeners before the sink", async () => {
    const src = new Lender(randomBytes(1000), 500);
    const order: string[] = [];
    src.on('error', () => order.push('stream'));
    await new Promise<void>((resolve) => {
      src.sinkTo({
        write: () => true,
        end() {},
        error() {
          order.push('sink');
          resolve();
        },
      });
    });
    assert.deepEqual(order, ['stream', 'sink']);
  });
});
