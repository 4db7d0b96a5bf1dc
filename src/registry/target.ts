// RegistryTarget: one repository of an OCI distribution registry as a Target (plus Deleter,
// Mounter, TagLister, ReferrerLister, ReferencePusher). It speaks the spec's endpoints
// through a shared RegistryClient:
//   resolve   HEAD /manifests/<ref> (GET + hash when HEAD lacks digest or length)
//   fetch     GET /manifests/<digest> (bounded, verified) or /blobs/<digest> (streamed,
//             verified, resumed with Range after a drop)
//   push      PUT /manifests/<digest>; blobs: HEAD, then POST + PUT or PATCH chunks
//   tag       PUT the manifest's bytes under the tag
//   mount     POST /blobs/uploads/?mount=&from=
//   tags      GET /tags/list, following Link
//   referrers GET /referrers/<digest>, falling back to the `sha256-<hex>` tag schema
// Every name and digest is validated before it is put in a URL.

import type { Readable } from 'node:stream';
import type {
  Content,
  Deleter,
  FetchOptions,
  Mounter,
  PushOptions,
  ReferencePusher,
  ReferrerLister,
  TagLister,
  Target,
} from '../content/types.js';
import {
  algorithmOf,
  type Digest,
  digestBytes,
  encodedOf,
  parseDigest,
  verifyBytes,
} from '../digest/digest.js';
import {
  DigestMismatchError,
  isStratumError,
  RegistryError,
  SizeMismatchError,
  StratumError,
  TooLargeError,
} from '../errors/errors.js';
import { bytesStream, readAll } from '../internal/streams.js';
import { isManifestMediaType, isSchema1MediaType, MANIFEST_ACCEPT, MediaType } from '../spec/media-types.js';
import { type Descriptor, Limits } from '../spec/types.js';
import { baseMediaType, parseJsonLimited, parseManifestDocument } from '../spec/validate.js';
import { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';
import { resumableBlobStream } from './blob-reader.js';
import { cancelUpload, uploadBlob } from './blob-upload.js';
import { header, type RegistryClient, type RegistryResponse } from './client.js';
import { discardBody } from './http-errors.js';
import { parseLinkNext } from './link.js';
import {
  apiHostFor,
  checkRegistryHost,
  checkRepository,
  checkTag,
  isValidTag,
  parseManifestRef,
} from './names.js';
import { repositoryScope } from './scopes.js';

export interface RegistryTargetOptions {
  /**
   * When a manifest with a `subject` is pushed and the registry does not say it indexed it
   * (no OCI-Subject header), keep the referrers tag (`sha256-<hex>`) up to date, as the
   * spec asks of clients. Default true.
   */
  readonly referrersTag?: boolean;
  /** Upload small in-memory blobs with a single POST ?digest= (default false). */
  readonly singlePost?: boolean;
}

/** Bound on a tags/list page. */
const TAGS_PAGE_LIMIT = 16 * 1024 * 1024;
const MAX_PAGES = 10_000;
/** Re-fetches of a manifest whose bytes did not match its digest. */
const MANIFEST_REFETCHES = 2;

/** The tag the referrers tag schema uses for a subject digest: `<alg>-<hex>`, cut to 128 characters. */
export function referrersTagFor(subject: Digest): string {
  return `${algorithmOf(subject)}-${encodedOf(subject)}`.slice(0, 128);
}

function checkDescriptor(desc: Descriptor, what: string): Digest {
  const digest = parseDigest(desc?.digest);
  if (!Number.isSafeInteger(desc.size) || desc.size < 0 || desc.size > Limits.blob) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `${what}: descriptor size ${String(desc.size)} is not valid`,
    );
  }
  return digest;
}

function schema1Error(what: string, mediaType: string): StratumError {
  return new StratumError(
    'ERR_SCHEMA1_UNSUPPORTED',
    `${what}: the registry serves a Docker schema 1 manifest (${mediaType}), which stratum does not support; push the image again with a current client to get schema 2 or OCI`,
  );
}

function contentLength(res: RegistryResponse): number | undefined {
  const v = header(res, 'content-length');
  return v !== undefined && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
}

export class RegistryTarget implements Target, Deleter, Mounter, TagLister, ReferrerLister, ReferencePusher {
  readonly client: RegistryClient;
  /** The registry as named (`docker.io`, `127.0.0.1:5000`). */
  readonly registry: string;
  /** The host API calls go to (`registry-1.docker.io` for Docker Hub). */
  readonly host: string;
  readonly repository: string;
  readonly description: string;
  readonly #referrersTag: boolean;
  readonly #singlePost: boolean;
  readonly #pull: readonly string[];
  readonly #push: readonly string[];

  constructor(
    client: RegistryClient,
    registry: string,
    repository: string,
    opts: RegistryTargetOptions = {},
  ) {
    this.client = client;
    this.registry = checkRegistryHost(registry);
    this.host = apiHostFor(registry);
    // Docker Hub's official images live under library/
    const hub = this.host === 'registry-1.docker.io';
    this.repository = checkRepository(
      hub && !repository.includes('/') ? `library/${repository}` : repository,
    );
    this.description = `docker://${registry}/${this.repository}`;
    this.#referrersTag = opts.referrersTag ?? true;
    this.#singlePost = opts.singlePost ?? false;
    this.#pull = [repositoryScope(this.repository, ['pull'])];
    this.#push = [repositoryScope(this.repository, ['pull', 'push'])];
  }

  #name(ref?: string): string {
    const base = `${this.registry}/${this.repository}`;
    if (ref === undefined) return base;
    return ref.includes(':') ? `${base}@${ref}` : `${base}:${ref}`;
  }

  async close(): Promise<void> {
    // the client (and its connections) is shared; its owner closes it
  }

  // ---- resolve ----

  async resolve(ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<Descriptor> {
    const parsed = parseManifestRef(ref);
    const refStr = 'digest' in parsed ? parsed.digest : parsed.tag;
    const what = `pull manifest ${this.#name(refStr)}`;
    let res: RegistryResponse;
    try {
      res = await this.client.request({
        registry: this.host,
        method: 'HEAD',
        url: `/v2/${this.repository}/manifests/${refStr}`,
        headers: { accept: MANIFEST_ACCEPT },
        scopes: this.#pull,
        what,
        signal: opts.signal,
        ok: [200],
      });
    } catch (e) {
      // a HEAD answer has no body to say why; a registry may not do HEAD at all: ask with GET
      if (!(e instanceof RegistryError) || ![400, 401, 403, 405].includes(e.status)) throw e;
      return this.#resolveByGet(refStr, 'digest' in parsed ? parsed.digest : undefined, what, opts.signal);
    }
    discardBody(res.body);
    const ct = header(res, 'content-type');
    const mediaType = ct === undefined ? undefined : baseMediaType(ct);
    if (mediaType !== undefined && isSchema1MediaType(mediaType)) throw schema1Error(what, mediaType);
    const size = contentLength(res);
    if (size !== undefined && size > Limits.manifest)
      throw new TooLargeError(`${what}: the manifest`, Limits.manifest);
    const dcd = header(res, 'docker-content-digest');
    let digest: Digest | undefined;
    try {
      digest = dcd === undefined ? undefined : parseDigest(dcd.trim());
    } catch {
      digest = undefined;
    }
    if ('digest' in parsed && digest !== parsed.digest) digest = undefined;
    if (
      mediaType !== undefined &&
      isManifestMediaType(mediaType) &&
      size !== undefined &&
      digest !== undefined
    ) {
      return { mediaType, digest, size };
    }
    // HEAD did not tell enough: fetch the manifest and hash it
    return this.#resolveByGet(refStr, 'digest' in parsed ? parsed.digest : undefined, what, opts.signal);
  }

  async #resolveByGet(
    ref: string,
    expected: Digest | undefined,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<Descriptor> {
    const got = await this.#getManifest(ref, expected, what, signal);
    const doc = parseManifestDocument(got.bytes, {
      ...(got.mediaType !== undefined && isManifestMediaType(got.mediaType)
        ? { mediaType: got.mediaType }
        : {}),
      what,
    });
    return { mediaType: doc.mediaType, digest: got.digest, size: got.bytes.byteLength };
  }

  /** GET a manifest (bounded), check schema 1, hash it; verify when the digest is known. */
  async #getManifest(
    ref: string,
    expected: Digest | undefined,
    what: string,
    signal: AbortSignal | undefined,
    accept = MANIFEST_ACCEPT,
    expectedSize?: number,
  ): Promise<{ bytes: Buffer; digest: Digest; mediaType: string | undefined }> {
    const res = await this.client.request({
      registry: this.host,
      method: 'GET',
      url: `/v2/${this.repository}/manifests/${ref}`,
      headers: { accept },
      scopes: this.#pull,
      what,
      signal,
      ok: [200],
    });
    const ct = header(res, 'content-type');
    const mediaType = ct === undefined ? undefined : baseMediaType(ct);
    if (mediaType !== undefined && isSchema1MediaType(mediaType)) {
      discardBody(res.body);
      throw schema1Error(what, mediaType);
    }
    const len = contentLength(res);
    if (len !== undefined && len > Limits.manifest) {
      discardBody(res.body);
      throw new TooLargeError(`${what}: the manifest`, Limits.manifest);
    }
    const bytes = await readAll(res.body, Limits.manifest, `${what}: the manifest`);
    if (expectedSize !== undefined && bytes.byteLength !== expectedSize) {
      throw new SizeMismatchError(expectedSize, bytes.byteLength, what);
    }
    const digest = digestBytes(bytes, expected ? algorithmOf(expected) : 'sha256');
    if (expected !== undefined && digest !== expected) throw new DigestMismatchError(expected, digest, what);
    return { bytes, digest, mediaType };
  }

  // ---- fetch / exists ----

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    const digest = checkDescriptor(desc, `pull ${this.#name(desc.digest)}`);
    if (isManifestMediaType(desc.mediaType)) {
      const bytes = await this.#fetchManifestBytes(desc, digest, opts.signal);
      opts.onProgress?.(bytes.byteLength);
      return bytesStream(bytes);
    }
    const what = `pull blob ${this.#name(digest)}`;
    const url = `/v2/${this.repository}/blobs/${digest}`;
    const get = (range?: number) =>
      this.client.request({
        registry: this.host,
        method: 'GET',
        url,
        ...(range ? { headers: { range: `bytes=${range}-` } } : {}),
        scopes: this.#pull,
        bulk: true,
        what,
        signal: opts.signal,
        ok: range ? [200, 206] : [200],
      });
    const first = await get();
    return resumableBlobStream({
      first,
      digest,
      size: desc.size,
      reopen: (offset) => get(offset),
      attempts: this.client.resumeAttempts,
      what,
      onProgress: opts.onProgress,
      signal: opts.signal,
      pauseMs: (n) => backoffDelay(n, { ...DEFAULT_BACKOFF, initialMs: 50, maxMs: 2000 }),
    });
  }

  async #fetchManifestBytes(
    desc: Descriptor,
    digest: Digest,
    signal: AbortSignal | undefined,
  ): Promise<Buffer> {
    const what = `pull manifest ${this.#name(digest)}`;
    if (desc.size > Limits.manifest) throw new TooLargeError(`${what}: the manifest`, Limits.manifest);
    const accept = desc.mediaType === '' ? MANIFEST_ACCEPT : `${desc.mediaType}, ${MANIFEST_ACCEPT}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const { bytes } = await this.#getManifest(digest, digest, what, signal, accept, desc.size);
        return bytes;
      } catch (e) {
        // bytes damaged on the way: they were never handed out, so asking again is safe
        const damaged =
          isStratumError(e) && (e.code === 'ERR_DIGEST_MISMATCH' || e.code === 'ERR_SIZE_MISMATCH');
        if (!damaged || attempt >= MANIFEST_REFETCHES) throw e;
      }
    }
  }

  async exists(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<boolean> {
    const digest = checkDescriptor(desc, `check ${this.#name(desc.digest)}`);
    const manifest = isManifestMediaType(desc.mediaType);
    const res = await this.client.request({
      registry: this.host,
      method: 'HEAD',
      url: `/v2/${this.repository}/${manifest ? 'manifests' : 'blobs'}/${digest}`,
      ...(manifest ? { headers: { accept: `${desc.mediaType}, ${MANIFEST_ACCEPT}` } } : {}),
      scopes: this.#pull,
      what: `check ${manifest ? 'manifest' : 'blob'} ${this.#name(digest)}`,
      signal: opts.signal,
      ok: [200, 404],
    });
    discardBody(res.body);
    return res.status === 200;
  }

  // ---- push ----

  async push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    const digest = checkDescriptor(desc, `push ${this.#name(desc.digest)}`);
    if (isManifestMediaType(desc.mediaType)) {
      const what = `push manifest ${this.#name(digest)}`;
      const bytes = await this.#manifestBytes(desc, content, what);
      await this.#putManifest(digest, desc, bytes, what, opts.signal);
      opts.onProgress?.(bytes.byteLength);
      return;
    }
    const what = `push blob ${this.#name(digest)}`;
    let present = false;
    try {
      if (!opts.absent) present = await this.#blobExists(digest, what, opts.signal);
    } catch (e) {
      if (!(content instanceof Uint8Array)) content.destroy();
      throw e;
    }
    if (present) {
      if (!(content instanceof Uint8Array)) content.destroy();
      return;
    }
    await uploadBlob(
      {
        client: this.client,
        registry: this.host,
        repository: this.repository,
        scopes: this.#push,
        what,
        signal: opts.signal,
        onProgress: opts.onProgress,
        singlePost: this.#singlePost,
      },
      desc,
      content,
    );
  }

  async #blobExists(digest: Digest, what: string, signal: AbortSignal | undefined): Promise<boolean> {
    const res = await this.client.request({
      registry: this.host,
      method: 'HEAD',
      url: `/v2/${this.repository}/blobs/${digest}`,
      scopes: this.#push,
      what,
      signal,
      ok: [200, 404],
    });
    discardBody(res.body);
    return res.status === 200;
  }

  async #manifestBytes(desc: Descriptor, content: Content, what: string): Promise<Buffer> {
    if (desc.size > Limits.manifest) {
      if (!(content instanceof Uint8Array)) content.destroy();
      throw new TooLargeError(`${what}: the manifest`, Limits.manifest);
    }
    const bytes =
      content instanceof Uint8Array
        ? Buffer.from(content.buffer, content.byteOffset, content.byteLength)
        : await readAll(content, Limits.manifest, `${what}: the manifest`);
    verifyBytes(bytes, desc.digest, desc.size, what);
    return bytes;
  }

  async #putManifest(
    ref: string,
    desc: Descriptor,
    bytes: Buffer,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const res = await this.client.request({
      registry: this.host,
      method: 'PUT',
      url: `/v2/${this.repository}/manifests/${ref}`,
      headers: { 'content-type': desc.mediaType, 'content-length': String(bytes.byteLength) },
      body: bytes,
      scopes: this.#push,
      what,
      signal,
    });
    discardBody(res.body);
    if (this.#referrersTag && header(res, 'oci-subject') === undefined && bytes.includes('"subject"')) {
      await this.#addToReferrersTag(desc, bytes, what, signal);
    }
  }

  /** The referrers tag schema: add `desc` to the index tagged `<alg>-<hex>` of its subject. */
  async #addToReferrersTag(
    desc: Descriptor,
    bytes: Buffer,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const doc = parseManifestDocument(bytes, { mediaType: desc.mediaType, what });
    const body = doc.kind === 'index' ? doc.index : doc.manifest;
    const subject = body.subject;
    if (subject === undefined) return;
    const artifactType =
      body.artifactType ?? (doc.kind === 'manifest' ? doc.manifest.config.mediaType : undefined);
    const entry: Descriptor = {
      mediaType: doc.mediaType,
      digest: desc.digest,
      size: desc.size,
      ...(artifactType !== undefined ? { artifactType } : {}),
      ...(body.annotations !== undefined ? { annotations: body.annotations } : {}),
    };
    const tag = referrersTagFor(subject.digest);
    const existing = await this.#referrersFromTag(tag, undefined, signal);
    if (existing.some((d) => d.digest === desc.digest)) return;
    const index = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [...existing, entry] }),
    );
    const indexDesc: Descriptor = {
      mediaType: MediaType.OciIndex,
      digest: digestBytes(index),
      size: index.byteLength,
    };
    await this.#putManifest(tag, indexDesc, index, `${what}: update referrers tag ${tag}`, signal);
  }

  async pushReference(
    desc: Descriptor,
    content: Content,
    ref: string,
    opts: PushOptions = {},
  ): Promise<void> {
    checkDescriptor(desc, `push ${this.#name(ref)}`);
    checkTag(ref);
    const what = `push manifest ${this.#name(ref)}`;
    if (!isManifestMediaType(desc.mediaType)) {
      if (!(content instanceof Uint8Array)) content.destroy();
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${what}: ${desc.mediaType} is not a manifest or index media type`,
      );
    }
    const bytes = await this.#manifestBytes(desc, content, what);
    await this.#putManifest(ref, desc, bytes, what, opts.signal);
    opts.onProgress?.(bytes.byteLength);
  }

  async tag(desc: Descriptor, ref: string, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    const digest = checkDescriptor(desc, `tag ${this.#name(ref)}`);
    checkTag(ref);
    const what = `tag ${this.#name(ref)}`;
    if (!isManifestMediaType(desc.mediaType)) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${what}: ${desc.mediaType} is not a manifest or index media type`,
      );
    }
    const bytes = await this.#fetchManifestBytes(desc, digest, opts.signal);
    const res = await this.client.request({
      registry: this.host,
      method: 'PUT',
      url: `/v2/${this.repository}/manifests/${ref}`,
      headers: { 'content-type': desc.mediaType, 'content-length': String(bytes.byteLength) },
      body: bytes,
      scopes: this.#push,
      what,
      signal: opts.signal,
    });
    discardBody(res.body);
  }

  // ---- mount ----

  mountSourceFor(source: Target): string | undefined {
    if (!(source instanceof RegistryTarget)) return undefined;
    if (source.host !== this.host || source.repository === this.repository) return undefined;
    return source.repository;
  }

  async mount(
    desc: Descriptor,
    fromRepository: string,
    opts: { readonly signal?: AbortSignal } = {},
  ): Promise<boolean> {
    const digest = checkDescriptor(desc, `mount ${this.#name(desc.digest)}`);
    checkRepository(fromRepository);
    const what = `mount blob ${this.#name(digest)} from ${fromRepository}`;
    const scopes = [...this.#push, repositoryScope(fromRepository, ['pull'])];
    let res: RegistryResponse;
    try {
      res = await this.client.request({
        registry: this.host,
        method: 'POST',
        url: `/v2/${this.repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepository)}`,
        headers: { 'content-length': '0' },
        scopes,
        what,
        signal: opts.signal,
        ok: [201, 202],
      });
    } catch (e) {
      // not allowed to read the source, or no such thing: the caller copies instead
      if (isStratumError(e) && ['ERR_UNAUTHORIZED', 'ERR_DENIED', 'ERR_NOT_FOUND'].includes(e.code))
        return false;
      throw e;
    }
    discardBody(res.body);
    if (res.status === 201) return true;
    // 202: the registry opened an upload session instead; close it
    const loc = header(res, 'location');
    if (loc !== undefined && loc !== '') {
      await cancelUpload(
        { client: this.client, registry: this.host, repository: this.repository, scopes, what },
        new URL(loc, res.url).href,
      );
    }
    return false;
  }

  // ---- tags ----

  async *tags(
    opts: { readonly signal?: AbortSignal; readonly last?: string; readonly n?: number } = {},
  ): AsyncIterable<string> {
    const what = `list tags of ${this.#name()}`;
    const q = new URLSearchParams();
    if (opts.n !== undefined) {
      if (!Number.isSafeInteger(opts.n) || opts.n < 0) {
        throw new StratumError('ERR_INVALID_ARGUMENT', `${what}: n must be a non-negative integer`);
      }
      q.set('n', String(opts.n));
    }
    if (opts.last !== undefined) q.set('last', checkTag(opts.last));
    const qs = q.toString();
    let url = `/v2/${this.repository}/tags/list${qs ? `?${qs}` : ''}`;
    const seen = new Set<string>();
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await this.client.request({
        registry: this.host,
        method: 'GET',
        url,
        headers: { accept: 'application/json' },
        scopes: this.#pull,
        what,
        signal: opts.signal,
      });
      const bytes = await readAll(res.body, TAGS_PAGE_LIMIT, `${what}: a page`);
      const doc = parseJsonLimited(bytes, TAGS_PAGE_LIMIT, `${what}: answer`) as { tags?: unknown } | null;
      const tags = doc?.tags ?? null;
      if (typeof doc !== 'object' || doc === null || (tags !== null && !Array.isArray(tags))) {
        throw new StratumError('ERR_INVALID_DOCUMENT', `${what}: the answer is not {"name", "tags": [...]}`);
      }
      for (const t of (tags ?? []) as unknown[]) {
        if (typeof t !== 'string' || !isValidTag(t)) {
          throw new StratumError(
            'ERR_INVALID_DOCUMENT',
            `${what}: the registry listed an invalid tag ${JSON.stringify(String(t).slice(0, 200))}`,
          );
        }
        yield t;
      }
      const next = parseLinkNext(res.headers.link);
      if (next === undefined) return;
      const abs = new URL(next, res.url).href;
      if (seen.has(abs)) {
        throw new StratumError(
          'ERR_REGISTRY',
          `${what}: the registry's pagination loops back to a page already read`,
        );
      }
      seen.add(abs);
      url = abs;
    }
    throw new StratumError('ERR_REGISTRY', `${what}: more than ${MAX_PAGES} pages`);
  }

  // ---- referrers ----

  async referrers(
    subject: Descriptor,
    opts: { readonly signal?: AbortSignal; readonly artifactType?: string } = {},
  ): Promise<readonly Descriptor[]> {
    const digest = checkDescriptor(subject, `list referrers of ${this.#name(subject.digest)}`);
    const what = `list referrers of ${this.#name(digest)}`;
    const q = opts.artifactType === undefined ? '' : `?artifactType=${encodeURIComponent(opts.artifactType)}`;
    let url = `/v2/${this.repository}/referrers/${digest}${q}`;
    const out: Descriptor[] = [];
    let filtered = true;
    const seen = new Set<string>();
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await this.client.request({
        registry: this.host,
        method: 'GET',
        url,
        headers: { accept: MediaType.OciIndex },
        scopes: this.#pull,
        what,
        signal: opts.signal,
        ok: page === 0 ? [200, 404] : [200],
      });
      if (res.status === 404) {
        discardBody(res.body);
        return this.#referrersFromTag(referrersTagFor(digest), opts.artifactType, opts.signal);
      }
      const applied = (header(res, 'oci-filters-applied') ?? '').split(',').map((s) => s.trim());
      if (!applied.includes('artifactType')) filtered = false;
      const ct = header(res, 'content-type');
      const bytes = await readAll(res.body, Limits.manifest, `${what}: the answer`);
      const doc = parseManifestDocument(bytes, {
        ...(ct !== undefined && isManifestMediaType(baseMediaType(ct)) ? { mediaType: ct } : {}),
        what: `${what}: the answer`,
      });
      if (doc.kind !== 'index') {
        throw new StratumError(
          'ERR_INVALID_DOCUMENT',
          `${what}: the registry answered a manifest, not an index`,
        );
      }
      out.push(...doc.index.manifests);
      const next = parseLinkNext(res.headers.link);
      if (next === undefined) break;
      const abs = new URL(next, res.url).href;
      if (seen.has(abs)) break;
      seen.add(abs);
      url = abs;
    }
    return opts.artifactType !== undefined && !filtered
      ? out.filter((d) => d.artifactType === opts.artifactType)
      : out;
  }

  /** Referrers from the tag schema; [] when the tag is absent or not a valid index. */
  async #referrersFromTag(
    tag: string,
    artifactType: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Descriptor[]> {
    let desc: Descriptor;
    try {
      desc = await this.resolve(tag, signal ? { signal } : {});
    } catch (e) {
      if (isStratumError(e) && e.code === 'ERR_NOT_FOUND') return [];
      throw e;
    }
    const bytes = await this.#fetchManifestBytes(desc, desc.digest, signal);
    let manifests: readonly Descriptor[];
    try {
      const doc = parseManifestDocument(bytes, { mediaType: desc.mediaType, what: `referrers tag ${tag}` });
      if (doc.kind !== 'index') return [];
      manifests = doc.index.manifests;
    } catch {
      return []; // the spec: not a valid index means no referrers
    }
    return artifactType === undefined
      ? [...manifests]
      : manifests.filter((d) => d.artifactType === artifactType);
  }

  // ---- delete ----

  async delete(desc: Descriptor, opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    const digest = checkDescriptor(desc, `delete ${this.#name(desc.digest)}`);
    const manifest = isManifestMediaType(desc.mediaType);
    const res = await this.client.request({
      registry: this.host,
      method: 'DELETE',
      url: `/v2/${this.repository}/${manifest ? 'manifests' : 'blobs'}/${digest}`,
      scopes: [repositoryScope(this.repository, ['delete'])],
      what: `delete ${manifest ? 'manifest' : 'blob'} ${this.#name(digest)}`,
      signal: opts.signal,
    });
    discardBody(res.body);
  }
}
