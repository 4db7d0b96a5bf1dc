// Tidying a RUN step's overlay upper directory before it becomes a layer, as buildkit's
// mount-stub cleaner does: the runtime creates mount points it needs (/proc, /dev, /sys,
// /etc/resolv.conf, ...) when the image lacks them; those empty stubs are removed, and so
// are directories that were only copied up to hold them (empty, not opaque, same owner and
// mode as below). `RUN true` then makes no layer, as with docker.

import { execFile } from 'node:child_process';
import { lstat, readdir, rm, rmdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** Mount points a RUN container may create in its root. */
export const MOUNT_STUBS = [
  '/proc',
  '/sys',
  '/dev',
  '/etc/resolv.conf',
  '/etc/hosts',
  '/etc/hostname',
] as const;

/** Which stubs do not exist in `rootfs` now (call before running). */
export async function missingStubs(
  rootfs: string,
  paths: readonly string[] = MOUNT_STUBS,
): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    if ((await lstat(join(rootfs, p)).catch(() => undefined)) === undefined) out.push(p);
  }
  return out;
}

async function isOpaque(path: string): Promise<boolean> {
  try {
    const { stdout } = await exec('getfattr', [
      '--absolute-names',
      '--only-values',
      '-n',
      'trusted.overlay.opaque',
      path,
    ]);
    return stdout.trim() === 'y';
  } catch {
    return false;
  }
}

/**
 * After the run (the overlay unmounted): remove from `upper` the stubs in `created` (empty
 * directories or empty files), then their parent directories that are empty, not opaque and
 * match the topmost lower layer's directory (mode and owner). `lowers` top first.
 */
export async function removeStubs(
  upper: string,
  lowers: readonly string[],
  created: readonly string[],
): Promise<void> {
  const parents = new Set<string>();
  for (const p of created) {
    const host = join(upper, p);
    const st = await lstat(host).catch(() => undefined);
    if (st === undefined) continue;
    if (st.isDirectory()) {
      if ((await readdir(host)).length > 0) continue;
      await rmdir(host);
    } else if (st.isFile() && st.size === 0) {
      await rm(host);
    } else continue;
    for (let d = posix.dirname(p); d !== '/'; d = posix.dirname(d)) parents.add(d);
  }
  const byDepth = [...parents].sort((a, b) => b.split('/').length - a.split('/').length);
  for (const d of byDepth) {
    const host = join(upper, d);
    const st = await lstat(host).catch(() => undefined);
    if (!st?.isDirectory() || (await readdir(host)).length > 0 || (await isOpaque(host))) continue;
    let below: import('node:fs').Stats | undefined;
    for (const l of lowers) {
      below = await lstat(join(l, d)).catch(() => undefined);
      if (below !== undefined) break;
    }
    if (
      below?.isDirectory() &&
      (below.mode & 0o7777) === (st.mode & 0o7777) &&
      below.uid === st.uid &&
      below.gid === st.gid
    ) {
      await rmdir(host);
    }
  }
}
