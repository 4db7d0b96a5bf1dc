// A blob download that survives dropped connections and verifies as bytes pass. Bytes are
// hashed where they arrive and passed on: straight to a sink that takes them directly (a
// layout writing the blob; see internal/direct.ts), or as the stream's chunks otherwise.
// When a body fails (or ends short of the expected size), the blob is asked for again with
// `Range: bytes=N-` and the stream continues at byte N. A registry that ignores Range and
// answers 200 has its first N bytes skipped. Attempts are bounded; the stream ends only
// after the size and digest matched, so the caller only ever sees an error or verified bytes.

import type { Readable } from 'node:stream';
import { algorithmOf, type Digest, Digester } from '../digest/digest.js';
import { abortError, RegistryError, SizeMismatchError, StratumError } from '../errors/errors.js';
import { type ChunkSink, DirectReadable, isDirectReadable, type SinkHandle } from '../internal/direct.js';
import { markVerified } from '../internal/verified.js';
import { delay } from './backoff.js';
import { header, type RegistryResponse } from './client.js';
import { discardBody, transportError } from './http-errors.js';

export interface ResumableOptions {
  readonly first: RegistryResponse;
  readonly digest: Digest;
  readonly size: number;
  /** Ask again from `offset` (a GET with Range); resolves to a 200 or 206 answer. */
  readonly reopen: (offset: number) => Promise<RegistryResponse>;
  readonly attempts: number;
  readonly what: string;
  readonly onProgress?: ((bytes: number) => void) | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Pause before re-asking, per attempt (ms). */
  readonly pauseMs?: (attempt: number) => number;
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** The verified byte stream of a blob, resuming after connection drops. */
export function resumableBlobStream(opts: ResumableOptions): BlobReader {
  return markVerified(new BlobReader(opts), opts.digest, opts.size);
}

/** The current answer's body, taken directly when it can be, else read as a stream. */
interface BodyTap {
  pause(): void;
  resume(): void;
  drop(): void;
}

export class BlobReader extends DirectReadable {
  readonly #opts: ResumableOptions;
  readonly #digester: Digester;
  #tap: BodyTap | undefined;
  #started = false;
  #paused = false;
  /** Bytes received and kept (passed on). */
  #offset = 0;
  /** Bytes of the current body already received from an earlier one. */
  #skip = 0;
  #tries = 0;
  #url: string;
  #first: Readable | undefined;

  constructor(opts: ResumableOptions) {
    super({ highWaterMark: 1024 * 1024 });
    this.#opts = opts;
    this.#digester = new Digester(algorithmOf(opts.digest));
    this.#url = opts.first.url.href;
    this.#first = opts.first.body;
    // the first body may fail (an abort, a drop) before anyone reads: keep that for later
    this.#first.once('error', this.#onEarlyError);
  }

  #earlyError: unknown;
  readonly #onEarlyError = (e: unknown) => {
    this.#earlyError = e;
  };

  protected startFlow(): void {
    if (this.over) return;
    if (!this.#started) {
      this.#started = true;
      const first = this.#first as Readable;
      this.#first = undefined;
      first.off('error', this.#onEarlyError);
      if (this.#earlyError !== undefined) {
        first.on('error', () => {});
        this.#bodyOver(this.#earlyError);
        return;
      }
      this.#attach(first);
      return;
    }
    if (this.#paused) {
      this.#paused = false;
      this.#tap?.resume();
    }
  }

  protected release(): void {
    this.#tap?.drop();
    this.#tap = undefined;
    if (this.#first) {
      this.#first.off('error', this.#onEarlyError);
      discardBody(this.#first);
      this.#first = undefined;
    }
  }

  #attach(body: Readable): void {
    let live = true;
    const onEnd = () => {
      if (!live) return;
      live = false;
      this.#tap = undefined;
      this.#bodyOver(undefined);
    };
    const onError = (e: unknown) => {
      if (!live) return;
      live = false;
      this.#tap = undefined;
      body.on('error', () => {}); // a late error from a body let go of is not news
      this.#bodyOver(e);
    };
    if (isDirectReadable(body)) {
      const sink: ChunkSink = {
        write: (view) => live && this.#take(view, false),
        end: onEnd,
        error: onError,
      };
      let handle: SinkHandle;
      try {
        handle = body.sinkTo(sink);
      } catch (e) {
        onError(e);
        return;
      }
      this.#tap = {
        pause: () => {},
        resume: () => handle.resume(),
        drop: () => {
          live = false;
          handle.cancel();
        },
      };
      return;
    }
    const onData = (chunk: Buffer) => {
      if (live && !this.#take(chunk, true)) body.pause();
    };
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
    this.#tap = {
      pause: () => body.pause(),
      resume: () => body.resume(),
      drop: () => {
        live = false;
        body.off('data', onData);
        body.on('error', () => {});
        discardBody(body);
      },
    };
  }

  /** Bytes of the current body; false when the consumer wants no more for now. */
  #take(chunk: Uint8Array, owned: boolean): boolean {
    if (this.over) return false;
    let c = chunk;
    if (this.#skip > 0) {
      if (c.byteLength <= this.#skip) {
        this.#skip -= c.byteLength;
        return true;
      }
      c = c.subarray(this.#skip);
      this.#skip = 0;
    }
    this.#offset += c.byteLength;
    if (this.#offset > this.#opts.size) {
      this.fail(new SizeMismatchError(this.#opts.size, this.#offset, this.#opts.what));
      return false;
    }
    this.#digester.update(c);
    // the last bytes go on only once they are judged: a consumer that counts (an upload
    // with Content-Length) must never hold all of wrong content before the stream fails
    const bad = this.#offset === this.#opts.size && this.#digester.mismatch(this.#opts, this.#opts.what);
    if (bad) {
      this.fail(bad);
      return false;
    }
    this.#opts.onProgress?.(c.byteLength);
    const more = owned
      ? this.deliverOwned(Buffer.from(c.buffer, c.byteOffset, c.byteLength))
      : this.deliver(c);
    if (!more) this.#paused = true;
    return more;
  }

  /** The current body ended (`failure` undefined) or failed. */
  #bodyOver(failure: unknown): void {
    if (this.over) return;
    if (failure === undefined && (this.#offset >= this.#opts.size || this.#skip > 0)) {
      this.#complete();
      return;
    }
    this.#reopen(failure).then(
      (body) => {
        if (!body) return;
        if (this.over) {
          discardBody(body);
          return;
        }
        this.#attach(body);
        if (this.#paused) this.#tap?.pause();
      },
      (e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))),
    );
  }

  /** Judge the bytes: end, or fail with the size or digest that did not match. */
  #complete(): void {
    const bad = this.#digester.mismatch(this.#opts, this.#opts.what);
    if (bad) this.fail(bad);
    else this.finish();
  }

  /** The body to go on with, or undefined when the stream is over. */
  async #reopen(failure: unknown): Promise<Readable | undefined> {
    const opts = this.#opts;
    if (opts.signal?.aborted) throw abortError(opts.signal);
    if (this.#tries >= opts.attempts) {
      if (failure === undefined) {
        this.#complete(); // ended short: the size check reports it
        return undefined;
      }
      throw transportError(opts.what, this.#url, failure);
    }
    this.#tries++;
    if (opts.pauseMs) await delay(opts.pauseMs(this.#tries - 1), opts.signal);
    const res = await opts.reopen(this.#offset);
    this.#url = res.url.href;
    if (this.over) {
      discardBody(res.body);
      return undefined;
    }
    if (res.status === 206) {
      const m = CONTENT_RANGE.exec(header(res, 'content-range') ?? '');
      const start = m ? Number(m[1]) : Number.NaN;
      if (!m || start > this.#offset) {
        discardBody(res.body);
        throw new RegistryError(
          'ERR_REGISTRY',
          `${opts.what}: resuming at byte ${this.#offset}, the registry answered an unusable range ${JSON.stringify(header(res, 'content-range') ?? '')}`,
          { status: 206, url: this.#url },
        );
      }
      this.#skip = this.#offset - start;
    } else if (res.status === 200) {
      this.#skip = this.#offset;
    } else {
      discardBody(res.body);
      throw new StratumError('ERR_REGISTRY', `${opts.what}: unexpected HTTP ${res.status} when resuming`);
    }
    return res.body;
  }
}
