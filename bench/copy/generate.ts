// The benchmark image: five gzip layers (a tree of ~24,000 small files, one large random
// file, log-like text, a mix of big files, a small top layer), generated deterministically
// from a fixed seed and written as an OCI image layout with stratum's own LayoutTarget.
// The bytes come from AES-128-CTR keyed by the seed (fast and reproducible); text is drawn
// from a fixed vocabulary so it compresses like real files do. Same seed, same digests.

import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { type Pack, pack } from 'tar-stream';
import { type Digest, Digester } from '../../dist/digest/digest.js';
import { openLayout } from '../../dist/layout/layout.js';
import { MediaType } from '../../dist/spec/media-types.js';
import type { Descriptor } from '../../dist/spec/types.js';

const MiB = 1024 * 1024;

/** A deterministic byte source. */
export class Rng {
  readonly #cipher;
  #pool: Buffer = Buffer.alloc(0);
  #at = 0;
  constructor(seed: string) {
    const key = createHash('sha256').update(seed).digest().subarray(0, 16);
    this.#cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  }
  bytes(n: number): Buffer {
    return this.#cipher.update(Buffer.alloc(n));
  }
  /** A uniform integer in [0, n). */
  int(n: number): number {
    if (this.#at + 4 > this.#pool.length) {
      this.#pool = this.bytes(64 * 1024);
      this.#at = 0;
    }
    const v = this.#pool.readUInt32LE(this.#at);
    this.#at += 4;
    return v % n;
  }
  /** A size between lo and hi, spread evenly on a log scale. */
  logSize(lo: number, hi: number): number {
    const f = this.int(1_000_000) / 1_000_000;
    return Math.round(lo * (hi / lo) ** f);
  }
}

const WORDS = (
  'the of and to in is for on that with as at by from this be are or an it not was have has ' +
  'service request response latency error warning info debug user session cache hit miss ' +
  'database query insert update delete select table index commit rollback connection pool ' +
  'timeout retry backoff upstream downstream handler router middleware token auth login ' +
  'config value default option enabled disabled started stopped listening port address ' +
  'image layer blob manifest digest registry repository tag push pull copy mount verify'
).split(' ');

/** Log-like text of exactly `n` bytes. */
function text(rng: Rng, n: number): Buffer {
  const parts: string[] = [];
  let len = 0;
  let line = 0;
  while (len < n) {
    const words: string[] = [];
    const count = 4 + rng.int(12);
    for (let i = 0; i < count; i++) words.push(WORDS[rng.int(WORDS.length)]!);
    const s = `2024-05-${String(1 + (line % 28)).padStart(2, '0')}T${String(line % 24).padStart(2, '0')}:${String(line % 60).padStart(2, '0')}:${String(rng.int(60)).padStart(2, '0')}Z ${['INFO', 'WARN', 'DEBUG', 'ERROR'][rng.int(4)]} id=${rng.int(1_000_000)} ${words.join(' ')} latency=${rng.int(5000)}ms\n`;
    parts.push(s);
    len += s.length;
    line++;
  }
  return Buffer.from(parts.join(''), 'latin1').subarray(0, n);
}

type Content = 'random' | 'text' | 'zero';

interface FileSpec {
  readonly name: string;
  readonly size: number;
  readonly content: Content;
}

interface LayerSpec {
  readonly name: string;
  readonly dirs: readonly string[];
  readonly files: readonly FileSpec[];
}

function chunkOf(rng: Rng, content: Content, n: number): Buffer {
  if (content === 'random') return rng.bytes(n);
  if (content === 'zero') return Buffer.alloc(n);
  return text(rng, n);
}

const EPOCH = new Date(0);

function addEntry(p: Pack, header: Parameters<Pack['entry']>[0], body?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (body === undefined) p.entry(header, cb);
    else p.entry(header, body, cb);
  });
}

async function writeTar(p: Pack, rng: Rng, layer: LayerSpec): Promise<void> {
  for (const d of layer.dirs) {
    await addEntry(p, { name: d, type: 'directory', mode: 0o755, mtime: EPOCH, uid: 0, gid: 0 });
  }
  for (const f of layer.files) {
    const header = { name: f.name, type: 'file' as const, mode: 0o644, mtime: EPOCH, uid: 0, gid: 0 };
    if (f.size <= MiB) {
      await addEntry(p, { ...header, size: f.size }, chunkOf(rng, f.content, f.size));
      continue;
    }
    // big files go in as a stream of 1 MiB pieces, respecting backpressure
    await new Promise<void>((resolve, reject) => {
      const entry = p.entry({ ...header, size: f.size }, (err) => (err ? reject(err) : resolve()));
      let left = f.size;
      const write = () => {
        while (left > 0) {
          const n = Math.min(MiB, left);
          left -= n;
          if (!entry.write(chunkOf(rng, f.content, n))) {
            entry.once('drain', write);
            return;
          }
        }
        entry.end(() => {});
      };
      write();
    });
  }
  p.finalize();
}

/** The five layers. */
function layerSpecs(rng: Rng): LayerSpec[] {
  // 1: a tree of many small files, half random, half text, 64 B .. 16 KiB
  const small: FileSpec[] = [];
  const smallDirs: string[] = ['usr/', 'usr/share/', 'usr/share/bench/'];
  for (let d = 0; d < 240; d++) {
    const dir = `usr/share/bench/d${String(d).padStart(3, '0')}/`;
    smallDirs.push(dir);
    for (let i = 0; i < 100; i++) {
      const random = rng.int(2) === 0;
      small.push({
        name: `${dir}f${String(i).padStart(3, '0')}.${random ? 'bin' : 'txt'}`,
        size: rng.logSize(64, 16 * 1024),
        content: random ? 'random' : 'text',
      });
    }
  }
  // 4: big files of each kind
  const mixed: FileSpec[] = [];
  for (let i = 0; i < 40; i++) mixed.push({ name: `srv/data/r${i}.bin`, size: MiB, content: 'random' });
  for (let i = 0; i < 24; i++) mixed.push({ name: `srv/data/t${i}.log`, size: MiB, content: 'text' });
  mixed.push({ name: 'srv/data/zeros.img', size: 16 * MiB, content: 'zero' });
  return [
    { name: 'small-files', dirs: smallDirs, files: small },
    {
      name: 'large-random',
      dirs: ['opt/', 'opt/bench/'],
      files: [{ name: 'opt/bench/random.bin', size: 112 * MiB, content: 'random' }],
    },
    {
      name: 'text',
      dirs: ['var/', 'var/log/', 'var/log/bench/'],
      files: Array.from({ length: 12 }, (_, i) => ({
        name: `var/log/bench/app-${i}.log`,
        size: 4 * MiB,
        content: 'text' as const,
      })),
    },
    { name: 'mixed', dirs: ['srv/', 'srv/data/'], files: mixed },
    {
      name: 'top',
      dirs: ['etc/', 'etc/bench/'],
      files: [
        ...Array.from({ length: 20 }, (_, i) => ({
          name: `etc/bench/conf-${i}.conf`,
          size: 200 + i * 50,
          content: 'text' as const,
        })),
        { name: 'etc/bench/key.bin', size: MiB, content: 'random' },
      ],
    },
  ];
}

class Hashing extends Transform {
  readonly digester = new Digester();
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.digester.update(chunk);
    cb(null, chunk);
  }
}

export interface LayerInfo {
  readonly name: string;
  readonly files: number;
  readonly descriptor: Descriptor;
  readonly diffId: Digest;
  readonly uncompressedSize: number;
}

export interface GeneratedImage {
  /** The OCI layout directory. */
  readonly dir: string;
  /** The ref name of the image in the layout. */
  readonly ref: string;
  readonly manifest: Descriptor;
  readonly layers: readonly LayerInfo[];
  /** Sum of the manifest, config and compressed layer sizes. */
  readonly totalSize: number;
  readonly uncompressedSize: number;
  readonly files: number;
}

async function buildLayer(spec: LayerSpec, seed: string, tmp: string): Promise<LayerInfo & { tmp: string }> {
  const rng = new Rng(`${seed}/${spec.name}`);
  const p = pack();
  const uncompressed = new Hashing();
  const compressed = new Hashing();
  const writing = writeTar(p, rng, spec);
  await Promise.all([
    writing,
    pipeline(p, uncompressed, createGzip({ level: 6 }), compressed, createWriteStream(tmp)),
  ]);
  return {
    name: spec.name,
    files: spec.files.length,
    tmp,
    diffId: uncompressed.digester.digest(),
    uncompressedSize: uncompressed.digester.size,
    descriptor: {
      mediaType: MediaType.OciLayerGzip,
      digest: compressed.digester.digest(),
      size: compressed.digester.size,
    },
  };
}

/** Generate the image into a new OCI layout at `dir` (tagged `ref`). */
export async function generateImage(
  dir: string,
  seed = 'stratum-bench-copy-v1',
  ref = 'bench',
): Promise<GeneratedImage> {
  const layout = await openLayout(dir, { create: true });
  const specs = layerSpecs(new Rng(`${seed}/specs`));
  // two at a time: gzip runs on the thread pool, the tar and the bytes on the main thread
  const built: (LayerInfo & { tmp: string })[] = [];
  for (let i = 0; i < specs.length; i += 2) {
    const batch = specs.slice(i, i + 2);
    built.push(
      ...(await Promise.all(
        batch.map((s, j) => buildLayer(s, seed, join(dir, `.bench-layer-${i + j}.tmp`))),
      )),
    );
  }
  for (const l of built) {
    await layout.push(l.descriptor, createReadStream(l.tmp));
    await rm(l.tmp);
  }
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-05-01T00:00:00Z',
      architecture: arch,
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: built.map((l) => l.diffId) },
      history: built.map((l) => ({ created: '2024-05-01T00:00:00Z', created_by: `bench layer ${l.name}` })),
    }),
  );
  const configDesc = descriptorOf(MediaType.OciConfig, config);
  await layout.push(configDesc, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: configDesc,
      layers: built.map((l) => l.descriptor),
    }),
  );
  const manifestDesc = descriptorOf(MediaType.OciManifest, manifest);
  await layout.push(manifestDesc, manifest);
  await layout.tag(manifestDesc, ref);
  await layout.close();
  const layers = built.map(({ tmp: _t, ...l }) => l);
  return {
    dir,
    ref,
    manifest: manifestDesc,
    layers,
    totalSize: manifest.length + config.length + layers.reduce((n, l) => n + l.descriptor.size, 0),
    uncompressedSize: layers.reduce((n, l) => n + l.uncompressedSize, 0),
    files: layers.reduce((n, l) => n + l.files, 0),
  };
}

function descriptorOf(mediaType: string, bytes: Buffer): Descriptor {
  const d = new Digester();
  d.update(bytes);
  return { mediaType, digest: d.digest(), size: bytes.length };
}
