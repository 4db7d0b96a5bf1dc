// The local store: an OCI image layout at $STRATUM_ROOT (so skopeo `oci:$STRATUM_ROOT:NAME`
// and umoci read it directly) whose ref names are full normalised references, plus what a
// store needs beyond a layout: images(), rmi(), gc(), verify(), and leases.
//
// Leases make gc safe while other processes write. A writer records every digest it is
// about to push, or relies on already being present, in a lease file
// `<root>/leases/<pid>-<random>` (one `<digest> [<mediaType>]` per line) BEFORE it touches
// the blob. Both the append and the whole of gc run under one lock file
// (`<root>/.stratum-gc.lock`), so an append happens entirely before or entirely after a gc:
// - before: gc sees the digest and keeps it (and, for a manifest, everything it reaches);
// - after: the writer's exists()/push() run after gc, so it sees the store as gc left it
//   and pushes whatever gc removed.
// gc reads, in order, the blob list, then the leases, then index.json: a writer tags
// (index.json) before it releases its lease, so a root is in one or the other.
// Leases of dead processes, and their temp files, are removed by gc. Pushes through
// `store` itself (or a withLease() target) are leased; pushes straight into `store.layout`
// are not, and a concurrent gc may remove them before they are tagged.

import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, lstat, mkdir, open, readdir, readFile, rm, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import type { Readable } from 'node:stream';
import type {
  Content,
  Deleter,
  FetchOptions,
  PushOptions,
  RootLister,
  TagLister,
  Target,
} from '../content/types.js';
import { algorithmOf, type Digest, Digester, isDigest, parseDigest } from '../digest/digest.js';
import { abortError, StratumError } from '../errors/errors.js';
import { withFileLock } from '../internal/lock.js';
import { mapLimit } from '../internal/pool.js';
import { readAll } from '../internal/streams.js';
import { isManifestMediaType, MediaType } from '../spec/media-types.js';
import { type Descriptor, Limits, type ManifestDocument } from '../spec/types.js';
import { parseImageConfig, parseManifestDocument } from '../spec/validate.js';
import { type LayoutBlob, type LayoutIndexEntry, type LayoutTarget, openLayout } from './layout.js';
import { pidInName, processAlive } from './liveness.js';
import { serialized } from './serialize.js';

export const STORE_LEASES_DIR = 'leases';
export const STORE_GC_LOCK = '.stratum-gc.lock';

const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/** `$STRATUM_ROOT`, else /var/lib/stratum for root, else `${XDG_DATA_HOME:-~/.local/share}/stratum`. */
export function defaultStoreRoot(env: NodeJS.ProcessEnv = process.env): string {
  const explicit = env.STRATUM_ROOT;
  if (explicit) return resolvePath(explicit);
  if (process.getuid?.() === 0) return '/var/lib/stratum';
  const xdg = env.XDG_DATA_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.local', 'share'), 'stratum');
}

export interface StoreOptions {
  /** Defaults to {@link defaultStoreRoot}. */
  readonly root?: string;
  /** Open an existing store for reading only (ERR_NOT_FOUND if there is none). */
  readonly readOnly?: boolean;
  /** How long a lease append or a gc waits for the store lock (default 120 s). */
  readonly lockTimeoutMs?: number;
}

/** Open the local store, creating it if needed (unless read-only). */
export async function openStore(opts: StoreOptions = {}): Promise<Store> {
  const root = resolvePath(opts.root ?? defaultStoreRoot());
  const layout = await openLayout(root, opts.readOnly ? { readOnly: true } : { create: true });
  if (!opts.readOnly) await mkdir(join(root, STORE_LEASES_DIR), { recursive: true });
  return new Store(layout, opts.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: opts.lockTimeoutMs });
}

/** A record of digests a writer depends on; gc keeps them while the writer's process lives. */
export interface Lease {
  /** `<pid>-<random>`, the lease file's name. */
  readonly id: string;
  /** Record a digest (and its media type, so gc can walk a manifest); resolves once it is on disk. */
  add(digest: string, mediaType?: string): Promise<void>;
  /** Drop the lease. Its digests are then kept only if reachable from index.json. */
  release(): Promise<void>;
}

interface Pending {
  readonly line: string;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

class FileLease implements Lease {
  readonly id: string;
  readonly #path: string;
  readonly #lockPath: string;
  readonly #lockTimeoutMs: number | undefined;
  readonly #written = new Map<string, Promise<void>>();
  #queue: Pending[] = [];
  #draining = false;
  #released = false;

  constructor(root: string, lockTimeoutMs: number | undefined) {
    this.id = `${process.pid}-${randomBytes(6).toString('hex')}`;
    this.#path = join(root, STORE_LEASES_DIR, this.id);
    this.#lockPath = join(root, STORE_GC_LOCK);
    this.#lockTimeoutMs = lockTimeoutMs;
  }

  add(digest: string, mediaType?: string): Promise<void> {
    if (this.#released) {
      return Promise.reject(
        new StratumError('ERR_INVALID_ARGUMENT', `lease ${this.id} was released; take a new one`),
      );
    }
    let d: Digest;
    try {
      d = parseDigest(digest);
    } catch (e) {
      return Promise.reject(e);
    }
    const mt = mediaType !== undefined && MEDIA_TYPE_RE.test(mediaType) ? mediaType : undefined;
    const line = mt === undefined ? `${d}\n` : `${d} ${mt}\n`;
    const known = this.#written.get(line);
    if (known) return known;
    const p = new Promise<void>((resolve, reject) => {
      this.#queue.push({ line, resolve, reject });
    });
    this.#written.set(line, p);
    p.catch(() => this.#written.delete(line));
    if (!this.#draining) void this.#drain();
    return p;
  }

  // Appends everything queued in one locked write; repeats while more arrives.
  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        try {
          await serialized(this.#lockPath, () =>
            withFileLock(
              this.#lockPath,
              () => appendFile(this.#path, batch.map((b) => b.line).join(''), { mode: 0o644 }),
              this.#lockTimeoutMs === undefined ? {} : { timeoutMs: this.#lockTimeoutMs },
            ),
          );
          for (const b of batch) b.resolve();
        } catch (e) {
          for (const b of batch) b.reject(e);
        }
      }
    } finally {
      this.#draining = false;
    }
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    // let appends in flight land first, so none recreates the file after it is removed
    await Promise.allSettled([...this.#written.values()]);
    await rm(this.#path, { force: true });
  }
}

/** A Target over the store's layout that records in a lease everything it pushes or finds present. */
export class LeasedTarget implements Target, Deleter, RootLister, TagLister {
  readonly layout: LayoutTarget;
  readonly lease: Lease;
  readonly description: string;

  constructor(layout: LayoutTarget, lease: Lease) {
    this.layout = layout;
    this.lease = lease;
    this.description = layout.description;
  }

  async exists(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<boolean> {
    await this.lease.add(desc.digest, desc.mediaType);
    return this.layout.exists(desc, opts);
  }

  async push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    await this.lease.add(desc.digest, desc.mediaType);
    return this.layout.push(desc, content, opts);
  }

  fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    return this.layout.fetch(desc, opts);
  }

  resolve(ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<Descriptor> {
    return this.layout.resolve(ref, opts);
  }

  tag(desc: Descriptor, ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.layout.tag(desc, ref, opts);
  }

  delete(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.layout.delete(desc, opts);
  }

  roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    return this.layout.roots();
  }

  tags(
    opts: { readonly signal?: AbortSignal; readonly last?: string; readonly n?: number } = {},
  ): AsyncIterable<string> {
    return this.layout.tags(opts);
  }

  async close(): Promise<void> {
    // the lease belongs to whoever made it
  }
}

/** One tagged image in the store. */
export interface StoreImage {
  readonly ref: string;
  readonly digest: Digest;
  readonly mediaType: string;
  /** Bytes of the manifest, config and layers (each blob once); for an index, its children present here too. */
  readonly size: number;
  /** From the image config, when it is in the store. */
  readonly created?: string;
  /** For an index: the platforms of its children (`os/arch[/variant]`). */
  readonly platforms?: readonly string[];
}

export interface GcResult {
  readonly removedBlobs: readonly Digest[];
  readonly freedBytes: number;
  /** Temp files of dead processes that were removed. */
  readonly removedTempFiles: number;
  /** Leases of dead processes that were removed. */
  readonly removedLeases: number;
}

export type VerifyProblemKind = 'missing' | 'corrupt' | 'size' | 'invalid';

export interface VerifyProblem {
  readonly digest: Digest;
  /** missing: referenced, not stored; corrupt: content does not hash to its name; size: stored size differs from a reference; invalid: a manifest that does not parse. */
  readonly problem: VerifyProblemKind;
  /** `index.json` or the digest of the manifest/index that references it. */
  readonly referencedBy?: string;
  readonly detail: string;
}

interface WalkRef {
  readonly digest: Digest;
  readonly mediaType?: string | undefined;
}

function platformString(d: Descriptor): string | undefined {
  const p = d.platform;
  if (!p) return undefined;
  return [p.os, p.architecture, ...(p.variant ? [p.variant] : [])].join('/');
}

/** What a manifest or index points at; with `subject`, its subject too. */
function childrenOf(doc: ManifestDocument, opts: { readonly subject: boolean }): Descriptor[] {
  const subject = doc.kind === 'manifest' ? doc.manifest.subject : doc.index.subject;
  const own =
    doc.kind === 'manifest' ? [doc.manifest.config, ...doc.manifest.layers] : [...doc.index.manifests];
  return opts.subject && subject ? [...own, subject] : own;
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** The local store. Make one with {@link openStore}. */
export class Store implements Target, Deleter, RootLister, TagLister {
  readonly root: string;
  /** The store's layout, for reading; pushes through it directly are not leased. */
  readonly layout: LayoutTarget;
  readonly description: string;
  readonly #gcLockPath: string;
  readonly #lockTimeoutMs: number | undefined;
  #defaultTarget: LeasedTarget | undefined;

  constructor(layout: LayoutTarget, opts: { readonly lockTimeoutMs?: number } = {}) {
    this.layout = layout;
    this.root = layout.dir;
    this.description = layout.description;
    this.#gcLockPath = join(this.root, STORE_GC_LOCK);
    this.#lockTimeoutMs = opts.lockTimeoutMs;
  }

  /** A new lease (its file is created on the first add). Release it when the write is tagged. */
  lease(): Lease {
    if (this.layout.readOnly) {
      throw new StratumError(
        'ERR_READ_ONLY',
        `${this.description}: cannot take a lease: the store is read-only`,
      );
    }
    return new FileLease(this.root, this.#lockTimeoutMs);
  }

  /** Run `fn` with a Target whose pushes are leased; the lease is released when `fn` settles. */
  async withLease<T>(fn: (target: LeasedTarget, lease: Lease) => Promise<T>): Promise<T> {
    const lease = this.lease();
    try {
      return await fn(new LeasedTarget(this.layout, lease), lease);
    } finally {
      await lease.release();
    }
  }

  // The store as a Target: pushes and exists() go through a lease held until close().
  #target(): LeasedTarget {
    this.#defaultTarget ??= new LeasedTarget(
      this.layout,
      this.layout.readOnly ? readOnlyLease(this.description) : this.lease(),
    );
    return this.#defaultTarget;
  }

  exists(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<boolean> {
    return this.layout.readOnly ? this.layout.exists(desc, opts) : this.#target().exists(desc, opts);
  }

  push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    return this.#target().push(desc, content, opts);
  }

  fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    return this.layout.fetch(desc, opts);
  }

  resolve(ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<Descriptor> {
    return this.layout.resolve(ref, opts);
  }

  tag(desc: Descriptor, ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.layout.tag(desc, ref, opts);
  }

  delete(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.layout.delete(desc, opts);
  }

  roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    return this.layout.roots();
  }

  tags(
    opts: { readonly signal?: AbortSignal; readonly last?: string; readonly n?: number } = {},
  ): AsyncIterable<string> {
    return this.layout.tags(opts);
  }

  /** Releases the lease of pushes made through the store itself. */
  async close(): Promise<void> {
    const t = this.#defaultTarget;
    this.#defaultTarget = undefined;
    if (t) await t.lease.release();
    await this.layout.close();
  }

  // ---- images ----

  /** One row per tagged root, sorted by ref. */
  async images(): Promise<StoreImage[]> {
    const roots = await this.layout.roots();
    const cache = new Map<string, Promise<Omit<StoreImage, 'ref'>>>();
    const rows: StoreImage[] = [];
    for (const r of roots) {
      if (r.ref === undefined) continue;
      const d = r.descriptor;
      let summary = cache.get(d.digest);
      if (!summary) {
        summary = this.#summarize(d);
        cache.set(d.digest, summary);
      }
      rows.push({ ref: r.ref, ...(await summary) });
    }
    return rows.sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  }

  async #summarize(desc: Descriptor): Promise<Omit<StoreImage, 'ref'>> {
    const counted = new Set<string>();
    let size = 0;
    const count = (d: Descriptor) => {
      if (counted.has(d.digest)) return;
      counted.add(d.digest);
      size += d.size;
    };
    count(desc);
    let created: string | undefined;
    let platforms: string[] | undefined;
    const doc = await this.#readManifestLenient(desc);
    if (doc?.kind === 'manifest') {
      count(doc.manifest.config);
      for (const l of doc.manifest.layers) count(l);
      created = await this.#createdOf(doc.manifest.config);
    } else if (doc?.kind === 'index') {
      platforms = [];
      for (const child of doc.index.manifests) {
        const p = platformString(child);
        if (p) platforms.push(p);
        if (!isManifestMediaType(child.mediaType) || !(await this.layout.exists(child))) continue;
        count(child);
        const c = await this.#readManifestLenient(child);
        if (c?.kind !== 'manifest') continue;
        count(c.manifest.config);
        for (const l of c.manifest.layers) count(l);
        created ??= await this.#createdOf(c.manifest.config);
      }
    }
    return {
      digest: desc.digest,
      mediaType: desc.mediaType,
      size,
      ...(created === undefined ? {} : { created }),
      ...(platforms === undefined ? {} : { platforms }),
    };
  }

  async #readManifestLenient(desc: Descriptor): Promise<ManifestDocument | undefined> {
    if (!isManifestMediaType(desc.mediaType) || desc.size > Limits.manifest) return undefined;
    try {
      const bytes = await readAll(await this.layout.fetch(desc), Limits.manifest);
      return parseManifestDocument(bytes, { mediaType: desc.mediaType, what: desc.digest });
    } catch {
      return undefined;
    }
  }

  async #createdOf(config: Descriptor): Promise<string | undefined> {
    if (config.mediaType !== MediaType.OciConfig && config.mediaType !== MediaType.DockerConfig)
      return undefined;
    if (config.size > Limits.config) return undefined;
    try {
      const bytes = await readAll(await this.layout.fetch(config), Limits.config);
      return parseImageConfig(bytes, `config ${config.digest}`).created;
    } catch {
      return undefined;
    }
  }

  /** Remove a ref (or with a digest, every entry for it). Blobs stay until gc. */
  async rmi(ref: string): Promise<readonly LayoutIndexEntry[]> {
    try {
      return await this.layout.untag(ref);
    } catch (e) {
      if (e instanceof StratumError && e.code === 'ERR_NOT_FOUND') {
        throw new StratumError('ERR_NOT_FOUND', `no image ${JSON.stringify(ref)} in the store ${this.root}`, {
          cause: e,
        });
      }
      throw e;
    }
  }

  // ---- gc ----

  /**
   * Remove every blob not reachable from index.json or from a live lease (walking manifests
   * to their config, layers and subject, and keeping referrers of what is kept), plus temp
   * files and leases of dead processes. If a reachable manifest cannot be read, nothing is
   * deleted and the error says which. `roots` are more manifests to keep with all they reach
   * (the images of existing containers, say); `keep` names more blobs to keep as they are
   * (layers a build cache refers to); those are not walked.
   */
  async gc(
    opts: {
      readonly signal?: AbortSignal;
      readonly roots?: readonly Descriptor[];
      readonly keep?: Iterable<string>;
    } = {},
  ): Promise<GcResult> {
    if (this.layout.readOnly) {
      throw new StratumError('ERR_READ_ONLY', `${this.description}: cannot gc: the store is read-only`);
    }
    const lockOpts = this.#lockTimeoutMs === undefined ? {} : { timeoutMs: this.#lockTimeoutMs };
    return serialized(this.#gcLockPath, () =>
      withFileLock(
        this.#gcLockPath,
        () => this.#gcLocked(opts.signal, opts.roots ?? [], new Set(opts.keep ?? [])),
        lockOpts,
      ),
    );
  }

  async #gcLocked(
    signal: AbortSignal | undefined,
    roots: readonly Descriptor[],
    keep: ReadonlySet<string>,
  ): Promise<GcResult> {
    const removedTempFiles = await this.layout.cleanTemp([`${STORE_GC_LOCK}.stale-`]);
    // order matters (see the top of this file): blobs, then leases, then index.json
    const blobs = await this.layout.listBlobs();
    const { refs: leased, removed: removedLeases } = await this.#readLeases();
    const index = await this.layout.readIndex();

    const reachable = new Set<string>();
    const walked = new Set<string>();
    const walk = async (ref: WalkRef, from: string): Promise<void> => {
      if (signal?.aborted) throw abortError(signal);
      reachable.add(ref.digest);
      if (walked.has(ref.digest)) return;
      const doc = await this.#readForWalk(ref, from);
      if (doc === undefined) return;
      walked.add(ref.digest);
      for (const child of childrenOf(doc, { subject: true })) await walk(child, ref.digest);
    };
    for (const e of index.entries) await walk(e.descriptor, 'index.json');
    for (const l of leased) await walk(l, `lease ${l.lease}`);
    for (const d of roots) await walk(d, 'a root the caller named');
    await this.#keepReferrers(blobs, reachable, walk);

    const removedBlobs: Digest[] = [];
    let freedBytes = 0;
    for (const b of blobs) {
      if (reachable.has(b.digest) || keep.has(b.digest)) continue;
      if (signal?.aborted) throw abortError(signal);
      try {
        await unlink(this.layout.blobPath(b.digest));
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') continue;
        throw e;
      }
      removedBlobs.push(b.digest);
      freedBytes += b.size;
    }
    return { removedBlobs, freedBytes, removedTempFiles, removedLeases };
  }

  /**
   * The parsed manifest/index a walk descends into, or undefined for a leaf (not a manifest
   * type, or absent). With no media type (a lease that did not say), the blob is parsed if
   * it looks like a manifest. A reachable manifest that cannot be read stops gc.
   */
  async #readForWalk(ref: WalkRef, from: string): Promise<ManifestDocument | undefined> {
    const known = ref.mediaType !== undefined && isManifestMediaType(ref.mediaType);
    if (ref.mediaType !== undefined && !known) return undefined;
    let size: number;
    try {
      const st = await lstat(this.layout.blobPath(ref.digest));
      if (!st.isFile()) return undefined;
      size = st.size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw e;
    }
    if (!known) return this.#sniffManifest(ref.digest, size);
    const stop = (why: string, cause?: unknown) =>
      new StratumError(
        'ERR_INVALID_DOCUMENT',
        `gc stopped, nothing was deleted: manifest ${ref.digest} (referenced by ${from}) ${why}. Run verify, and remove the image that holds it`,
        { cause },
      );
    if (size > Limits.manifest) throw stop(`is ${size} bytes, over the manifest limit`);
    try {
      const bytes = await readAll(
        await this.layout.fetch({ mediaType: ref.mediaType ?? '', digest: ref.digest, size }),
        Limits.manifest,
      );
      return parseManifestDocument(bytes, { mediaType: ref.mediaType as string, what: ref.digest });
    } catch (e) {
      throw stop(`cannot be read: ${(e as Error).message}`, e);
    }
  }

  /** Parse a blob as a manifest if it looks like one (a small JSON object); undefined otherwise. */
  async #sniffManifest(digest: Digest, size: number): Promise<ManifestDocument | undefined> {
    if (size === 0 || size > Limits.manifest) return undefined;
    const path = this.layout.blobPath(digest);
    try {
      const fh = await open(path, 'r');
      try {
        const head = Buffer.alloc(Math.min(size, 64));
        await fh.read(head, 0, head.length, 0);
        if (head.toString('latin1').trimStart()[0] !== '{') return undefined;
      } finally {
        await fh.close();
      }
      const bytes = await readAll(
        await this.layout.fetch({ mediaType: 'application/octet-stream', digest, size }),
        Limits.manifest,
      );
      return parseManifestDocument(bytes, { what: digest });
    } catch {
      return undefined;
    }
  }

  /** Keep manifests whose subject is kept (referrers: signatures, SBOMs), until nothing changes. */
  async #keepReferrers(
    blobs: readonly LayoutBlob[],
    reachable: Set<string>,
    walk: (ref: WalkRef, from: string) => Promise<void>,
  ): Promise<void> {
    const referrers: { digest: Digest; mediaType: string; subject: Digest }[] = [];
    for (const b of blobs) {
      if (reachable.has(b.digest)) continue;
      const doc = await this.#sniffManifest(b.digest, b.size);
      const subject = doc?.kind === 'manifest' ? doc.manifest.subject : doc?.index.subject;
      if (doc && subject)
        referrers.push({ digest: b.digest, mediaType: doc.mediaType, subject: subject.digest });
    }
    for (let changed = true; changed; ) {
      changed = false;
      for (const r of referrers) {
        if (reachable.has(r.digest) || !reachable.has(r.subject)) continue;
        await walk(r, `referrer of ${r.subject}`);
        changed = true;
      }
    }
  }

  /** Digests in leases of live processes; leases of dead ones are removed. */
  async #readLeases(): Promise<{ refs: (WalkRef & { lease: string })[]; removed: number }> {
    const dir = join(this.root, STORE_LEASES_DIR);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { refs: [], removed: 0 };
      throw e;
    }
    const refs: (WalkRef & { lease: string })[] = [];
    let removed = 0;
    for (const name of names) {
      const pid = pidInName(name, '');
      if (pid === undefined) continue; // not a lease of ours
      if (!processAlive(pid)) {
        await rm(join(dir, name), { force: true });
        removed++;
        continue;
      }
      let text: string;
      try {
        text = await readFile(join(dir, name), 'utf8');
      } catch (e) {
        if (errnoCode(e) === 'ENOENT') continue; // released meanwhile
        throw e;
      }
      for (const line of text.split('\n')) {
        const [digest, mediaType] = line.trim().split(' ');
        if (!isDigest(digest)) continue;
        refs.push({
          digest,
          mediaType: mediaType && MEDIA_TYPE_RE.test(mediaType) ? mediaType : undefined,
          lease: name,
        });
      }
    }
    return { refs, removed };
  }

  // ---- verify ----

  /**
   * Recompute every blob's digest (bounded parallelism) and check that every blob reachable
   * from index.json is present with the size it is referenced with. Empty = healthy.
   * Layers with `urls` (foreign layers) may be absent.
   */
  async verify(
    opts: { readonly concurrency?: number; readonly signal?: AbortSignal } = {},
  ): Promise<VerifyProblem[]> {
    const signal = opts.signal;
    const problems: VerifyProblem[] = [];
    const seen = new Set<string>();
    const report = (p: VerifyProblem) => {
      const key = `${p.digest} ${p.problem}`;
      if (seen.has(key)) return;
      seen.add(key);
      problems.push(p);
    };
    const blobs = await this.layout.listBlobs();
    const sizes = new Map<string, number>(blobs.map((b) => [b.digest, b.size]));
    const corrupt = new Set<string>();
    await mapLimit(blobs, opts.concurrency ?? 4, async (b) => {
      if (signal?.aborted) throw abortError(signal);
      const actual = await hashFile(this.layout.blobPath(b.digest), b.digest);
      if (actual === undefined) {
        sizes.delete(b.digest); // removed meanwhile
      } else if (actual !== b.digest) {
        corrupt.add(b.digest);
        report({ digest: b.digest, problem: 'corrupt', detail: `its content hashes to ${actual}` });
      }
    });

    const visited = new Set<string>();
    const check = async (d: Descriptor, from: string): Promise<void> => {
      if (signal?.aborted) throw abortError(signal);
      const have = sizes.get(d.digest);
      if (have === undefined) {
        if (d.urls !== undefined && d.urls.length > 0) return;
        report({
          digest: d.digest,
          problem: 'missing',
          referencedBy: from,
          detail: `referenced by ${from}, not stored`,
        });
        return;
      }
      if (have !== d.size) {
        report({
          digest: d.digest,
          problem: 'size',
          referencedBy: from,
          detail: `referenced by ${from} as ${d.size} bytes, stored as ${have}`,
        });
      }
      if (corrupt.has(d.digest) || !isManifestMediaType(d.mediaType) || visited.has(d.digest)) return;
      visited.add(d.digest);
      let doc: ManifestDocument;
      try {
        if (have > Limits.manifest) throw new Error(`${have} bytes is over the manifest limit`);
        const bytes = await readAll(
          await this.layout.fetch({ mediaType: d.mediaType, digest: d.digest, size: have }),
          Limits.manifest,
        );
        doc = parseManifestDocument(bytes, { mediaType: d.mediaType, what: d.digest });
      } catch (e) {
        report({ digest: d.digest, problem: 'invalid', referencedBy: from, detail: (e as Error).message });
        return;
      }
      // not the subject: it may live elsewhere (a referrer copied on its own)
      for (const child of childrenOf(doc, { subject: false })) await check(child, d.digest);
    };
    const index = await this.layout.readIndex();
    for (const e of index.entries) await check(e.descriptor, 'index.json');
    return problems;
  }
}

/** The digest a file hashes to (with the algorithm of `expected`), or undefined if it is gone. */
async function hashFile(path: string, expected: Digest): Promise<Digest | undefined> {
  const digester = new Digester(algorithmOf(expected));
  try {
    for await (const chunk of createReadStream(path)) digester.update(chunk as Buffer);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw e;
  }
  return digester.digest();
}

function readOnlyLease(description: string): Lease {
  const fail = () =>
    Promise.reject(new StratumError('ERR_READ_ONLY', `${description}: cannot write: the store is read-only`));
  return { id: 'read-only', add: fail, release: async () => {} };
}
