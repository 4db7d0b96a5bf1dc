// The cgroups stratum's containers live in. The runtime spec gives runc a RELATIVE
// cgroupsPath, `stratum/<id>`, which runc (cgroupfs driver) puts under the cgroup its own
// process is in, in every hierarchy: with cgroup v1 that is one directory per mounted
// hierarchy (cpu, memory, pids, ..., the named systemd one, and a v2 `unified` mount), each
// below the caller's cgroup in that hierarchy (not necessarily the root: a process may sit in
// /some/service in one hierarchy and / in another).
//
// containerCgroupDirs() computes those directories for a child of this process (from
// /proc/self/cgroup and the cgroup mounts in /proc/self/mountinfo); the container record
// keeps them, since a later `rm -f` may run in another cgroup. runc makes and removes them;
// removeCgroups() is the sweep after a crash, when runc no longer knows the container (it was
// killed while creating it) but its cgroups are still there: whatever runs in them is
// killed, then the directories are removed.

import { readFile, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const CGROUP_PARENT = 'stratum';

/** Options that are not controller names in a v1 cgroup mount's super options. */
const NOT_CONTROLLERS = new Set([
  'rw',
  'ro',
  'relatime',
  'noatime',
  'nosuid',
  'nodev',
  'noexec',
  'xattr',
  'clone_children',
  'noprefix',
]);

interface CgroupMount {
  readonly point: string;
  readonly version: 1 | 2;
  /** v1: the controllers (and `name=...`) of the hierarchy. */
  readonly controllers: ReadonlySet<string>;
}

function decodeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** The cgroup mounts of a mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const [fstype, , superOpts = ''] = line.slice(sep + 3).split(' ');
    const point = decodeOctal(left[4] ?? '');
    if (fstype === 'cgroup2') out.push({ point, version: 2, controllers: new Set() });
    else if (fstype === 'cgroup') {
      out.push({
        point,
        version: 1,
        controllers: new Set(superOpts.split(',').filter((o) => o !== '' && !NOT_CONTROLLERS.has(o))),
      });
    }
  }
  return out;
}

/** `/proc/<pid>/cgroup` lines: hierarchy id, controllers, path. */
export function parseProcCgroup(text: string): { controllers: string[]; path: string }[] {
  const out: { controllers: string[]; path: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    out.push({ controllers: (m[2] ?? '').split(',').filter(Boolean), path: m[3] ?? '/' });
  }
  return out;
}

/** The cgroup directories a container `id` gets when runc runs as a child of this process. */
export async function containerCgroupDirs(id: string): Promise<string[]> {
  let mounts: CgroupMount[];
  let own: ReturnType<typeof parseProcCgroup>;
  try {
    mounts = parseCgroupMounts(await readFile('/proc/self/mountinfo', 'utf8'));
    own = parseProcCgroup(await readFile('/proc/self/cgroup', 'utf8'));
  } catch {
    return [];
  }
  const out = new Set<string>();
  for (const m of mounts) {
    const entry =
      m.version === 2
        ? own.find((e) => e.controllers.length === 0)
        : own.find((e) => e.controllers.length > 0 && e.controllers.every((c) => m.controllers.has(c)));
    if (!entry) continue;
    out.add(join(m.point, entry.path, CGROUP_PARENT, id));
  }
  return [...out];
}

/** Those of `dirs` that exist. */
export async function existingDirs(dirs: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of dirs) {
    if (
      await stat(d).then(
        (s) => s.isDirectory(),
        () => false,
      )
    )
      out.push(d);
  }
  return out;
}

/** The container's cgroup directories (as this process would place them) that exist. */
export async function existingCgroups(id: string, known: readonly string[] = []): Promise<string[]> {
  return existingDirs([...new Set([...known, ...(await containerCgroupDirs(id))])]);
}

async function pidsIn(dir: string): Promise<number[]> {
  const text = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => Number.parseInt(l, 10))
    .filter((n) => Number.isInteger(n) && n > 0);
}

/**
 * Kill what runs in the container's cgroups (`known` directories, and where this process
 * would place them) and remove them; returns the directories that could not be removed.
 */
export async function removeCgroups(id: string, known: readonly string[] = []): Promise<string[]> {
  const dirs = await existingCgroups(id, known);
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
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') removed = true;
        else await sleep(20);
      }
    }
    if (!removed) left.push(dir);
  }
  return left;
}
