// The distribution API over the store: manifests (GET/HEAD/PUT/DELETE), blobs (GET/HEAD
// with Range, DELETE), uploads (POST monolithic or session, mount, PATCH chunks, GET
// progress, PUT to finish, DELETE), tags/list and _catalog with n/last pagination and
// Link, and the referrers API.
//
// Rules kept on every path:
// - names, tags, digests and upload ids are validated before any path is built from them;
// - uploaded bytes reach the store only through its verified, atomic push: a blob becomes
//   visible only once its size and digest match, and a failed upload leaves nothing;
// - a manifest is parsed and validated before it is stored, and refused if it points at
//   blobs (config, layers, an index's manifests) the store does not have;
// - the store is content-addressed and shared by every repository, so a blob or manifest
//   present under one name is present under all, and deleting content some image still
//   uses is refused (405) rather than breaking that image.

import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline as pipelineCb } from 'node:stream';
import { algorithmOf, type Digest, digestBytes, parseDigest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { mapLimit } from '../internal/pool.js';
import { isManifestMediaType, isSchema1MediaType, MediaType } from '../spec/media-types.js';
import { type Descriptor, Limits } from '../spec/types.js';
import { baseMediaType } from '../spec/validate.js';
import { type RegistryErrorEntry, RegistryHttpError, toHttpError } from './http-error.js';
import {
  contentLength,
  hasBody,
  pageSize,
  parseContentRange,
  parseRange,
  queryParam,
  readBody,
} from './http-util.js';
import {
  isValidTag,
  parseRepository,
  type Repository,
  servedName,
  splitStoreRef,
  tagRefName,
} from './names.js';
import type { Route } from './routes.js';
import { describeManifest, type ManifestInfo, type StoreView } from './store-view.js';
import { ByteCounter, type UploadManager, type UploadSession } from './uploads.js';

const OCTET = 'application/octet-stream';
/** Most tags, catalog names or referrers in one answer; more come with a Link to the next page. */
export const MAX_PAGE = 10_000;

export interface HandlerOptions {
  readonly maxManifestBytes: number;
  readonly maxBlobBytes: number;
}

/** One request in progress, as the handlers see it. */
export interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly method: string;
  readonly query: URLSearchParams;
  /** Count request body bytes (for the access log and metrics). */
  readonly received: (n: number) => void;
  /** Count response body bytes written past `res` (straight to the socket). */
  readonly sent: (n: number) => void;
}

/** Calls with the same key run one after another (in this process). */
class KeyedMutex {
  readonly #tails = new Map<string, Promise<void>>();
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => {},
      () => {},
    );
    this.#tails.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

function digestParam(s: string, what: string): Digest {
  try {
    return parseDigest(s);
  } catch (e) {
    throw new RegistryHttpError(400, 'DIGEST_INVALID', `${what}: ${(e as Error).message}`, {
      digest: s.slice(0, 200),
    });
  }
}

function isDigestReference(s: string): boolean {
  return s.includes(':');
}

function empty(res: ServerResponse, status: number, headers: Record<string, string>): void {
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  res.setHeader('content-length', '0');
  res.end();
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  head: boolean,
  contentType = 'application/json',
): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.statusCode = status;
  res.setHeader('content-type', contentType);
  res.setHeader('content-length', String(bytes.byteLength));
  res.end(head ? undefined : bytes);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function rangeHeader(size: number): string {
  return `0-${size > 0 ? size - 1 : 0}`;
}

/** Drop a request body we will not read (the connection closes after the answer if it is large). */
function discard(req: IncomingMessage): void {
  req.resume();
}

export class RegistryHandlers {
  readonly #view: StoreView;
  readonly #uploads: UploadManager;
  readonly #opts: HandlerOptions;
  readonly #manifestLocks = new KeyedMutex();

  constructor(view: StoreView, uploads: UploadManager, opts: HandlerOptions) {
    this.#view = view;
    this.#uploads = uploads;
    this.#opts = opts;
  }

  async handle(route: Route, x: Exchange): Promise<void> {
    switch (route.kind) {
      case 'base':
        json(x.res, 200, {}, x.method === 'HEAD');
        return;
      case 'catalog':
        return this.#catalog(x);
      case 'manifest': {
        const repo = parseRepository(route.name);
        if (x.method === 'PUT') return this.#putManifest(x, repo, route.reference);
        if (x.method === 'DELETE') return this.#deleteManifest(x, repo, route.reference);
        return this.#getManifest(x, repo, route.reference);
      }
      case 'blob': {
        parseRepository(route.name);
        const digest = digestParam(route.digest, 'blob digest');
        if (x.method === 'DELETE') return this.#deleteBlob(x, digest);
        return this.#getBlob(x, digest);
      }
      case 'uploads':
        return this.#startUpload(x, parseRepository(route.name));
      case 'upload': {
        const repo = parseRepository(route.name);
        const s = this.#uploads.get(route.id, repo.key);
        if (s === undefined) {
          discard(x.req);
          throw new RegistryHttpError(
            404,
            'BLOB_UPLOAD_UNKNOWN',
            `no upload ${JSON.stringify(route.id.slice(0, 80))} in progress for ${repo.name} (it finished, was cancelled, or expired)`,
          );
        }
        if (x.method === 'GET') {
          empty(x.res, 204, this.#uploadHeaders(repo, s));
          return;
        }
        if (x.method === 'DELETE') {
          await this.#uploads.remove(s);
          empty(x.res, 204, {});
          return;
        }
        if (x.method === 'PATCH') return this.#patchUpload(x, repo, s);
        return this.#finishUpload(x, repo, s);
      }
      case 'tags':
        return this.#tags(x, parseRepository(route.name));
      case 'referrers': {
        const repo = parseRepository(route.name);
        return this.#referrers(x, repo, digestParam(route.digest, 'referrers subject'));
      }
      case 'metrics':
      case 'unknown':
        throw new RegistryHttpError(404, 'UNSUPPORTED', 'no such endpoint');
    }
  }

  // ---- manifests ----

  async #resolveManifest(repo: Repository, reference: string): Promise<Descriptor> {
    if (isDigestReference(reference)) {
      const digest = digestParam(reference, 'manifest digest');
      const info = await this.#view.manifestInfo(digest);
      if (!info)
        throw new RegistryHttpError(404, 'MANIFEST_UNKNOWN', `manifest ${digest} is not in the registry`);
      return { mediaType: info.mediaType, digest, size: info.size };
    }
    if (!isValidTag(reference)) {
      throw new RegistryHttpError(
        404,
        'MANIFEST_UNKNOWN',
        `${JSON.stringify(reference.slice(0, 200))} is not a valid tag`,
      );
    }
    const ref = tagRefName(repo, reference);
    const root = (await this.#view.roots()).find((r) => r.ref === ref);
    if (!root) {
      throw new RegistryHttpError(
        404,
        'MANIFEST_UNKNOWN',
        `${repo.name}:${reference} is not in the registry`,
        {
          name: repo.name,
          tag: reference,
        },
      );
    }
    return root.descriptor;
  }

  async #getManifest(x: Exchange, repo: Repository, reference: string): Promise<void> {
    const desc = await this.#resolveManifest(repo, reference);
    const headers = {
      'content-type': desc.mediaType,
      'docker-content-digest': desc.digest,
      etag: `"${desc.digest}"`,
    };
    if (x.method === 'HEAD') {
      if ((await this.#view.blobSize(parseDigest(desc.digest))) === undefined) {
        throw new RegistryHttpError(404, 'MANIFEST_UNKNOWN', `manifest ${desc.digest} is tagged but missing`);
      }
      for (const [k, v] of Object.entries(headers)) x.res.setHeader(k, v);
      x.res.setHeader('content-length', String(desc.size));
      x.res.end();
      return;
    }
    let bytes: Buffer;
    try {
      bytes = await this.#view.readVerified(desc, Limits.manifest);
    } catch (e) {
      throw toHttpError(e, 'manifest');
    }
    for (const [k, v] of Object.entries(headers)) x.res.setHeader(k, v);
    x.res.setHeader('content-length', String(bytes.byteLength));
    x.res.end(bytes);
  }

  async #putManifest(x: Exchange, repo: Repository, reference: string): Promise<void> {
    let tag: string | undefined;
    let wanted: Digest | undefined;
    if (isDigestReference(reference)) wanted = digestParam(reference, 'manifest digest');
    else if (isValidTag(reference)) tag = reference;
    else {
      discard(x.req);
      throw new RegistryHttpError(
        400,
        'MANIFEST_INVALID',
        `tag ${JSON.stringify(reference.slice(0, 200))} is invalid: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'`,
      );
    }
    const bytes = await readBody(x.req, this.#opts.maxManifestBytes, 'the manifest', x.received);
    const digest = digestBytes(bytes, wanted ? algorithmOf(wanted) : 'sha256');
    if (wanted && digest !== wanted) {
      throw new RegistryHttpError(
        400,
        'DIGEST_INVALID',
        `the manifest's digest is ${digest}, not ${wanted} as the URL says`,
        {
          expected: wanted,
          actual: digest,
        },
      );
    }
    const ct = x.req.headers['content-type'];
    const outer = ct === undefined ? undefined : baseMediaType(ct);
    if (outer !== undefined && isSchema1MediaType(outer)) {
      throw new RegistryHttpError(
        400,
        'MANIFEST_INVALID',
        `Docker schema 1 manifests (${outer}) are not accepted; push schema 2 or OCI`,
      );
    }
    let info: ManifestInfo;
    try {
      // a Content-Type that is not a manifest type (application/json, none) says nothing; the document decides
      info = describeManifest(
        digest,
        bytes.byteLength,
        bytes,
        outer && isManifestMediaType(outer) ? outer : undefined,
      );
    } catch (e) {
      throw toHttpError(e, 'manifest');
    }
    const missing: Descriptor[] = [];
    await mapLimit(info.children, 16, async (c) => {
      // foreign layers (with urls) need not be here
      if (c.urls !== undefined && c.urls.length > 0) return;
      if (!(await this.#view.exists(c))) missing.push(c);
    });
    if (missing.length > 0) {
      const entries: RegistryErrorEntry[] = missing.map((m) => ({
        code: 'MANIFEST_BLOB_UNKNOWN',
        message: `${m.mediaType} ${m.digest} (${m.size} bytes) is not in the registry`,
        detail: { digest: m.digest },
      }));
      const first = entries[0]!;
      throw new RegistryHttpError(
        400,
        'MANIFEST_BLOB_UNKNOWN',
        `the manifest references ${missing.length} blob${missing.length > 1 ? 's' : ''} the registry does not have; push ${missing.length > 1 ? 'them' : 'it'} first: ${first.message}`,
        first.detail,
        { more: entries.slice(1) },
      );
    }
    const desc: Descriptor = { mediaType: info.mediaType, digest, size: bytes.byteLength };
    await this.#manifestLocks.run(digest, async () => {
      await this.#view.push(desc, bytes);
      this.#view.remember(digest, info);
      if (tag !== undefined) await this.#view.layout.tag(desc, tagRefName(repo, tag));
    });
    empty(x.res, 201, {
      location: `/v2/${repo.name}/manifests/${digest}`,
      'docker-content-digest': digest,
      ...(info.subject ? { 'oci-subject': info.subject } : {}),
    });
  }

  async #deleteManifest(x: Exchange, repo: Repository, reference: string): Promise<void> {
    if (!isDigestReference(reference)) {
      if (!isValidTag(reference)) {
        throw new RegistryHttpError(
          404,
          'MANIFEST_UNKNOWN',
          `${JSON.stringify(reference.slice(0, 200))} is not a valid tag`,
        );
      }
      try {
        await this.#view.layout.untag(tagRefName(repo, reference));
      } catch (e) {
        throw toHttpError(e, 'manifest');
      }
      empty(x.res, 202, {});
      return;
    }
    const digest = digestParam(reference, 'manifest digest');
    await this.#manifestLocks.run(digest, async () => {
      const mine = (await this.#view.roots()).filter(
        (r) =>
          r.descriptor.digest === digest && r.ref !== undefined && splitStoreRef(r.ref)?.key === repo.key,
      );
      for (const r of mine) {
        await this.#view.layout.untag(r.ref as string).catch((e: unknown) => {
          if (!(e instanceof StratumError && e.code === 'ERR_NOT_FOUND')) throw e;
        });
      }
      const info = await this.#view.manifestInfo(digest);
      if (!info && mine.length === 0) {
        throw new RegistryHttpError(404, 'MANIFEST_UNKNOWN', `manifest ${digest} is not in the registry`);
      }
      // the bytes go only when no other image still uses them
      if (info && !(await this.#view.reachable()).has(digest)) {
        await this.#view.layout
          .delete({ mediaType: info.mediaType, digest, size: info.size })
          .catch((e: unknown) => {
            if (!(e instanceof StratumError && e.code === 'ERR_NOT_FOUND')) throw e;
          });
      }
    });
    empty(x.res, 202, {});
  }

  // ---- blobs ----

  async #getBlob(x: Exchange, digest: Digest): Promise<void> {
    const blob = await this.#view.openBlob(digest);
    if (!blob)
      throw new RegistryHttpError(404, 'BLOB_UNKNOWN', `blob ${digest} is not in the registry`, { digest });
    const { res } = x;
    const size = blob.size;
    const range = parseRange(x.req.headers.range, size);
    if (range === 'unsatisfiable') {
      await blob.close();
      throw new RegistryHttpError(
        416,
        'SIZE_INVALID',
        `range ${JSON.stringify(x.req.headers.range)} is outside blob ${digest} (${size} bytes)`,
        undefined,
        { headers: { 'content-range': `bytes */${size}` } },
      );
    }
    res.setHeader('content-type', OCTET);
    res.setHeader('docker-content-digest', digest);
    res.setHeader('etag', `"${digest}"`);
    res.setHeader('accept-ranges', 'bytes');
    res.setHeader('cache-control', 'max-age=31536000');
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    if (range) {
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${start}-${end}/${size}`);
    }
    res.setHeader('content-length', String(end - start + 1));
    if (x.method === 'HEAD' || size === 0) {
      await blob.close();
      res.end();
      return;
    }
    await blob.send(res, start, end, x.sent).catch(() => {
      // the client went away; the access log records the response as aborted
    });
  }

  async #deleteBlob(x: Exchange, digest: Digest): Promise<void> {
    const size = await this.#view.blobSize(digest);
    if (size === undefined)
      throw new RegistryHttpError(404, 'BLOB_UNKNOWN', `blob ${digest} is not in the registry`, { digest });
    const user = (await this.#view.reachable()).get(digest);
    if (user !== undefined) {
      throw new RegistryHttpError(
        405,
        'UNSUPPORTED',
        `blob ${digest} is used by ${user}; the store keeps one copy of each blob for every repository, so delete the image first`,
        { digest, usedBy: user },
      );
    }
    try {
      await this.#view.layout.delete({ mediaType: OCTET, digest, size });
    } catch (e) {
      throw toHttpError(e, 'blob');
    }
    empty(x.res, 202, {});
  }

  // ---- uploads ----

  #uploadHeaders(repo: Repository, s: UploadSession): Record<string, string> {
    return {
      location: `/v2/${repo.name}/blobs/uploads/${s.id}`,
      range: rangeHeader(s.size),
      'docker-upload-uuid': s.id,
    };
  }

  #created(x: Exchange, repo: Repository, digest: Digest): void {
    empty(x.res, 201, { location: `/v2/${repo.name}/blobs/${digest}`, 'docker-content-digest': digest });
  }

  async #startUpload(x: Exchange, repo: Repository): Promise<void> {
    const q = x.query;
    const mount = queryParam(q, 'mount', 'DIGEST_INVALID');
    const from = queryParam(q, 'from', 'NAME_INVALID');
    const digestQ = queryParam(q, 'digest', 'DIGEST_INVALID');
    if (mount !== undefined) {
      const d = digestParam(mount, 'mount digest');
      if (from !== undefined) parseRepository(from);
      const size = await this.#view.blobSize(d);
      // the store holds one copy of each blob for every repository: mounting is recording it in the lease
      if (size !== undefined && (await this.#view.exists({ mediaType: OCTET, digest: d, size }))) {
        discard(x.req);
        this.#created(x, repo, d);
        return;
      }
    }
    if (digestQ !== undefined) {
      const d = digestParam(digestQ, 'upload digest');
      const len = contentLength(x.req);
      if (len !== undefined) {
        if (len > this.#opts.maxBlobBytes) {
          throw new RegistryHttpError(
            413,
            'SIZE_INVALID',
            `blob is ${len} bytes, over the limit of ${this.#opts.maxBlobBytes}`,
          );
        }
        const counter = new ByteCounter(len, 'the blob', x.received);
        pipelineCb(x.req, counter, () => {});
        await this.#view.push({ mediaType: OCTET, digest: d, size: len }, counter);
        this.#created(x, repo, d);
        return;
      }
      // no length (chunked): spool it, then push it
      const s = await this.#uploads.create(repo.key);
      try {
        await this.#append(x, s);
        await this.#commit(s, d);
      } finally {
        await this.#uploads.remove(s);
      }
      this.#created(x, repo, d);
      return;
    }
    if (hasBody(x.req)) discard(x.req);
    const s = await this.#uploads.create(repo.key);
    empty(x.res, 202, this.#uploadHeaders(repo, s));
  }

  async #append(x: Exchange, s: UploadSession): Promise<void> {
    try {
      await this.#uploads.append(s, x.req, x.received);
    } catch (e) {
      if (e instanceof StratumError && e.code === 'ERR_TOO_LARGE') {
        await this.#uploads.remove(s);
        throw new RegistryHttpError(
          413,
          'SIZE_INVALID',
          `${e.message}; the upload was cancelled`,
          undefined,
          { cause: e },
        );
      }
      throw e;
    }
  }

  /** Check a chunk's Content-Range against the upload's offset, then append it. */
  async #chunk(x: Exchange, repo: Repository, s: UploadSession): Promise<void> {
    const cr = x.req.headers['content-range'];
    if (cr !== undefined) {
      const range = parseContentRange(cr);
      if (range.start !== s.size) {
        throw new RegistryHttpError(
          416,
          'BLOB_UPLOAD_INVALID',
          `chunk out of order: it starts at byte ${range.start}, but the upload has ${s.size} bytes; send the chunk starting at ${s.size}`,
          { offset: s.size },
          { headers: this.#uploadHeaders(repo, s) },
        );
      }
      const len = contentLength(x.req);
      if (len !== undefined && len !== range.end - range.start + 1) {
        throw new RegistryHttpError(
          400,
          'SIZE_INVALID',
          `Content-Range ${cr} is ${range.end - range.start + 1} bytes but Content-Length says ${len}`,
        );
      }
    }
    await this.#append(x, s);
  }

  async #withSession<T>(x: Exchange, s: UploadSession, fn: () => Promise<T>): Promise<T> {
    if (s.busy) {
      discard(x.req);
      throw new RegistryHttpError(
        416,
        'BLOB_UPLOAD_INVALID',
        'another request is writing to this upload; wait for it, then ask where it stands (GET)',
      );
    }
    s.busy = true;
    try {
      return await fn();
    } finally {
      s.busy = false;
    }
  }

  async #patchUpload(x: Exchange, repo: Repository, s: UploadSession): Promise<void> {
    await this.#withSession(x, s, () => this.#chunk(x, repo, s));
    empty(x.res, 202, this.#uploadHeaders(repo, s));
  }

  async #commit(s: UploadSession, digest: Digest): Promise<void> {
    if (s.size > this.#opts.maxBlobBytes) {
      throw new RegistryHttpError(
        413,
        'SIZE_INVALID',
        `blob is ${s.size} bytes, over the limit of ${this.#opts.maxBlobBytes}`,
      );
    }
    try {
      await this.#view.push({ mediaType: OCTET, digest, size: s.size }, createReadStream(s.path));
    } catch (e) {
      const h = toHttpError(e, 'upload');
      if (h.status === 500) throw e;
      throw new RegistryHttpError(
        h.status,
        h.registryCode,
        `${h.message}; the upload was cancelled`,
        { digest },
        { cause: e },
      );
    }
  }

  async #finishUpload(x: Exchange, repo: Repository, s: UploadSession): Promise<void> {
    const q = queryParam(x.query, 'digest', 'DIGEST_INVALID');
    if (q === undefined) {
      discard(x.req);
      throw new RegistryHttpError(
        400,
        'DIGEST_INVALID',
        'finishing an upload needs ?digest=<digest of the whole blob>',
      );
    }
    const digest = digestParam(q, 'upload digest');
    await this.#withSession(x, s, async () => {
      if (hasBody(x.req)) await this.#chunk(x, repo, s);
      try {
        await this.#commit(s, digest);
      } finally {
        await this.#uploads.remove(s);
      }
    });
    this.#created(x, repo, digest);
  }

  // ---- listings ----

  /** Sorted, unique tags of a repository. */
  async #tagsOf(repo: Repository): Promise<string[]> {
    const tags = new Set<string>();
    for (const r of await this.#view.roots()) {
      if (r.ref === undefined) continue;
      const s = splitStoreRef(r.ref);
      if (s?.key === repo.key && s.tag !== undefined && s.digest === undefined) tags.add(s.tag);
    }
    return [...tags].sort(compare);
  }

  /** `n` and `last` of a paginated list, checked before anything is looked up. */
  #pageParams(q: URLSearchParams): { n: number | undefined; last: string | undefined } {
    return { n: pageSize(q, MAX_PAGE), last: queryParam(q, 'last', 'UNSUPPORTED') };
  }

  /** One page of a sorted list after `last`, with the Link to the next page. */
  #page(
    all: readonly string[],
    { n, last }: { n: number | undefined; last: string | undefined },
    path: string,
  ): { items: string[]; link: string | undefined } {
    const after = last === undefined ? all : all.filter((t) => t > last);
    if (n === 0) return { items: [], link: undefined };
    const limit = n ?? MAX_PAGE;
    const items = after.slice(0, limit);
    const more = after.length > items.length;
    const lastItem = items[items.length - 1];
    const link =
      more && lastItem !== undefined
        ? `<${path}?n=${limit}&last=${encodeURIComponent(lastItem)}>; rel="next"`
        : undefined;
    return { items, link };
  }

  async #tags(x: Exchange, repo: Repository): Promise<void> {
    const params = this.#pageParams(x.query);
    const all = await this.#tagsOf(repo);
    if (all.length === 0) {
      throw new RegistryHttpError(
        404,
        'NAME_UNKNOWN',
        `repository ${repo.name} is not in the registry (it has no tags)`,
        {
          name: repo.name,
        },
      );
    }
    const { items, link } = this.#page(all, params, `/v2/${repo.name}/tags/list`);
    if (link) x.res.setHeader('link', link);
    json(x.res, 200, { name: repo.name, tags: items }, false);
  }

  async #catalog(x: Exchange): Promise<void> {
    const params = this.#pageParams(x.query);
    const names = new Set<string>();
    for (const r of await this.#view.roots()) {
      const s = r.ref === undefined ? undefined : splitStoreRef(r.ref);
      if (s?.tag === undefined) continue;
      const name = servedName(s.key);
      if (name !== undefined) names.add(name);
    }
    const { items, link } = this.#page([...names].sort(compare), params, '/v2/_catalog');
    if (link) x.res.setHeader('link', link);
    json(x.res, 200, { repositories: items }, false);
  }

  async #referrers(x: Exchange, _repo: Repository, subject: Digest): Promise<void> {
    const artifactType = queryParam(x.query, 'artifactType', 'UNSUPPORTED');
    let list = await this.#view.referrers(subject);
    if (artifactType !== undefined) {
      list = list.filter((r) => r.artifactType === artifactType);
      x.res.setHeader('oci-filters-applied', 'artifactType');
    }
    const manifests = list.map((r) => ({
      mediaType: r.mediaType,
      digest: r.digest,
      size: r.size,
      ...(r.artifactType !== undefined ? { artifactType: r.artifactType } : {}),
      ...(r.annotations !== undefined ? { annotations: r.annotations } : {}),
    }));
    json(
      x.res,
      200,
      { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests },
      false,
      MediaType.OciIndex,
    );
  }
}
