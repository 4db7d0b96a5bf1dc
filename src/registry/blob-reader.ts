// A blob download that survives dropped connections. Bytes are passed on as they arrive,
// gathered into pieces of about 512 KiB, written straight into a VerifyingStream (with its
// backpressure pausing the body); when the body fails (or ends short of the expected size),
// the blob is asked for again with `Range: bytes=N-` and the stream continues at byte N. A
// registry that ignores Range and answers 200 has its first N bytes skipped. Attempts are
// bounded, and the caller only ever sees an error or verified bytes.

import type { Readable } from 'node:stream';
import { type Digest, VerifyingStream } from '../digest/digest.js';
import { abortError, RegistryError, StratumError } from '../errors/errors.js';
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

/**
 * Pieces of about this size go to the verifier: the socket gives 64 KiB at most, and every
 * piece costs a trip through the stages after it (hash, progress, the destination's writes),
 * so gathering them saves more than the copy costs.
 */
const PIECE = 512 * 1024;

/** The verified byte stream of a blob, resuming after connection drops. */
export function resumableBlobStream(opts: ResumableOptions): VerifyingStream {
  const verifier = new VerifyingStream({ digest: opts.digest, size: opts.size, what: opts.what });
  let current: Readable = opts.first.body;
  let closed = false;
  let offset = 0; // bytes received and kept (gathered or passed on)
  let skip = 0; // bytes of the current body already received from an earlier one
  let tries = 0;
  let url = opts.first.url.href;
  let gathered: Buffer[] = [];
  let gatheredBytes = 0;

  /** Pass the gathered bytes on; false when the verifier wants no more for now. */
  const flush = (): boolean => {
    if (gatheredBytes === 0) return true;
    const piece = gathered.length === 1 ? gathered[0]! : Buffer.concat(gathered, gatheredBytes);
    gathered = [];
    gatheredBytes = 0;
    return verifier.write(piece);
  };
  const onData = (chunk: Buffer) => {
    if (closed || verifier.destroyed) return;
    let c = chunk;
    if (skip > 0) {
      if (c.byteLength <= skip) {
        skip -= c.byteLength;
        return;
      }
      c = c.subarray(skip);
      skip = 0;
    }
    offset += c.byteLength;
    opts.onProgress?.(c.byteLength);
    gathered.push(c);
    gatheredBytes += c.byteLength;
    if (gatheredBytes >= PIECE && !flush()) current.pause();
  };
  const onDrain = () => {
    if (!closed) current.resume();
  };
  const onEnd = () => {
    detach(current);
    flush();
    if (offset >= opts.size || skip > 0) {
      verifier.end(); // complete (the verifier judges the bytes)
      return;
    }
    again(undefined);
  };
  const onError = (e: unknown) => {
    detach(current);
    flush(); // what arrived before the failure is good; the next request starts after it
    again(e);
  };
  function attach(body: Readable): void {
    current = body;
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
    if (verifier.writableNeedDrain) body.pause();
  }
  function detach(body: Readable): void {
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('error', onError);
    body.on('error', () => {}); // a late error from a body let go of is not news
  }
  function again(failure: unknown): void {
    reopen(failure).then(
      (body) => {
        if (body) attach(body);
      },
      (e: unknown) => verifier.destroy(e as Error),
    );
  }
  /** The body to go on with, or undefined when the stream is over. */
  async function reopen(failure: unknown): Promise<Readable | undefined> {
    if (closed) return undefined;
    if (opts.signal?.aborted) throw abortError(opts.signal);
    if (tries >= opts.attempts) {
      if (failure === undefined) {
        verifier.end(); // ended short: the verifier reports the size
        return undefined;
      }
      throw transportError(opts.what, url, failure);
    }
    tries++;
    if (opts.pauseMs) await delay(opts.pauseMs(tries - 1), opts.signal);
    const res = await opts.reopen(offset);
    url = res.url.href;
    if (closed) {
      discardBody(res.body);
      return undefined;
    }
    if (res.status === 206) {
      const m = CONTENT_RANGE.exec(header(res, 'content-range') ?? '');
      const start = m ? Number(m[1]) : Number.NaN;
      if (!m || start > offset) {
        discardBody(res.body);
        throw new RegistryError(
          'ERR_REGISTRY',
          `${opts.what}: resuming at byte ${offset}, the registry answered an unusable range ${JSON.stringify(header(res, 'content-range') ?? '')}`,
          { status: 206, url },
        );
      }
      skip = offset - start;
    } else if (res.status === 200) {
      skip = offset;
    } else {
      discardBody(res.body);
      throw new StratumError('ERR_REGISTRY', `${opts.what}: unexpected HTTP ${res.status} when resuming`);
    }
    return res.body;
  }

  verifier.on('drain', onDrain);
  verifier.on('close', () => {
    closed = true;
    detach(current);
    discardBody(current);
  });
  attach(current);
  return markVerified(verifier, opts.digest, opts.size);
}
