// An exclusive lock between processes on one machine: a lock file that holds the owner's
// pid, created whole with link(2) from a temp file (so no one ever sees it empty). A lock whose owner is dead is stale and is broken. Waiters poll
// with backoff until a timeout (ERR_LOCK_TIMEOUT).

import { link, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StratumError } from '../errors/errors.js';
import { tempName } from './fs.js';

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function tryBreakStale(path: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return;
  }
  const pid = Number.parseInt(text, 10);
  if (!Number.isInteger(pid) || pid <= 0 || alive(pid)) return;
  // move aside first so two breakers cannot both delete a fresh lock
  // a sibling of the lock file (tempName's first argument is a directory)
  const aside = tempName(dirname(path), `${basename(path)}.stale-`);
  try {
    await rename(path, aside);
  } catch {
    return;
  }
  const again = await readFile(aside, 'utf8').catch(() => '');
  if (Number.parseInt(again, 10) === pid) await rm(aside, { force: true });
  // not the dead owner's: put it back unless a new owner took the path meanwhile
  else
    await link(aside, path).then(
      () => rm(aside, { force: true }),
      () => rm(aside, { force: true }),
    );
}

/** Run fn while holding the lock file at `path`. Re-entrant within one process is NOT supported. */
export async function withFileLock<T>(
  path: string,
  fn: () => Promise<T>,
  opts: { timeoutMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 120_000);
  let delay = 2;
  for (;;) {
    const tmp = tempName(dirname(path), `${basename(path)}.new-`);
    await writeFile(tmp, String(process.pid), { mode: 0o644 });
    try {
      await link(tmp, path);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      await rm(tmp, { force: true });
    }
    await tryBreakStale(path);
    if (Date.now() > deadline) {
      throw new StratumError('ERR_LOCK_TIMEOUT', `timed out waiting for lock ${path}`);
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 100);
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}
