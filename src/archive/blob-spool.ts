// The holding area of an archive being written: blobs pushed to an archive Target wait here,
// in a private temp directory, until finalize() writes the archive. Pushes are verified while
// they stream (size and digest) and renamed into place only when they match, so a blob is
// either absent or whole. close() removes the directory and everything in it.

import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Content, FetchOptions, PushOptions } from '../content/types.js';
import { algorithmOf, type Digest, encodedOf, VerifyingStream } from '../digest/digest.js';
import { abortError, StratumError, TooLargeError } from '../errors/errors.js';
import { tempName } from '../internal/fs.js';
import { toReadable } from '../internal/streams.js';
import type { Descriptor } from '../spec/types.js';
import { Limits } from '../spec/types.js';

export class BlobSpool {
  readonly dir: string;
  readonly #what: string;
  readonly #inflight = new Map<Digest, Promise<void>>();
  #closed = false;

  private constructor(dir: string, what: string) {
    this.dir = dir;
    this.#what = what;
  }

  /** A fresh spool under `parent` (default: os.tmpdir(), which honours TMPDIR). */
  static async create(what: string, parent: string = tmpdir()): Promise<BlobSpool> {
    const dir = await mkdtemp(join(parent, 'stratum-archive-'));
    return new BlobSpool(dir, what);
  }

  path(digest: Digest): string {
    return join(this.dir, 'blobs', algorithmOf(digest), encodedOf(digest));
  }

  #checkOpen(): void {
    if (this.#closed) throw new StratumError('ERR_INVALID_ARGUMENT', `${this.#what} is closed`);
  }

  async has(desc: Descriptor): Promise<boolean> {
    this.#checkOpen();
    try {
      const st = await stat(this.path(desc.digest));
      return st.size === desc.size;
    } catch {
      return false;
    }
  }

  /** Store a blob (idempotent; verified before it becomes visible). */
  async push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    this.#checkOpen();
    if (!Number.isSafeInteger(desc.size) || desc.size < 0 || desc.size > Limits.blob) {
      throw new StratumError('ERR_INVALID_ARGUMENT', `descriptor size ${desc.size} is not a valid blob size`);
    }
    const running = this.#inflight.get(desc.digest);
    if (running) {
      await running.catch(() => {});
      if (await this.has(desc)) {
        drain(content);
        return;
      }
    }
    if (await this.has(desc)) {
      drain(content);
      return;
    }
    const p = this.#write(desc, content, opts);
    this.#inflight.set(desc.digest, p);
    try {
      await p;
    } finally {
      if (this.#inflight.get(desc.digest) === p) this.#inflight.delete(desc.digest);
    }
  }

  async #write(desc: Descriptor, content: Content, opts: PushOptions): Promise<void> {
    const final = this.path(desc.digest);
    const dir = join(this.dir, 'blobs', algorithmOf(desc.digest));
    await mkdir(dir, { recursive: true });
    const tmp = tempName(dir);
    const verify = new VerifyingStream({
      digest: desc.digest,
      size: desc.size,
      what: `blob ${desc.digest}`,
      onProgress: opts.onProgress,
    });
    try {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      await pipeline(
        toReadable(content),
        verify,
        createWriteStream(tmp, { flags: 'wx', mode: 0o644 }),
        opts.signal ? { signal: opts.signal } : {},
      );
      await rename(tmp, final);
    } catch (e) {
      await rm(tmp, { force: true });
      if (opts.signal?.aborted) throw abortError(opts.signal);
      throw e;
    }
  }

  /** A stored blob as a stream, verified as it flows; ERR_NOT_FOUND if absent. */
  async open(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    if (opts.signal?.aborted) throw abortError(opts.signal);
    if (!(await this.has(desc))) {
      throw new StratumError('ERR_NOT_FOUND', `${this.#what}: blob ${desc.digest} was not pushed`);
    }
    const v = new VerifyingStream({
      digest: desc.digest,
      size: desc.size,
      what: `blob ${desc.digest}`,
      onProgress: opts.onProgress,
    });
    const src = createReadStream(this.path(desc.digest));
    src.on('error', (e) => v.destroy(e));
    v.once('close', () => src.destroy());
    if (opts.signal) {
      const signal = opts.signal;
      const onAbort = () => v.destroy(abortError(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      v.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return src.pipe(v);
  }

  /** A stored small blob (manifest, config) in memory, bounded by `limit`. */
  async read(digest: Digest, limit: number, what: string): Promise<Buffer> {
    this.#checkOpen();
    const p = this.path(digest);
    let size: number;
    try {
      size = (await stat(p)).size;
    } catch {
      throw new StratumError('ERR_NOT_FOUND', `${this.#what}: ${what} ${digest} was not pushed`);
    }
    if (size > limit) throw new TooLargeError(what, limit);
    return readFile(p);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#inflight.values());
    await rm(this.dir, { recursive: true, force: true });
  }
}

function drain(content: Content): void {
  if (!(content instanceof Uint8Array)) content.resume();
}
