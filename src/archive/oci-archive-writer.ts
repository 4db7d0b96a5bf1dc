// Writing an oci-archive (a tar of an OCI image layout) as a Target + Finalizer. Blobs are
// spooled into a temp dir (verified, atomic); tag() records ref names. finalize() writes
// `oci-layout`, `index.json` and `blobs/<alg>/<encoded>` into a temp file beside the
// destination, fsyncs and renames it: until then nothing is visible; close() without
// finalize() discards everything.
//
// index.json lists one entry per tag (annotated with org.opencontainers.image.ref.name), plus
// every pushed manifest or index that is neither tagged nor referenced by a pushed index
// (an untagged root, as `skopeo copy ... oci:DIR` leaves one).

import type { Readable } from 'node:stream';
import type { Content, FetchOptions, Finalizer, PushOptions, RootLister, Target } from '../content/types.js';
import { algorithmOf, type Digest, encodedOf, isDigest, verifyBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { readAll, toReadable } from '../internal/streams.js';
import { isManifestMediaType, MediaType } from '../spec/media-types.js';
import { checkRefName } from '../spec/ref-name.js';
import type { Descriptor, ImageIndex } from '../spec/types.js';
import { ANNOTATION_REF_NAME, Limits } from '../spec/types.js';
import { parseManifestDocument } from '../spec/validate.js';
import { BlobSpool } from './blob-spool.js';
import type { ArchiveWriterOptions } from './docker-archive-writer.js';
import { writeTarAtomic } from './tar-writer.js';

interface Pushed {
  readonly descriptor: Descriptor;
  /** For an index: the digests it lists. */
  readonly children: readonly Digest[];
}

export class OciArchiveWriter implements Target, Finalizer, RootLister {
  readonly description: string;
  readonly file: string;
  readonly #spool: BlobSpool;
  /** Every blob pushed, in push order. */
  readonly #blobs = new Map<Digest, Descriptor>();
  /** Manifests and indexes pushed. */
  readonly #manifests = new Map<Digest, Pushed>();
  /** ref name -> descriptor (in tag order). */
  readonly #tags = new Map<string, Descriptor>();
  #state: 'open' | 'finalizing' | 'finalized' | 'closed' = 'open';

  private constructor(file: string, spool: BlobSpool) {
    this.file = file;
    this.description = `oci-archive:${file}`;
    this.#spool = spool;
  }

  static async create(file: string, opts: ArchiveWriterOptions = {}): Promise<OciArchiveWriter> {
    const spool = await BlobSpool.create(`oci-archive:${file}`, opts.tmpDir);
    return new OciArchiveWriter(file, spool);
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
    } catch (e) {
      if (!(content instanceof Uint8Array)) content.destroy();
      throw e;
    }
    const plain: Descriptor = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
    if (!isManifestMediaType(desc.mediaType)) {
      await this.#spool.push(desc, content, opts);
      if (!this.#blobs.has(desc.digest)) this.#blobs.set(desc.digest, plain);
      return;
    }
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
    await this.#spool.push(desc, bytes, opts);
    if (!this.#blobs.has(desc.digest)) this.#blobs.set(desc.digest, plain);
    if (!this.#manifests.has(desc.digest)) {
      const children = doc.kind === 'index' ? doc.index.manifests.map((m) => m.digest) : [];
      this.#manifests.set(desc.digest, { descriptor: plain, children });
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
    const pushed = this.#manifests.get(desc.digest);
    if (!pushed) {
      throw new StratumError(
        'ERR_NOT_FOUND',
        `${this.description}: cannot tag ${desc.digest}: no manifest or index with that digest was pushed`,
      );
    }
    if (ref.trim() === '') return;
    checkRefName(ref, this.description);
    // keep what the caller says about the root (platform, artifactType, annotations) but
    // the identity of the content from what was pushed
    const { annotations, platform, artifactType } = desc;
    this.#tags.delete(ref);
    this.#tags.set(ref, {
      ...pushed.descriptor,
      ...(platform ? { platform } : {}),
      ...(artifactType ? { artifactType } : {}),
      annotations: { ...annotations, [ANNOTATION_REF_NAME]: ref },
    });
  }

  async resolve(ref: string): Promise<Descriptor> {
    this.#checkReadable();
    const r = ref.trim();
    const roots = this.#index().manifests;
    if (r === '') {
      if (roots.length === 1) return roots[0]!;
      throw new StratumError(
        roots.length === 0 ? 'ERR_NOT_FOUND' : 'ERR_INVALID_ARGUMENT',
        `${this.description} holds ${roots.length} manifests; name one`,
      );
    }
    const tagged = this.#tags.get(r);
    if (tagged) return tagged;
    if (isDigest(r)) {
      const m = this.#manifests.get(r);
      if (m) return m.descriptor;
    }
    throw new StratumError('ERR_NOT_FOUND', `${this.description} has no manifest named ${JSON.stringify(r)}`);
  }

  async roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]> {
    this.#checkReadable();
    return this.#index().manifests.map((m) => ({ ref: m.annotations?.[ANNOTATION_REF_NAME], descriptor: m }));
  }

  /** The index.json finalize() would write now. */
  #index(): ImageIndex {
    const children = new Set<Digest>();
    for (const m of this.#manifests.values()) for (const c of m.children) children.add(c);
    const tagged = new Set([...this.#tags.values()].map((d) => d.digest));
    const manifests: Descriptor[] = [...this.#tags.values()];
    for (const m of this.#manifests.values()) {
      if (!tagged.has(m.descriptor.digest) && !children.has(m.descriptor.digest))
        manifests.push(m.descriptor);
    }
    return { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  }

  async finalize(opts: { readonly signal?: AbortSignal } = {}): Promise<void> {
    this.#checkWritable();
    const index = this.#index();
    this.#state = 'finalizing';
    try {
      await writeTarAtomic(
        this.file,
        async (w) => {
          await w.bytes('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
          await w.bytes('index.json', Buffer.from(JSON.stringify(index)));
          await w.directory('blobs');
          const algs = new Set([...this.#blobs.keys()].map((d) => algorithmOf(d)));
          for (const alg of [...algs].sort()) await w.directory(`blobs/${alg}`);
          for (const d of this.#blobs.values()) {
            await w.file(
              `blobs/${algorithmOf(d.digest)}/${encodedOf(d.digest)}`,
              d.size,
              this.#spool.path(d.digest),
            );
          }
        },
        opts.signal ? { signal: opts.signal } : {},
      );
      this.#state = 'finalized';
    } catch (e) {
      this.#state = 'open';
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    await this.#spool.close();
  }
}

/** A new oci-archive at `file`, written on finalize(). */
export function createOciArchive(file: string, opts: ArchiveWriterOptions = {}): Promise<OciArchiveWriter> {
  return OciArchiveWriter.create(file, opts);
}
