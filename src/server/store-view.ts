// What the server needs from the store, kept cheap per request:
// - roots (index.json), re-read only when the file changes (it is replaced by rename);
// - what a digest is: manifest or not, its media type, children, subject — parsed once
//   (content-addressed, so the answer never changes) and kept in a bounded cache;
// - referrers: every manifest in the store whose subject is a given digest, from an index
//   of blobs that is brought up to date with a readdir (only new names are read);
// - reachability from the roots, to refuse deleting a blob an image still uses;
// - leased writes: with a Store, everything pushed or found present is recorded in a
//   lease, so a concurrent `stratum gc` keeps a blob uploaded now for a manifest that
//   arrives later. Leases rotate: a digest stays leased for one to two rotation periods
//   (the upload TTL), then only what index.json reaches is kept.

import { constants } from 'node:fs';
import { lstat, open, readdir, stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Content, PushOptions } from '../content/types.js';
import { type Digest, isDigest, parseDigest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { mapLimit } from '../internal/pool.js';
import { readAll } from '../internal/streams.js';
import type { LayoutTarget } from '../layout/layout.js';
import type { Lease, Store } from '../layout/store.js';
import { type Descriptor, Limits } from '../spec/types.js';
import { parseManifestDocument } from '../spec/validate.js';
import { sendFileRange } from './send-file.js';

const MANIFEST_CACHE_ENTRIES = 20_000;
const ALGORITHMS = ['sha256', 'sha512'] as const;

/** What the server knows about a manifest or index blob. */
export interface ManifestInfo {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  /** config + layers, or the index's manifests. */
  readonly children: readonly Descriptor[];
  readonly subject: Digest | undefined;
  /** The artifact type a referrers list shows for it (artifactType, else an image manifest's config media type). */
  readonly artifactType: string | undefined;
  readonly annotations: Readonly<Record<string, string>> | undefined;
}

export interface Root {
  readonly ref: string | undefined;
  readonly descriptor: Descriptor;
}

function errnoCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** The media type and shape of a parsed manifest, as the server records it. */
export function describeManifest(
  digest: Digest,
  size: number,
  bytes: Uint8Array,
  mediaType?: string,
): ManifestInfo {
  const doc = parseManifestDocument(bytes, {
    ...(mediaType ? { mediaType } : {}),
    what: `manifest ${digest}`,
  });
  const body = doc.kind === 'index' ? doc.index : doc.manifest;
  const children = doc.kind === 'index' ? doc.index.manifests : [doc.manifest.config, ...doc.manifest.layers];
  const artifactType =
    body.artifactType ?? (doc.kind === 'manifest' ? doc.manifest.config.mediaType : undefined);
  return {
    digest,
    mediaType: doc.mediaType,
    size,
    children,
    subject: body.subject?.digest,
    artifactType,
    annotations: body.annotations,
  };
}

/** Rotating leases: `add` records in the current one; every period the oldest is released. */
class LeaseRotation {
  readonly #store: Store;
  #current: Lease;
  #previous: Lease | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(store: Store, periodMs: number) {
    this.#store = store;
    this.#current = store.lease();
    this.#timer = setInterval(() => void this.rotate(), periodMs);
    this.#timer.unref();
  }

  add(digest: string, mediaType?: string): Promise<void> {
    return this.#current.add(digest, mediaType);
  }

  async rotate(): Promise<void> {
    const old = this.#previous;
    this.#previous = this.#current;
    this.#current = this.#store.lease();
    await old?.release().catch(() => {});
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all([this.#current.release(), this.#previous?.release()].map((p) => p?.catch(() => {})));
  }
}

export class StoreView {
  readonly layout: LayoutTarget;
  readonly store: Store | undefined;
  readonly #leases: LeaseRotation | undefined;
  #roots: { stamp: string; roots: readonly Root[] } | undefined;
  readonly #manifests = new Map<string, ManifestInfo | null>();
  // referrers index: blob digest -> its subject (or null: not a manifest with one)
  readonly #subjects = new Map<string, Digest | null>();
  #scan: Promise<void> | undefined;

  constructor(
    backing: Store | LayoutTarget,
    opts: { readonly leasePeriodMs: number; readonly readOnly: boolean },
  ) {
    const isStore = 'lease' in backing && typeof (backing as Store).lease === 'function';
    this.store = isStore ? (backing as Store) : undefined;
    this.layout = isStore ? (backing as Store).layout : (backing as LayoutTarget);
    this.#leases =
      this.store && !opts.readOnly && !this.layout.readOnly
        ? new LeaseRotation(this.store, opts.leasePeriodMs)
        : undefined;
  }

  get readOnly(): boolean {
    return this.layout.readOnly;
  }

  async close(): Promise<void> {
    await this.#leases?.close();
  }

  // ---- writes (leased with a Store) ----

  async exists(desc: Descriptor): Promise<boolean> {
    await this.#leases?.add(desc.digest, desc.mediaType);
    return this.layout.exists(desc);
  }

  async push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    await this.#leases?.add(desc.digest, desc.mediaType);
    await this.layout.push(desc, content, opts);
  }

  // ---- roots ----

  /** index.json entries; re-read when the file changed. */
  async roots(): Promise<readonly Root[]> {
    const st = await stat(join(this.layout.dir, 'index.json'));
    const stamp = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    const cached = this.#roots;
    if (cached?.stamp === stamp) return cached.roots;
    const roots = await this.layout.roots();
    this.#roots = { stamp, roots };
    return roots;
  }

  // ---- blobs and manifests ----

  blobPath(digest: Digest): string {
    return this.layout.blobPath(digest);
  }

  /** Size of a stored blob, or undefined if absent. */
  async blobSize(digest: Digest): Promise<number | undefined> {
    try {
      const st = await lstat(this.blobPath(digest));
      return st.isFile() ? st.size : undefined;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
      throw e;
    }
  }

  /** Read a whole blob (manifests: small), verified against its digest. */
  async readVerified(desc: Descriptor, limit: number): Promise<Buffer> {
    return readAll(await this.layout.fetch(desc), limit, `blob ${desc.digest}`);
  }

  /** What `digest` is, if it is a manifest or index in the store; undefined otherwise. */
  async manifestInfo(digest: Digest): Promise<ManifestInfo | undefined> {
    const cached = this.#manifests.get(digest);
    if (cached === null) return undefined;
    const size = await this.blobSize(digest);
    if (size === undefined) return undefined;
    if (cached !== undefined && cached.size === size) return cached;
    let info: ManifestInfo | null = null;
    if (size <= Limits.manifest && (await this.#looksLikeJson(digest))) {
      try {
        const bytes = await this.readVerified(
          { mediaType: 'application/octet-stream', digest, size },
          Limits.manifest,
        );
        info = describeManifest(digest, size, bytes);
      } catch (e) {
        if (!(e instanceof StratumError)) throw e;
        if (e.code === 'ERR_NOT_FOUND') return undefined;
        info = null;
      }
    }
    this.remember(digest, info);
    return info ?? undefined;
  }

  /** Record what a digest is (after a push through the server). */
  remember(digest: Digest, info: ManifestInfo | null): void {
    if (this.#manifests.size >= MANIFEST_CACHE_ENTRIES) {
      this.#manifests.delete(this.#manifests.keys().next().value as string);
    }
    this.#manifests.set(digest, info);
    if (this.#subjects.has(digest) || info?.subject) this.#subjects.set(digest, info?.subject ?? null);
  }

  async #looksLikeJson(digest: Digest): Promise<boolean> {
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(this.blobPath(digest), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch {
      return false;
    }
    try {
      const head = Buffer.alloc(64);
      const { bytesRead } = await fh.read(head, 0, 64, 0);
      return head.subarray(0, bytesRead).toString('latin1').trimStart().startsWith('{');
    } finally {
      await fh.close();
    }
  }

  // ---- referrers ----

  /** Manifests in the store whose subject is `subject`, sorted by digest. */
  async referrers(subject: Digest): Promise<ManifestInfo[]> {
    await this.#refreshSubjects();
    const out: ManifestInfo[] = [];
    for (const [digest, s] of this.#subjects) {
      if (s !== subject) continue;
      const info = await this.manifestInfo(digest as Digest);
      if (info?.subject === subject) out.push(info);
    }
    return out.sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
  }

  #refreshSubjects(): Promise<void> {
    this.#scan ??= this.#scanSubjects().finally(() => {
      this.#scan = undefined;
    });
    return this.#scan;
  }

  async #scanSubjects(): Promise<void> {
    const present = new Set<string>();
    for (const alg of ALGORITHMS) {
      let names: string[];
      try {
        names = await readdir(join(this.layout.dir, 'blobs', alg));
      } catch (e) {
        if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') continue;
        throw e;
      }
      for (const n of names) {
        const d = `${alg}:${n}`;
        if (isDigest(d)) present.add(d);
      }
    }
    for (const d of [...this.#subjects.keys()]) if (!present.has(d)) this.#subjects.delete(d);
    const fresh = [...present].filter((d) => !this.#subjects.has(d));
    await mapLimit(fresh, 16, async (d) => {
      const info = await this.manifestInfo(d as Digest).catch(() => undefined);
      this.#subjects.set(d, info?.subject ?? null);
    });
  }

  // ---- reachability ----

  /**
   * Every digest reachable from index.json (manifests to their children, not to subjects),
   * with the ref of a root that reaches it.
   */
  async reachable(): Promise<Map<string, string>> {
    const seen = new Map<string, string>();
    const walk = async (d: Descriptor, root: string): Promise<void> => {
      if (seen.has(d.digest)) return;
      seen.set(d.digest, root);
      const info = await this.manifestInfo(parseDigest(d.digest));
      if (!info) return;
      for (const c of info.children) await walk(c, root);
    };
    for (const r of await this.roots()) await walk(r.descriptor, r.ref ?? r.descriptor.digest);
    return seen;
  }

  /** Open a blob for sending: its size, then send() a range of it (which closes it) or close(). */
  async openBlob(digest: Digest): Promise<
    | {
        size: number;
        send: (
          res: ServerResponse,
          start: number,
          end: number,
          onBytes?: (n: number) => void,
        ) => Promise<void>;
        close: () => Promise<void>;
      }
    | undefined
  > {
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(this.blobPath(digest), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return undefined;
      throw e;
    }
    const st = await fh.stat().catch(async (e: unknown) => {
      await fh.close();
      throw e;
    });
    if (!st.isFile()) {
      await fh.close();
      return undefined;
    }
    return {
      size: st.size,
      send: (res, start, end, onBytes) => sendFileRange(fh, res, start, end, onBytes ? { onBytes } : {}),
      close: () => fh.close(),
    };
  }
}
