// Read one layer blob as tar entries, streaming: fetched (the fetcher checks size and digest as
// bytes flow), decompressed as its first bytes say (gzip on zlib's thread pool, zstd through
// compression.ts, plain as it is), hashed to its very end (the diffID, checked against the
// config's), and parsed by TarReader into a TarSink. Nothing touches the disk.
//
// Also: the image a caller names (an Image, or a fetcher and a manifest-or-index descriptor),
// its layers checked against the config's diff_ids, and sparse bodies expanded into the bytes
// of the file (holes as zeros).

import { pipeline, type Readable } from 'node:stream';
import { decompressStream, gunzipStream, peekCompression } from '../compression/compression.js';
import type { Fetcher } from '../content/types.js';
import { type Digest, Digester } from '../digest/digest.js';
import { abortError, DigestMismatchError, StratumError } from '../errors/errors.js';
import { Image, Index } from '../image/image.js';
import { hostPlatform } from '../image/platform.js';
import type { SparseSegment, TarSink } from '../layer/tar-reader.js';
import { TarReader } from '../layer/tar-reader.js';
import { isIndexMediaType, layerCompressionOf } from '../spec/media-types.js';
import type { Descriptor, ImageConfig, ImageManifest, Platform } from '../spec/types.js';

/** An image to read: an Image view, or a fetcher and a manifest-or-index descriptor. */
export type ImageSource = Image | { readonly fetcher: Fetcher; readonly descriptor: Descriptor };

export interface ImageSourceOptions {
  /** For an index: the platform's image (default this machine's). */
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
}

export interface OpenedImage {
  readonly image: Image;
  readonly manifest: ImageManifest;
  readonly config: ImageConfig;
  readonly diffIds: readonly Digest[];
}

/** The image, its manifest and config, checked: diff_ids line up with layers, layers are tars. */
export async function openImage(source: ImageSource, opts: ImageSourceOptions = {}): Promise<OpenedImage> {
  opts.signal?.throwIfAborted();
  let image: Image;
  if (source instanceof Image) image = source;
  else if (isIndexMediaType(source.descriptor.mediaType)) {
    image = await new Index(source.fetcher, source.descriptor).image(opts.platform ?? hostPlatform());
  } else image = new Image(source.fetcher, source.descriptor);
  const [manifest, config] = await Promise.all([image.manifest(), image.config()]);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new StratumError(
      'ERR_INVALID_DOCUMENT',
      `image ${image.descriptor.digest}: the manifest has ${manifest.layers.length} layers but the config lists ${diffIds.length} diff_ids`,
    );
  }
  for (const [i, layer] of manifest.layers.entries()) {
    if (layerCompressionOf(layer.mediaType) === undefined) {
      throw new StratumError(
        'ERR_UNSUPPORTED_MEDIA_TYPE',
        `layer ${i + 1} (${layer.digest}) of image ${image.descriptor.digest} has media type ${JSON.stringify(layer.mediaType)}, which is not a tar layer`,
      );
    }
  }
  return { image, manifest, config, diffIds };
}

export interface LayerStreamResult {
  /** undefined when not hashed (`hash: false`). */
  readonly diffId: Digest | undefined;
  /** Bytes of uncompressed tar. */
  readonly size: number;
}

/**
 * Stream layer `desc` from `fetcher` through `sink`. `what` names the layer in errors
 * ("layer 2 (sha256:...)"); `diffId`, when given, must be the uncompressed tar's digest.
 * `hash: false` skips computing the diffID (the result then has none): for a second read of
 * a layer whose diffID was checked before — the fetcher checks the compressed digest again,
 * and the same compressed bytes always decompress to the same tar.
 */
export async function streamLayer(
  fetcher: Fetcher,
  desc: Descriptor,
  sink: TarSink,
  opts: {
    readonly diffId?: Digest;
    readonly hash?: boolean;
    readonly what: string;
    readonly signal?: AbortSignal;
  },
): Promise<LayerStreamResult> {
  const signal = opts.signal;
  signal?.throwIfAborted();
  const fetched = await fetcher.fetch(desc, signal ? { signal } : {});
  let tar: Readable = fetched;
  let failed: Error | undefined;
  try {
    const { compression, stream } = await peekCompression(fetched);
    tar = stream;
    if (compression !== 'none') {
      const dec = compression === 'gzip' ? gunzipStream() : decompressStream(compression);
      tar = pipeline(stream, dec, (e) => {
        if (e) failed ??= e;
      }) as unknown as Readable;
    }
    const reader = new TarReader(sink);
    const digester = opts.hash === false && opts.diffId === undefined ? undefined : new Digester('sha256');
    let size = 0;
    for await (const chunk of tar as AsyncIterable<Buffer>) {
      if (signal?.aborted) throw abortError(signal);
      digester?.update(chunk);
      size += chunk.length;
      const r = reader.write(chunk);
      if (r !== undefined) await r;
    }
    if (failed) throw failed;
    reader.end();
    const diffId = digester?.digest();
    if (opts.diffId !== undefined && diffId !== opts.diffId) {
      throw new DigestMismatchError(opts.diffId, String(diffId), `${opts.what} uncompressed (diffID)`);
    }
    return { diffId, size };
  } catch (e) {
    if (signal?.aborted && !(e instanceof StratumError && e.code === 'ERR_ABORTED')) throw abortError(signal);
    if (e instanceof StratumError && e.code === 'ERR_INVALID_ARCHIVE') {
      throw new StratumError('ERR_INVALID_ARCHIVE', `${opts.what}: ${e.message}`, { cause: e });
    }
    throw e;
  } finally {
    tar.destroy();
    fetched.destroy();
  }
}

/** "layer 2 (sha256:…)" */
export function layerName(index: number, desc: Descriptor): string {
  return `layer ${index + 1} (${desc.digest})`;
}

const ZEROS = Buffer.alloc(64 * 1024);

function* zeros(n: number): Generator<Buffer> {
  let left = n;
  while (left > 0) {
    const k = Math.min(left, ZEROS.length);
    yield ZEROS.subarray(0, k);
    left -= k;
  }
}

/**
 * A file body as the file's bytes: for a sparse entry the stored segments come back to back,
 * and the holes between (and after) them are zeros.
 */
export class SparseExpander {
  readonly #segments: readonly SparseSegment[] | undefined;
  readonly #realSize: number;
  #pos = 0;
  #seg = 0;
  #segLeft = 0;

  constructor(segments: readonly SparseSegment[] | undefined, realSize: number) {
    this.#segments = segments;
    this.#realSize = realSize;
  }

  /** The file bytes for the next piece of body. */
  *expand(chunk: Buffer): Generator<Buffer> {
    const segs = this.#segments;
    if (segs === undefined) {
      this.#pos += chunk.length;
      yield chunk;
      return;
    }
    let off = 0;
    while (off < chunk.length) {
      while (this.#segLeft === 0) {
        const s = segs[this.#seg++];
        if (s === undefined) throw new Error('sparse body longer than its map');
        yield* zeros(s.offset - this.#pos);
        this.#pos = s.offset;
        this.#segLeft = s.length;
      }
      const n = Math.min(this.#segLeft, chunk.length - off);
      yield chunk.subarray(off, off + n);
      this.#pos += n;
      this.#segLeft -= n;
      off += n;
    }
  }

  /** The zeros after the last segment. */
  *finish(): Generator<Buffer> {
    yield* zeros(this.#realSize - this.#pos);
    this.#pos = this.#realSize;
  }
}
