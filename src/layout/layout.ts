// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) as a
// Target, Deleter, RootLister and TagLister.
//
// - Blob paths are built only from validated digests. A push streams into a temp file in
//   the layout root (`.stratum-tmp-<pid>-<random>`, beside skopeo's own `oci-put-blob*`),
//   verifies size and digest as bytes flow, fsyncs, renames into place and fsyncs the
//   directory: a reader never sees a partial blob, and a failed push leaves nothing.
// - Tags are `org.opencontainers.image.ref.name` annotations on index.json entries. Every
//   index change is a read-modify-write of a fresh copy, done under a lock file
//   (`.stratum-index.lock`, plus an in-process queue) and written atomically, so concurrent
//   processes never lose an update. Fields of index.json and of its entries that we do not
//   know are kept as they were.
// - index.json is read afresh on every call (it is small); another process may change it.

import { constants, createWriteStream, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type {
  Content,
  Deleter,
  FetchOptions,
  PushOptions,
  RootLister,
  TagLister,
  Target,
} from '../content/types.js';
import {
  algorithmOf,
  type Digest,
  Digester,
  isDigest,
  parseDigest,
  VerifyingStream,
  verifyBytes,
} from '../digest/digest.js';
import {
  abortError,
  DigestMismatchError,
  SizeMismatchError,
  StratumError,
  UnsafePathError,
} from '../errors/errors.js';
import { type DirectReadable, isDirectReadable, sinkToFile } from '../internal/direct.js';
import { fsyncPath, makeDirs, tempName, writeFileAtomic } from '../internal/fs.js';
import { withFileLock } from '../internal/lock.js';
import { mapLimit } from '../internal/pool.js';
import { readAll } from '../internal/streams.js';
import { isVerified, markVerified } from '../internal/verified.js';
import { isManifestMediaType, MediaType } from '../spec/media-types.js';
import { checkRefName } from '../spec/ref-name.js';
import { ANNOTATION_REF_NAME, type Descriptor, Limits } from '../spec/types.js';
import { parseDescriptor, parseJsonLimited, parseManifestDocument } from '../spec/validate.js';
import { BLOB_PIECE, BlobFileStream } from './blob-file-stream.js';
import { pidInName, processAlive } from './liveness.js';
import { serialized } from './serialize.js';

export const LAYOUT_VERSION = '1.0.0';
/** Prefix of the temp files a push writes in the layout root. */
export const LAYOUT_TEMP_PREFIX = '.stratum-tmp-';
/** The lock file that serialises index.json updates between processes. */
export const LAYOUT_INDEX_LOCK = '.stratum-index.lock';
/** index.json is bigger than a manifest when a store holds many images. */
export const INDEX_LIMIT = 64 * 1024 * 1024;

const ALGORITHMS = ['sha256', 'sha512'] as const;
// writeFileAtomic's temp files, and the aside names of broken stale locks
const OTHER_TEMP_PREFIXES = ['.tmp-', `${LAYOUT_INDEX_LOCK}.stale-`];

export interface OpenLayoutOptions {
  /** Create the layout (directory, oci-layout, index.json, blobs/) if it is missing. */
  readonly create?: boolean;
  /** Refuse every write (ERR_READ_ONLY). */
  readonly readOnly?: boolean;
}

/** One entry of index.json: the descriptor, its ref name, and the JSON as it was. */
export interface LayoutIndexEntry {
  readonly ref: string | undefined;
  /** The entry's descriptor, without the ref name annotation. */
  readonly descriptor: Descriptor;
  readonly raw: Readonly<Record<string, unknown>>;
}

export interface LayoutIndex {
  readonly entries: readonly LayoutIndexEntry[];
  /** Top-level fields of index.json other than schemaVersion, mediaType and manifests. */
  readonly extra: Readonly<Record<string, unknown>>;
}

export interface LayoutBlob {
  readonly digest: Digest;
  readonly size: number;
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function invalidLayout(dir: string, why: string, cause?: unknown): StratumError {
  return new StratumError('ERR_INVALID_LAYOUT', `${dir} is not a valid OCI image layout: ${why}`, { cause });
}

/** The descriptor without the ref name annotation (and without `annotations` if that empties it). */
function withoutRefName(d: Descriptor): Descriptor {
  if (d.annotations === undefined || !(ANNOTATION_REF_NAME in d.annotations)) return d;
  const { [ANNOTATION_REF_NAME]: _ref, ...rest } = d.annotations;
  const { annotations: _a, ...base } = d;
  return Object.keys(rest).length > 0 ? { ...base, annotations: rest } : base;
}

/** The index.json entry for `desc`, named `ref` (or unnamed). Embedded data is dropped. */
function indexEntryFor(desc: Descriptor, ref: string | undefined): Obj {
  const annotations: Record<string, string> = { ...(desc.annotations ?? {}) };
  delete annotations[ANNOTATION_REF_NAME];
  if (ref !== undefined) annotations[ANNOTATION_REF_NAME] = ref;
  const entry: Obj = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
  if (desc.urls !== undefined) entry.urls = desc.urls;
  if (desc.platform !== undefined) entry.platform = desc.platform;
  if (desc.artifactType !== undefined) entry.artifactType = desc.artifactType;
  if (Object.keys(annotations).length > 0) entry.annotations = annotations;
  return entry;
}

function parseIndex(dir: string, bytes: Uint8Array): LayoutIndex {
  let doc: unknown;
  try {
    doc = parseJsonLimited(bytes, INDEX_LIMIT, 'index.json');
  } catch (e) {
    throw invalidLayout(dir, (e as Error).message, e);
  }
  if (!isObject(doc)) throw invalidLayout(dir, 'index.json is not a JSON object');
  const { schemaVersion, mediaType, manifests, ...extra } = doc;
  if (schemaVersion !== 2) {
    throw invalidLayout(dir, `index.json has schemaVersion ${JSON.stringify(schemaVersion)}, want 2`);
  }
  if (mediaType !== undefined && mediaType !== MediaType.OciIndex) {
    throw invalidLayout(
      dir,
      `index.json has mediaType ${JSON.stringify(mediaType)}, want ${MediaType.OciIndex}`,
    );
  }
  if (!Array.isArray(manifests)) throw invalidLayout(dir, 'index.json has no "manifests" array');
  const entries = manifests.map((raw: unknown, i): LayoutIndexEntry => {
    let d: Descriptor;
    try {
      d = parseDescriptor(raw, `index.json manifests[${i}]`);
    } catch (e) {
      throw invalidLayout(dir, (e as Error).message, e);
    }
    const ref = d.annotations?.[ANNOTATION_REF_NAME];
    return { ref, descriptor: withoutRefName(d), raw: raw as Obj };
  });
  return { entries, extra };
}

/** Counts bytes as they pass, for onProgress. */
class ProgressCounter extends Transform {
  readonly #cb: (n: number) => void;
  constructor(cb: (n: number) => void) {
    super();
    this.#cb = cb;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.#cb(chunk.byteLength);
    done(null, chunk);
  }
}

/**
 * Open (or with `create`, make) an OCI image layout. Checks `oci-layout` and index.json:
 * ERR_NOT_FOUND if the directory does not exist, ERR_INVALID_LAYOUT if it is not a layout.
 */
export async function openLayout(dir: string, opts: OpenLayoutOptions = {}): Promise<LayoutTarget> {
  if (typeof dir !== 'string' || dir === '') {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      'openLayout: the layout directory must be a non-empty path',
    );
  }
  if (opts.create && opts.readOnly) {
    throw new StratumError('ERR_INVALID_ARGUMENT', 'openLayout: `create` and `readOnly` cannot both be set');
  }
  const root = resolvePath(dir);
  if (opts.create) await createLayout(root);
  let st: Stats;
  try {
    st = await stat(root);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') {
      throw new StratumError('ERR_NOT_FOUND', `no OCI layout at ${root}: the directory does not exist`, {
        cause: e,
      });
    }
    throw e;
  }
  if (!st.isDirectory()) throw invalidLayout(root, 'it is not a directory');
  await checkLayoutFile(root);
  const blobs = await lstat(join(root, 'blobs')).catch((e: unknown) => {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  });
  if (blobs !== undefined && !blobs.isDirectory()) {
    throw invalidLayout(
      root,
      blobs.isSymbolicLink() ? 'blobs is a symbolic link' : 'blobs is not a directory',
    );
  }
  const target = new LayoutTarget(root, { readOnly: opts.readOnly ?? false });
  await target.readIndex(); // validates index.json
  return target;
}

async function checkLayoutFile(root: string): Promise<void> {
  let bytes: Buffer;
  try {
    bytes = await readFile(join(root, 'oci-layout'));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') throw invalidLayout(root, 'the oci-layout file is missing', e);
    if (errnoCode(e) === 'EISDIR') throw invalidLayout(root, 'oci-layout is a directory', e);
    throw e;
  }
  let doc: unknown;
  try {
    doc = parseJsonLimited(bytes, 64 * 1024, 'oci-layout');
  } catch (e) {
    throw invalidLayout(root, (e as Error).message, e);
  }
  if (!isObject(doc)) throw invalidLayout(root, 'oci-layout is not a JSON object');
  if (doc.imageLayoutVersion !== LAYOUT_VERSION) {
    throw invalidLayout(
      root,
      `oci-layout has imageLayoutVersion ${JSON.stringify(doc.imageLayoutVersion)}; only ${JSON.stringify(LAYOUT_VERSION)} is supported`,
    );
  }
}

async function createLayout(root: string): Promise<void> {
  await makeDirs(root);
  const exists = (p: string) =>
    lstat(p).then(
      () => true,
      () => false,
    );
  const layoutFile = join(root, 'oci-layout');
  const indexPath = join(root, 'index.json');
  // Check what is there before writing anything, so that a directory that is not a layout
  // (an invalid oci-layout, someone else's index.json) is refused untouched.
  if (await exists(layoutFile)) {
    await checkLayoutFile(root);
  } else {
    if (await exists(indexPath)) parseIndex(root, await readFile(indexPath));
    // concurrent creators write the same bytes
    await writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }));
  }
  await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
  const lockPath = join(root, LAYOUT_INDEX_LOCK);
  await serialized(lockPath, () =>
    withFileLock(lockPath, async () => {
      if (!(await exists(indexPath))) {
        await writeFileAtomic(
          indexPath,
          JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }),
        );
      }
    }),
  );
}

/** An OCI image layout directory as a Target. Make one with {@link openLayout}. */
export class LayoutTarget implements Target, Deleter, RootLister, TagLister {
  readonly dir: string;
  readonly description: string;
  readonly readOnly: boolean;
  readonly #indexPath: string;
  readonly #lockPath: string;
  readonly #checkedBlobDirs = new Set<string>();

  /** Prefer {@link openLayout}, which validates the directory first. */
  constructor(dir: string, opts: { readonly readOnly?: boolean } = {}) {
    this.dir = resolvePath(dir);
    this.description = `oci:${this.dir}`;
    this.readOnly = opts.readOnly ?? false;
    this.#indexPath = join(this.dir, 'index.json');
    this.#lockPath = join(this.dir, LAYOUT_INDEX_LOCK);
  }

  /** `<dir>/blobs/<alg>/<hex>` for a digest, which is validated first (ERR_INVALID_DIGEST). */
  blobPath(digest: string): string {
    const d = parseDigest(digest);
    const colon = d.indexOf(':');
    return join(this.dir, 'blobs', d.slice(0, colon), d.slice(colon + 1));
  }

  #writable(what: string): void {
    if (this.readOnly) {
      throw new StratumError(
        'ERR_READ_ONLY',
        `${this.description}: cannot ${what}: the layout was opened read-only`,
      );
    }
  }

  #checkSize(desc: Descriptor): number {
    const size = desc.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${this.description}: descriptor of ${String(desc.digest)} has an invalid size ${JSON.stringify(size)}`,
      );
    }
    return size;
  }

  // Make sure blobs/ and blobs/<alg>/ are real directories (not symlinks planted to redirect writes).
  async #ensureBlobDir(digest: Digest): Promise<void> {
    const alg = digest.slice(0, digest.indexOf(':'));
    if (this.#checkedBlobDirs.has(alg)) return;
    for (const rel of ['blobs', join('blobs', alg)]) {
      const p = join(this.dir, rel);
      let st: Stats | undefined;
      try {
        st = await lstat(p);
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
      }
      if (st === undefined) {
        await mkdir(p).catch((e: unknown) => {
          if (errnoCode(e) !== 'EEXIST') throw e;
        });
        st = await lstat(p);
      }
      if (st.isSymbolicLink())
        throw new UnsafePathError(p, 'is a symbolic link; refusing to write blobs through it');
      if (!st.isDirectory()) throw invalidLayout(this.dir, `${rel} is not a directory`);
    }
    this.#checkedBlobDirs.add(alg);
  }

  async exists(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<boolean> {
    if (opts.signal?.aborted) throw abortError(opts.signal);
    const path = this.blobPath(desc.digest);
    try {
      const st = await lstat(path);
      return st.isFile() && (typeof desc.size !== 'number' || st.size === desc.size);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return false;
      throw e;
    }
  }

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    const digest = parseDigest(desc.digest);
    const size = this.#checkSize(desc);
    if (opts.signal?.aborted) throw abortError(opts.signal);
    const path = this.blobPath(digest);
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new StratumError('ERR_NOT_FOUND', `${this.description}: blob ${digest} not found`, {
          cause: e,
        });
      }
      if (code === 'ELOOP') throw new UnsafePathError(path, 'the blob is a symbolic link');
      throw e;
    }
    const st = await fh.stat().catch(async (e: unknown) => {
      await fh.close();
      throw e;
    });
    if (!st.isFile()) {
      await fh.close();
      throw invalidLayout(this.dir, `blob ${digest} is not a regular file`);
    }
    const what = `${this.description}: blob ${digest}`;
    const stream = new BlobFileStream(fh, {
      digest,
      size,
      what,
      onProgress: opts.onProgress,
      signal: opts.signal,
    });
    return markVerified(stream, digest, size);
  }

  async push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    this.#writable(`push ${String(desc.digest)}`);
    const digest = parseDigest(desc.digest);
    const size = this.#checkSize(desc);
    const signal = opts.signal;
    if (await this.exists({ ...desc, digest, size })) {
      // idempotent: what is already here stays; the offered bytes are not needed
      if (!(content instanceof Uint8Array)) {
        content.on('error', () => {});
        content.resume();
      }
      return;
    }
    if (signal?.aborted) throw abortError(signal);
    const what = `${this.description}: blob ${digest}`;
    if (content instanceof Uint8Array) verifyBytes(content, digest, size, what); // before any file exists
    await this.#ensureBlobDir(digest);
    const path = this.blobPath(digest);
    const tmp = tempName(this.dir, LAYOUT_TEMP_PREFIX);
    try {
      if (content instanceof Uint8Array) {
        const fh = await open(tmp, 'wx', 0o644);
        try {
          await fh.writeFile(content);
          await fh.sync();
        } finally {
          await fh.close();
        }
        opts.onProgress?.(content.byteLength);
      } else if (isDirectReadable(content)) {
        await this.#pushDirect(content, tmp, { digest, size, what, opts });
      } else {
        const stages: (Readable | Transform | NodeJS.WritableStream)[] = [content];
        // a stream that verifies these bytes itself fails before it ends if they are wrong
        // (a blob fetched from another Target): hashing them again would only cost time
        if (!isVerified(content, digest, size)) stages.push(new VerifyingStream({ digest, size, what }));
        if (opts.onProgress) stages.push(new ProgressCounter(opts.onProgress));
        stages.push(createWriteStream(tmp, { flags: 'wx', mode: 0o644, highWaterMark: BLOB_PIECE }));
        await pipeline(stages as [Readable, ...Transform[], NodeJS.WritableStream], signal ? { signal } : {});
        await fsyncPath(tmp);
      }
      await rename(tmp, path);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => {});
      if (signal?.aborted) throw abortError(signal);
      throw e;
    }
    await fsyncPath(dirname(path), true).catch(() => {});
  }

  /**
   * Write a stream that delivers directly (a registry download) into `tmp`: its bytes go
   * from the socket's buffer into the file's write buffers with no chunk allocated.
   */
  async #pushDirect(
    content: DirectReadable,
    tmp: string,
    c: { digest: Digest; size: number; what: string; opts: PushOptions },
  ): Promise<void> {
    const { digest, size, what, opts } = c;
    // a stream that verifies these bytes itself ends only if they are right
    const digester = isVerified(content, digest, size) ? undefined : new Digester(algorithmOf(digest));
    let seen = 0;
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await sinkToFile(content, fh.fd, {
        onChunk: (view) => {
          seen += view.byteLength;
          if (seen > size) throw new SizeMismatchError(size, seen, what);
          digester?.update(view);
          opts.onProgress?.(view.byteLength);
        },
        signal: opts.signal,
      });
      if (seen !== size) throw new SizeMismatchError(size, seen, what);
      const got = digester?.digest();
      if (got !== undefined && got !== digest) throw new DigestMismatchError(digest, got, what);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** Read and validate index.json (afresh). */
  async readIndex(): Promise<LayoutIndex> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.#indexPath);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw invalidLayout(this.dir, 'index.json is missing', e);
      throw e;
    }
    return parseIndex(this.dir, bytes);
  }

  /**
   * Resolve a ref name, a digest string, or '' (allowed when index.json holds exactly one
   * entry, as skopeo does). A digest that is not in index.json resolves if the blob is
   * a manifest or index. The descriptor comes back without the ref name annotation.
   */
  async resolve(ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<Descriptor> {
    if (opts.signal?.aborted) throw abortError(opts.signal);
    if (typeof ref !== 'string') {
      throw new StratumError('ERR_INVALID_REFERENCE', `${this.description}: reference must be a string`);
    }
    const { entries } = await this.readIndex();
    if (ref === '') {
      const only = entries[0];
      if (entries.length === 1 && only) return only.descriptor;
      throw new StratumError(
        'ERR_NOT_FOUND',
        entries.length === 0
          ? `${this.description}: the layout holds no images`
          : `${this.description}: the layout holds ${entries.length} images; name one (${describeRefs(entries)})`,
      );
    }
    if (ref.startsWith('sha256:') || ref.startsWith('sha512:')) {
      const digest = parseDigest(ref);
      const entry = entries.find((e) => e.descriptor.digest === digest);
      if (entry) return entry.descriptor;
      return this.#resolveBlob(digest);
    }
    checkRefName(ref, this.description);
    const entry = entries.find((e) => e.ref === ref);
    if (!entry)
      throw new StratumError('ERR_NOT_FOUND', `${this.description}: no image named ${JSON.stringify(ref)}`);
    return entry.descriptor;
  }

  async #resolveBlob(digest: Digest): Promise<Descriptor> {
    const notFound = (why: string, cause?: unknown) =>
      new StratumError('ERR_NOT_FOUND', `${this.description}: ${digest} ${why}`, { cause });
    let st: Stats;
    try {
      st = await lstat(this.blobPath(digest));
    } catch (e) {
      throw notFound('is neither in index.json nor among the blobs', e);
    }
    if (!st.isFile() || st.size > Limits.manifest) throw notFound('is a blob, not a manifest or index');
    const bytes = await readAll(
      await this.fetch({ mediaType: 'application/octet-stream', digest, size: st.size }),
      Limits.manifest,
    );
    try {
      const doc = parseManifestDocument(bytes, { what: `${this.description}: ${digest}` });
      return { mediaType: doc.mediaType, digest, size: st.size };
    } catch (e) {
      throw notFound('is a blob, not a manifest or index', e);
    }
  }

  /**
   * Read-modify-write of index.json under the layout's lock. `fn` gets a fresh copy of the
   * entries and returns the new raw entries, or undefined to leave the file as it is.
   */
  async #updateIndex(
    fn: (entries: readonly LayoutIndexEntry[]) => readonly Obj[] | undefined,
  ): Promise<void> {
    await serialized(this.#lockPath, () =>
      withFileLock(this.#lockPath, async () => {
        const index = await this.readIndex();
        const next = fn(index.entries);
        if (next === undefined) return;
        const doc = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: next, ...index.extra };
        await writeFileAtomic(this.#indexPath, JSON.stringify(doc));
      }),
    );
  }

  /**
   * Point `ref` at a manifest or index already in the layout. An entry with the same ref
   * name is replaced (in place); unnamed entries for the same digest are folded into this
   * one; everything else stays. `ref` may also be the descriptor's own digest, which records
   * the manifest as an unnamed root.
   */
  async tag(desc: Descriptor, ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    this.#writable(`tag ${String(ref)}`);
    if (opts.signal?.aborted) throw abortError(opts.signal);
    const d = parseDescriptor(desc, 'descriptor to tag');
    let name: string | undefined;
    if (
      typeof ref === 'string' &&
      (ref.startsWith('sha256:') || ref.startsWith('sha512:')) &&
      isDigest(ref)
    ) {
      if (ref !== d.digest) {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `${this.description}: cannot tag ${d.digest} with a different digest ${ref}`,
        );
      }
    } else {
      name = checkRefName(ref, this.description);
    }
    if (!isManifestMediaType(d.mediaType)) {
      throw new StratumError(
        'ERR_UNSUPPORTED_MEDIA_TYPE',
        `${this.description}: cannot tag ${d.digest}: only manifests and indexes can be named in index.json, not ${d.mediaType}`,
      );
    }
    if (!(await this.exists(d))) {
      throw new StratumError(
        'ERR_NOT_FOUND',
        `${this.description}: cannot tag ${d.digest} as ${JSON.stringify(ref)}: it is not in the layout (push it first)`,
      );
    }
    const entry = indexEntryFor(d, name);
    await this.#updateIndex((entries) => {
      if (name === undefined) {
        // digest-only: a root without a name, unless the digest is already a root
        if (entries.some((e) => e.descriptor.digest === d.digest)) return undefined;
        return [...entries.map((e) => e.raw), entry];
      }
      const out: Obj[] = [];
      let placed = false;
      for (const e of entries) {
        const replace = e.ref === name || (e.ref === undefined && e.descriptor.digest === d.digest);
        if (!replace) out.push(e.raw as Obj);
        else if (!placed) {
          out.push(entry);
          placed = true;
        }
      }
      if (!placed) out.push(entry);
      return out;
    });
  }

  /**
   * Remove a ref name from index.json (the blobs stay until a gc). With a digest, remove
   * every entry for that digest, named or not. Returns what was removed; ERR_NOT_FOUND if
   * nothing matched.
   */
  async untag(ref: string): Promise<readonly LayoutIndexEntry[]> {
    this.#writable(`untag ${String(ref)}`);
    const byDigest = typeof ref === 'string' && isDigest(ref);
    if (!byDigest) checkRefName(ref, this.description);
    let removed: LayoutIndexEntry[] = [];
    await this.#updateIndex((entries) => {
      removed = entries.filter((e) => (byDigest ? e.descriptor.digest === ref : e.ref === ref));
      if (removed.length === 0) return undefined;
      return entries.filter((e) => !removed.includes(e)).map((e) => e.raw);
    });
    if (removed.length === 0) {
      throw new StratumError('ERR_NOT_FOUND', `${this.description}: no image named ${JSON.stringify(ref)}`);
    }
    return removed;
  }

  /**
   * Delete a blob, and any index.json entries that point at it. ERR_NOT_FOUND if there was
   * neither. Children of a deleted manifest are left for a gc.
   */
  async delete(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    this.#writable(`delete ${String(desc.digest)}`);
    if (opts.signal?.aborted) throw abortError(opts.signal);
    const digest = parseDigest(desc.digest);
    let removedEntries = 0;
    await this.#updateIndex((entries) => {
      const keep = entries.filter((e) => e.descriptor.digest !== digest);
      removedEntries = entries.length - keep.length;
      return removedEntries > 0 ? keep.map((e) => e.raw) : undefined;
    });
    try {
      await unlink(this.blobPath(digest));
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
      if (removedEntries === 0) {
        throw new StratumError('ERR_NOT_FOUND', `${this.description}: blob ${digest} not found`, {
          cause: e,
        });
      }
    }
  }

  /** Every index.json entry with its ref name (undefined for unnamed roots). */
  async roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    const { entries } = await this.readIndex();
    return entries.map((e) => ({ ref: e.ref, descriptor: e.descriptor }));
  }

  /** The ref names in index.json, sorted, each once; `last` and `n` page through them. */
  async *tags(
    opts: { readonly signal?: AbortSignal; readonly last?: string; readonly n?: number } = {},
  ): AsyncIterable<string> {
    const { entries } = await this.readIndex();
    const names = [...new Set(entries.flatMap((e) => (e.ref === undefined ? [] : [e.ref])))].sort();
    let count = 0;
    for (const name of names) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      if (opts.last !== undefined && name <= opts.last) continue;
      if (opts.n !== undefined && count >= opts.n) return;
      count++;
      yield name;
    }
  }

  /** Every file under blobs/sha256 and blobs/sha512 whose name is a valid digest, with its size. */
  async listBlobs(): Promise<readonly LayoutBlob[]> {
    const found: Digest[] = [];
    for (const alg of ALGORITHMS) {
      let names: string[];
      try {
        names = await readdir(join(this.dir, 'blobs', alg));
      } catch (e) {
        if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') continue;
        throw e;
      }
      for (const name of names) {
        const d = `${alg}:${name}`;
        if (isDigest(d)) found.push(d);
      }
    }
    const out = await mapLimit(found, 16, async (digest) => {
      const st = await lstat(this.blobPath(digest)).catch(() => undefined);
      return st?.isFile() ? { digest, size: st.size } : undefined;
    });
    return out.filter((b): b is LayoutBlob => b !== undefined);
  }

  /**
   * Remove temp files left in the layout root by processes that are no longer alive (names
   * `<prefix><pid>-...` with our prefixes, plus `extraPrefixes`). Returns how many.
   */
  async cleanTemp(extraPrefixes: readonly string[] = []): Promise<number> {
    let removed = 0;
    for (const name of await readdir(this.dir)) {
      let pid: number | undefined;
      for (const prefix of [LAYOUT_TEMP_PREFIX, ...OTHER_TEMP_PREFIXES, ...extraPrefixes]) {
        pid ??= pidInName(name, prefix);
      }
      if (pid === undefined || processAlive(pid)) continue;
      const p = join(this.dir, name);
      const st = await lstat(p).catch(() => undefined);
      if (!st?.isFile()) continue;
      await rm(p, { force: true });
      removed++;
    }
    return removed;
  }

  async close(): Promise<void> {
    // nothing is held open between calls
  }
}

function describeRefs(entries: readonly LayoutIndexEntry[]): string {
  const names = entries.map((e) => e.ref ?? e.descriptor.digest);
  return names.length > 5 ? `${names.slice(0, 5).join(', ')}, ...` : names.join(', ');
}
