// Atomic file writes (temp file, fsync, rename, fsync of the directory) and small fs helpers.

import { randomBytes } from 'node:crypto';
import { constants, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export function tempName(dir: string, prefix = '.tmp-'): string {
  return join(dir, `${prefix}${process.pid}-${randomBytes(6).toString('hex')}`);
}

export async function fsyncPath(path: string, dir = false): Promise<void> {
  const fh = await open(path, dir ? constants.O_RDONLY | constants.O_DIRECTORY : constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Write bytes to `path` atomically: temp file in the same dir, fsync, rename, fsync dir. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  opts: { mode?: number } = {},
): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = tempName(dir);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncPath(dir, true).catch(() => {});
}

/**
 * Stream into a temp file in `tmpDir`, fsync it, then let `commit(tmp)` verify and rename.
 * On any failure the temp file is removed.
 */
export async function writeStreamAtomic(
  tmpDir: string,
  source: Readable,
  commit: (tmpPath: string) => Promise<void>,
  opts: { signal?: AbortSignal } = {},
): Promise<void> {
  await mkdir(tmpDir, { recursive: true });
  const tmp = tempName(tmpDir);
  try {
    const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
    await pipeline(source, out, opts.signal ? { signal: opts.signal } : {});
    await fsyncPath(tmp);
    await commit(tmp);
  } finally {
    await rm(tmp, { force: true });
  }
}

export async function pathExists(path: string): Promise<boolean> {
  const { access } = await import('node:fs/promises');
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * `mkdir -p`, one directory at a time. Node's recursive mkdir never returns for a path under
 * /proc (the kernel answers ENOENT to every attempt there and Node keeps retrying); this
 * finds the deepest existing ancestor and creates what is missing below it, so such a path
 * fails at once with the kernel's error.
 */
export async function makeDirs(path: string, mode?: number): Promise<void> {
  const missing: string[] = [];
  for (let p = resolve(path); ; ) {
    try {
      await stat(p);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      missing.push(p);
      const parent = dirname(p);
      if (parent === p) break;
      p = parent;
    }
  }
  for (const d of missing.reverse()) {
    try {
      await mkdir(d, mode);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
}
