// Reading the extended attributes of a whole tree in one go. Node has no xattr calls, so we
// run `getfattr` (Debian package `attr`) once per tree — `-R -P -h -d -m - -e hex`: recurse
// without following symlinks, report each link's own attributes, dump every namespace the
// caller may read (trusted.* only as root), values in hex — and parse what it prints. One
// process per tree instead of one per file: it walks the tree on another core while we walk it
// here. Only files that have attributes appear in the output, so it stays small.
//
// getfattr prints a file name with `\ooo` octal escapes for control characters, space and
// backslash, and every other byte raw; we read its output as bytes, so names that are not
// UTF-8 round-trip. Paths come back as byte strings relative to the root ('' is the root).

import { spawn } from 'node:child_process';
import { findProgram } from '../compression/compression.js';
import { abortError, StratumError } from '../errors/errors.js';
import type { Xattr } from './tar-writer.js';

/** xattrs per path relative to the root (byte strings), each list sorted by name. */
export type XattrMap = ReadonlyMap<string, readonly Xattr[]>;

const STDERR_LIMIT = 4096;

/** The getfattr program's path, or undefined when the `attr` package is not installed. */
export function getfattrPath(): string | undefined {
  return findProgram('getfattr');
}

function unquote(s: string): string {
  return s.includes('\\')
    ? s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)))
    : s;
}

/** Parse getfattr's `-d -e hex --absolute-names` output (read as latin1) for files under `root`. */
export function parseGetfattr(text: string, root: string): Map<string, Xattr[]> {
  const out = new Map<string, Xattr[]>();
  const prefix = root.endsWith('/') ? root : `${root}/`;
  let current: Xattr[] | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const file = unquote(line.slice(8));
      const rel =
        file === root || `${file}/` === prefix
          ? ''
          : file.startsWith(prefix)
            ? file.slice(prefix.length)
            : undefined;
      if (rel === undefined) {
        current = undefined;
        continue;
      }
      current = [];
      out.set(rel, current);
      continue;
    }
    if (current === undefined || line === '') continue;
    const eq = line.indexOf('=');
    const name = unquote(eq === -1 ? line : line.slice(0, eq));
    const raw = eq === -1 ? '' : line.slice(eq + 1);
    let value: Buffer;
    if (raw === '' || raw === '""') value = Buffer.alloc(0);
    else if (raw.startsWith('0x')) value = Buffer.from(raw.slice(2), 'hex');
    else if (raw.startsWith('0s')) value = Buffer.from(raw.slice(2), 'base64');
    else if (raw.startsWith('"') && raw.endsWith('"'))
      value = Buffer.from(unquote(raw.slice(1, -1)), 'latin1');
    else value = Buffer.from(raw, 'latin1');
    current.push([name, value]);
  }
  for (const list of out.values()) list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return out;
}

/**
 * Every extended attribute under `root` (an absolute path). Resolves when getfattr is done.
 * Throws ERR_UNSUPPORTED when getfattr is missing or fails.
 */
export function readTreeXattrs(root: string, signal?: AbortSignal): Promise<Map<string, Xattr[]>> {
  const program = getfattrPath();
  if (program === undefined) {
    return Promise.reject(
      new StratumError(
        'ERR_UNSUPPORTED',
        'cannot read extended attributes: the getfattr program was not found; install the attr package (apt-get install attr), or turn xattrs off',
      ),
    );
  }
  return new Promise((resolve, reject) => {
    const child = spawn(
      program,
      ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', root],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(signal === undefined ? {} : { signal }),
      },
    );
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += s.slice(0, STDERR_LIMIT - stderr.length);
    });
    child.on('error', (e: Error) => {
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      reject(
        new StratumError(
          'ERR_UNSUPPORTED',
          `cannot read the extended attributes under ${root}: ${e.message}`,
          {
            cause: e,
          },
        ),
      );
    });
    child.on('close', (code: number | null, sig: NodeJS.Signals | null) => {
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      if (code !== 0) {
        const why =
          stderr.trim().split('\n').slice(0, 3).join('; ') ||
          (sig ? `killed by ${sig}` : `exit status ${code}`);
        reject(
          new StratumError(
            'ERR_UNSUPPORTED',
            `cannot read the extended attributes under ${root}: getfattr failed: ${why} (did the tree change while it was read?)`,
          ),
        );
        return;
      }
      resolve(parseGetfattr(Buffer.concat(chunks).toString('latin1'), Buffer.from(root).toString('latin1')));
    });
  });
}
