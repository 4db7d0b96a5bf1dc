// Reading an oci-archive (a tar of an OCI image layout) as a read-only Target, without
// extracting it: the tar is indexed once, `oci-layout` and `index.json` are read (bounded,
// validated), and blobs are streamed from `blobs/<alg>/<encoded>` straight out of the file,
// verified against the descriptor asked for. resolve() works like a layout: by the
// `org.opencontainers.image.ref.name` annotation (or containerd's full image name), by
// digest, or '' for the only manifest.

import type { Readable } from 'node:stream';
import type { Content, FetchOptions, RootLister, Target } from '../content/types.js';
import { algorithmOf, type Digest, encodedOf, isDigest, parseDigest, verifyBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { formatReference, parseNormalizedReference, withDefaultTag } from '../reference/reference.js';
import { isManifestMediaType } from '../spec/media-types.js';
import type { Descriptor, ImageIndex } from '../spec/types.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Limits } from '../spec/types.js';
import { parseJsonLimited, parseManifestDocument } from '../spec/validate.js';
import {
  type ArchiveOpenOptions,
  type OpenedArchive,
  openArchiveFile,
  verifiedMemberStream,
} from './archive-file.js';
import type { TarIndex, TarMember } from './tar-index.js';

const OCI_LAYOUT_LIMIT = 64 * 1024;

function invalid(file: string, why: string, cause?: unknown): StratumError {
  return new StratumError('ERR_INVALID_ARCHIVE', `invalid oci archive ${file}: ${why}`, { cause });
}

function fullName(s: string): string | undefined {
  try {
    return formatReference(withDefaultTag(parseNormalizedReference(s)));
  } catch {
    return undefined;
  }
}

export class OciArchiveReader implements Target, RootLister {
  readonly description: string;
  readonly file: string;
  readonly #archive: OpenedArchive;
  readonly #index: TarIndex;
  readonly #root: ImageIndex;
  #closed = false;

  private constructor(file: string, archive: OpenedArchive, root: ImageIndex) {
    this.file = file;
    this.description = `oci-archive:${file}`;
    this.#archive = archive;
    this.#index = archive.index;
    this.#root = root;
  }

  static async open(file: string, opts: ArchiveOpenOptions = {}): Promise<OciArchiveReader> {
    const archive = await openArchiveFile(file, opts);
    try {
      const root = await readLayout(archive.index, file);
      return new OciArchiveReader(file, archive, root);
    } catch (e) {
      await archive.close();
      throw e;
    }
  }

  /** The archive's index.json, validated. */
  get index(): ImageIndex {
    return this.#root;
  }

  #checkOpen(): void {
    if (this.#closed) throw new StratumError('ERR_INVALID_ARGUMENT', `${this.description} is closed`);
  }

  #blob(digest: Digest): TarMember | undefined {
    const d = parseDigest(digest);
    return this.#index.lookup(`blobs/${algorithmOf(d)}/${encodedOf(d)}`);
  }

  #choices(): string {
    return this.#root.manifests
      .map((m, i) => m.annotations?.[ANNOTATION_REF_NAME] ?? `@${i} (${m.digest}, untagged)`)
      .join(', ');
  }

  async resolve(ref: string): Promise<Descriptor> {
    this.#checkOpen();
    const r = ref.trim();
    const ms = this.#root.manifests;
    if (r === '') {
      if (ms.length === 1) return ms[0]!;
      throw new StratumError(
        ms.length === 0 ? 'ERR_NOT_FOUND' : 'ERR_INVALID_ARGUMENT',
        ms.length === 0
          ? `${this.description} has no images`
          : `${this.description} holds ${ms.length} manifests; name one: ${this.#choices()}`,
      );
    }
    const byName = ms.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === r);
    if (byName) return byName;
    if (/^@\d+$/.test(r)) {
      const m = ms[Number(r.slice(1))];
      if (m) return m;
    }
    if (isDigest(r)) {
      const m = ms.find((x) => x.digest === r);
      if (m) return m;
      return this.#describeBlob(r);
    }
    const want = fullName(r);
    if (want !== undefined) {
      const m = ms.find((x) => {
        const n = x.annotations?.[ANNOTATION_IMAGE_NAME];
        return n !== undefined && fullName(n) === want;
      });
      if (m) return m;
    }
    throw new StratumError(
      'ERR_NOT_FOUND',
      `${this.description} has no manifest named ${JSON.stringify(r)}; it holds: ${this.#choices() || 'nothing'}`,
    );
  }

  /** A digest not listed in index.json: read the blob (bounded) to learn its media type. */
  async #describeBlob(digest: Digest): Promise<Descriptor> {
    const m = this.#blob(digest);
    if (!m) throw new StratumError('ERR_NOT_FOUND', `${this.description} has no manifest ${digest}`);
    const bytes = await this.#index.read(m, Limits.manifest, `${this.file}: blob ${digest}`);
    verifyBytes(bytes, digest, undefined, `${this.file}: blob ${digest}`);
    const doc = parseManifestDocument(bytes, { what: `manifest ${digest}` });
    return { mediaType: doc.mediaType, digest, size: bytes.length };
  }

  async roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    this.#checkOpen();
    return this.#root.manifests.map((m) => ({ ref: m.annotations?.[ANNOTATION_REF_NAME], descriptor: m }));
  }

  async fetch(desc: Descriptor, opts: FetchOptions = {}): Promise<Readable> {
    this.#checkOpen();
    const m = this.#blob(desc.digest);
    if (!m) throw new StratumError('ERR_NOT_FOUND', `${this.description} has no blob ${desc.digest}`);
    return verifiedMemberStream(this.#index, m, desc, opts);
  }

  async exists(desc: Descriptor): Promise<boolean> {
    this.#checkOpen();
    const m = this.#blob(desc.digest);
    return m !== undefined && m.size === desc.size;
  }

  async push(_desc: Descriptor, content: Content): Promise<void> {
    if (!(content instanceof Uint8Array)) content.destroy();
    throw new StratumError(
      'ERR_READ_ONLY',
      `${this.description} was opened for reading; write a new archive with createOciArchive`,
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
    await this.#archive.close();
  }
}

async function readLayout(index: TarIndex, file: string): Promise<ImageIndex> {
  const layoutMember = index.lookup('oci-layout');
  if (!layoutMember) {
    const hint = index.lookup('manifest.json')
      ? ' (it has a manifest.json: open it as a docker-archive)'
      : '';
    throw invalid(file, `there is no oci-layout file${hint}`);
  }
  const layoutBytes = await index.read(layoutMember, OCI_LAYOUT_LIMIT, `${file}: oci-layout`);
  let layout: unknown;
  try {
    layout = parseJsonLimited(layoutBytes, OCI_LAYOUT_LIMIT, 'oci-layout');
  } catch (e) {
    throw invalid(file, (e as Error).message, e);
  }
  const version =
    typeof layout === 'object' && layout !== null
      ? (layout as Record<string, unknown>).imageLayoutVersion
      : undefined;
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) {
    throw invalid(
      file,
      `oci-layout has imageLayoutVersion ${JSON.stringify(version)}; only 1.x is supported`,
    );
  }
  const indexMember = index.lookup('index.json');
  if (!indexMember) throw invalid(file, 'there is no index.json');
  const bytes = await index.read(indexMember, Limits.manifest, `${file}: index.json`);
  let doc: ReturnType<typeof parseManifestDocument>;
  try {
    doc = parseManifestDocument(bytes, { what: 'index.json' });
  } catch (e) {
    if (e instanceof StratumError && e.code !== 'ERR_TOO_LARGE') throw invalid(file, e.message, e);
    throw e;
  }
  if (doc.kind !== 'index') throw invalid(file, 'index.json is not an image index');
  for (const [i, m] of doc.index.manifests.entries()) {
    if (!isManifestMediaType(m.mediaType)) continue; // artifacts may be listed too; served as blobs
    if (!index.lookup(`blobs/${algorithmOf(m.digest)}/${encodedOf(m.digest)}`)) {
      throw invalid(file, `index.json manifests[${i}] names ${m.digest}, which is not in the archive`);
    }
  }
  return doc.index;
}

/** Open an oci-archive (plain, gzip or zstd tar of an OCI layout) as a read-only Target. */
export function openOciArchive(file: string, opts: ArchiveOpenOptions = {}): Promise<OciArchiveReader> {
  return OciArchiveReader.open(file, opts);
}
