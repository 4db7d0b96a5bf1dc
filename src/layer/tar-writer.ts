// Deterministic tar headers for layers: POSIX ustar, with a PAX extended header ('x') only
// when ustar cannot say it — a name that does not fit name + prefix, a link target over 100
// bytes, uid/gid over 2097151, a size of 8 GiB or more, and xattrs (`SCHILY.xattr.NAME`, the
// value's exact bytes). PAX records are sorted by key, and the PAX header's own name is the
// entry's directory + `PaxHeaders.0/` + its base name (as Go's archive/tar writes it), so the
// same entry always gives the same bytes. uname/gname are empty (ownership is numeric),
// atime/ctime are never written, and mtimes are whole seconds: a sub-second part is dropped
// (as buildkit does with SOURCE_DATE_EPOCH) and a time outside 0 .. 8^11-1 is clamped.
//
// Names are *byte strings*: each character is one byte (latin1), so a file name that is not
// valid UTF-8 passes through unchanged. Directory names end with `/`. A name that does not fit
// ustar is cut to its first 100 bytes in the name field (readers take the PAX path); a PAX path
// that is not valid UTF-8 is marked `hdrcharset=BINARY` as POSIX asks.

import { isUtf8 } from 'node:buffer';
import { StratumError } from '../errors/errors.js';

export const BLOCK = 512;
/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE_LENGTH = 2 * BLOCK;

const NAME_SIZE = 100;
const PREFIX_SIZE = 155;
const MAX_OCTAL_7 = 0o7777777; // 8-byte fields: 7 digits + NUL
const MAX_OCTAL_11 = 0o77777777777; // 12-byte fields: 11 digits + NUL

/** What an entry is. Hardlinks name an earlier entry of the same archive in `linkname`. */
export type TarWriteType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';

const TYPEFLAG: Readonly<Record<TarWriteType, string>> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  directory: '5',
  fifo: '6',
};

/** One extended attribute: its name (a byte string) and its exact value. */
export type Xattr = readonly [name: string, value: Uint8Array];

export interface TarWriteHeader {
  /** Byte string, relative, no leading `./` or `/`; a directory's name ends with `/`. */
  readonly name: string;
  readonly type: TarWriteType;
  /** Permission bits including setuid, setgid and sticky (0o7777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Body length: only regular files have one. */
  readonly size: number;
  /** Seconds since the epoch (whole; a fraction is dropped). */
  readonly mtime: number;
  /** Symlink target or hardlink's archive path (byte string). */
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Sorted by name by the caller or not: the writer sorts the PAX records. */
  readonly xattrs?: readonly Xattr[];
}

/** Bytes of zero padding after a body of `size` bytes. */
export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

function writeOctal(buf: Buffer, off: number, width: number, value: number): void {
  const s = Math.trunc(value)
    .toString(8)
    .padStart(width - 1, '0');
  buf.write(s, off, width - 1, 'latin1');
  buf[off + width - 1] = 0;
}

/** Split a name for ustar's prefix + name fields as Go does: at the last `/` that fits. */
function splitUstar(name: string): { prefix: string; base: string } | undefined {
  if (name.length <= NAME_SIZE) return { prefix: '', base: name };
  let length = name.length;
  if (length > PREFIX_SIZE + 1) length = PREFIX_SIZE + 1;
  else if (name.charCodeAt(length - 1) === 0x2f) length--;
  const i = name.lastIndexOf('/', length - 1);
  const nlen = name.length - i - 1;
  if (i <= 0 || nlen > NAME_SIZE || nlen === 0 || i > PREFIX_SIZE) return undefined;
  return { prefix: name.slice(0, i), base: name.slice(i + 1) };
}

function paxRecord(key: string, value: Buffer): Buffer {
  // "%d %s=%s\n", where the length counts itself
  const rest = Buffer.byteLength(key, 'latin1') + value.length + 3;
  let len = rest + String(rest).length;
  if (String(len).length !== String(rest).length) len = rest + String(len).length;
  const head = Buffer.from(`${len} ${key}=`, 'latin1');
  return Buffer.concat([head, value, Buffer.from('\n')], len);
}

function noNul(what: string, s: string): void {
  if (s.includes('\0')) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `cannot write a tar entry whose ${what} contains a NUL byte: ${JSON.stringify(s.slice(0, 200))}`,
    );
  }
}

function ustarBlock(
  h: TarWriteHeader,
  typeflag: string,
  name: { prefix: string; base: string },
  linkname: string,
  size: number,
  uid: number,
  gid: number,
  b: Buffer = Buffer.alloc(BLOCK),
  o = 0,
): Buffer {
  if (o !== 0 || b.length !== BLOCK) b.fill(0, o, o + BLOCK);
  b.write(name.base, o, NAME_SIZE, 'latin1');
  writeOctal(b, o + 100, 8, h.mode & 0o7777);
  writeOctal(b, o + 108, 8, uid);
  writeOctal(b, o + 116, 8, gid);
  writeOctal(b, o + 124, 12, size);
  writeOctal(b, o + 136, 12, clampTime(h.mtime));
  b.write(typeflag, o + 156, 1, 'latin1');
  b.write(linkname, o + 157, NAME_SIZE, 'latin1');
  b.write('ustar\u000000', o + 257, 8, 'latin1');
  if (h.type === 'char' || h.type === 'block') {
    writeOctal(b, o + 329, 8, h.devmajor ?? 0);
    writeOctal(b, o + 337, 8, h.devminor ?? 0);
  }
  b.write(name.prefix, o + 345, PREFIX_SIZE, 'latin1');
  // checksum: the sum of all bytes with the checksum field read as spaces
  b.fill(0x20, o + 148, o + 156);
  let sum = 0;
  for (let i = o; i < o + BLOCK; i++) sum += b[i] as number;
  b.write(sum.toString(8).padStart(6, '0'), o + 148, 6, 'latin1');
  b[o + 154] = 0;
  b[o + 155] = 0x20;
  return b;
}

function clampTime(t: number): number {
  if (!Number.isFinite(t) || t < 0) return 0;
  return Math.min(Math.floor(t), MAX_OCTAL_11);
}

/**
 * The header bytes of one entry: a ustar block, preceded by a PAX header and its records when
 * needed. The length is a multiple of 512; the body (for files) and its padding follow.
 */
export function encodeHeader(h: TarWriteHeader): Buffer {
  return encode(h, undefined, 0) as Buffer;
}

/**
 * Write the header into `target` at `offset` when it is a single ustar block (no PAX needed)
 * and return true; return false (writing nothing) when it needs more: use encodeHeader then.
 */
export function writeHeader(h: TarWriteHeader, target: Buffer, offset: number): boolean {
  return encode(h, target, offset) !== undefined;
}

function encode(h: TarWriteHeader, target: Buffer | undefined, offset: number): Buffer | undefined {
  noNul('name', h.name);
  const linkname = h.linkname ?? '';
  noNul('link target', linkname);
  if (!Number.isSafeInteger(h.size) || h.size < 0) {
    throw new StratumError('ERR_INVALID_ARGUMENT', `tar entry ${JSON.stringify(h.name)}: bad size ${h.size}`);
  }
  for (const [what, v] of [
    ['devmajor', h.devmajor ?? 0],
    ['devminor', h.devminor ?? 0],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > MAX_OCTAL_7) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `tar entry ${JSON.stringify(h.name)}: device number ${what} ${v} does not fit a ustar header`,
      );
    }
  }
  const records: [string, Buffer][] = [];
  let binary = false;
  let name = splitUstar(h.name);
  if (name === undefined) {
    records.push(['path', Buffer.from(h.name, 'latin1')]);
    name = { prefix: '', base: h.name.slice(0, NAME_SIZE) };
    if (!isUtf8(Buffer.from(h.name, 'latin1'))) binary = true;
  }
  let link = linkname;
  if (linkname.length > NAME_SIZE) {
    records.push(['linkpath', Buffer.from(linkname, 'latin1')]);
    link = linkname.slice(0, NAME_SIZE);
    if (!isUtf8(Buffer.from(linkname, 'latin1'))) binary = true;
  }
  let { uid, gid, size } = h;
  if (uid > MAX_OCTAL_7 || uid < 0) {
    records.push(['uid', Buffer.from(String(uid))]);
    uid = 0;
  }
  if (gid > MAX_OCTAL_7 || gid < 0) {
    records.push(['gid', Buffer.from(String(gid))]);
    gid = 0;
  }
  if (size > MAX_OCTAL_11) {
    records.push(['size', Buffer.from(String(size))]);
    size = 0;
  }
  for (const [xname, value] of h.xattrs ?? []) {
    noNul('xattr name', xname);
    if (xname.includes('=')) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `tar entry ${JSON.stringify(h.name)}: the xattr name ${JSON.stringify(xname)} contains "=", which PAX cannot store`,
      );
    }
    records.push([`SCHILY.xattr.${xname}`, Buffer.from(value.buffer, value.byteOffset, value.byteLength)]);
  }
  if (binary) records.push(['hdrcharset', Buffer.from('BINARY')]);
  if (target !== undefined) {
    if (records.length > 0) return undefined;
    return ustarBlock(h, TYPEFLAG[h.type], name, link, size, uid, gid, target, offset);
  }
  const header = ustarBlock(h, TYPEFLAG[h.type], name, link, size, uid, gid);
  if (records.length === 0) return header;

  records.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const data = Buffer.concat(records.map(([k, v]) => paxRecord(k, v)));
  const slash = h.name.lastIndexOf('/', h.name.length - 2);
  const dir = slash === -1 ? '' : h.name.slice(0, slash + 1);
  const base = h.name.slice(slash + 1).replace(/\/$/, '');
  const paxName = `${dir}PaxHeaders.0/${base}`.slice(0, NAME_SIZE);
  const paxHeader = ustarBlock(
    { name: paxName, type: 'file', mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: h.mtime },
    'x',
    { prefix: '', base: paxName },
    '',
    data.length,
    0,
    0,
  );
  return Buffer.concat([paxHeader, data, Buffer.alloc(padding(data.length)), header]);
}

/** `(major, minor)` of a Linux `st_rdev` as glibc encodes it (12+20 bits, split). */
export function splitDevice(rdev: number): { major: number; minor: number } {
  const lo = (rdev % 0x1_0000_0000) >>> 0;
  const hi = Math.floor(rdev / 0x1_0000_0000) >>> 0;
  const major = (((lo >>> 8) & 0xfff) | (hi & 0xfffff000)) >>> 0;
  const minor = ((lo & 0xff) | ((lo >>> 12) & 0xfff00) | ((hi & 0xfff) << 20)) >>> 0;
  return { major, minor };
}
