// commit: a container's changes as a new image. The overlay's upper directory becomes one
// gzip layer (layer/diff.ts diffOverlayUpper: whiteout devices -> `.wh.` entries, opaque
// directories -> `.wh..wh..opq`), pushed to the store; the image's config gets the layer's
// diffID appended to rootfs.diff_ids, a history entry (the container's command, or the
// comment) and a new `created` time; its runtime config (Env, Cmd, ...) is kept as it was.
// The manifest lists the image's layers and the new one (image/write.ts writeImage).
//
// A running container is paused (runc pause: the freezer cgroup) while its upper directory
// is read, so the layer is one consistent moment of it, and resumed after.

import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Fetcher, Pusher, Tagger } from '../content/types.js';
import type { Digest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { Image } from '../image/image.js';
import { writeImage } from '../image/write.js';
import { tempName } from '../internal/fs.js';
import { diffOverlayUpper } from '../layer/diff.js';
import type { Descriptor, HistoryEntry, ImageConfig } from '../spec/types.js';
import type { Containers } from './containers.js';
import { Runtime } from './runc.js';

export interface CommitOptions {
  /** The history entry's comment. */
  readonly comment?: string;
  readonly author?: string;
  /** Pause a running container while its changes are read (default true). */
  readonly pause?: boolean;
  /** The image's creation time (default now, or SOURCE_DATE_EPOCH when set). */
  readonly created?: Date;
  readonly signal?: AbortSignal;
}

export interface CommitResult {
  readonly manifest: Descriptor;
  readonly config: Descriptor;
  readonly layer: Descriptor;
  readonly diffId: Digest;
  /** Tar entries in the new layer. */
  readonly entries: number;
}

function creationTime(opts: CommitOptions): string {
  if (opts.created) return opts.created.toISOString();
  const epoch = process.env.SOURCE_DATE_EPOCH;
  if (epoch && /^\d+$/.test(epoch)) return new Date(Number(epoch) * 1000).toISOString();
  return new Date().toISOString();
}

/** The `created_by` of a commit's history entry: the container's command, shell-quoted. */
export function commandLine(args: readonly string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
}

/**
 * Commit container `ref` (id, name or id prefix) of `containers` as a new image in `store`
 * (which also holds the container's image), tagged `tag` when given.
 */
export async function commitContainer(
  containers: Containers,
  store: Fetcher & Pusher & Tagger,
  ref: string,
  tag: string | undefined,
  opts: CommitOptions = {},
): Promise<CommitResult> {
  const info = await containers.inspect(ref);
  if (info.state === 'creating' || info.state === 'dead') {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `container ${info.name} is ${info.state}: there is nothing to commit`,
    );
  }
  const base = new Image(store, info.manifest);
  let config: ImageConfig;
  let layers: readonly Descriptor[];
  try {
    [config, layers] = await Promise.all([base.config(), base.layers()]);
  } catch (e) {
    throw new StratumError(
      'ERR_NOT_FOUND',
      `cannot commit ${info.name}: its image ${info.image} (${info.manifest.digest}) is no longer in the store: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const dir = containers.dirOf(info.id);
  const layerFile = tempName(dir, '.commit-');
  const rt = new Runtime(info.runtime, containers.runtimeRoot);
  const pause = (opts.pause ?? true) && info.state === 'running';
  try {
    if (pause) await rt.exec(['pause', info.id], `pause container ${info.name}`);
    let diff: Awaited<ReturnType<typeof diffOverlayUpper>>;
    try {
      diff = await diffOverlayUpper(containers.upperOf(info.id), {
        destination: layerFile,
        compression: 'gzip',
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } finally {
      if (pause) await rt.exec(['resume', info.id], `resume container ${info.name}`).catch(() => {});
    }
    const layer: Descriptor = { mediaType: diff.mediaType, digest: diff.digest, size: diff.size };
    await store.push(layer, createReadStream(layerFile), opts.signal ? { signal: opts.signal } : {});
    const created = creationTime(opts);
    const entry: HistoryEntry = {
      created,
      created_by: commandLine(info.args),
      ...(opts.author ? { author: opts.author } : {}),
      comment: opts.comment ?? `stratum commit ${info.name}`,
    };
    const next: ImageConfig = {
      ...config,
      created,
      ...(opts.author ? { author: opts.author } : {}),
      rootfs: { type: 'layers', diff_ids: [...config.rootfs.diff_ids, diff.diffId] },
      history: [...(config.history ?? []), entry],
    };
    const written = await writeImage(
      store,
      next,
      [...layers, layer],
      tag,
      opts.signal ? { signal: opts.signal } : {},
    );
    return {
      manifest: written.manifest,
      config: written.config,
      layer,
      diffId: diff.diffId,
      entries: diff.entries,
    };
  } finally {
    await rm(layerFile, { force: true });
  }
}
