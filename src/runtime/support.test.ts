// Shared by the runtime tests (it holds no tests itself): a busybox-static root filesystem
// on disk, and whether this machine can run containers at all.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openStore } from '../layout/store.js';
import { importTarball } from '../ops/import.js';
import { parseNormalizedReference } from '../reference/reference.js';
import type { ContainerConfig } from '../spec/types.js';
import { storeRefName } from '../transport/open.js';

export const BUSYBOX = '/bin/busybox';

/** Why runtime tests cannot run here, or undefined. */
export function runtimeSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (namespaces, mounts, cgroups)';
  if (!existsSync(BUSYBOX)) return `needs ${BUSYBOX} (apt-get install busybox-static)`;
  try {
    execFileSync('runc', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'needs runc (apt-get install runc)';
  }
  return undefined;
}

export const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n';
export const GROUP = 'root:x:0:\nuser:x:1000:\nextra:x:2000:user\n';

/** The applets of this machine's busybox. */
export function busyboxApplets(): string[] {
  return execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' })
    .split('\n')
    .filter((a) => a !== '' && a !== 'busybox');
}

/** A busybox root filesystem at `dir` (bin/ with applet symlinks, etc/passwd, etc/group, tmp, home/user). */
export async function makeBusyboxRootfs(dir: string): Promise<string> {
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'sys', 'dev', 'home/user']) {
    await mkdir(join(dir, d), { recursive: true });
  }
  await chmod(join(dir, 'tmp'), 0o1777);
  await copyFile(BUSYBOX, join(dir, 'bin', 'busybox'));
  for (const a of busyboxApplets()) await symlink('busybox', join(dir, 'bin', a)).catch(() => {});
  await writeFile(join(dir, 'etc', 'passwd'), PASSWD);
  await writeFile(join(dir, 'etc', 'group'), GROUP);
  // not mkdir's usual mode: whether the image's metadata survives (or not) is visible
  await chmod(join(dir, 'etc'), 0o775);
  return dir;
}

/**
 * A store at `root` holding a busybox image tagged `name` (Cmd `sh`, the passwd and group
 * above), made from a tar of makeBusyboxRootfs with importTarball.
 */
export async function makeBusyboxStore(
  root: string,
  work: string,
  name = 'busybox:test',
  config: ContainerConfig = { Cmd: ['sh'], Env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'] },
): Promise<{ root: string; name: string }> {
  const rootfs = await makeBusyboxRootfs(join(work, 'busybox-rootfs'));
  const tar = join(work, 'busybox.tar');
  execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', tar, '.']);
  const store = await openStore({ root });
  try {
    await importTarball(tar, store, storeRefName(parseNormalizedReference(name)), { config });
  } finally {
    await store.close();
  }
  return { root, name };
}
