// Where a layer's tar bytes go: a producer fills fixed-size blocks in place (headers are
// copied in, file bodies are read straight into the block), and each full block is hashed for
// the diffID, compressed, hashed again for the digest and counted, and written to the
// destination — all in one pass, without a stream object per entry. Blocks are cut at fixed
// offsets, so the output does not depend on timing.
//
// Compression: gzip runs in parallel blocks (parallel-gzip.ts) by default; `gzipEngine:
// 'stream'` uses one zlib stream instead (compressStream), which gives the bytes `gzip -6`
// tools expect from serial compressors. zstd goes through compressStream (Node's zstd or the
// zstd program, which is multi-threaded by itself); 'none' writes the tar as it is.
//
// The destination is a file path (created or truncated, written with plain write(2) calls from
// this thread: small and fast on tmpfs and page cache; removed again on failure) or a Writable
// (written with backpressure, ended at the end, destroyed on failure).

import { createHash, type Hash } from 'node:crypto';
import { closeSync, openSync, rmSync, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Duplex, Writable } from 'node:stream';
import { setImmediate as yieldNow } from 'node:timers/promises';
import { type Compression, compressStream } from '../compression/compression.js';
import type { Digest } from '../digest/digest.js';
import { abortError, StratumError } from '../errors/errors.js';
import { GZIP_BLOCK_SIZE, ParallelGzip } from './parallel-gzip.js';
import { BLOCK, END_OF_ARCHIVE_LENGTH } from './tar-writer.js';

export interface LayerOutputOptions {
  readonly compression: Compression;
  /** gzip 0-9 (default 6), zstd 1-19 (default 3). */
  readonly level?: number;
  readonly destination: string | Writable;
  readonly signal?: AbortSignal;
  /** 'parallel' (default): blocks compressed at once on the thread pool; 'stream': one zlib stream. */
  readonly gzipEngine?: 'parallel' | 'stream';
  /** gzip blocks compressed at once (default: the number of CPUs). */
  readonly concurrency?: number;
}

export interface LayerOutputResult {
  readonly diffId: Digest;
  readonly digest: Digest;
  readonly size: number;
  /** Uncompressed tar bytes. */
  readonly bytes: number;
}

interface Sink {
  write(chunk: Buffer): void | Promise<void>;
  end(): Promise<void>;
  destroy(err: unknown): Promise<void>;
}

function pathSink(path: string): Sink {
  let fd: number | undefined = openSync(path, 'w', 0o644);
  return {
    write(chunk) {
      let off = 0;
      while (off < chunk.length) off += writeSync(fd as number, chunk, off, chunk.length - off);
    },
    async end() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
    async destroy() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
      rmSync(path, { force: true });
    },
  };
}

function writableSink(w: Writable): Sink {
  let failed: Error | undefined;
  const onError = (e: Error): void => {
    failed ??= e;
  };
  w.on('error', onError);
  const waitFor = (event: 'drain' | 'finish'): Promise<void> =>
    new Promise((resolve, reject) => {
      const cleanup = (): void => {
        w.off(event, ok);
        w.off('error', bad);
        w.off('close', closed);
      };
      const ok = (): void => {
        cleanup();
        resolve();
      };
      const bad = (e: Error): void => {
        cleanup();
        reject(e);
      };
      const closed = (): void => {
        cleanup();
        if (event === 'finish' && w.writableFinished) resolve();
        else
          reject(
            failed ??
              new StratumError(
                'ERR_ABORTED',
                'the layer destination was closed before the layer was written',
              ),
          );
      };
      w.on(event, ok);
      w.on('error', bad);
      w.on('close', closed);
    });
  return {
    write(chunk) {
      if (failed) throw failed;
      if (w.destroyed)
        throw new StratumError(
          'ERR_ABORTED',
          'the layer destination was closed before the layer was written',
        );
      if (!w.write(chunk)) return waitFor('drain');
      return undefined;
    },
    async end() {
      if (failed) throw failed;
      const done = waitFor('finish');
      w.end();
      await done;
      w.off('error', onError);
    },
    async destroy(err) {
      w.destroy(err instanceof Error ? err : undefined);
    },
  };
}

/** The tar producer's side: a block to fill, and what happens to full blocks. */
export class LayerOutput {
  /** The block being filled; valid bytes are [0, pos). */
  buf: Buffer;
  pos = 0;
  readonly #blockSize: number;
  readonly #diff: Hash = createHash('sha256');
  readonly #digest: Hash;
  readonly #compression: Compression;
  readonly #signal: AbortSignal | undefined;
  readonly #sink: Sink;
  readonly #gzip: ParallelGzip | undefined;
  readonly #codec: Duplex | undefined;
  #codecDone: Promise<void> | undefined;
  #codecError: unknown;
  #size = 0;
  #bytes = 0;
  #closed = false;
  /** Blocks nobody reads any more, to fill again (fewer large allocations, less GC). */
  readonly #free: Buffer[] = [];
  /** 'none' into a file: a block is written synchronously and free at once. */
  readonly #reuseAfterWrite: boolean;

  constructor(opts: LayerOutputOptions) {
    this.#compression = opts.compression;
    this.#signal = opts.signal;
    this.#blockSize = GZIP_BLOCK_SIZE;
    this.buf = Buffer.allocUnsafe(this.#blockSize);
    this.#reuseAfterWrite = opts.compression === 'none' && typeof opts.destination === 'string';
    this.#digest = opts.compression === 'none' ? this.#diff : createHash('sha256');
    // validate the level (and zstd's availability) before anything is created on disk
    const codec =
      opts.compression === 'none' || (opts.compression === 'gzip' && opts.gzipEngine !== 'stream')
        ? undefined
        : compressStream(opts.compression, opts.level === undefined ? {} : { level: opts.level });
    if (
      opts.compression === 'gzip' &&
      opts.level !== undefined &&
      !(Number.isInteger(opts.level) && opts.level >= 0 && opts.level <= 9)
    ) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `gzip compression level ${String(opts.level)} is out of range: use an integer from 0 to 9`,
      );
    }
    try {
      this.#sink =
        typeof opts.destination === 'string' ? pathSink(opts.destination) : writableSink(opts.destination);
    } catch (e) {
      codec?.destroy();
      throw e;
    }
    if (opts.compression === 'gzip' && codec === undefined) {
      this.#gzip = new ParallelGzip({
        level: opts.level ?? 6,
        concurrency: opts.concurrency ?? availableParallelism(),
        emit: (c) => this.#emit(c),
        release: (b) => {
          if (b.length === this.#blockSize) this.#free.push(b);
        },
      });
    } else if (codec !== undefined) {
      this.#codec = codec;
      this.#codecDone = new Promise<void>((resolve, reject) => {
        codec.on('data', (c: Buffer) => {
          let p: void | Promise<void>;
          try {
            p = this.#emit(c);
          } catch (e) {
            // the destination failed: end the codec with that error (never throw in a listener)
            codec.destroy(e instanceof Error ? e : new Error(String(e)));
            return;
          }
          if (p !== undefined) {
            codec.pause();
            p.then(
              () => codec.resume(),
              (e: unknown) => codec.destroy(e instanceof Error ? e : new Error(String(e))),
            );
          }
        });
        codec.on('end', resolve);
        codec.on('error', (e: Error) => {
          this.#codecError ??= e;
          reject(e);
        });
      });
      this.#codecDone.catch(() => {});
    }
  }

  #emit(c: Buffer): void | Promise<void> {
    if (this.#compression !== 'none') this.#digest.update(c);
    this.#size += c.length;
    return this.#sink.write(c);
  }

  async #writeCodec(block: Buffer, last: boolean): Promise<void> {
    const codec = this.#codec as Duplex;
    if (this.#codecError !== undefined) throw this.#codecError;
    const ok = block.length === 0 || codec.write(block);
    if (last) codec.end();
    if (!ok && !last) {
      await Promise.race([
        new Promise<void>((resolve) => codec.once('drain', resolve)),
        this.#codecDone as Promise<void>,
      ]);
    }
    if (last) await this.#codecDone;
  }

  async #flush(last: boolean): Promise<void> {
    if (this.#signal?.aborted) throw abortError(this.#signal);
    const block = this.buf.subarray(0, this.pos);
    this.#bytes += block.length;
    this.#diff.update(block);
    if (this.#gzip) {
      if (last) await this.#gzip.finish(block);
      else await this.#gzip.push(block);
    } else if (this.#codec) {
      await this.#writeCodec(block, last);
    } else {
      const p = this.#emit(block);
      if (p) await p;
    }
    if (!last) {
      if (this.#reuseAfterWrite) this.#free.push(this.buf);
      this.buf = this.#free.pop() ?? Buffer.allocUnsafe(this.#blockSize);
      this.pos = 0;
      // let compression results, the destination and an abort be seen
      await yieldNow();
    }
  }

  /**
   * Make sure the block has room (at least one 512-byte block: every write is aligned).
   * Returns a promise only when a full block had to be passed on first.
   */
  room(): Promise<void> | undefined {
    return this.pos >= this.buf.length ? this.#flush(false) : undefined;
  }

  /** Append bytes, flushing full blocks. */
  async write(data: Buffer): Promise<void> {
    let off = 0;
    while (off < data.length) {
      await this.room();
      const n = Math.min(data.length - off, this.buf.length - this.pos);
      data.copy(this.buf, this.pos, off, off + n);
      this.pos += n;
      off += n;
    }
  }

  /** Zero bytes up to the next 512-byte boundary (never crosses a block: blocks are 512-aligned). */
  pad(): void {
    const r = this.pos % BLOCK;
    if (r !== 0) {
      this.buf.fill(0, this.pos, this.pos + BLOCK - r);
      this.pos += BLOCK - r;
    }
  }

  /** Write the end-of-archive blocks, compress the rest, and close the destination. */
  async finish(): Promise<LayerOutputResult> {
    await this.write(Buffer.alloc(END_OF_ARCHIVE_LENGTH));
    await this.#flush(true);
    await this.#sink.end();
    this.#closed = true;
    const diffId = `sha256:${this.#diff.digest('hex')}` as Digest;
    const digest = this.#compression === 'none' ? diffId : (`sha256:${this.#digest.digest('hex')}` as Digest);
    return { diffId, digest, size: this.#size, bytes: this.#bytes };
  }

  /** Give up: stop compressing and remove (path) or destroy (Writable) the destination. */
  async abort(err: unknown): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#gzip?.abort();
    this.#codec?.destroy();
    await this.#sink.destroy(err);
  }
}
