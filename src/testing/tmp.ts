// Test helper: temporary directories on tmpfs (/dev/shm) when available, removed after the test.

import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TMP_ROOT = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

/** Make a temp dir; the returned `cleanup` removes it. */
export async function makeTempDir(
  prefix = 'stratum-test-',
): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(TMP_ROOT, prefix));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/** For node:test: `const dir = await tempDir(t)` — removed when the test ends. */
export async function tempDir(
  t: { after: (fn: () => Promise<void>) => void },
  prefix?: string,
): Promise<string> {
  const { path, cleanup } = await makeTempDir(prefix);
  t.after(cleanup);
  return path;
}
