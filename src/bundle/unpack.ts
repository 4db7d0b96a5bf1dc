// Unpack an image into an OCI runtime bundle: `rootfs/` (every layer applied in order, in
// the plain form) and `config.json` (runtime-config.ts), as `umoci unpack` makes it.
//
// Each layer streams from the fetcher (which checks its size and digest as bytes flow) into
// applyLayer, which decompresses it as its first bytes say, hashes the uncompressed tar to
// its very end (bytes after the end-of-archive included) and applies it in the plain form.
// That diffID must equal the config's rootfs.diff_ids entry (ERR_DIGEST_MISMATCH otherwise).
// No temp file holds a layer.
//
// Nothing is half-made: the bundle is built in a staging directory — a sibling
// `BUNDLE.tmp-*` when the bundle directory does not exist yet, or `BUNDLE/.stratum-unpack-*`
// when it does (it may hold other files, never `rootfs` or `config.json`) — and moved into
// place at the end, config.json last. A failure or an abort removes the staging directory.
// The bundle directory is mode 0700, as umoci makes it: a rootfs holds setuid programs that
// other users must not reach.

import { constants } from 'node:fs';
import {
  chmod,
  chown,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  utimes,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Fetcher } from '../content/types.js';
import type { Digest } from '../digest/digest.js';
import { abortError, DigestMismatchError, StratumError } from '../errors/errors.js';
import { Image, Index } from '../image/image.js';
import { hostPlatform } from '../image/platform.js';
import { fsyncPath, makeDirs } from '../internal/fs.js';
import { type ApplyWarning, applyLayer, type Ownership } from '../layer/apply.js';
import { isIndexMediaType, layerCompressionOf } from '../spec/media-types.js';
import type { Descriptor, Platform } from '../spec/types.js';
import {
  makeRuntimeConfig,
  type RootlessIds,
  type RuntimeSpec,
  serializeRuntimeConfig,
} from './runtime-config.js';

export type UnpackProgress =
  | {
      readonly type: 'layer-start';
      readonly index: number;
      readonly count: number;
      readonly layer: Descriptor;
    }
  | {
      /** Compressed bytes of this layer read so far. */
      readonly type: 'layer-progress';
      readonly index: number;
      readonly layer: Descriptor;
      readonly bytes: number;
    }
  | {
      readonly type: 'layer-done';
      readonly index: number;
      readonly layer: Descriptor;
      readonly diffId: Digest;
    }
  | {
      /** Something applyLayer could not do here (a device as non-root, a trusted.* xattr...). */
      readonly type: 'warning';
      readonly index: number;
      readonly layer: Descriptor;
      readonly warning: ApplyWarning;
    }
  | { readonly type: 'config'; readonly path: string };

export interface UnpackOptions {
  /** A rootless bundle (container root maps to the calling user, or to these ids). */
  readonly rootless?: boolean | RootlessIds;
  /** For an index: the platform to unpack (default this machine's). */
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
  readonly onProgress?: (e: UnpackProgress) => void;
  /** The container's hostname in config.json (default `stratum`). */
  readonly hostname?: string;
}

export interface UnpackResult {
  /** The bundle directory (absolute). */
  readonly bundle: string;
  readonly rootfs: string;
  /** The image manifest that was unpacked. */
  readonly manifest: Descriptor;
  /** What was written to config.json. */
  readonly config: RuntimeSpec;
  /** The diffIDs applied, in order. */
  readonly diffIds: readonly Digest[];
  /** What could not be done here (devices skipped, xattrs not settable), by layer (0-based). */
  readonly warnings: readonly (ApplyWarning & { readonly layer: number })[];
}

/** An image to unpack: an Image view, or a fetcher and a manifest-or-index descriptor. */
export type UnpackSource = Image | { readonly fetcher: Fetcher; readonly descriptor: Descriptor };

/** The name of the rootfs directory in a bundle. */
export const ROOTFS = 'rootfs';
export const CONFIG_JSON = 'config.json';

async function imageOf(source: UnpackSource, platform: Platform | undefined): Promise<Image> {
  if (source instanceof Image) return source;
  if (isIndexMediaType(source.descriptor.mediaType)) {
    return new Index(source.fetcher, source.descriptor).image(platform ?? hostPlatform());
  }
  return new Image(source.fetcher, source.descriptor);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/**
 * Remove a tree even where the caller lacks write permission on directories of it (a rootless
 * unpack of a 0555 directory): make each directory writable, then remove.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw e;
  }
  const open = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isDirectory()) return;
    await chmod(p, 0o700).catch(() => {});
    for (const name of await readdir(p).catch(() => [] as string[])) await open(join(p, name));
  };
  await open(path);
  await rm(path, { recursive: true, force: true });
}

function ownership(rootless: UnpackOptions['rootless']): Ownership | undefined {
  if (!rootless) return undefined;
  const ids = rootless === true ? callingIds() : rootless;
  // only root can give files to someone else; anyone else's files are theirs anyway
  return isRoot() ? { uid: ids.uid, gid: ids.gid } : 'caller';
}

function callingIds(): RootlessIds {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}

function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

async function applyOne(
  image: Image,
  rootfs: string,
  layer: Descriptor,
  index: number,
  diffId: Digest,
  opts: UnpackOptions,
): Promise<readonly ApplyWarning[]> {
  if (layerCompressionOf(layer.mediaType) === undefined) {
    throw new StratumError(
      'ERR_UNSUPPORTED_MEDIA_TYPE',
      `layer ${index + 1} (${layer.digest}) has media type ${JSON.stringify(layer.mediaType)}, which is not a tar layer stratum can unpack`,
    );
  }
  const onProgress = opts.onProgress;
  let bytes = 0;
  const fetched = await image.fetcher.fetch(layer, {
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(onProgress
      ? {
          onProgress: (n: number) => {
            bytes += n;
            onProgress({ type: 'layer-progress', index, layer, bytes });
          },
        }
      : {}),
  });
  const owner = ownership(opts.rootless);
  // applyLayer detects the compression from the bytes (docker archives hold plain tars under
  // gzip media types), reads the stream to its very end and hashes the uncompressed tar
  let result: Awaited<ReturnType<typeof applyLayer>>;
  try {
    result = await applyLayer(rootfs, fetched, {
      form: 'plain',
      // rootless: a user namespace cannot use device nodes, and an unprivileged caller cannot
      // make them; they are skipped (with a warning) whoever unpacks
      ...(owner ? { owner, devices: 'skip' as const } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(onProgress
        ? { onWarning: (warning: ApplyWarning) => onProgress({ type: 'warning', index, layer, warning }) }
        : {}),
    });
  } finally {
    fetched.destroy();
  }
  if (result.diffID !== diffId) {
    throw new DigestMismatchError(
      diffId,
      result.diffID,
      `layer ${index + 1} (${layer.digest}) uncompressed (diffID)`,
    );
  }
  return result.warnings;
}

/** Where to build, and how to move the result into place. */
async function stage(bundle: string): Promise<{ staging: string; commit: () => Promise<void> }> {
  let st: import('node:fs').Stats | undefined;
  try {
    st = await lstat(bundle);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (st === undefined) {
    await makeDirs(dirname(bundle));
    const staging = await mkdtemp(`${bundle}.tmp-`);
    return {
      staging,
      commit: async () => {
        await chmod(staging, 0o700);
        try {
          await rename(staging, bundle);
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') {
            throw new StratumError(
              'ERR_INVALID_ARGUMENT',
              `cannot unpack into ${bundle}: it was created by someone else while unpacking`,
            );
          }
          throw e;
        }
        await fsyncPath(dirname(bundle), true).catch(() => {});
      },
    };
  }
  if (!st.isDirectory()) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot unpack into ${bundle}: it exists and is not a directory`,
    );
  }
  for (const name of [ROOTFS, CONFIG_JSON]) {
    if (await exists(join(bundle, name))) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `cannot unpack into ${bundle}: it already holds ${name} (remove it, or choose another directory)`,
      );
    }
  }
  const staging = await mkdtemp(join(bundle, '.stratum-unpack-'));
  return {
    staging,
    commit: async () => {
      await chmod(bundle, 0o700);
      await rename(join(staging, ROOTFS), join(bundle, ROOTFS));
      await rename(join(staging, CONFIG_JSON), join(bundle, CONFIG_JSON));
      await rmdir(staging);
      await fsyncPath(bundle, true).catch(() => {});
    },
  };
}

/**
 * Unpack an image into an OCI runtime bundle at `bundleDir` (created if missing; an existing
 * directory must not hold `rootfs` or `config.json`). For an index, `platform` picks the
 * image (default this machine's).
 */
export async function unpackImage(
  source: UnpackSource,
  bundleDir: string,
  opts: UnpackOptions = {},
): Promise<UnpackResult> {
  const signal = opts.signal;
  signal?.throwIfAborted();
  const image = await imageOf(source, opts.platform);
  const [manifest, config] = await Promise.all([image.manifest(), image.config()]);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== manifest.layers.length) {
    throw new StratumError(
      'ERR_INVALID_DOCUMENT',
      `image ${image.descriptor.digest}: the manifest has ${manifest.layers.length} layers but the config lists ${diffIds.length} diff_ids`,
    );
  }
  if (config.os !== 'linux') {
    throw new StratumError(
      'ERR_UNSUPPORTED',
      `image ${image.descriptor.digest} is for os ${JSON.stringify(config.os)}: only linux images can be unpacked to a bundle`,
    );
  }

  const bundle = resolve(bundleDir);
  const { staging, commit } = await stage(bundle);
  let done = false;
  try {
    const rootfs = join(staging, ROOTFS);
    await mkdir(rootfs, { mode: 0o755 });
    await chmod(rootfs, 0o755);
    // the rootfs belongs to the container's root: the caller's ids when rootless
    if (isRoot()) {
      const ids = opts.rootless
        ? opts.rootless === true
          ? callingIds()
          : opts.rootless
        : { uid: 0, gid: 0 };
      await chown(rootfs, ids.uid, ids.gid);
    }
    // images seldom say what the root's times are: start from the epoch, as umoci does
    await utimes(rootfs, 0, 0);
    const warnings: (ApplyWarning & { layer: number })[] = [];
    for (const [index, layer] of manifest.layers.entries()) {
      if (signal?.aborted) throw abortError(signal);
      opts.onProgress?.({ type: 'layer-start', index, count: manifest.layers.length, layer });
      const diffId = diffIds[index] as Digest;
      for (const w of await applyOne(image, rootfs, layer, index, diffId, opts)) {
        warnings.push({ ...w, layer: index });
      }
      opts.onProgress?.({ type: 'layer-done', index, layer, diffId });
    }
    if (signal?.aborted) throw abortError(signal);
    const spec = await makeRuntimeConfig(config, {
      rootfs,
      rootfsName: ROOTFS,
      ...(opts.rootless ? { rootless: opts.rootless } : {}),
      ...(opts.hostname ? { hostname: opts.hostname } : {}),
    });
    const fh = await open(
      join(staging, CONFIG_JSON),
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
      0o644,
    );
    try {
      await fh.writeFile(serializeRuntimeConfig(spec));
      await fh.chmod(0o644);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (signal?.aborted) throw abortError(signal);
    await commit();
    done = true;
    opts.onProgress?.({ type: 'config', path: join(bundle, CONFIG_JSON) });
    return {
      bundle,
      rootfs: join(bundle, ROOTFS),
      manifest: image.descriptor,
      config: spec,
      diffIds: [...diffIds],
      warnings,
    };
  } catch (e) {
    if (signal?.aborted && !(e instanceof StratumError && e.code === 'ERR_ABORTED')) throw abortError(signal);
    throw e;
  } finally {
    if (!done) await removeTree(staging).catch(() => {});
  }
}
