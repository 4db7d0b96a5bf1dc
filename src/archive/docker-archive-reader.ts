// Reading a `docker save` archive as a read-only Target. The tar is indexed once; nothing is
// extracted. manifest.json (bounded, validated: every Config and Layers name must be a member)
// lists the images; for each one an OCI image manifest is synthesised deterministically:
// the config member becomes an OCI config descriptor and each Layers member a layer
// descriptor whose media type follows its magic bytes (tar, gzip, zstd) and whose digest is
// the sha256 of the member's bytes, computed once and cached. Where it is cheap (an
// uncompressed layer, whose digest is its diffID) the config's rootfs.diff_ids are checked.
// fetch() streams members straight from the file, verified; synthesised manifests are
// served from memory. Docker 25+ archives (OCI layout inside plus manifest.json) read the same
// way through manifest.json.

import type { Readable } from 'node:stream';
import { detectCompression } from '../compression/compression.js';
import type { Content, FetchOptions, RootLister, Target } from '../content/types.js';
import { type Digest, Digester, isDigest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { Semaphore } from '../internal/pool.js';
import {
  formatReference,
  parseNormalizedReference,
  type Reference,
  withDefaultTag,
} from '../reference/reference.js';
import { MediaType } from '../spec/media-types.js';
import type { Descriptor, ImageManifest } from '../spec/types.js';
import { Limits } from '../spec/types.js';
import { parseImageConfig } from '../spec/validate.js';
import {
  type ArchiveOpenOptions,
  type OpenedArchive,
  openArchiveFile,
  verifiedBytesStream,
  verifiedMemberStream,
} from './archive-file.js';
import { normaliseMemberName, type TarIndex, type TarMember } from './tar-index.js';

/** One image listed in manifest.json. */
export interface DockerArchiveImage {
  /** Position in manifest.json (what `@N` selects). */
  readonly index: number;
  /** RepoTags as written in the archive (familiar form, e.g. `busybox:latest`). */
  readonly repoTags: readonly string[];
  /** Member name of the config. */
  readonly config: string;
  /** Member names of the layers, bottom first. */
  readonly layers: readonly string[];
}

interface Entry extends DockerArchiveImage {
  readonly configMember: TarMember;
  readonly layerMembers: readonly TarMember[];
}

/** What an image resolves to: its synthesised manifest and the descriptors in it. */
interface Synth {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
  readonly manifest: ImageManifest;
}

interface MemberInfo {
  readonly digest: Digest;
  readonly size: number;
  readonly mediaType: string;
}

const HASH_CONCURRENCY = 4;

function invalid(file: string, why: string, cause?: unknown): StratumError {
  return new StratumError('ERR_INVALID_ARCHIVE', `invalid docker archive ${file}: ${why}`, { cause });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The normalised `domain/path:tag` of a RepoTag or a requested name, or undefined if it does not parse. */
function tagKey(s: string): string | undefined {
  try {
    const r: Reference = withDefaultTag(parseNormalizedReference(s));
    if (r.digest !== undefined) return undefined;
    return formatReference(r);
  } catch {
    return undefined;
  }
}

function layerMediaTypeFor(head: Uint8Array): string {
  const kind = detectCompression(head);
  return kind === 'gzip'
    ? MediaType.OciLayerGzip
    : kind === 'zstd'
      ? MediaType.OciLayerZstd
      : MediaType.OciLayer;
}

export class DockerArchiveReader implements Target, RootLister {
  readonly description: string;
  readonly file: string;
  readonly #archive: OpenedArchive;
  readonly #index: TarIndex;
  readonly #entries: readonly Entry[];
  readonly #members = new Map<string, Promise<MemberInfo>>();
  readonly #synth = new Map<number, Promise<Synth>>();
  /** Everything whose digest is known: synthesised manifests (bytes) and members. */
  readonly #byDigest = new Map<Digest, { readonly bytes: Buffer } | { readonly member: TarMember }>();
  readonly #hashing = new Semaphore(HASH_CONCURRENCY);
  #closed = false;

  private constructor(file: string, archive: OpenedArchive, entries: readonly Entry[]) {
    this.file = file;
    this.description = `docker-archive:${file}`;
    this.#archive = archive;
    this.#index = archive.index;
    this.#entries = entries;
  }

  /** Open and index `file`, and validate its manifest.json. */
  static async open(file: string, opts: ArchiveOpenOptions = {}): Promise<DockerArchiveReader> {
    const archive = await openArchiveFile(file, opts);
    try {
      const entries = await readManifestJson(archive.index, file);
      return new DockerArchiveReader(file, archive, entries);
    } catch (e) {
      await archive.close();
      throw e;
    }
  }

  /** The images manifest.json lists, without reading any blob. */
  images(): readonly DockerArchiveImage[] {
    return this.#entries.map(({ index, repoTags, config, layers }) => ({ index, repoTags, config, layers }));
  }

  #checkOpen(): void {
    if (this.#closed) throw new StratumError('ERR_INVALID_ARGUMENT', `${this.description} is closed`);
  }

  /** Digest, size and media type of a member, hashed once. */
  #member(m: TarMember, asLayer: boolean): Promise<MemberInfo> {
    const key = `${asLayer ? 'L' : 'C'}:${m.name}`;
    let p = this.#members.get(key);
    if (!p) {
      p = this.#hashing.run(async () => {
        const mediaType = asLayer ? layerMediaTypeFor(await this.#index.head(m, 8)) : MediaType.OciConfig;
        const d = new Digester('sha256');
        for await (const chunk of this.#index.stream(m)) d.update(chunk as Buffer);
        if (d.size !== m.size) throw invalid(this.file, `member ${m.name} is truncated`);
        const digest = d.digest();
        this.#byDigest.set(digest, { member: m });
        return { digest, size: m.size, mediaType };
      });
      this.#members.set(key, p);
    }
    return p;
  }

  #synthesise(i: number): Promise<Synth> {
    let p = this.#synth.get(i);
    if (!p) {
      p = this.#doSynthesise(i);
      this.#synth.set(i, p);
    }
    return p;
  }

  async #doSynthesise(i: number): Promise<Synth> {
    const e = this.#entries[i]!;
    const where = `image ${i}${e.repoTags.length ? ` (${e.repoTags.join(', ')})` : ''}`;
    const configBytes = await this.#index.read(
      e.configMember,
      Limits.config,
      `${this.file}: config ${e.config}`,
    );
    let diffIds: readonly Digest[];
    try {
      diffIds = parseImageConfig(configBytes, `config ${e.config}`).rootfs.diff_ids;
    } catch (err) {
      if (err instanceof StratumError && err.code !== 'ERR_TOO_LARGE') {
        throw invalid(this.file, `${where}: ${err.message}`, err);
      }
      throw err;
    }
    if (diffIds.length !== e.layerMembers.length) {
      throw invalid(
        this.file,
        `${where}: manifest.json lists ${e.layerMembers.length} layers but the config has ${diffIds.length} diff_ids`,
      );
    }
    const config = await this.#member(e.configMember, false);
    const layers = await Promise.all(e.layerMembers.map((m) => this.#member(m, true)));
    layers.forEach((l, j) => {
      if (l.mediaType === MediaType.OciLayer && l.digest !== diffIds[j]) {
        throw invalid(
          this.file,
          `${where}: layer ${e.layers[j]} has digest ${l.digest} but the config's rootfs.diff_ids[${j}] is ${diffIds[j]}`,
        );
      }
    });
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const d = new Digester('sha256');
    d.update(bytes);
    const descriptor: Descriptor = {
      mediaType: MediaType.OciManifest,
      digest: d.digest(),
      size: bytes.length,
    };
    this.#byDigest.set(descriptor.digest, { bytes });
    return { descriptor, bytes, manifest };
  }

  #choices(): string {
    return this.#entries
      .map((e) => (e.repoTags.length ? e.repoTags.join(' / ') : `@${e.index} (untagged)`))
      .join(', ');
  }

  /** Which entry `ref` names: '' (the only one), `@N`, a digest, or NAME[:TAG]. */
  async #select(ref: string): Promise<number> {
    const r = ref.trim();
    if (r === '') {
      if (this.#entries.length === 1) return 0;
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${this.description} holds ${this.#entries.length} images; name one (NAME:TAG or @N): ${this.#choices()}`,
      );
    }
    const at = /^@(\d+)$/.exec(r);
    if (at) {
      const n = Number(at[1]);
      if (n < this.#entries.length) return n;
      throw new StratumError(
        'ERR_NOT_FOUND',
        `${this.description} has no image @${n}: it holds ${this.#entries.length} (@0..@${this.#entries.length - 1})`,
      );
    }
    if (isDigest(r)) {
      for (let i = 0; i < this.#entries.length; i++) {
        if ((await this.#synthesise(i)).descriptor.digest === r) return i;
      }
      throw new StratumError('ERR_NOT_FOUND', `${this.description} has no image with manifest digest ${r}`);
    }
    const literal = this.#entries.findIndex((e) => e.repoTags.includes(r));
    if (literal !== -1) return literal;
    const want = tagKey(r);
    if (want !== undefined) {
      const i = this.#entries.findIndex((e) => e.repoTags.some((t) => tagKey(t) === want));
      if (i !== -1) return i;
    }
    throw new StratumError(
      'ERR_NOT_FOUND',
      `${this.description} has no image tagged ${JSON.stringify(r)}; it holds: ${this.#choices()}`,
    );
  }

  async resolve(ref: string): Promise<Descriptor> {
    this.#checkOpen();
    const i = await this.#select(ref);
    return (await this.#synthesise(i)).descriptor;
  }

  /** The synthesised manifest of entry `i` (parsed), e.g. for inspection. */
  async manifest(ref: string): Promise<ImageManifest> {
    this.#checkOpen();
    return (await this.#synthesise(await this.#select(ref))).manifest;
  }

  async roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    this.#checkOpen();
    const out: { ref: string | undefined; descriptor: Descriptor }[] = [];
    for (const e of this.#entries) {
      const { descriptor } = await this.#synthesise(e.index);
      if (e.repoTags.length === 0) out.push({ ref: undefined, descriptor });
      for (const t of e.repoTags) out.push({ ref: t, descriptor });
    }
    return out;
  }

  /** Find what a digest names, synthesising every image if it is not known yet. */
  async #find(
    digest: Digest,
  ): Promise<{ readonly bytes: Buffer } | { readonly member: TarMember } | undefined> {
    const known = this.#byDigest.get(digest);
    if (known) return known;
    await Promise.all(this.#entries.map((e) => this.#synthesise(e.index)));
    return this.#byDigest.get(digest);
  }

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    this.#checkOpen();
    const found = await this.#find(desc.digest);
    if (!found) throw new StratumError('ERR_NOT_FOUND', `${this.description} has no blob ${desc.digest}`);
    if ('bytes' in found) return verifiedBytesStream(found.bytes, desc);
    return verifiedMemberStream(this.#index, found.member, desc, opts);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    this.#checkOpen();
    const found = await this.#find(desc.digest);
    if (!found) return false;
    return ('bytes' in found ? found.bytes.length : found.member.size) === desc.size;
  }

  async push(_desc: Descriptor, content: Content): Promise<void> {
    if (!(content instanceof Uint8Array)) content.destroy();
    throw new StratumError(
      'ERR_READ_ONLY',
      `${this.description} was opened for reading; write a new archive with createDockerArchive`,
    );
  }

  async tag(_desc?: Descriptor, _ref?: string): Promise<void> {
    throw new StratumError(
      'ERR_READ_ONLY',
      `${this.description} was opened for reading; it cannot be tagged`,
    );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#members.values(), ...this.#synth.values()]);
    await this.#archive.close();
  }
}

/** Read and validate manifest.json; every name it uses must be a regular file in the archive. */
async function readManifestJson(index: TarIndex, file: string): Promise<Entry[]> {
  const member = index.lookup('manifest.json');
  if (!member) {
    const hint = index.lookup('index.json') ? ' (it has an index.json: open it as an oci-archive)' : '';
    throw invalid(file, `there is no manifest.json${hint}`);
  }
  const bytes = await index.read(member, Limits.archiveManifest, `${file}: manifest.json`);
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw invalid(file, `manifest.json is not JSON (${(e as Error).message})`, e);
  }
  if (!Array.isArray(doc)) throw invalid(file, 'manifest.json must be a JSON array of images');
  if (doc.length === 0) throw invalid(file, 'manifest.json lists no images');
  const member$ = (name: unknown, where: string): { name: string; member: TarMember } => {
    if (typeof name !== 'string' || name === '') throw invalid(file, `${where} must be a non-empty string`);
    const norm = normaliseMemberName(name, file);
    const m = norm === undefined ? undefined : index.lookup(norm);
    if (!m) throw invalid(file, `${where} names ${JSON.stringify(name)}, which is not a file in the archive`);
    return { name, member: m };
  };
  return doc.map((item: unknown, i): Entry => {
    const where = `manifest.json[${i}]`;
    if (!isObject(item)) throw invalid(file, `${where} is not an object`);
    const config = member$(item.Config, `${where}.Config`);
    if (!Array.isArray(item.Layers)) throw invalid(file, `${where}.Layers must be an array`);
    const layers = item.Layers.map((l: unknown, j) => member$(l, `${where}.Layers[${j}]`));
    const rawTags = item.RepoTags;
    if (rawTags !== undefined && rawTags !== null && !Array.isArray(rawTags)) {
      throw invalid(file, `${where}.RepoTags must be an array of strings`);
    }
    const repoTags = (rawTags ?? []).map((t: unknown, j: number) => {
      if (typeof t !== 'string' || t === '')
        throw invalid(file, `${where}.RepoTags[${j}] must be a non-empty string`);
      return t;
    });
    return {
      index: i,
      repoTags,
      config: config.name,
      layers: layers.map((l) => l.name),
      configMember: config.member,
      layerMembers: layers.map((l) => l.member),
    };
  });
}

/** Open a docker-save archive (plain, gzip or zstd) as a read-only Target. */
export function openDockerArchive(file: string, opts: ArchiveOpenOptions = {}): Promise<DockerArchiveReader> {
  return DockerArchiveReader.open(file, opts);
}
