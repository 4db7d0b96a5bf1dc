// Digest: a validated `algorithm:hex` string (sha256 or sha512), hashing helpers, and a
// Transform that verifies size and digest while bytes flow and fails before the stream ends.

import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError, SizeMismatchError, StratumError } from '../errors/errors.js';

declare const digestBrand: unique symbol;
/** A digest string that has passed {@link parseDigest}. */
export type Digest = string & { readonly [digestBrand]: true };

export type Algorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Readonly<Record<Algorithm, number>> = { sha256: 64, sha512: 128 };
// OCI grammar: algorithm ::= component (separator component)*, encoded ::= [a-zA-Z0-9=_-]+
const GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/** Validate a digest; throws ERR_INVALID_DIGEST / ERR_UNSUPPORTED_ALGORITHM. */
export function parseDigest(s: unknown): Digest {
  if (typeof s !== 'string') throw new StratumError('ERR_INVALID_DIGEST', `invalid digest: not a string`);
  if (s.length > 256 || !GRAMMAR.test(s)) {
    throw new StratumError('ERR_INVALID_DIGEST', `invalid digest ${JSON.stringify(s.slice(0, 140))}`);
  }
  const colon = s.indexOf(':');
  const alg = s.slice(0, colon);
  const hex = s.slice(colon + 1);
  if (alg !== 'sha256' && alg !== 'sha512') {
    throw new StratumError(
      'ERR_UNSUPPORTED_ALGORITHM',
      `unsupported digest algorithm ${JSON.stringify(alg)}`,
    );
  }
  if (hex.length !== HEX_LENGTH[alg] || !/^[a-f0-9]+$/.test(hex)) {
    throw new StratumError(
      'ERR_INVALID_DIGEST',
      `invalid ${alg} digest ${JSON.stringify(s.slice(0, 140))}: want ${HEX_LENGTH[alg]} lowercase hex characters`,
    );
  }
  return s as Digest;
}

export function isDigest(s: unknown): s is Digest {
  try {
    parseDigest(s);
    return true;
  } catch {
    return false;
  }
}

export function algorithmOf(d: Digest): Algorithm {
  return d.slice(0, d.indexOf(':')) as Algorithm;
}

export function encodedOf(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

export function digestBytes(data: Uint8Array | string, alg: Algorithm = 'sha256'): Digest {
  return `${alg}:${createHash(alg).update(data).digest('hex')}` as Digest;
}

/** Incremental digester. */
export class Digester {
  readonly algorithm: Algorithm;
  #hash: Hash;
  #size = 0;
  constructor(alg: Algorithm = 'sha256') {
    this.algorithm = alg;
    this.#hash = createHash(alg);
  }
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#size += chunk.byteLength;
  }
  get size(): number {
    return this.#size;
  }
  #result: Digest | undefined;
  /** The digest of everything hashed (hashing ends here; asking again gives the same). */
  digest(): Digest {
    this.#result ??= `${this.algorithm}:${this.#hash.digest('hex')}` as Digest;
    return this.#result;
  }
  /**
   * Finish and judge everything hashed against what was expected: the size error or the
   * digest error, or undefined when both match (an expectation left out is not checked).
   */
  mismatch(
    expected: { readonly digest?: Digest | undefined; readonly size?: number | undefined },
    what: string,
  ): SizeMismatchError | DigestMismatchError | undefined {
    const got = this.digest();
    if (expected.size !== undefined && this.#size !== expected.size) {
      return new SizeMismatchError(expected.size, this.#size, what);
    }
    if (expected.digest !== undefined && got !== expected.digest) {
      return new DigestMismatchError(expected.digest, got, what);
    }
    return undefined;
  }
}

/**
 * A pass-through that hashes what flows and counts it. If `expected` is given, a stream that
 * goes over the expected size errors at once, the chunk that completes the expected size is
 * passed on only if the digest matches, and a short stream errors in flush — before 'end' —
 * so a consumer never commits unverified bytes.
 */
export class VerifyingStream extends Transform {
  readonly #digester: Digester;
  readonly #expectedDigest: Digest | undefined;
  readonly #expectedSize: number | undefined;
  readonly #what: string;
  readonly #onProgress: ((bytes: number) => void) | undefined;
  #result: Digest | undefined;

  constructor(
    opts: {
      digest?: Digest;
      size?: number;
      algorithm?: Algorithm;
      what?: string;
      /** Told the size of every chunk that passes (a 'data' listener would start the flow). */
      onProgress?: ((bytes: number) => void) | undefined;
    } = {},
  ) {
    super();
    this.#expectedDigest = opts.digest;
    this.#expectedSize = opts.size;
    this.#onProgress = opts.onProgress;
    this.#what = opts.what ?? opts.digest ?? 'content';
    this.#digester = new Digester(opts.digest ? algorithmOf(opts.digest) : (opts.algorithm ?? 'sha256'));
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#digester.update(chunk);
    if (this.#expectedSize !== undefined && this.#digester.size > this.#expectedSize) {
      cb(new SizeMismatchError(this.#expectedSize, this.#digester.size, this.#what));
      return;
    }
    // the last bytes go on only once they are judged: a consumer that counts (an upload
    // with Content-Length) must never hold all of wrong content before the stream fails
    if (this.#expectedDigest !== undefined && this.#digester.size === this.#expectedSize) {
      const bad = this.#digester.mismatch({ digest: this.#expectedDigest }, this.#what);
      if (bad) {
        cb(bad);
        return;
      }
    }
    this.#onProgress?.(chunk.byteLength);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const bad = this.#digester.mismatch(
      { digest: this.#expectedDigest, size: this.#expectedSize },
      this.#what,
    );
    this.#result = this.#digester.digest();
    cb(bad);
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.#digester.size;
  }
  /** The digest of everything that flowed; defined after the stream has ended. */
  get result(): Digest | undefined {
    return this.#result;
  }
}

/** Verify an in-memory body against digest and size. */
export function verifyBytes(data: Uint8Array, digest: Digest, size?: number, what?: string): void {
  if (size !== undefined && data.byteLength !== size) {
    throw new SizeMismatchError(size, data.byteLength, what ?? digest);
  }
  const got = digestBytes(data, algorithmOf(digest));
  if (got !== digest) throw new DigestMismatchError(digest, got, what ?? digest);
}
