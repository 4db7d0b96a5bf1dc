// Shared by the runtime tests (it holds no tests itself): a busybox-static root filesystem
// on disk, and whether this machine can run containers at all.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

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
  return dir;
}
