// Writing a `docker save` archive as a Target + Finalizer. push() spools blobs into a temp dir
// (verified, atomic); tag() records RepoTags in Docker's familiar form (`busybox:latest`,
// `localhost:5000/app:1`). finalize() writes the archive the way docker save does: each
// config as `<hex>.json`, each layer as an UNCOMPRESSED tar `<diffid-hex>.tar` (gzip/zstd
// layers are decompressed and checked against the config's diff_ids; a layer shared by several
// images is written once), then `manifest.json` and the legacy `repositories` file. The
// archive goes to a temp file in the destination's directory, is fsynced and renamed: until
// finalize() nothing is visible, and close() without finalize() discards everything.
//
// Only single-platform images fit in a docker archive: an index is refused (ERR_UNSUPPORTED).
// No legacy per-layer directories (`<id>/json`, `<id>/layer.tar`) are written, so the IDs in
// `repositories` (the top layer's chain ID) are informative; current docker load, skopeo and
// containers/image read manifest.json.

import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressStream, detectCompression } from '../compression/compression.js';
import type { Content, FetchOptions, Finalizer, PushOptions, RootLister, Target } from '../content/types.js';
import {
  type Digest,
  digestBytes,
  encodedOf,
  isDigest,
  VerifyingStream,
  verifyBytes,
} from '../digest/digest.js';
import { abortError, StratumError } from '../errors/errors.js';
import { tempName } from '../internal/fs.js';
import { readAll, toReadable } from '../internal/streams.js';
import {
  familiarName,
  familiarString,
  parseNormalizedReference,
  type Reference,
  withDefaultTag,
} from '../reference/reference.js';
import {
  isImageManifestMediaType,
  isIndexMediaType,
  layerCompressionOf,
  MediaType,
} from '../spec/media-types.js';
import type { Descriptor, DockerArchiveEntry, ImageManifest } from '../spec/types.js';
import { Limits } from '../spec/types.js';
import { parseImageConfig, parseManifestDocument } from '../spec/validate.js';
import { BlobSpool } from './blob-spool.js';
import { writeTarAtomic } from './tar-writer.js';

export interface ArchiveWriterOptions {
  /** Where pushed blobs wait until finalize() (default: os.tmpdir(), which honours TMPDIR). */
  readonly tmpDir?: string;
}

const IMAGE_CONFIG_TYPES: readonly string[] = [MediaType.OciConfig, MediaType.DockerConfig];

function unsupportedIndex(what: string): StratumError {
  return new StratumError(
    'ERR_UNSUPPORTED',
    `${what}: docker-archive holds single-platform images; pick one with --platform`,
  );
}

/** Parse a tag the way docker does (`busybox` is `docker.io/library/busybox:latest`). */
function parseTag(ref: string, what: string): Reference {
  const r = withDefaultTag(parseNormalizedReference(ref));
  if (r.digest !== undefined) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `${what}: a docker archive records NAME:TAG, not a digest (${JSON.stringify(ref)})`,
    );
  }
  return r;
}

interface PushedImage {
  readonly descriptor: Descriptor;
  readonly manifest: ImageManifest;
}

export class DockerArchiveWriter implements Target, Finalizer, RootLister {
  readonly description: string;
  readonly file: string;
  readonly #spool: BlobSpool;
  /** Image manifests pushed, in push order; each becomes one manifest.json entry. */
  readonly #images = new Map<Digest, PushedImage>();
  /** familiar `name:tag` -> manifest digest (a tag names one image). */
  readonly #tags = new Map<string, Digest>();
  #state: 'open' | 'finalizing' | 'finalized' | 'closed' = 'open';

  private constructor(file: string, spool: BlobSpool) {
    this.file = file;
    this.description = `docker-archive:${file}`;
    this.#spool = spool;
  }

  static async create(file: string, opts: ArchiveWriterOptions = {}): Promise<DockerArchiveWriter> {
    const spool = await BlobSpool.create(`docker-archive:${file}`, opts.tmpDir);
    return new DockerArchiveWriter(file, spool);
  }

  #checkWritable(): void {
    if (this.#state !== 'open') {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${this.description} is ${this.#state === 'closed' ? 'closed' : 'already finalized'}; it cannot be changed`,
      );
    }
  }

  #checkReadable(): void {
    if (this.#state === 'closed')
      throw new StratumError('ERR_INVALID_ARGUMENT', `${this.description} is closed`);
  }

  async push(desc: Descriptor, content: Content, opts: PushOptions = {}): Promise<void> {
    try {
      this.#checkWritable();
      if (isIndexMediaType(desc.mediaType))
        throw unsupportedIndex(`${this.description}: index ${desc.digest}`);
    } catch (e) {
      if (!(content instanceof Uint8Array)) content.destroy();
      throw e;
    }
    if (!isImageManifestMediaType(desc.mediaType)) {
      await this.#spool.push(desc, content, opts);
      return;
    }
    // a manifest: small, read it whole, verify, validate, then keep it
    if (desc.size > Limits.manifest) {
      if (!(content instanceof Uint8Array)) content.destroy();
      throw new StratumError(
        'ERR_TOO_LARGE',
        `manifest ${desc.digest} is larger than ${Limits.manifest} bytes`,
      );
    }
    const bytes = await readAll(toReadable(content), Limits.manifest, `manifest ${desc.digest}`);
    verifyBytes(bytes, desc.digest, desc.size, `manifest ${desc.digest}`);
    const doc = parseManifestDocument(bytes, { mediaType: desc.mediaType, what: `manifest ${desc.digest}` });
    if (doc.kind === 'index') throw unsupportedIndex(`${this.description}: index ${desc.digest}`);
    if (!IMAGE_CONFIG_TYPES.includes(doc.manifest.config.mediaType)) {
      throw new StratumError(
        'ERR_UNSUPPORTED',
        `${this.description}: manifest ${desc.digest} is not a container image (config type ${doc.manifest.config.mediaType}); a docker archive holds only images`,
      );
    }
    await this.#spool.push(desc, bytes, opts);
    if (!this.#images.has(desc.digest)) {
      this.#images.set(desc.digest, {
        descriptor: { mediaType: desc.mediaType, digest: desc.digest, size: desc.size },
        manifest: doc.manifest,
      });
    }
  }

  async exists(desc: Descriptor): Promise<boolean> {
    this.#checkReadable();
    return this.#spool.has(desc);
  }

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    this.#checkReadable();
    return this.#spool.open(desc, opts);
  }

  async tag(desc: Descriptor, ref: string): Promise<void> {
    this.#checkWritable();
    if (isIndexMediaType(desc.mediaType)) throw unsupportedIndex(`${this.description}: index ${desc.digest}`);
    if (!this.#images.has(desc.digest)) {
      throw new StratumError(
        'ERR_NOT_FOUND',
        `${this.description}: cannot tag ${desc.digest}: no image manifest with that digest was pushed`,
      );
    }
    if (ref.trim() === '') return; // untagged: the image is written with empty RepoTags
    const tag = familiarString(parseTag(ref, this.description));
    this.#tags.set(tag, desc.digest);
  }

  /** '' (the only image), `@N` (push order), a digest, or NAME[:TAG]. */
  async resolve(ref: string): Promise<Descriptor> {
    this.#checkReadable();
    const images = [...this.#images.values()];
    const r = ref.trim();
    let found: PushedImage | undefined;
    if (r === '') {
      if (images.length !== 1) {
        throw new StratumError(
          images.length === 0 ? 'ERR_NOT_FOUND' : 'ERR_INVALID_ARGUMENT',
          `${this.description} holds ${images.length} images; name one`,
        );
      }
      found = images[0];
    } else if (/^@\d+$/.test(r)) {
      found = images[Number(r.slice(1))];
    } else if (isDigest(r)) {
      found = this.#images.get(r);
    } else {
      let key: string | undefined;
      try {
        key = familiarString(parseTag(r, this.description));
      } catch {
        key = undefined;
      }
      const d = key === undefined ? undefined : this.#tags.get(key);
      found = d === undefined ? undefined : this.#images.get(d);
    }
    if (!found)
      throw new StratumError('ERR_NOT_FOUND', `${this.description} has no image ${JSON.stringify(r)}`);
    return found.descriptor;
  }

  async roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    this.#checkReadable();
    const out: { ref: string | undefined; descriptor: Descriptor }[] = [];
    for (const img of this.#images.values()) {
      const tags = this.#tagsOf(img.descriptor.digest);
      if (tags.length === 0) out.push({ ref: undefined, descriptor: img.descriptor });
      for (const t of tags) out.push({ ref: t, descriptor: img.descriptor });
    }
    return out;
  }

  #tagsOf(d: Digest): string[] {
    return [...this.#tags].filter(([, v]) => v === d).map(([t]) => t);
  }

  async finalize(opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    this.#checkWritable();
    const images = [...this.#images.values()];
    if (images.length === 0) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${this.description}: nothing to write, no image was pushed`,
      );
    }
    this.#state = 'finalizing';
    try {
      await this.#write(images, opts.signal);
      this.#state = 'finalized';
    } catch (e) {
      this.#state = 'open';
      throw e;
    }
  }

  async #write(images: readonly PushedImage[], signal: AbortSignal | undefined): Promise<void> {
    // read and check every config before anything is written
    const plans = await Promise.all(
      images.map(async (img) => {
        const cfgDesc = img.manifest.config;
        const what = `config ${cfgDesc.digest} of image ${img.descriptor.digest}`;
        const bytes = await this.#spool.read(cfgDesc.digest, Limits.config, what);
        verifyBytes(bytes, cfgDesc.digest, cfgDesc.size, what);
        const diffIds = parseImageConfig(bytes, what).rootfs.diff_ids;
        if (diffIds.length !== img.manifest.layers.length) {
          throw new StratumError(
            'ERR_INVALID_DOCUMENT',
            `image ${img.descriptor.digest}: the manifest has ${img.manifest.layers.length} layers but its config has ${diffIds.length} diff_ids`,
          );
        }
        for (const l of img.manifest.layers) {
          if (!(await this.#spool.has(l))) {
            throw new StratumError(
              'ERR_NOT_FOUND',
              `${this.description}: layer ${l.digest} of image ${img.descriptor.digest} was not pushed`,
            );
          }
        }
        return { img, configBytes: bytes, diffIds, tags: this.#tagsOf(img.descriptor.digest) };
      }),
    );
    await writeTarAtomic(
      this.file,
      async (w) => {
        const written = new Set<string>();
        const entries: DockerArchiveEntry[] = [];
        const repositories: Record<string, Record<string, string>> = {};
        for (const { img, configBytes, diffIds, tags } of plans) {
          const configName = `${encodedOf(img.manifest.config.digest)}.json`;
          if (!written.has(configName)) {
            await w.bytes(configName, configBytes);
            written.add(configName);
          }
          const layerNames: string[] = [];
          for (const [j, layer] of img.manifest.layers.entries()) {
            const diffId = diffIds[j]!;
            const name = `${encodedOf(diffId)}.tar`;
            layerNames.push(name);
            if (written.has(name)) continue;
            await this.#writeLayer(w, name, layer, diffId, signal);
            written.add(name);
          }
          entries.push({ Config: configName, RepoTags: tags, Layers: layerNames });
          const top = chainId(diffIds);
          if (top !== undefined) {
            for (const t of tags) {
              const r = parseTag(t, this.description);
              const repo = familiarName(r);
              repositories[repo] = { ...repositories[repo], [r.tag!]: encodedOf(top) };
            }
          }
        }
        await w.bytes('manifest.json', Buffer.from(JSON.stringify(entries)));
        await w.bytes('repositories', Buffer.from(JSON.stringify(repositories)));
      },
      signal ? { signal } : {},
    );
  }

  /** Write one layer as an uncompressed tar named after its diffID, checking it matches. */
  async #writeLayer(
    w: import('./tar-writer.js').TarWriter,
    name: string,
    layer: Descriptor,
    diffId: Digest,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const path = this.#spool.path(layer.digest);
    let kind = layerCompressionOf(layer.mediaType);
    if (kind === undefined) {
      const head = await readHead(path);
      kind = detectCompression(head);
    }
    if (kind === 'none') {
      if (layer.digest !== diffId) {
        throw new StratumError(
          'ERR_DIGEST_MISMATCH',
          `uncompressed layer ${layer.digest} does not match the config's diff_id ${diffId}`,
        );
      }
      await w.file(name, layer.size, path);
      return;
    }
    // decompress next to the spooled blob, checking the diffID, then copy it in
    const tmp = tempName(this.#spool.dir, '.layer-');
    const verify = new VerifyingStream({
      digest: diffId,
      what: `layer ${layer.digest} uncompressed (config diff_id)`,
    });
    try {
      await pipeline(
        createReadStream(path),
        decompressStream(kind),
        verify,
        createWriteStream(tmp, { flags: 'wx', mode: 0o600 }),
        signal ? { signal } : {},
      );
      await w.file(name, verify.size, tmp);
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      throw e;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    await this.#spool.close();
  }
}

async function readHead(path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of createReadStream(path, { start: 0, end: 7 })) {
    chunks.push(c as Buffer);
    n += (c as Buffer).length;
  }
  return Buffer.concat(chunks, n);
}

/** The chain ID of a layer stack (undefined for none): id0 = diff0, idN = sha256(idN-1 + " " + diffN). */
function chainId(diffIds: readonly Digest[]): Digest | undefined {
  let id: Digest | undefined;
  for (const d of diffIds) id = id === undefined ? d : digestBytes(`${id} ${d}`);
  return id;
}

/** A new docker-save archive at `file`, written on finalize(). */
export function createDockerArchive(
  file: string,
  opts: ArchiveWriterOptions = {},
): Promise<DockerArchiveWriter> {
  return DockerArchiveWriter.create(file, opts);
}
