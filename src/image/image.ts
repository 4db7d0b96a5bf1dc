// Image views over any Fetcher, computed on first use: the manifest first, the config and
// blobs only when asked, each fetched once and kept. Documents are validated as they arrive.

import type { Fetcher, FetchOptions } from '../content/types.js';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { isManifestMediaType } from '../spec/media-types.js';
import type {
  Descriptor,
  ImageConfig,
  ImageIndex,
  ImageManifest,
  ManifestDocument,
  Platform,
} from '../spec/types.js';
import { Limits } from '../spec/types.js';
import { parseImageConfig, parseManifestDocument } from '../spec/validate.js';
import { formatPlatform, selectPlatform } from './platform.js';

/** Fetch and validate a manifest or index; returns the raw bytes too (they are what gets copied). */
export async function fetchManifest(
  fetcher: Fetcher,
  desc: Descriptor,
  opts: FetchOptions = {},
): Promise<{ document: ManifestDocument; bytes: Buffer }> {
  if (!isManifestMediaType(desc.mediaType)) {
    // let the validator produce the precise error (schema1, unsupported)
    parseManifestDocument(Buffer.from('{}'), { mediaType: desc.mediaType, what: `manifest ${desc.digest}` });
  }
  if (desc.size > Limits.manifest) {
    throw new StratumError(
      'ERR_TOO_LARGE',
      `manifest ${desc.digest} is ${desc.size} bytes, over the limit of ${Limits.manifest}`,
    );
  }
  const bytes = await readAll(await fetcher.fetch(desc, opts), Limits.manifest, `manifest ${desc.digest}`);
  const document = parseManifestDocument(bytes, {
    mediaType: desc.mediaType,
    what: `manifest ${desc.digest}`,
  });
  return { document, bytes };
}

export async function fetchConfig(
  fetcher: Fetcher,
  desc: Descriptor,
  opts: FetchOptions = {},
): Promise<{ config: ImageConfig; bytes: Buffer }> {
  if (desc.size > Limits.config) {
    throw new StratumError(
      'ERR_TOO_LARGE',
      `config ${desc.digest} is ${desc.size} bytes, over the limit of ${Limits.config}`,
    );
  }
  const bytes = await readAll(await fetcher.fetch(desc, opts), Limits.config, `config ${desc.digest}`);
  return { config: parseImageConfig(bytes, `config ${desc.digest}`), bytes };
}

/** A read-only view of one image: manifest, config, layers. */
export class Image {
  readonly descriptor: Descriptor;
  readonly #fetcher: Fetcher;
  #manifest: Promise<{ manifest: ImageManifest; bytes: Buffer }> | undefined;
  #config: Promise<{ config: ImageConfig; bytes: Buffer }> | undefined;

  constructor(fetcher: Fetcher, descriptor: Descriptor) {
    this.#fetcher = fetcher;
    this.descriptor = descriptor;
  }

  get fetcher(): Fetcher {
    return this.#fetcher;
  }

  #loadManifest(): Promise<{ manifest: ImageManifest; bytes: Buffer }> {
    this.#manifest ??= fetchManifest(this.#fetcher, this.descriptor).then(({ document, bytes }) => {
      if (document.kind !== 'manifest') {
        throw new StratumError(
          'ERR_UNSUPPORTED_MEDIA_TYPE',
          `${this.descriptor.digest} is an index, not an image manifest`,
        );
      }
      return { manifest: document.manifest, bytes };
    });
    return this.#manifest;
  }

  async manifest(): Promise<ImageManifest> {
    return (await this.#loadManifest()).manifest;
  }
  async rawManifest(): Promise<Buffer> {
    return (await this.#loadManifest()).bytes;
  }
  async #loadConfig(): Promise<{ config: ImageConfig; bytes: Buffer }> {
    const m = await this.manifest();
    this.#config ??= fetchConfig(this.#fetcher, m.config);
    return this.#config;
  }
  async config(): Promise<ImageConfig> {
    return (await this.#loadConfig()).config;
  }
  async rawConfig(): Promise<Buffer> {
    return (await this.#loadConfig()).bytes;
  }
  async layers(): Promise<readonly Descriptor[]> {
    return (await this.manifest()).layers;
  }
  /** Total bytes: manifest + config + layers. */
  async size(): Promise<number> {
    const m = await this.manifest();
    return this.descriptor.size + m.config.size + m.layers.reduce((n, l) => n + l.size, 0);
  }
}

/** A read-only view of an index. */
export class Index {
  readonly descriptor: Descriptor;
  readonly #fetcher: Fetcher;
  #index: Promise<{ index: ImageIndex; bytes: Buffer }> | undefined;
  constructor(fetcher: Fetcher, descriptor: Descriptor) {
    this.#fetcher = fetcher;
    this.descriptor = descriptor;
  }
  #load(): Promise<{ index: ImageIndex; bytes: Buffer }> {
    this.#index ??= fetchManifest(this.#fetcher, this.descriptor).then(({ document, bytes }) => {
      if (document.kind !== 'index') {
        throw new StratumError(
          'ERR_UNSUPPORTED_MEDIA_TYPE',
          `${this.descriptor.digest} is an image manifest, not an index`,
        );
      }
      return { index: document.index, bytes };
    });
    return this.#index;
  }
  async index(): Promise<ImageIndex> {
    return (await this.#load()).index;
  }
  async rawIndex(): Promise<Buffer> {
    return (await this.#load()).bytes;
  }
  async manifests(): Promise<readonly Descriptor[]> {
    return (await this.index()).manifests;
  }
  /** The image for a platform; ERR_PLATFORM_NOT_FOUND listing what the index has. */
  async image(platform: Platform): Promise<Image> {
    const manifests = await this.manifests();
    const picked = selectPlatform(manifests, platform);
    if (!picked) {
      const have =
        manifests.flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : [])).join(', ') || 'none';
      throw new StratumError(
        'ERR_PLATFORM_NOT_FOUND',
        `no image for platform ${formatPlatform(platform)} in index ${this.descriptor.digest} (it has: ${have})`,
      );
    }
    return new Image(this.#fetcher, picked);
  }
}
