// The serve benchmark's image: ~100 MB in five gzip layers (48, 24, 16, 8 and 4 MiB of
// pseudo-random bytes, each a one-file tar), written as an OCI image layout with stratum's
// own LayoutTarget. The bytes come from AES-128-CTR keyed by a fixed seed, so every run
// serves the same digests. Random data does not compress: what goes over the wire is what
// is stored, and the size is what the figures say.

import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack } from 'tar-stream';
import { type Digest, Digester } from '../../dist/digest/digest.js';
import { openLayout } from '../../dist/layout/layout.js';
import { MediaType } from '../../dist/spec/media-types.js';
import type { Descriptor } from '../../dist/spec/types.js';

const MiB = 1024 * 1024;
export const LAYER_MIB = [48, 24, 16, 8, 4] as const;

export interface BenchImage {
  readonly dir: string;
  readonly ref: string;
  readonly manifest: Descriptor;
  readonly layers: readonly Descriptor[];
  /** Manifest, config and layers, bytes. */
  readonly totalSize: number;
}

class Hashing extends Transform {
  readonly digester = new Digester();
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.digester.update(chunk);
    cb(null, chunk);
  }
}

function randomStream(seed: string, size: number): Readable {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  let left = size;
  return new Readable({
    read() {
      const n = Math.min(MiB, left);
      left -= n;
      this.push(n > 0 ? cipher.update(Buffer.alloc(n)) : null);
    },
  });
}

async function layer(seed: string, mib: number, tmp: string): Promise<{ desc: Descriptor; diffId: Digest }> {
  const p = pack();
  const size = mib * MiB;
  const entry = p.entry({ name: `data/${mib}MiB.bin`, size, mode: 0o644, mtime: new Date(0) });
  const writing = pipeline(randomStream(`${seed}/${mib}`, size), entry).then(() => p.finalize());
  const tar = new Hashing();
  const gz = new Hashing();
  await Promise.all([writing, pipeline(p, tar, createGzip({ level: 1 }), gz, createWriteStream(tmp))]);
  return {
    desc: { mediaType: MediaType.OciLayerGzip, digest: gz.digester.digest(), size: gz.digester.size },
    diffId: tar.digester.digest(),
  };
}

/** Generate the image into a new OCI layout at `dir`, tagged `ref`. */
export async function generateImage(
  dir: string,
  seed = 'stratum-bench-serve-v1',
  ref = 'bench',
): Promise<BenchImage> {
  await mkdir(dir, { recursive: true });
  const layout = await openLayout(dir, { create: true });
  const layers: Descriptor[] = [];
  const diffIds: Digest[] = [];
  for (const mib of LAYER_MIB) {
    const tmp = join(dir, `.layer-${mib}.tmp`);
    const { desc, diffId } = await layer(seed, mib, tmp);
    await layout.push(desc, createReadStream(tmp));
    await rm(tmp);
    layers.push(desc);
    diffIds.push(diffId);
  }
  const config = Buffer.from(
    JSON.stringify({
      created: '2026-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
  const configDesc = descriptorOf(MediaType.OciConfig, config);
  await layout.push(configDesc, config);
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers }),
  );
  const manifestDesc = descriptorOf(MediaType.OciManifest, manifest);
  await layout.push(manifestDesc, manifest);
  await layout.tag(manifestDesc, ref);
  return {
    dir,
    ref,
    manifest: manifestDesc,
    layers,
    totalSize: manifest.length + config.length + layers.reduce((n, l) => n + l.size, 0),
  };
}

function descriptorOf(mediaType: string, bytes: Buffer): Descriptor {
  const d = new Digester();
  d.update(bytes);
  return { mediaType, digest: d.digest(), size: bytes.length };
}
