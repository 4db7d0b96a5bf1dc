// importTarball: make a one-layer image from a root filesystem tarball (as `docker import`
// does) and write it to any Target. The tar is hashed (diffID), compressed and hashed again
// in one streaming pass; the config and manifest follow.

import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressStream, decompressStream, peekCompression } from '../compression/compression.js';
import type { Target } from '../content/types.js';
import { Digester } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { hostPlatform } from '../image/platform.js';
import { writeImage } from '../image/write.js';
import { tempName } from '../internal/fs.js';
import { type LayerCompression, layerMediaType } from '../spec/media-types.js';
import type { ContainerConfig, Descriptor, ImageConfig, Platform } from '../spec/types.js';

export interface ImportOptions {
  readonly platform?: Platform;
  readonly config?: ContainerConfig;
  /** Layer compression (default gzip). */
  readonly compression?: LayerCompression;
  /** The image's creation time (default: now, or SOURCE_DATE_EPOCH when set). */
  readonly created?: Date;
  readonly comment?: string;
  readonly tmpDir?: string;
  readonly signal?: AbortSignal;
}

function hashing(d: Digester): Transform {
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      d.update(chunk);
      cb(null, chunk);
    },
  });
}

function creationTime(opts: ImportOptions): string {
  if (opts.created) return opts.created.toISOString();
  const epoch = process.env.SOURCE_DATE_EPOCH;
  if (epoch && /^\d+$/.test(epoch)) return new Date(Number(epoch) * 1000).toISOString();
  return new Date().toISOString();
}

/** Import a tarball (plain, gzip or zstd) as a one-layer image into `target`, tagged `ref`. */
export async function importTarball(
  tarball: string | Readable,
  target: Target,
  ref: string | undefined,
  opts: ImportOptions = {},
): Promise<Descriptor> {
  const compression = opts.compression ?? 'gzip';
  const input = typeof tarball === 'string' ? createReadStream(tarball) : tarball;
  const { compression: inputCompression, stream } = await peekCompression(input);
  const diff = new Digester();
  const out = new Digester();
  const tmp = tempName(opts.tmpDir ?? tmpdir(), '.stratum-import-');
  const sopts = opts.signal ? { signal: opts.signal } : {};
  try {
    const stages: NodeJS.ReadWriteStream[] = [];
    if (inputCompression !== 'none') stages.push(decompressStream(inputCompression));
    stages.push(hashing(diff));
    if (compression !== 'none') stages.push(compressStream(compression));
    stages.push(hashing(out));
    await pipeline([stream, ...stages, createWriteStream(tmp, { flags: 'wx' })], sopts);
    if (diff.size === 0) throw new StratumError('ERR_INVALID_ARGUMENT', 'import: the tarball is empty');
    const layer: Descriptor = {
      mediaType: layerMediaType('oci', compression),
      digest: out.digest(),
      size: out.size,
    };
    await target.push(layer, createReadStream(tmp), sopts);
    const platform = opts.platform ?? hostPlatform();
    const created = creationTime(opts);
    const config: ImageConfig = {
      created,
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: opts.config ?? {},
      rootfs: { type: 'layers', diff_ids: [diff.digest()] },
      history: [
        { created, created_by: 'stratum import', ...(opts.comment ? { comment: opts.comment } : {}) },
      ],
    };
    const { manifest } = await writeImage(target, config, [layer], ref, sopts);
    return manifest;
  } finally {
    await rm(tmp, { force: true });
  }
}
