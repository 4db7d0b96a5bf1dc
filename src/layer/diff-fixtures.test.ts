// Shared helpers of the diff tests (this file holds no tests of its own): a rich source tree,
// a layer lister over tar-stream (an independent tar parser) and small shell helpers.

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdirSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { extract } from 'tar-stream';

export const IS_ROOT = process.getuid?.() === 0;
export const ROOT_SKIP = IS_ROOT ? false : 'needs root (owners, devices, trusted.* xattrs)';

export function have(program: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const HAVE_SETFATTR = have('setfattr');

export function sh(cmd: string, args: readonly string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function setfattr(path: string, name: string, value: string): void {
  sh('setfattr', ['-h', '-n', name, '-v', value, path]);
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Deterministic pseudo-random bytes. */
export function bytes(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < n; off += block.length) {
    block.copy(out, off);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

export function write(root: string, rel: string, data: string | Buffer, mode = 0o644): void {
  const p = join(root, rel);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, data);
  chmodSync(p, mode);
}

const T0 = 1_600_000_000;

/** Every file gets a fixed mtime, so trees made at different times are equal. */
export function fixTimes(root: string, rels: readonly string[], t = T0): void {
  for (const r of rels) utimesSync(join(root, r), t, t);
}

export const LONG_DIR = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`;
export const LONG_NAME = `${'n'.repeat(150)}.txt`;
export const LONG_TARGET = `${'../'.repeat(10)}${'t'.repeat(120)}/target`;

/**
 * A tree with every kind of entry a layer can hold. Owners, devices and trusted./security.
 * xattrs only when root; xattrs only with setfattr. Returns the paths of regular files.
 */
export function richTree(root: string): void {
  write(root, 'empty', '');
  write(root, 'small.txt', 'hello layer\n');
  write(root, 'one', 'x');
  write(root, 'exact512', bytes(512, 'exact'));
  write(root, 'big/random.bin', bytes(3 * 1024 * 1024 + 17, 'big'));
  write(root, 'big/text.txt', 'a line of text that compresses\n'.repeat(70_000));
  write(root, 'modes/setuid', '#!/bin/sh\n', 0o4755);
  write(root, 'modes/private', 'secret', 0o600);
  if (IS_ROOT) write(root, 'modes/none', 'none', 0o000); // only root can read it back
  mkdirSync(join(root, 'modes/setgid-dir'));
  chmodSync(join(root, 'modes/setgid-dir'), 0o2755);
  mkdirSync(join(root, 'modes/sticky-dir'));
  chmodSync(join(root, 'modes/sticky-dir'), 0o1777);
  mkdirSync(join(root, 'empty-dir'));
  write(root, `${LONG_DIR}/${LONG_NAME}`, 'deep and long\n');
  write(root, `${LONG_DIR}/short`, 'prefix split\n');
  write(root, 'ünïcödé/файл.txt', 'utf-8 names\n');
  mkdirSync(join(root, 'links'));
  symlinkSync('../small.txt', join(root, 'links/rel'));
  symlinkSync('/etc/passwd', join(root, 'links/abs'));
  symlinkSync('nowhere', join(root, 'links/dangling'));
  symlinkSync(LONG_TARGET, join(root, 'links/long-target'));
  write(root, 'hard/a', 'linked content\n');
  mkdirSync(join(root, 'hard/sub'));
  linkSync(join(root, 'hard/a'), join(root, 'hard/sub/b'));
  linkSync(join(root, 'hard/a'), join(root, 'hard/z'));
  sh('mkfifo', [join(root, 'fifo')]);
  if (HAVE_SETFATTR) {
    setfattr(join(root, 'small.txt'), 'user.comment', 'plain text');
    setfattr(join(root, 'one'), 'user.binary', '0x00ff7f0a3d');
    setfattr(join(root, 'one'), 'user.empty', '');
    setfattr(join(root, 'empty-dir'), 'user.dir', 'on a directory');
  }
  if (IS_ROOT) {
    chownSync(join(root, 'small.txt'), 1234, 5678);
    chownSync(join(root, 'big/text.txt'), 3_000_000, 3_000_001); // too large for ustar: PAX
    sh('chown', ['-h', '42:43', join(root, 'links/rel')]);
    sh('chown', ['-h', '7:8', join(root, 'links/abs')]);
    sh('mknod', [join(root, 'null-dev'), 'c', '1', '3']);
    sh('mknod', [join(root, 'block-dev'), 'b', '7', '200']);
    sh('mknod', [join(root, 'big-minor'), 'c', '240', '1048575']);
    if (HAVE_SETFATTR) {
      setfattr(
        join(root, 'modes/setuid'),
        'security.capability',
        '0x0100000200200000000000000000000000000000',
      );
      setfattr(join(root, 'links/rel'), 'trusted.on-link', 'yes');
      setfattr(join(root, 'empty-dir'), 'trusted.overlay.opaque', 'y'); // must never leak
      setfattr(join(root, 'one'), 'trusted.overlay.origin', '0x00');
    }
  }
}

export interface ListedEntry {
  readonly name: string;
  readonly type: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly uname: string;
  readonly gname: string;
  readonly size: number;
  readonly mtime: number;
  readonly linkname: string | null;
  readonly devmajor: number;
  readonly devminor: number;
  readonly pax: Readonly<Record<string, string>>;
  readonly sha256: string;
}

/** The uncompressed tar of a layer file (gzip, zstd or plain). */
export function layerTar(file: string): Buffer {
  const raw = readFileSync(file);
  if (raw[0] === 0x1f && raw[1] === 0x8b) return gunzipSync(raw);
  if (raw[0] === 0x28 && raw[1] === 0xb5) {
    return execFileSync('zstd', ['-d', '-c', '-q'], { input: raw, maxBuffer: 1 << 30 });
  }
  return raw;
}

/** Every entry of a layer, parsed by tar-stream (names as byte strings: latin1). */
export async function listLayer(file: string): Promise<ListedEntry[]> {
  const ex = extract({ filenameEncoding: 'latin1' } as Parameters<typeof extract>[0]);
  Readable.from([layerTar(file)]).pipe(ex);
  const out: ListedEntry[] = [];
  for await (const e of ex) {
    const chunks: Buffer[] = [];
    for await (const c of e) chunks.push(c as Buffer);
    const h = e.header;
    out.push({
      name: h.name,
      type: h.type ?? 'file',
      mode: h.mode ?? 0,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      uname: h.uname ?? '',
      gname: h.gname ?? '',
      size: h.size ?? 0,
      mtime: (h.mtime?.getTime() ?? 0) / 1000,
      linkname: h.linkname ?? null,
      devmajor: h.devmajor ?? 0,
      devminor: h.devminor ?? 0,
      pax: (h as { pax?: Record<string, string> }).pax ?? {},
      sha256: sha256(Buffer.concat(chunks)),
    });
  }
  return out;
}

export function names(entries: readonly ListedEntry[]): string[] {
  return entries.map((e) => e.name);
}

export { randomBytes };
