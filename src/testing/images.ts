// Test helper: generate small but real images in memory — tar layers (plain, gzip), a
// config with matching diff_ids, a manifest, an index — and push them to any Target.

import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import type { Target } from '../content/types.js';
import { type Digest, digestBytes } from '../digest/digest.js';
import { MediaType } from '../spec/media-types.js';
import type { Descriptor, ImageConfig, Platform } from '../spec/types.js';

export interface FileSpec {
  readonly path: string;
  readonly content?: string | Uint8Array;
  readonly type?: 'file' | 'directory' | 'symlink';
  readonly linkname?: string;
  readonly mode?: number;
}

/** A deterministic uncompressed tar of the given entries. */
export async function makeTar(files: readonly FileSpec[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const f of files) {
    const type = f.type ?? 'file';
    const mtime = new Date(0);
    if (type === 'file') {
      const body = Buffer.from(f.content ?? '');
      p.entry({ name: f.path, mode: f.mode ?? 0o644, mtime, type, uid: 0, gid: 0 }, body);
    } else if (type === 'directory') {
      p.entry({ name: f.path, mode: f.mode ?? 0o755, mtime, type });
    } else {
      p.entry({ name: f.path, mode: 0o777, mtime, type, linkname: f.linkname ?? '' });
    }
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export interface TestBlob {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
}

export interface TestImage {
  readonly manifest: TestBlob;
  readonly config: TestBlob;
  readonly layers: readonly TestBlob[];
  readonly diffIds: readonly Digest[];
  /** manifest, config and layers */
  readonly blobs: readonly TestBlob[];
}

export function blob(mediaType: string, bytes: Buffer, extra: Partial<Descriptor> = {}): TestBlob {
  return { descriptor: { mediaType, digest: digestBytes(bytes), size: bytes.length, ...extra }, bytes };
}

export interface MakeImageOptions {
  /** Each layer is a list of files, or raw tar bytes. */
  readonly layers?: readonly (readonly FileSpec[] | Buffer)[];
  readonly compression?: 'gzip' | 'none';
  readonly format?: 'oci' | 'docker';
  readonly platform?: Platform;
  readonly config?: Partial<ImageConfig>;
  readonly annotations?: Record<string, string>;
}

/** Make an image whose layers, config and manifest are consistent. */
export async function makeImage(opts: MakeImageOptions = {}): Promise<TestImage> {
  const format = opts.format ?? 'oci';
  const compression = opts.compression ?? 'gzip';
  const specs = opts.layers ?? [[{ path: 'hello.txt', content: 'hello world\n' }]];
  const layers: TestBlob[] = [];
  const diffIds: Digest[] = [];
  for (const spec of specs) {
    const tar = Buffer.isBuffer(spec) ? spec : await makeTar(spec);
    diffIds.push(digestBytes(tar));
    const bytes = compression === 'gzip' ? gzipSync(tar, { level: 1 }) : tar;
    const mt =
      format === 'docker'
        ? MediaType.DockerLayerGzip
        : compression === 'gzip'
          ? MediaType.OciLayerGzip
          : MediaType.OciLayer;
    layers.push(blob(mt, bytes));
  }
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const cfg: ImageConfig = {
    created: '2026-01-01T00:00:00Z',
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: '2026-01-01T00:00:00Z', created_by: `layer ${i}` })),
    ...opts.config,
  };
  const config = blob(
    format === 'docker' ? MediaType.DockerConfig : MediaType.OciConfig,
    Buffer.from(JSON.stringify(cfg)),
  );
  const manifestDoc = {
    schemaVersion: 2,
    mediaType: format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest,
    config: config.descriptor,
    layers: layers.map((l) => l.descriptor),
    ...(opts.annotations ? { annotations: opts.annotations } : {}),
  };
  const manifest = blob(manifestDoc.mediaType, Buffer.from(JSON.stringify(manifestDoc)));
  return { manifest, config, layers, diffIds, blobs: [manifest, config, ...layers] };
}

/** An index over images, each with its platform. */
export function makeIndex(
  images: readonly { image: TestImage; platform: Platform }[],
  format: 'oci' | 'docker' = 'oci',
): TestBlob {
  const doc = {
    schemaVersion: 2,
    mediaType: format === 'docker' ? MediaType.DockerManifestList : MediaType.OciIndex,
    manifests: images.map(({ image, platform }) => ({ ...image.manifest.descriptor, platform })),
  };
  return blob(doc.mediaType, Buffer.from(JSON.stringify(doc)));
}

/** Push an image (children first) and tag it. */
export async function pushImage(target: Target, image: TestImage, ref?: string): Promise<void> {
  for (const b of [...image.layers, image.config, image.manifest]) await target.push(b.descriptor, b.bytes);
  if (ref !== undefined) await target.tag(image.manifest.descriptor, ref);
}
