// Blob uploads (distribution spec "pushing blobs"):
// - POST /v2/<name>/blobs/uploads/ opens a session; its Location (absolute or relative) is
//   where the next request goes, and every answer may move it.
// - Up to `chunkSize` bytes (by default: any size): one PUT <location>?digest=<d> that
//   streams the body with Content-Length = size (or, optionally, a single POST ?digest= for
//   in-memory bytes).
// - Larger: PATCH chunks of max(chunkSize, OCI-Chunk-Min-Length) bytes with Content-Range
//   `start-end`, then a closing PUT ?digest= without a body. A chunk is the list of the
//   source's own buffers (no copy), sent again as it is when a PATCH is retried.
// The bytes are hashed as they are read; a digest or size mismatch is found before the
// closing PUT (chunked) or fails the streaming PUT, and nothing becomes visible. A failed
// upload is cancelled (DELETE of the session, best effort).

import { Readable, Transform } from 'node:stream';
import type { Content } from '../content/types.js';
import { type Digest, Digester, VerifyingStream, verifyBytes } from '../digest/digest.js';
import { DigestMismatchError, RegistryError, SizeMismatchError, StratumError } from '../errors/errors.js';
import { toReadable } from '../internal/streams.js';
import { isVerified } from '../internal/verified.js';
import type { Descriptor } from '../spec/types.js';
import { header, type RegistryClient, type RegistryResponse } from './client.js';
import { discardBody } from './http-errors.js';

export interface UploadContext {
  readonly client: RegistryClient;
  readonly registry: string;
  readonly repository: string;
  readonly scopes: readonly string[];
  readonly what: string;
  readonly signal?: AbortSignal | undefined;
  readonly onProgress?: ((bytes: number) => void) | undefined;
  /** Try a single POST ?digest= for in-memory content (falls back if the registry answers 202). */
  readonly singlePost?: boolean;
}

function nextLocation(ctx: UploadContext, res: RegistryResponse, step: string): string {
  const loc = header(res, 'location');
  discardBody(res.body);
  if (loc === undefined || loc === '') {
    throw new RegistryError('ERR_REGISTRY', `${ctx.what}: the registry's ${step} answer has no Location`, {
      status: res.status,
      url: res.url.href,
    });
  }
  return new URL(loc, res.url).href;
}

function withDigest(location: string, digest: Digest): string {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u.href;
}

/** Cancel an upload session, ignoring failures. */
export async function cancelUpload(ctx: UploadContext, location: string): Promise<void> {
  try {
    const res = await ctx.client.request({
      registry: ctx.registry,
      method: 'DELETE',
      url: location,
      headers: { 'content-length': '0' },
      scopes: ctx.scopes,
      what: `${ctx.what}: cancel upload`,
      ok: [200, 202, 204, 404],
      retry: false,
    });
    discardBody(res.body);
  } catch {
    // best effort: the registry times out abandoned sessions
  }
}

/**
 * Read a stream in pieces of exactly `size` bytes (the last may be shorter). A piece is a
 * list of the stream's own buffers, the ones at its edges cut with subarray: nothing is
 * copied, and the piece can be sent again as it is.
 */
async function* pieces(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Buffer[]> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const chunk of source) {
    let c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    while (c.byteLength > 0) {
      const take = Math.min(size - have, c.byteLength);
      parts.push(c.subarray(0, take));
      have += take;
      c = c.subarray(take);
      if (have === size) {
        yield parts;
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield parts;
}

/** Upload one blob; resolves when the registry has committed it. */
export async function uploadBlob(ctx: UploadContext, desc: Descriptor, content: Content): Promise<void> {
  try {
    await upload(ctx, desc, content);
  } catch (e) {
    // a stream we did not finish reading is released (its source may hold a connection)
    if (!(content instanceof Uint8Array) && !content.readableEnded) content.destroy();
    throw e;
  }
}

async function upload(ctx: UploadContext, desc: Descriptor, content: Content): Promise<void> {
  const chunkSize = ctx.client.chunkSize;
  const base = `/v2/${ctx.repository}/blobs/uploads/`;

  if (content instanceof Uint8Array) verifyBytes(content, desc.digest, desc.size, ctx.what);

  // single POST with the digest, for bytes in memory
  let opened: RegistryResponse;
  if (ctx.singlePost && content instanceof Uint8Array && desc.size <= chunkSize) {
    const body = content;
    opened = await ctx.client.request({
      registry: ctx.registry,
      method: 'POST',
      url: `${base}?digest=${encodeURIComponent(desc.digest)}`,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
      body,
      scopes: ctx.scopes,
      what: ctx.what,
      signal: ctx.signal,
      ok: [201, 202],
    });
    if (opened.status === 201) {
      discardBody(opened.body);
      ctx.onProgress?.(desc.size);
      return;
    }
  } else {
    opened = await ctx.client.request({
      registry: ctx.registry,
      method: 'POST',
      url: base,
      headers: { 'content-length': '0' },
      scopes: ctx.scopes,
      what: ctx.what,
      signal: ctx.signal,
      ok: [202],
    });
  }
  const minChunk = Number(header(opened, 'oci-chunk-min-length') ?? '0');
  let location = nextLocation(ctx, opened, 'upload start');

  try {
    if (desc.size <= chunkSize) {
      await monolithic(ctx, desc, content, location);
    } else {
      const size = Number.isSafeInteger(minChunk) && minChunk > chunkSize ? minChunk : chunkSize;
      location = await chunked(ctx, desc, content, location, size, (l) => {
        location = l;
      });
    }
  } catch (e) {
    await cancelUpload(ctx, location);
    throw e;
  }
}

/** `source` through a pass-through that reports what undici takes (a 'data' listener would race it for the chunks). */
function counting(source: Readable, report: (bytes: number) => void): Readable {
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      report(chunk.byteLength);
      cb(null, chunk);
    },
  });
  source.on('error', (e) => counter.destroy(e));
  return source.pipe(counter);
}

async function monolithic(
  ctx: UploadContext,
  desc: Descriptor,
  content: Content,
  location: string,
): Promise<void> {
  let verifyError: unknown;
  let body: Uint8Array | Readable;
  if (content instanceof Uint8Array) {
    body = content;
  } else if (isVerified(content, desc.digest, desc.size)) {
    // the stream checks these bytes itself and fails before it ends if they are wrong, so
    // undici never completes the PUT (a blob fetched from another Target)
    content.on('error', (e) => {
      verifyError = e;
    });
    body = ctx.onProgress ? counting(content, ctx.onProgress) : content;
  } else {
    const verifier = new VerifyingStream({ digest: desc.digest, size: desc.size, what: ctx.what });
    verifier.on('error', (e) => {
      verifyError = e;
    });
    content.on('error', (e) => verifier.destroy(e));
    content.pipe(verifier);
    body = ctx.onProgress ? counting(verifier, ctx.onProgress) : verifier;
  }
  try {
    const res = await ctx.client.request({
      registry: ctx.registry,
      method: 'PUT',
      url: withDigest(location, desc.digest),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
      body,
      scopes: ctx.scopes,
      what: ctx.what,
      signal: ctx.signal,
      ok: [201, 204],
    });
    discardBody(res.body);
  } catch (e) {
    // the content's own failure (wrong bytes, a source that broke) says what went wrong; an
    // error undici put into the body when the connection failed does not, and goes on to be
    // reported (and retried) as the network failure it is
    if (verifyError instanceof StratumError) throw verifyError;
    // undici reports a short body as a content-length mismatch: say what it means
    if ((e as { code?: string })?.code === 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH') {
      throw new StratumError('ERR_SIZE_MISMATCH', `${ctx.what}: the content is not ${desc.size} bytes long`, {
        cause: e,
      });
    }
    const cause = (e as { cause?: unknown })?.cause;
    if (
      cause instanceof StratumError &&
      (cause.code === 'ERR_DIGEST_MISMATCH' || cause.code === 'ERR_SIZE_MISMATCH')
    ) {
      throw cause;
    }
    throw e;
  }
  if (content instanceof Uint8Array) ctx.onProgress?.(desc.size);
}

async function chunked(
  ctx: UploadContext,
  desc: Descriptor,
  content: Content,
  start: string,
  size: number,
  moved: (location: string) => void,
): Promise<string> {
  let location = start;
  const digester = new Digester(desc.digest.slice(0, desc.digest.indexOf(':')) as 'sha256' | 'sha512');
  let offset = 0;
  const source = toReadable(content);
  try {
    for await (const parts of pieces(source, size)) {
      let length = 0;
      for (const p of parts) {
        digester.update(p);
        length += p.byteLength;
      }
      if (offset + length > desc.size) {
        throw new SizeMismatchError(desc.size, offset + length, ctx.what);
      }
      const end = offset + length - 1;
      const res = await ctx.client.request({
        registry: ctx.registry,
        method: 'PATCH',
        url: location,
        headers: {
          'content-type': 'application/octet-stream',
          'content-range': `${offset}-${end}`,
          'content-length': String(length),
        },
        // a new stream over the same buffers for every attempt
        body: () => Readable.from(parts, { objectMode: false }),
        scopes: ctx.scopes,
        what: `${ctx.what}: upload bytes ${offset}-${end}`,
        signal: ctx.signal,
        ok: [202, 204],
      });
      location = nextLocation(ctx, res, 'chunk');
      moved(location);
      offset += length;
      ctx.onProgress?.(length);
    }
  } finally {
    source.destroy();
  }
  if (offset !== desc.size) {
    throw new SizeMismatchError(desc.size, offset, ctx.what);
  }
  const got = digester.digest();
  if (got !== desc.digest) {
    throw new DigestMismatchError(desc.digest, got, ctx.what);
  }
  const res = await ctx.client.request({
    registry: ctx.registry,
    method: 'PUT',
    url: withDigest(location, desc.digest),
    headers: { 'content-length': '0' },
    scopes: ctx.scopes,
    what: ctx.what,
    signal: ctx.signal,
    ok: [201, 204],
  });
  discardBody(res.body);
  return location;
}
