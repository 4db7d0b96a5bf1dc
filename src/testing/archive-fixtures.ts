// Test-only helpers for the archive tests: write a tar file from a list of members (so tests
// can build well-formed and hostile archives by hand), read a whole stream, and run an
// external tool (skopeo, umoci) with its output captured.

import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pack } from 'tar-stream';
import { readAll } from '../internal/streams.js';

export interface RawMember {
  readonly name: string;
  readonly data?: string | Uint8Array;
  readonly type?: 'file' | 'directory' | 'symlink' | 'link';
  readonly linkname?: string;
}

/** Tar bytes of the given members, in order, exactly as named (no checks: tests write hostile ones). */
export async function tarBytes(members: readonly RawMember[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const m of members) {
    const type = m.type ?? 'file';
    const mtime = new Date(0);
    if (type === 'file') {
      await new Promise<void>((res, rej) =>
        p.entry({ name: m.name, type, mode: 0o644, mtime }, Buffer.from(m.data ?? ''), (e) =>
          e ? rej(e) : res(),
        ),
      );
    } else {
      await new Promise<void>((res, rej) =>
        p.entry({ name: m.name, type, mode: 0o755, mtime, linkname: m.linkname ?? '' }, (e) =>
          e ? rej(e) : res(),
        ),
      );
    }
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export async function writeTar(path: string, members: readonly RawMember[]): Promise<void> {
  await writeFile(path, await tarBytes(members));
}

export async function readStream(s: Readable): Promise<Buffer> {
  return readAll(s, 256 * 1024 * 1024);
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run a program; resolves with its exit code and output (never rejects on a non-zero exit). */
export function run(cmd: string, args: readonly string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
        reject(err);
        return;
      }
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Whether a program can be run (`cmd --version` succeeds). */
export async function have(cmd: string): Promise<boolean> {
  try {
    return (await run(cmd, ['--version'])).code === 0;
  } catch {
    return false;
  }
}
