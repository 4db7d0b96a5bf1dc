// Sending a byte range of a file as a response body: the part of a pull that moves the
// bytes, so it is built for CPU per byte (bench/serve measures it against Go's
// distribution, which copies file -> user buffer -> socket just the same):
//
// - Two 64 KiB buffers from a shared pool take turns: one is read into while the other is
//   being written, and a buffer is reused only once the socket has taken its bytes (the
//   write's callback). No Buffer is allocated per chunk, and 64 KiB stays in the CPU cache
//   between the kernel's copy in from the file and its copy out to the socket (256 KiB and
//   more measured up to 3x the CPU in those copies).
// - Reads are pread(2) at an offset done in place while the page cache answers them (a few
//   microseconds; a thread-pool round trip per chunk costs several times the copy). A
//   transfer whose reads keep being slow (at least 8 over 1 ms, and at least one read in
//   32) is a cold disk, not a busy CPU: it moves to the thread pool, so the event loop is
//   never held for more than a few disk reads per transfer.
// - Once the headers are out, the body goes straight to the socket: http's per-write cork
//   and next-tick uncork cost as much again as the copy. Only when the response owns its
//   socket (a pipelined response waiting its turn has none yet); otherwise through `res`.
// - Backpressure is the socket's: when it asks to drain, reading waits.

import { readSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import { StratumError } from '../errors/errors.js';

const CHUNK = 64 * 1024;
const POOL_MAX = 256;
const SLOW_READ_NS = 1_000_000n;
const SLOW_READS_MIN = 8;
const SLOW_READS_SHARE = 32;
const pool: Buffer[] = [];

function take(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
}

function give(b: Buffer): void {
  if (pool.length < POOL_MAX) pool.push(b);
}

/** Reads a file in place while that is quick, through the thread pool once it is not. */
class Reader {
  readonly #fh: FileHandle;
  readonly #slowNs: bigint;
  #reads = 0;
  #slow = 0;
  #inPlace = true;

  constructor(fh: FileHandle, slowNs: bigint) {
    this.#fh = fh;
    this.#slowNs = slowNs;
  }

  /** Reads now go through the thread pool. */
  get pooled(): boolean {
    return !this.#inPlace;
  }

  async read(buf: Buffer, length: number, position: number): Promise<number> {
    if (!this.#inPlace) return (await this.#fh.read(buf, 0, length, position)).bytesRead;
    const t0 = process.hrtime.bigint();
    const n = readSync(this.#fh.fd, buf, 0, length, position);
    this.#reads++;
    if (process.hrtime.bigint() - t0 > this.#slowNs) {
      this.#slow++;
      if (this.#slow >= SLOW_READS_MIN && this.#slow * SLOW_READS_SHARE >= this.#reads) this.#inPlace = false;
    }
    return n;
  }
}

/**
 * Write bytes [start, end] of `fh` as the body of `res` (status and headers set, with the
 * Content-Length of the range) and end it; the file handle is closed either way.
 * `onBytes` counts body bytes written past `res`, straight to the socket. Rejects if the client goes away or the file is
 * shorter than promised (then the response is destroyed: a client never sees a short body
 * as complete).
 */
export async function sendFileRange(
  fh: FileHandle,
  res: ServerResponse,
  start: number,
  end: number,
  opts: {
    readonly onBytes?: (n: number) => void;
    readonly slowReadNs?: bigint;
    readonly onPooled?: () => void;
  } = {},
): Promise<void> {
  const onBytes = opts.onBytes ?? (() => {});
  const bufs: [Buffer, Buffer] = [take(), take()];
  const inflight: [Promise<void>, Promise<void>] = [Promise.resolve(), Promise.resolve()];
  let gone: ((e: Error) => void) | undefined;
  const closed = new Promise<never>((_, reject) => {
    gone = reject;
  });
  closed.catch(() => {});
  const onClose = () => gone?.(new StratumError('ERR_ABORTED', 'the client closed the connection'));
  res.once('close', onClose);
  let reusable = true;
  const reader = new Reader(fh, opts.slowReadNs ?? SLOW_READ_NS);
  let pooled = false;
  try {
    res.flushHeaders();
    const socket = res.socket;
    const out: Writable = socket ?? res;
    let pos = start;
    for (let k: 0 | 1 = 0; pos <= end; k = k === 0 ? 1 : 0) {
      await Promise.race([inflight[k], closed]);
      const buf = bufs[k];
      const n = await reader.read(buf, Math.min(buf.length, end - pos + 1), pos);
      if (reader.pooled && !pooled) {
        pooled = true;
        opts.onPooled?.();
      }
      if (n === 0)
        throw new StratumError('ERR_SIZE_MISMATCH', `the file ended at byte ${pos}, before byte ${end}`);
      pos += n;
      const chunk = n === buf.length ? buf : buf.subarray(0, n);
      inflight[k] = new Promise<void>((resolve, reject) => {
        out.write(chunk, (err) => (err ? reject(err) : resolve()));
      });
      inflight[k].catch(() => {});
      // what goes through `res` is counted by whoever watches `res`
      if (out !== res) onBytes(n);
      if (out.writableNeedDrain) {
        await Promise.race([new Promise((r) => out.once('drain', r)), closed]);
      }
    }
    await Promise.race([Promise.all(inflight), closed]);
    await Promise.race([new Promise<void>((resolve) => res.end(resolve)), closed]);
  } catch (e) {
    // bytes may still be queued in the socket: do not hand those buffers to someone else
    reusable = false;
    res.destroy();
    throw e;
  } finally {
    res.off('close', onClose);
    await fh.close().catch(() => {});
    if (reusable) {
      give(bufs[0]);
      give(bufs[1]);
    }
  }
}
