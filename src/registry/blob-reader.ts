// A blob download that survives dropped connections. Bytes are passed on as they arrive;
// when the body fails (or ends short of the expected size), the blob is asked for again
// with `Range: bytes=N-` and the stream continues at byte N. A registry that ignores Range
// and answers 200 has its first N bytes skipped. Attempts are bounded; the result is piped
// through a VerifyingStream, so the caller only ever sees an error or verified bytes.

import { Readable } from 'node:stream';
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

/** The verified byte stream of a blob, resuming after connection drops. */
export function resumableBlobStream(opts: ResumableOptions): VerifyingStream {
  const verifier = new VerifyingStream({ digest: opts.digest, size: opts.size, what: opts.what });
  let current: Readable = opts.first.body;
  let closed = false;

  async function* chunks(): AsyncGenerator<Buffer> {
    let offset = 0;
    let skip = 0;
    let tries = 0;
    let url = opts.first.url.href;
    for (;;) {
      let failure: unknown;
      try {
        for await (const chunk of current) {
          let c = chunk as Buffer;
          if (skip > 0) {
            if (c.byteLength <= skip) {
              skip -= c.byteLength;
              continue;
            }
            c = c.subarray(skip);
            skip = 0;
          }
          offset += c.byteLength;
          opts.onProgress?.(c.byteLength);
          yield c;
        }
        if (offset >= opts.size || skip > 0) return; // complete (the verifier judges the bytes)
      } catch (e) {
        failure = e;
      }
      if (closed) return;
      if (opts.signal?.aborted) throw abortError(opts.signal);
      if (tries >= opts.attempts) {
        if (failure === undefined) return; // ended short: the verifier reports the size
        throw transportError(opts.what, url, failure);
      }
      tries++;
      if (opts.pauseMs) await delay(opts.pauseMs(tries - 1), opts.signal);
      const res = await opts.reopen(offset);
      url = res.url.href;
      current = res.body;
      if (closed) {
        discardBody(res.body);
        return;
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
    }
  }

  const source = Readable.from(chunks(), { objectMode: false });
  source.on('error', (e) => verifier.destroy(e));
  verifier.on('close', () => {
    closed = true;
    discardBody(current);
    source.destroy();
  });
  source.pipe(verifier);
  return markVerified(verifier, opts.digest, opts.size);
}
