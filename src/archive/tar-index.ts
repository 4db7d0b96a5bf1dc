// Random access into a tar file: one pass over the headers records where each member's bytes
// are (name -> offset, size, type), so members can later be read or streamed straight from the
// file without extracting anything.
//
// The header reader understands ustar (name + prefix), PAX extended headers (path, linkpath,
// size) and GNU long names ('L' / 'K'); it verifies every header checksum. Member names are
// hostile: an absolute name or one with a `..` component makes the whole archive invalid.
// Hard links and symlinks are resolved on lookup, inside the archive only, with a bounded
// number of hops. A header or body that runs past the end of the file is a truncated archive.

import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { abortError, StratumError, TooLargeError } from '../errors/errors.js';

const BLOCK = 512;
/** PAX records and GNU long names larger than this are refused (they are only names). */
const MAX_META = 1024 * 1024;
/** More members than this is not an image archive. */
const MAX_MEMBERS = 1_000_000;
const MAX_LINK_HOPS = 16;

export type TarMemberType = 'file' | 'directory' | 'symlink' | 'link' | 'other';

export interface TarMember {
  /** Normalised name: no leading `./` or `/`, no trailing `/`, no empty or `.` components. */
  readonly name: string;
  readonly type: TarMemberType;
  /** Offset of the member's first data byte in the file. */
  readonly offset: number;
  readonly size: number;
  /** Target of a link, as written in the archive (normalised for hard links). */
  readonly linkname?: string;
}

function invalid(file: string, why: string): StratumError {
  return new StratumError('ERR_INVALID_ARCHIVE', `invalid archive ${file}: ${why}`);
}

/**
 * Normalise a member name; undefined for the archive root itself (`./`).
 * Throws ERR_INVALID_ARCHIVE for absolute names, `..` components and NUL bytes.
 */
export function normaliseMemberName(raw: string, file: string): string | undefined {
  if (raw.includes('\0')) throw invalid(file, `member name ${JSON.stringify(raw)} contains a NUL byte`);
  if (raw.startsWith('/')) throw invalid(file, `member name ${JSON.stringify(raw)} is an absolute path`);
  const parts: string[] = [];
  for (const p of raw.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..')
      throw invalid(file, `member name ${JSON.stringify(raw)} contains "..", which could escape`);
    parts.push(p);
  }
  return parts.length === 0 ? undefined : parts.join('/');
}

function cString(buf: Buffer, start: number, end: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('utf8', start, nul === -1 || nul > end ? end : nul);
}

function parseNumber(buf: Buffer, start: number, end: number, file: string, field: string): number {
  const first = buf[start] ?? 0;
  if (first & 0x80) {
    // GNU base-256: big-endian two's complement with the top bit as marker; no negatives here
    if (first & 0x40) throw invalid(file, `negative ${field} in a tar header`);
    let v = first & 0x3f;
    for (let i = start + 1; i < end; i++) {
      v = v * 256 + (buf[i] ?? 0);
      if (v > Number.MAX_SAFE_INTEGER) throw invalid(file, `${field} in a tar header is too large`);
    }
    return v;
  }
  const s = buf
    .toString('latin1', start, end)
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw invalid(file, `${field} ${JSON.stringify(s)} in a tar header is not octal`);
  const v = Number.parseInt(s, 8);
  if (!Number.isSafeInteger(v)) throw invalid(file, `${field} in a tar header is too large`);
  return v;
}

function checksumOk(block: Buffer, stored: number): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (block[i] ?? 0);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

function parsePax(data: Buffer, file: string): Map<string, string> {
  const out = new Map<string, string>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break;
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw invalid(file, 'malformed PAX header record');
    const len = Number.parseInt(data.toString('latin1', pos, space), 10);
    if (!Number.isSafeInteger(len) || len <= space - pos || pos + len > data.length) {
      throw invalid(file, 'malformed PAX header record length');
    }
    const rec = data.toString('utf8', space + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq === -1) throw invalid(file, 'malformed PAX header record (no "=")');
    out.set(rec.slice(0, eq), rec.slice(eq + 1));
    pos += len;
  }
  return out;
}

/** Read exactly `length` bytes at `position`, or fewer if the file ends. */
async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : buf.subarray(0, got);
}

/** An indexed tar file; keeps its file open until close(). */
export class TarIndex {
  readonly file: string;
  readonly #fh: FileHandle;
  readonly #members: ReadonlyMap<string, TarMember>;
  #closed = false;

  private constructor(file: string, fh: FileHandle, members: Map<string, TarMember>) {
    this.file = file;
    this.#fh = fh;
    this.#members = members;
  }

  /** Index the tar at `path`. `label` names it in messages (defaults to the path). */
  static async open(path: string, opts: { label?: string; signal?: AbortSignal } = {}): Promise<TarIndex> {
    const label = opts.label ?? path;
    const fh = await open(path, 'r');
    try {
      const members = await scan(fh, label, opts.signal);
      return new TarIndex(label, fh, members);
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  /** Every member, in archive order (a name written twice keeps its last version). */
  members(): IterableIterator<TarMember> {
    return this.#members.values();
  }

  /** The member stored under `name` (not following links). */
  entry(name: string): TarMember | undefined {
    const n = safeName(name);
    return n === undefined ? undefined : this.#members.get(n);
  }

  /** The regular file `name` refers to, following hard links and symlinks inside the archive. */
  lookup(name: string): TarMember | undefined {
    let n = safeName(name);
    for (let hop = 0; n !== undefined && hop <= MAX_LINK_HOPS; hop++) {
      const m = this.#members.get(n);
      if (m === undefined) return undefined;
      if (m.type === 'file') return m;
      if (m.type === 'link' && m.linkname !== undefined) n = safeName(m.linkname);
      else if (m.type === 'symlink' && m.linkname !== undefined && !m.linkname.startsWith('/')) {
        n = safeName(posix.normalize(posix.join(posix.dirname(m.name), m.linkname)));
      } else return undefined;
    }
    return undefined;
  }

  /** A member's bytes in memory, refusing more than `limit` (ERR_TOO_LARGE naming `what`). */
  async read(member: TarMember, limit: number, what: string): Promise<Buffer> {
    if (member.size > limit) throw new TooLargeError(what, limit);
    const buf = await readAt(this.#fh, member.offset, member.size);
    if (buf.length !== member.size) throw invalid(this.file, `${member.name} is truncated`);
    return buf;
  }

  /** The first up to `n` bytes of a member. */
  async head(member: TarMember, n: number): Promise<Buffer> {
    return readAt(this.#fh, member.offset, Math.min(n, member.size));
  }

  /** A member's bytes as a stream, read straight from the file. */
  stream(member: TarMember): Readable {
    if (this.#closed) throw new StratumError('ERR_INVALID_ARGUMENT', `archive ${this.file} is closed`);
    return new MemberStream(this.#fh, member, this.file);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.close();
  }
}

const CHUNK = 256 * 1024;

/**
 * Positional reads of one member. (A FileHandle's own createReadStream closes the handle when
 * a stream is destroyed early, which would break every other reader of the archive.)
 */
class MemberStream extends Readable {
  readonly #fh: FileHandle;
  readonly #file: string;
  readonly #name: string;
  #pos: number;
  readonly #end: number;

  constructor(fh: FileHandle, member: TarMember, file: string) {
    super({ highWaterMark: CHUNK });
    this.#fh = fh;
    this.#file = file;
    this.#name = member.name;
    this.#pos = member.offset;
    this.#end = member.offset + member.size;
  }

  override _read(): void {
    const n = Math.min(CHUNK, this.#end - this.#pos);
    if (n <= 0) {
      this.push(null);
      return;
    }
    const buf = Buffer.allocUnsafe(n);
    this.#fh.read(buf, 0, n, this.#pos).then(
      ({ bytesRead }) => {
        if (this.destroyed) return;
        if (bytesRead === 0) {
          this.destroy(
            invalid(this.#file, `${this.#name} is truncated (the file is shorter than its index)`),
          );
          return;
        }
        this.#pos += bytesRead;
        this.push(bytesRead === n ? buf : buf.subarray(0, bytesRead));
      },
      (e: unknown) => this.destroy(e as Error),
    );
  }
}

/** Normalise a name we were asked for; names with `..` or absolute never match. */
function safeName(name: string): string | undefined {
  try {
    return normaliseMemberName(name, '');
  } catch {
    return undefined;
  }
}

function typeOf(flag: string): TarMemberType {
  switch (flag) {
    case '0':
    case '\0':
    case '7':
      return 'file';
    case '1':
      return 'link';
    case '2':
      return 'symlink';
    case '5':
      return 'directory';
    default:
      return 'other';
  }
}

async function scan(fh: FileHandle, file: string, signal?: AbortSignal): Promise<Map<string, TarMember>> {
  const { size: fileSize } = await fh.stat();
  const members = new Map<string, TarMember>();
  let pos = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;
  let sawHeader = false;
  for (;;) {
    if (signal?.aborted) throw abortError(signal);
    if (pos === fileSize) {
      // no end-of-archive marker: accepted (as Go and GNU tar do) only on a block boundary
      if (!sawHeader) throw invalid(file, 'the file is empty, not a tar archive');
      break;
    }
    const block = await readAt(fh, pos, BLOCK);
    if (block.length < BLOCK) throw invalid(file, `truncated: a tar header at offset ${pos} is cut short`);
    if (block.every((b) => b === 0)) break; // end-of-archive marker (second zero block optional)
    const stored = parseNumber(block, 148, 156, file, 'checksum');
    if (!checksumOk(block, stored)) {
      throw invalid(
        file,
        sawHeader
          ? `bad tar header checksum at offset ${pos}`
          : 'not a tar archive (the first header has a bad checksum)',
      );
    }
    sawHeader = true;
    const flag = String.fromCharCode(block[156] ?? 0);
    let size = parseNumber(block, 124, 136, file, 'size');
    const dataStart = pos + BLOCK;
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_META) throw invalid(file, `a tar metadata header of ${size} bytes is too large`);
      const data = await readAt(fh, dataStart, size);
      if (data.length < size) throw invalid(file, `truncated: tar metadata at offset ${pos} is cut short`);
      if (flag === 'x') pax = parsePax(data, file);
      else if (flag === 'L') longName = cString(data, 0, data.length);
      else if (flag === 'K') longLink = cString(data, 0, data.length);
      // 'g' (global PAX) carries nothing we use
      pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;
      continue;
    }
    const magic = block.toString('latin1', 257, 263);
    let name = cString(block, 0, 100);
    if (magic === 'ustar\0') {
      const prefix = cString(block, 345, 500);
      if (prefix !== '') name = `${prefix}/${name}`;
    }
    let linkname = cString(block, 157, 257);
    if (longName !== undefined) name = longName;
    if (longLink !== undefined) linkname = longLink;
    const paxPath = pax.get('path');
    if (paxPath !== undefined) name = paxPath;
    const paxLink = pax.get('linkpath');
    if (paxLink !== undefined) linkname = paxLink;
    const paxSize = pax.get('size');
    if (paxSize !== undefined) {
      if (!/^[0-9]+$/.test(paxSize) || !Number.isSafeInteger(Number(paxSize))) {
        throw invalid(file, `PAX size ${JSON.stringify(paxSize)} is not a number`);
      }
      size = Number(paxSize);
    }
    pax = new Map();
    longName = undefined;
    longLink = undefined;

    const type = typeOf(flag);
    // header-only types carry no data whatever their size field says
    if (type === 'link' || type === 'symlink' || type === 'directory' || '3456'.includes(flag)) size = 0;
    if (dataStart + size > fileSize) {
      throw invalid(
        file,
        `truncated: member ${JSON.stringify(name)} needs ${size} bytes but the file ends first`,
      );
    }
    const norm = normaliseMemberName(name, file);
    if (norm !== undefined) {
      let link: string | undefined;
      if (type === 'link') {
        link = normaliseMemberName(linkname, file);
      } else if (type === 'symlink') {
        link = linkname;
      }
      if (members.size >= MAX_MEMBERS && !members.has(norm)) {
        throw invalid(file, `more than ${MAX_MEMBERS} members`);
      }
      members.delete(norm); // keep archive order of the last version
      members.set(norm, {
        name: norm,
        type,
        offset: dataStart,
        size,
        ...(link === undefined ? {} : { linkname: link }),
      });
    }
    pos = dataStart + Math.ceil(size / BLOCK) * BLOCK;
    if (pos > fileSize) {
      // the padding of the last member may be missing; treat that as the end
      break;
    }
  }
  return members;
}
