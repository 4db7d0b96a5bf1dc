// The copy engine: a graph walk from a root manifest or index to its config and layers,
// between any two Targets. Children are copied before parents (a registry refuses a manifest
// whose blobs are missing), each digest once even under concurrency, blobs the destination
// has are skipped ("already exists"), a cross-repository mount is tried before an upload
// within one registry, and transfers run with bounded parallelism.
//
// Conversion is opt-in: `destCompression` recompresses layers (diffIDs stay, digests change
// consistently up the graph) and `format` rewrites media types (oci <-> docker). Without
// either, bytes and digests are preserved exactly.
//
// Every failure is a CopyError naming the side (source or destination) that failed.

import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { compressStream, decompressStream, peekCompression } from '../compression/compression.js';
import {
  type Fetcher,
  isFinalizer,
  isMounter,
  isReferencePusher,
  type Storage,
  type Target,
} from '../content/types.js';
import { type Digest, Digester } from '../digest/digest.js';
import { abortError, CopyError, type CopySide, RegistryError, StratumError } from '../errors/errors.js';
import { fetchManifest } from '../image/image.js';
import { formatPlatform, hostPlatform, selectPlatform } from '../image/platform.js';
import { tempName } from '../internal/fs.js';
import { Semaphore } from '../internal/pool.js';
import { parallelGzipStream } from '../layer/parallel-gzip.js';
import {
  isManifestMediaType,
  type LayerCompression,
  layerCompressionOf,
  layerMediaType,
  type ManifestFormat,
  MediaType,
} from '../spec/media-types.js';
import type { Descriptor, Platform } from '../spec/types.js';

export type BlobAction = 'copied' | 'exists' | 'mounted' | 'converted';

export type CopyEvent =
  | { readonly type: 'resolved'; readonly descriptor: Descriptor }
  | { readonly type: 'platform'; readonly platform: string; readonly descriptor: Descriptor }
  | { readonly type: 'blob-start'; readonly descriptor: Descriptor }
  | { readonly type: 'blob-progress'; readonly descriptor: Descriptor; readonly bytes: number }
  | {
      readonly type: 'blob-done';
      readonly descriptor: Descriptor;
      readonly action: BlobAction;
      readonly result: Descriptor;
    }
  | { readonly type: 'manifest'; readonly descriptor: Descriptor; readonly action: 'copied' | 'exists' }
  | { readonly type: 'tagged'; readonly descriptor: Descriptor; readonly ref: string };

export interface CopyOptions {
  /** Platform to pick from an index (default: this machine's). Ignored with `all`. */
  readonly platform?: Platform;
  /** Copy a whole index with every platform. */
  readonly all?: boolean;
  /** Recompress layers to this compression. */
  readonly destCompression?: LayerCompression;
  /** The level of that compression (gzip 0-9, default 6; zstd 1-19, default 3). */
  readonly destCompressionLevel?: number;
  /** Rewrite media types to this manifest format. */
  readonly format?: ManifestFormat;
  /** Blob transfers in flight at once (default 4). */
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (e: CopyEvent) => void;
  /** Where conversion writes temporary files (default os.tmpdir()). */
  readonly tmpDir?: string;
}

export interface CopyStats {
  copied: number;
  skipped: number;
  mounted: number;
  bytes: number;
}

export interface CopyResult {
  /** The root as written to the destination (differs from the source's when converted). */
  readonly descriptor: Descriptor;
  /** The source root that was resolved (before platform selection). */
  readonly source: Descriptor;
  readonly stats: Readonly<CopyStats>;
}

const sourceErrors = new WeakSet<object>();

function markSource<T extends Readable>(s: T): T {
  s.on('error', (e) => {
    if (typeof e === 'object' && e !== null) sourceErrors.add(e);
  });
  return s;
}

async function onSide<T>(
  side: CopySide,
  what: string,
  fn: () => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CopyError) throw e;
    if (signal?.aborted) throw abortError(signal);
    const actual: CopySide = typeof e === 'object' && e !== null && sourceErrors.has(e) ? 'source' : side;
    throw new CopyError(actual, what, e);
  }
}

function sameDescriptor(a: Descriptor, b: Descriptor): boolean {
  return a.digest === b.digest && a.mediaType === b.mediaType && a.size === b.size;
}

function convertManifestType(mt: string, format: ManifestFormat | undefined): string {
  if (!format) return mt;
  const map: Record<string, string> =
    format === 'docker'
      ? {
          [MediaType.OciManifest]: MediaType.DockerManifest,
          [MediaType.OciIndex]: MediaType.DockerManifestList,
        }
      : {
          [MediaType.DockerManifest]: MediaType.OciManifest,
          [MediaType.DockerManifestList]: MediaType.OciIndex,
        };
  return map[mt] ?? mt;
}

function convertConfigType(mt: string, format: ManifestFormat | undefined): string {
  if (format === 'docker' && mt === MediaType.OciConfig) return MediaType.DockerConfig;
  if (format === 'oci' && mt === MediaType.DockerConfig) return MediaType.OciConfig;
  return mt;
}

/** Counts bytes as they pass, reporting progress. */
class Counter extends Transform {
  readonly #onBytes: (n: number) => void;
  readonly #digester: Digester | undefined;
  constructor(onBytes: (n: number) => void, digester?: Digester) {
    super();
    this.#onBytes = onBytes;
    this.#digester = digester;
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.#onBytes(chunk.length);
    this.#digester?.update(chunk);
    cb(null, chunk);
  }
}

/**
 * Copy the graph under `root` from `src` to `dst`. Returns the root as written (converted
 * if conversion was asked for). Does not tag.
 */
export class GraphCopier {
  readonly #src: Fetcher;
  readonly #srcTarget: Target | undefined;
  readonly #dst: Storage;
  readonly #opts: CopyOptions;
  readonly #sem: Semaphore;
  /**
   * Recompressions to gzip, one at a time: each already uses every core (block-parallel
   * gzip), and several at once only hold more blocks in memory.
   */
  readonly #gzipSem = new Semaphore(1);
  readonly #done = new Map<Digest, Promise<Descriptor>>();
  readonly stats: CopyStats = { copied: 0, skipped: 0, mounted: 0, bytes: 0 };
  /** Aborted by the caller's signal, or by the first failure so no sibling transfer goes on. */
  readonly #abort = new AbortController();

  constructor(src: Fetcher, dst: Storage, opts: CopyOptions = {}) {
    const outer = opts.signal;
    if (outer) {
      if (outer.aborted) this.#abort.abort(outer.reason);
      else outer.addEventListener('abort', () => this.#abort.abort(outer.reason), { once: true });
    }
    this.#src = src;
    this.#srcTarget = 'resolve' in src ? (src as Target) : undefined;
    this.#dst = dst;
    this.#opts = opts;
    this.#sem = new Semaphore(opts.concurrency ?? 4);
    const level = opts.destCompressionLevel;
    if (level !== undefined) {
      const [min, max] = opts.destCompression === 'zstd' ? [1, 19] : [0, 9];
      if (opts.destCompression === undefined || opts.destCompression === 'none') {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          'a compression level needs destCompression gzip or zstd',
        );
      }
      if (!Number.isInteger(level) || level < min || level > max) {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `${opts.destCompression} compression level ${String(level)} is out of range: use an integer from ${min} to ${max}`,
        );
      }
    }
  }

  #emit(e: CopyEvent): void {
    this.#opts.onEvent?.(e);
  }

  get #signal(): AbortSignal {
    return this.#abort.signal;
  }

  #check(): void {
    if (this.#signal.aborted) throw abortError(this.#signal);
  }

  /** Resolves once every node started so far has finished, failed or been given up. */
  async settled(): Promise<void> {
    for (let n = -1; n !== this.#done.size; ) {
      n = this.#done.size;
      await Promise.allSettled(this.#done.values());
    }
  }

  /** Copy a node (manifest, index or blob) once; concurrent callers share the work. */
  copyNode(desc: Descriptor, isRoot = false): Promise<Descriptor> {
    const key = `${desc.digest}` as Digest;
    let p = this.#done.get(key);
    if (!p) {
      p = isManifestMediaType(desc.mediaType) ? this.#copyManifest(desc, isRoot) : this.#copyBlob(desc);
      p.catch((e: unknown) => this.#abort.abort(e));
      this.#done.set(key, p);
    }
    return p;
  }

  async #copyManifest(desc: Descriptor, isRoot: boolean): Promise<Descriptor> {
    this.#check();
    const signal = this.#signal;
    const { document, bytes } =
      this.#fetched.get(desc.digest) ??
      (await onSide(
        'source',
        `fetch manifest ${desc.digest}`,
        () => fetchManifest(this.#src, desc, { signal }),
        signal,
      ));
    const format = this.#opts.format;
    let out: Buffer = bytes;
    let outDesc: Descriptor = desc;
    if (document.kind === 'index') {
      const children = await Promise.all(document.index.manifests.map((m) => this.copyNode(m)));
      const changed = children.some((c, i) => !sameDescriptor(c, document.index.manifests[i]!));
      const mediaType = convertManifestType(document.mediaType, format);
      if (changed || mediaType !== document.mediaType) {
        const doc = {
          ...document.index,
          mediaType,
          manifests: children.map((c, i) => ({ ...document.index.manifests[i]!, ...c })),
        };
        out = Buffer.from(JSON.stringify(doc));
        outDesc = this.#describe(desc, mediaType, out);
      }
    } else {
      const m = document.manifest;
      // the config goes with the layers, not before them: one round trip less to wait for
      const [configOut, layersOut] = await Promise.all([
        this.copyNode(m.config),
        Promise.all(m.layers.map((l) => this.copyLayer(l))),
      ]);
      const mediaType = convertManifestType(document.mediaType, format);
      const configDesc = {
        ...m.config,
        ...configOut,
        mediaType: convertConfigType(m.config.mediaType, format),
      };
      const changed =
        mediaType !== document.mediaType ||
        !sameDescriptor(configDesc, m.config) ||
        layersOut.some((l, i) => !sameDescriptor(l, m.layers[i]!));
      if (changed) {
        const doc = { ...m, mediaType, config: configDesc, layers: layersOut };
        out = Buffer.from(JSON.stringify(doc));
        outDesc = this.#describe(desc, mediaType, out);
      }
    }
    if (!isRoot || !isReferencePusher(this.#dst)) {
      // the root is pushed by copy() so it can be tagged in the same request
      await this.#pushManifest(outDesc, out);
    } else {
      this.#rootBytes.set(outDesc.digest, out);
    }
    return outDesc;
  }

  readonly #rootBytes = new Map<Digest, Buffer>();
  readonly #fetched = new Map<Digest, Awaited<ReturnType<typeof fetchManifest>>>();

  /** Hand over a manifest already fetched (and validated), so it is not fetched again. */
  seed(desc: Descriptor, fetched: Awaited<ReturnType<typeof fetchManifest>>): void {
    this.#fetched.set(desc.digest, fetched);
  }

  /** Bytes of a root manifest not yet pushed (for ReferencePusher destinations). */
  rootBytes(d: Digest): Buffer | undefined {
    return this.#rootBytes.get(d);
  }

  #describe(orig: Descriptor, mediaType: string, bytes: Buffer): Descriptor {
    const dg = new Digester();
    dg.update(bytes);
    const { annotations, platform, artifactType } = orig;
    return {
      mediaType,
      digest: dg.digest(),
      size: bytes.length,
      ...(annotations ? { annotations } : {}),
      ...(platform ? { platform } : {}),
      ...(artifactType ? { artifactType } : {}),
    };
  }

  async #pushManifest(desc: Descriptor, bytes: Buffer): Promise<void> {
    const signal = this.#signal;
    const exists = await onSide('destination', `check manifest ${desc.digest}`, () =>
      this.#dst.exists(desc, signal ? { signal } : {}),
    );
    if (!exists) {
      await onSide('destination', `push manifest ${desc.digest}`, () =>
        this.#dst.push(desc, bytes, signal ? { signal } : {}),
      );
    }
    this.#emit({ type: 'manifest', descriptor: desc, action: exists ? 'exists' : 'copied' });
  }

  /** A layer: copied as is, or converted when a different compression / format is asked. */
  copyLayer(desc: Descriptor): Promise<Descriptor> {
    const from = layerCompressionOf(desc.mediaType);
    let want = this.#opts.destCompression;
    if (from !== undefined && this.#opts.format === 'docker' && (want ?? from) !== 'gzip') {
      if ((want ?? from) === 'zstd') {
        return Promise.reject(
          new CopyError(
            'destination',
            `convert layer ${desc.digest}`,
            new StratumError('ERR_UNSUPPORTED', 'the docker format has no zstd layer type; use --format oci'),
          ),
        );
      }
      want = 'gzip';
    }
    if (from === undefined || want === undefined || want === from) {
      const mediaType =
        from === undefined ? desc.mediaType : layerMediaType(this.#opts.format ?? formatOf(desc), from);
      return this.copyNode(desc).then((d) => (mediaType === d.mediaType ? d : { ...d, mediaType }));
    }
    const key = `${desc.digest}+${want}+${this.#opts.format ?? ''}` as Digest;
    let p = this.#done.get(key);
    if (!p) {
      p = this.#convertLayer(desc, want);
      p.catch((e: unknown) => this.#abort.abort(e));
      this.#done.set(key, p);
    }
    return p;
  }

  async #copyBlob(desc: Descriptor): Promise<Descriptor> {
    const signal = this.#signal;
    const sopts = signal ? { signal } : {};
    return this.#sem.run(async () => {
      this.#check();
      if (
        await onSide('destination', `check blob ${desc.digest}`, () => this.#dst.exists(desc, sopts), signal)
      ) {
        this.stats.skipped++;
        this.#emit({ type: 'blob-done', descriptor: desc, action: 'exists', result: desc });
        return desc;
      }
      const dst = this.#dst;
      if (isMounter(dst) && this.#srcTarget) {
        const from = dst.mountSourceFor(this.#srcTarget);
        if (from !== undefined) {
          const mounted = await onSide('destination', `mount blob ${desc.digest} from ${from}`, () =>
            dst.mount(desc, from, sopts),
          );
          if (mounted) {
            this.stats.mounted++;
            this.#emit({ type: 'blob-done', descriptor: desc, action: 'mounted', result: desc });
            return desc;
          }
        }
      }
      this.#emit({ type: 'blob-start', descriptor: desc });
      for (let attempt = 0; ; attempt++) {
        try {
          // the first attempt follows the exists() above; a retry asks again
          await this.#transfer(desc, attempt === 0);
          break;
        } catch (e) {
          if (attempt >= BLOB_RETRIES || !worthRetrying(e) || signal.aborted) throw e;
          await delay(RETRY_PAUSE_MS * (attempt + 1), signal);
        }
      }
      this.stats.copied++;
      this.stats.bytes += desc.size;
      this.#emit({ type: 'blob-done', descriptor: desc, action: 'copied', result: desc });
      return desc;
    });
  }

  /** Fetch a blob and push it; the stream is dropped when the push fails. */
  async #transfer(desc: Descriptor, checked: boolean): Promise<void> {
    const signal = this.#signal;
    const sopts = { signal };
    let seen = 0;
    const onProgress = (n: number) => {
      seen += n;
      this.#emit({ type: 'blob-progress', descriptor: desc, bytes: seen });
    };
    // the source counts the bytes (every Fetcher reports onProgress), and the stream goes to
    // the destination as it is: a verifying one spares it the hashing, and one that can
    // deliver directly (a registry download) is written without a Buffer per chunk
    const stream = await onSide(
      'source',
      `fetch blob ${desc.digest}`,
      () => this.#src.fetch(desc, { ...sopts, onProgress }),
      signal,
    );
    markSource(stream);
    try {
      await onSide(
        'destination',
        `push blob ${desc.digest}`,
        () => this.#dst.push(desc, stream, checked ? { ...sopts, absent: true } : sopts),
        signal,
      );
    } catch (e) {
      if (!stream.destroyed) stream.destroy();
      throw e;
    }
  }

  async #convertLayer(desc: Descriptor, want: LayerCompression): Promise<Descriptor> {
    const signal = this.#signal;
    const sopts = signal ? { signal } : {};
    const format = this.#opts.format ?? formatOf(desc);
    const gate = want === 'gzip' ? this.#gzipSem : this.#sem;
    return gate.run(async () => {
      this.#check();
      this.#emit({ type: 'blob-start', descriptor: desc });
      let seen = 0;
      const source = await onSide(
        'source',
        `fetch blob ${desc.digest}`,
        () => this.#src.fetch(desc, sopts),
        signal,
      );
      markSource(source);
      const tmp = tempName(this.#opts.tmpDir ?? tmpdir(), '.stratum-convert-');
      try {
        const r = await onSide(
          'source',
          `convert layer ${desc.digest} to ${want}`,
          async () => {
            const { compression, stream } = await peekCompression(source);
            const out = new Digester();
            const stages: NodeJS.ReadWriteStream[] = [
              new Counter((n) => {
                seen += n;
                this.#emit({ type: 'blob-progress', descriptor: desc, bytes: seen });
              }),
            ];
            if (compression !== 'none') stages.push(decompressStream(compression));
            // gzip in blocks across cores (pigz-style, one member); zstd is multi-threaded itself
            const level = this.#opts.destCompressionLevel;
            const lv = level === undefined ? {} : { level };
            if (want === 'gzip') stages.push(parallelGzipStream(lv));
            else if (want !== 'none') stages.push(compressStream(want, lv));
            stages.push(new Counter((_n) => {}, out));
            await pipeline([stream, ...stages, createWriteStream(tmp, { flags: 'wx' })], sopts);
            return {
              mediaType: layerMediaType(format, want),
              digest: out.digest(),
              size: out.size,
            } as Descriptor;
          },
          signal,
        );
        if (await onSide('destination', `check blob ${r.digest}`, () => this.#dst.exists(r, sopts), signal)) {
          this.stats.skipped++;
        } else {
          await onSide(
            'destination',
            `push converted layer ${r.digest}`,
            () => this.#dst.push(r, createReadStream(tmp), sopts),
            signal,
          );
          this.stats.copied++;
          this.stats.bytes += r.size;
        }
        this.#emit({ type: 'blob-done', descriptor: desc, action: 'converted', result: r });
        return r;
      } finally {
        await rm(tmp, { force: true });
        if (!source.destroyed) source.destroy();
      }
    });
  }
}

/**
 * Blob transfers tried again after the destination failed on its network or with a 5xx/429
 * (each fetches the blob anew). A streamed upload cannot be replayed by the registry client
 * itself, so this is where a push of a big layer survives a dropped connection.
 */
const BLOB_RETRIES = 2;
const RETRY_PAUSE_MS = 250;

function worthRetrying(e: unknown): boolean {
  return (
    e instanceof CopyError &&
    e.side === 'destination' &&
    e.inner instanceof RegistryError &&
    e.inner.retryable
  );
}

async function delay(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch {
    throw abortError(signal);
  }
}

function formatOf(desc: Descriptor): ManifestFormat {
  return desc.mediaType.startsWith('application/vnd.docker.') ? 'docker' : 'oci';
}

/**
 * Copy the image `srcRef` of `src` to `dst`, tagging it `dstRef` there (if given).
 * An index is narrowed to one platform unless `all` is set.
 * Finalizes the destination when it is written as a whole (archives).
 */
export async function copy(
  src: Target,
  srcRef: string,
  dst: Target,
  dstRef: string | undefined,
  opts: CopyOptions = {},
): Promise<CopyResult> {
  const signal = opts.signal;
  const sopts = signal ? { signal } : {};
  const source = await onSide(
    'source',
    `resolve ${srcRef || 'image'}`,
    () => src.resolve(srcRef, sopts),
    signal,
  );
  opts.onEvent?.({ type: 'resolved', descriptor: source });
  let root = source;
  const copier = new GraphCopier(src, dst, opts);
  if (!opts.all && isManifestMediaType(source.mediaType)) {
    const fetched = await onSide(
      'source',
      `fetch manifest ${source.digest}`,
      () => fetchManifest(src, source, sopts),
      signal,
    );
    copier.seed(source, fetched);
    const { document } = fetched;
    if (document.kind === 'index') {
      const want = opts.platform ?? hostPlatform();
      const picked = selectPlatform(document.index.manifests, want);
      if (!picked) {
        const have =
          document.index.manifests
            .flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : []))
            .join(', ') || 'none';
        throw new CopyError(
          'source',
          `select platform`,
          new StratumError(
            'ERR_PLATFORM_NOT_FOUND',
            `no image for ${formatPlatform(want)} in ${source.digest} (it has: ${have}); pick one with --platform or copy all with --all`,
          ),
        );
      }
      opts.onEvent?.({ type: 'platform', platform: formatPlatform(want), descriptor: picked });
      root = picked;
    }
  }
  const { platform: _p, annotations: _a, ...rootDesc } = root;
  let written: Descriptor;
  try {
    written = await copier.copyNode(rootDesc, true);
  } catch (e) {
    // the first failure aborts the rest; their clean-up (temp files) ends before we report
    await copier.settled();
    throw e;
  }
  const pending = copier.rootBytes(written.digest);
  if (dstRef !== undefined && dstRef !== '' && pending && isReferencePusher(dst)) {
    await onSide('destination', `push manifest ${written.digest} as ${dstRef}`, () =>
      dst.pushReference(written, pending, dstRef, sopts),
    );
    opts.onEvent?.({ type: 'manifest', descriptor: written, action: 'copied' });
  } else {
    if (pending) {
      const exists = await onSide('destination', `check manifest ${written.digest}`, () =>
        dst.exists(written, sopts),
      );
      if (!exists) {
        await onSide('destination', `push manifest ${written.digest}`, () =>
          dst.push(written, pending, sopts),
        );
      }
      opts.onEvent?.({ type: 'manifest', descriptor: written, action: exists ? 'exists' : 'copied' });
    }
    if (dstRef !== undefined && dstRef !== '') {
      await onSide('destination', `tag ${written.digest} as ${dstRef}`, () =>
        dst.tag(written, dstRef, sopts),
      );
    }
  }
  if (dstRef) opts.onEvent?.({ type: 'tagged', descriptor: written, ref: dstRef });
  if (isFinalizer(dst)) {
    await onSide('destination', 'write', () => dst.finalize(sopts), signal);
  }
  return { descriptor: written, source, stats: { ...copier.stats } };
}
