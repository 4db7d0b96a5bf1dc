// Direct delivery: a byte stream that can hand its bytes straight to one consumer as views
// into its own buffer, instead of emitting a fresh Buffer per chunk through stream stages.
// A blob download reads the socket into one reused buffer; hashing and copying into the
// destination's write buffers happen on that view, so no chunk is allocated, queued or
// collected. A DirectReadable is still a Readable for every other consumer.
//
// Contract for a sink: `write(view)` may use `view` only until it returns; returning false
// asks the source to stop until `resume()` is called on the handle. After `end()` or
// `error()` no more calls come. A source whose bytes are checked against a digest calls
// `end()` only for verified bytes (see verified.ts).

import { write } from 'node:fs';
import { Readable } from 'node:stream';
import { abortError } from '../errors/errors.js';

export interface ChunkSink {
  /** The next bytes, valid only during this call; false: wait for resume(). */
  write(view: Uint8Array): boolean;
  /** Every byte was delivered. */
  end(): void;
  /** The source failed; nothing more comes. */
  error(e: Error): void;
}

export interface SinkHandle {
  /** More bytes are welcome again (after write() returned false). */
  resume(): void;
  /** Stop the source: it releases what it holds and calls nothing more on the sink. */
  cancel(): void;
}

/**
 * A Readable whose bytes can instead be taken directly by one sink (`sinkTo`), before any
 * is read. Subclasses deliver bytes through `deliver`, `finish` and `fail`, pause themselves
 * when `deliver` returns false, and implement `startFlow` (begin or resume producing) and
 * `release` (give up the underlying resources).
 */
export abstract class DirectReadable extends Readable {
  #sink: ChunkSink | undefined;
  #over = false;

  /** Take every byte directly; the Readable side stays silent. At most once, before reading. */
  sinkTo(sink: ChunkSink): SinkHandle {
    if (this.#sink || this.readableDidRead || this.readableFlowing !== null || this.destroyed) {
      throw new Error('sinkTo: the stream is already being read');
    }
    this.#sink = sink;
    this.startFlow();
    return {
      resume: () => {
        if (!this.#over) this.startFlow();
      },
      cancel: () => {
        if (this.#over) return;
        this.#over = true;
        this.release();
        // no 'error': the sink's owner gave up, the stream itself did not fail
        this.destroy();
      },
    };
  }

  /** Whether bytes go to a sink (not through the Readable side). */
  protected get direct(): boolean {
    return this.#sink !== undefined;
  }

  /** Pass on bytes that stay valid only during this call; false: stop producing for now. */
  protected deliver(view: Uint8Array): boolean {
    if (this.#over) return false;
    if (this.#sink) return this.#sink.write(view);
    return this.push(Buffer.from(view));
  }

  /** Pass on bytes the consumer may keep. */
  protected deliverOwned(chunk: Buffer): boolean {
    if (this.#over) return false;
    if (this.#sink) return this.#sink.write(chunk);
    return this.push(chunk);
  }

  protected finish(): void {
    if (this.#over) return;
    this.#over = true;
    if (this.#sink) {
      this.#sink.end();
      // the Readable side ends too, quietly (nobody reads it)
      this.push(null);
      this.resume();
    } else {
      this.push(null);
    }
  }

  protected fail(e: Error): void {
    if (this.#over) return;
    this.#over = true;
    this.release();
    const sink = this.#sink;
    if (!sink) {
      this.destroy(e);
      return;
    }
    // 'error' is emitted first, so listeners that classify a stream's own errors see it
    // before the sink's owner hears of it
    this.once('error', () => {});
    this.once('close', () => sink.error(e));
    this.destroy(e);
  }

  protected get over(): boolean {
    return this.#over;
  }

  override _read(): void {
    if (!this.#sink && !this.#over) this.startFlow();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    if (!this.#over) {
      this.#over = true;
      this.release();
      if (this.#sink) {
        const sink = this.#sink;
        const e = err ?? new Error('the stream was destroyed');
        process.nextTick(() => sink.error(e));
      }
    }
    cb(err);
  }

  protected abstract startFlow(): void;
  protected abstract release(): void;
}

/** Whether a stream can deliver directly. */
export function isDirectReadable(s: unknown): s is DirectReadable {
  return s instanceof DirectReadable;
}

const FILE_BATCH = 1024 * 1024;
const FILE_WRITES_IN_FLIGHT = 4;

export interface SinkToFileOptions {
  /** Sees each chunk before it is written (hashing, counting); a throw fails the write. */
  readonly onChunk?: (view: Uint8Array) => void;
  readonly signal?: AbortSignal | undefined;
}

function writeFully(
  fd: number,
  buf: Buffer,
  length: number,
  position: number,
  cb: (e: Error | null) => void,
): void {
  write(fd, buf, 0, length, position, (err, n) => {
    if (err) cb(err);
    else if (n < length) writeFully(fd, buf.subarray(n), length - n, position + n, cb);
    else cb(null);
  });
}

/**
 * Write everything `source` delivers to the open file `fd`, from offset 0: its views are
 * copied into a few reused 1 MiB buffers, written by the thread pool at explicit offsets
 * while the next one fills. Resolves with the byte count once the source ended and every
 * write landed; rejects with the source's error, a write error or the abort (after the
 * writes in flight settled, so the caller may close and remove the file at once).
 */
export function sinkToFile(
  source: DirectReadable,
  fd: number,
  opts: SinkToFileOptions = {},
): Promise<number> {
  const { signal } = opts;
  return new Promise<number>((resolve, reject) => {
    const free: Buffer[] = [];
    let current: Buffer | undefined;
    let fill = 0;
    let position = 0;
    let inFlight = 0;
    let ended = false;
    let failed: Error | undefined;
    let waiting = false;
    let settled = false;
    let handle: SinkHandle | undefined;

    const onAbort = () => stop(abortError(signal as AbortSignal));
    const settle = () => {
      if (settled || inFlight > 0) return;
      if (failed) {
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        reject(failed);
      } else if (ended) {
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        resolve(position);
      }
    };
    const stop = (e: Error) => {
      if (failed || settled) return;
      failed = e;
      handle?.cancel();
      settle();
    };
    const flush = () => {
      if (fill === 0 || !current) return;
      const buf = current;
      const length = fill;
      const at = position;
      position += length;
      current = undefined;
      fill = 0;
      inFlight++;
      writeFully(fd, buf, length, at, (err) => {
        inFlight--;
        free.push(buf);
        if (err) stop(err);
        if (waiting && !failed && inFlight < FILE_WRITES_IN_FLIGHT) {
          waiting = false;
          handle?.resume();
        }
        settle();
      });
    };

    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    handle = source.sinkTo({
      write(view) {
        if (failed) return false;
        try {
          opts.onChunk?.(view);
        } catch (e) {
          // cancelled once sinkTo has returned, if this came during it
          failed = e instanceof Error ? e : new Error(String(e));
          handle?.cancel();
          settle();
          return false;
        }
        for (let at = 0; at < view.byteLength; ) {
          if (!current) current = free.pop() ?? Buffer.allocUnsafeSlow(FILE_BATCH);
          const n = Math.min(FILE_BATCH - fill, view.byteLength - at);
          current.set(n === view.byteLength ? view : view.subarray(at, at + n), fill);
          fill += n;
          at += n;
          if (fill === FILE_BATCH) flush();
        }
        if (inFlight < FILE_WRITES_IN_FLIGHT) return true;
        waiting = true;
        return false;
      },
      end() {
        if (failed) return;
        ended = true;
        flush();
        settle();
      },
      error(e) {
        if (!failed) failed = e;
        settle();
      },
    });
    if (failed) handle.cancel();
  });
}
