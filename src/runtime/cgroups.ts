// The cgroups stratum's containers live in: `<mount>/stratum/<id>` under every cgroup
// hierarchy mounted below /sys/fs/cgroup (v1: one per controller, plus the named systemd one
// and a v2 `unified` mount; v2 alone: the root itself). runc makes and removes them; this is
// the sweep after a crash, when runc no longer knows the container (it was killed while
// creating it) but its cgroups are still there: whatever runs in them is killed, then the
// directories are removed.

import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const CGROUP_ROOT = '/sys/fs/cgroup';
export const CGROUP_PARENT = 'stratum';

/** The directories the container's cgroup would have, existing or not. */
export async function cgroupDirs(id: string, root = CGROUP_ROOT): Promise<string[]> {
  const out: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch {
    return out;
  }
  // cgroup v2 alone: the root is the hierarchy
  if (entries.some((e) => e.name === 'cgroup.controllers')) return [join(root, CGROUP_PARENT, id)];
  for (const e of entries) {
    if (e.isDirectory()) out.push(join(root, e.name, CGROUP_PARENT, id));
  }
  return out;
}

/** The container's cgroup directories that exist. */
export async function existingCgroups(id: string, root = CGROUP_ROOT): Promise<string[]> {
  const out: string[] = [];
  for (const d of await cgroupDirs(id, root)) {
    if (
      await readdir(d).then(
        () => true,
        () => false,
      )
    )
      out.push(d);
  }
  return out;
}

async function pidsIn(dir: string): Promise<number[]> {
  const text = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => Number.parseInt(l, 10))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/** Kill what runs in the container's cgroups and remove them; returns the directories that could not be removed. */
export async function removeCgroups(id: string, root = CGROUP_ROOT): Promise<string[]> {
  const dirs = await existingCgroups(id, root);
  const left: string[] = [];
  for (const dir of dirs) {
    let removed = false;
    for (let attempt = 0; attempt < 50 && !removed; attempt++) {
      for (const pid of await pidsIn(dir)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      try {
        await rmdir(dir);
        removed = true;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') removed = true;
        else await sleep(20);
      }
    }
    if (!removed) left.push(dir);
  }
  return left;
}
