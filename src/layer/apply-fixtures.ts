// Test fixtures for layer apply: a byte-exact tar builder for crafted (and hostile) layers —
// any name, type flag, PAX record, GNU long name, base-256 number or even a wrong checksum —
// and small helpers the apply tests share (gzip, a stream over bytes, running programs,
// listing a canary tree). Test-only; nothing in the library imports it.

import { execFile } from 'node:child_process';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

export const execFileP = promisify(execFile);

export interface FixtureEntry {
  readonly name: string;
  /** Type flag ('0' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo, ...). */
  readonly type?: string;
  readonly body?: Buffer | string;
  /** The size field, when it should differ from the body's length. */
  readonly size?: number;
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtime?: number;
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** PAX records for an 'x' header before this entry. */
  readonly pax?: Readonly<Record<string, string | Buffer>>;
  /** Put the name (and link) in GNU 'L' / 'K' headers. */
  readonly gnuLongName?: boolean;
  readonly gnuLongLink?: boolean;
  /** Header format: 'ustar' (default; long names go in the prefix field when they fit), 'gnu', 'v7'. */
  readonly format?: 'ustar' | 'gnu' | 'v7';
  /** Write this checksum instead of the right one. */
  readonly checksum?: number;
  /** Numbers written base-256 (GNU) instead of octal. */
  readonly base256?: readonly ('uid' | 'gid' | 'size' | 'mtime')[];
}

const BLOCK = 512;

function octal(buf: Buffer, off: number, width: number, n: number): void {
  buf.write(n.toString(8).padStart(width - 1, '0'), off, width - 1, 'latin1');
  buf[off + width - 1] = 0;
}

function base256(buf: Buffer, off: number, width: number, n: number): void {
  let v = BigInt(n);
  if (v < 0n) v = (1n << BigInt(width * 8)) + v;
  for (let i = width - 1; i >= 0; i--) {
    buf[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
  buf[off] = (buf[off] as number) | 0x80;
}

function pad(b: Buffer): Buffer {
  const rest = (BLOCK - (b.length % BLOCK)) % BLOCK;
  return rest === 0 ? b : Buffer.concat([b, Buffer.alloc(rest)]);
}

function paxRecord(key: string, value: string | Buffer): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), v, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** One raw header block. */
export function headerBlock(e: FixtureEntry & { size: number }): Buffer {
  const h = Buffer.alloc(BLOCK);
  const format = e.format ?? 'ustar';
  let name = e.name;
  let prefix = '';
  if (format === 'ustar' && Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut > 0 && Buffer.byteLength(name.slice(cut + 1)) <= 100) {
      prefix = name.slice(0, cut);
      name = name.slice(cut + 1);
    }
  }
  h.write(name, 0, 100, 'utf8');
  const b256 = new Set(e.base256 ?? []);
  octal(h, 100, 8, e.mode ?? (e.type === '5' ? 0o755 : 0o644));
  if (b256.has('uid')) base256(h, 108, 8, e.uid ?? 0);
  else octal(h, 108, 8, e.uid ?? 0);
  if (b256.has('gid')) base256(h, 116, 8, e.gid ?? 0);
  else octal(h, 116, 8, e.gid ?? 0);
  if (b256.has('size')) base256(h, 124, 12, e.size);
  else octal(h, 124, 12, e.size);
  if (b256.has('mtime')) base256(h, 136, 12, e.mtime ?? 1_600_000_000);
  else octal(h, 136, 12, e.mtime ?? 1_600_000_000);
  h[156] = (e.type ?? '0').charCodeAt(0);
  h.write(e.linkname ?? '', 157, 100, 'utf8');
  if (format === 'ustar') h.write('ustar\u000000', 257, 8, 'latin1');
  if (format === 'gnu') h.write('ustar  \u0000', 257, 8, 'latin1');
  if (format !== 'v7') {
    h.write('root', 265, 32, 'latin1');
    h.write('root', 297, 32, 'latin1');
    octal(h, 329, 8, e.devmajor ?? 0);
    octal(h, 337, 8, e.devminor ?? 0);
  }
  if (prefix !== '') h.write(prefix, 345, 155, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i] as number;
  h.write(`${(e.checksum ?? sum).toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
  return h;
}

/** The blocks of one entry: its PAX / GNU long-name headers, its header and its padded body. */
export function entryBlocks(e: FixtureEntry): Buffer {
  const body = e.body === undefined ? Buffer.alloc(0) : Buffer.from(e.body);
  const parts: Buffer[] = [];
  if (e.pax) {
    const records = Buffer.concat(Object.entries(e.pax).map(([k, v]) => paxRecord(k, v)));
    parts.push(headerBlock({ name: 'PaxHeaders/x', type: 'x', size: records.length }), pad(records));
  }
  let name = e.name;
  let linkname = e.linkname;
  if (e.gnuLongName) {
    const n = Buffer.from(`${e.name}\0`);
    parts.push(headerBlock({ name: '././@LongLink', type: 'L', size: n.length, format: 'gnu' }), pad(n));
    name = e.name.slice(0, 99);
  }
  if (e.gnuLongLink && e.linkname !== undefined) {
    const n = Buffer.from(`${e.linkname}\0`);
    parts.push(headerBlock({ name: '././@LongLink', type: 'K', size: n.length, format: 'gnu' }), pad(n));
    linkname = e.linkname.slice(0, 99);
  }
  parts.push(
    headerBlock({
      ...e,
      name,
      ...(linkname === undefined ? {} : { linkname }),
      size: e.size ?? body.length,
    }),
  );
  if (body.length > 0) parts.push(pad(body));
  return Buffer.concat(parts);
}

/** A whole tar: the entries, then the end-of-archive marker (unless `end: false`). */
export function makeTarball(entries: readonly FixtureEntry[], opts: { end?: boolean } = {}): Buffer {
  const parts = entries.map(entryBlocks);
  if (opts.end !== false) parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

/** Shorthands. */
export const file = (
  name: string,
  body: string | Buffer = '',
  more: Partial<FixtureEntry> = {},
): FixtureEntry => ({
  name,
  type: '0',
  body,
  ...more,
});
export const dir = (name: string, more: Partial<FixtureEntry> = {}): FixtureEntry => ({
  name,
  type: '5',
  ...more,
});
export const symlink = (name: string, target: string, more: Partial<FixtureEntry> = {}): FixtureEntry => ({
  name,
  type: '2',
  linkname: target,
  ...more,
});
export const hardlink = (name: string, target: string, more: Partial<FixtureEntry> = {}): FixtureEntry => ({
  name,
  type: '1',
  linkname: target,
  ...more,
});

/** A stream over bytes, in chunks of `chunk` bytes (small chunks test the parser's seams). */
export function streamOf(data: Buffer, chunk = 64 * 1024): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) parts.push(data.subarray(i, i + chunk));
  return Readable.from(parts, { objectMode: false });
}

export function gzip(data: Buffer): Buffer {
  return gzipSync(data);
}

export const isRoot = typeof process.geteuid === 'function' && process.geteuid() === 0;
