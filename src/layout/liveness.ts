// Whether a process on this machine is still alive, and the pid that stratum writes into
// the names of its temp files and leases (`<prefix><pid>-<random>`), so that whoever cleans
// up later can tell an abandoned file from one still being written.

export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to someone else
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The pid in `<prefix><pid>-<rest>`, or undefined if `name` is not of that form. */
export function pidInName(name: string, prefix: string): number | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const m = /^(\d{1,10})-/.exec(name.slice(prefix.length));
  if (!m?.[1]) return undefined;
  const pid = Number.parseInt(m[1], 10);
  return pid > 0 ? pid : undefined;
}
