// A streaming tar parser, written for speed: bytes are pushed in as they arrive, headers are
// decoded in place, and each entry's body is handed on as slices of the pushed chunks (no copy,
// no stream object per entry). The consumer (a TarSink) may return a promise from any callback
// to hold the parser until it has caught up; otherwise parsing runs without an await.
//
// Formats: v7, ustar (name + prefix), GNU ('ustar  ' magic: prefix field unused; 'L' / 'K' long
// names and links; old sparse 'S' with extension blocks; 'D' dump directories), PAX ('x'
// extended headers: path, linkpath, size, uid, gid, uname, gname, mtime and atime with
// fractions, SCHILY.devmajor/devminor, SCHILY.xattr.* with binary values, LIBARCHIVE.xattr.*
// with URL-encoded names and base64 values, GNU sparse 0.0 / 0.1 / 1.0 as GNU tar and Go's
// archive/tar write them). Numbers may be octal or base-256. Every header checksum is verified
// (unsigned or signed sum, as historic tars differ). PAX global headers ('g') are skipped, as
// docker, containerd and umoci do. Names are returned raw: making them safe is the caller's job
// (path-safety.ts). The end is two zero blocks, one zero block then the end of the stream, or
// the end of the stream on a header boundary; a zero block followed by anything else is an
// error (it hides entries from tools that stop at the first zero block).

import { isUtf8 } from 'node:buffer';
import { StratumError } from '../errors/errors.js';

export const BLOCK = 512;
/** PAX records, GNU long names and sparse maps larger than this are refused: they are metadata. */
export const MAX_META = 1024 * 1024;
/** At most this many sparse segments in one file. */
const MAX_SPARSE_SEGMENTS = 1_000_000;

export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** One data segment of a sparse file: `length` bytes at `offset`; everything else is a hole. */
export interface SparseSegment {
  readonly offset: number;
  readonly length: number;
}

export interface TarHeader {
  /** The name as the archive gives it (after PAX / GNU long names), not normalised. */
  readonly name: string;
  readonly type: TarEntryType;
  /** The raw type flag ('0', '5', 'S', ...). */
  readonly typeflag: string;
  /** Link target (symlink: as written; hardlink: an archive path, not normalised). */
  readonly linkname: string;
  /** Permission bits including setuid, setgid and sticky. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly uname: string;
  readonly gname: string;
  /** Seconds since the epoch, with a fraction when PAX gave one. */
  readonly mtime: number;
  /** PAX atime, when given. */
  readonly atime: number | undefined;
  /** Bytes of body that follow in the archive (for a sparse file: the stored segments only). */
  readonly size: number;
  /** The file's length on disk: `size`, or for a sparse file its logical size. */
  readonly realSize: number;
  readonly devmajor: number;
  readonly devminor: number;
  /** Extended attributes from SCHILY.xattr.* / LIBARCHIVE.xattr.*, with their exact bytes. */
  readonly xattrs: ReadonlyMap<string, Buffer> | undefined;
  /** For a sparse file: where each stored segment goes, in body order. */
  readonly sparse: readonly SparseSegment[] | undefined;
  /** Offset of this entry's (first) header in the tar stream, for messages. */
  readonly offset: number;
}

/**
 * Receives a tar's entries in order. `data` gets the entry's body in order, as slices that are
 * valid only until the callback returns (or its promise settles); for a sparse file the body is
 * the stored segments, back to back, and `header.sparse` says where they go. Return a promise to
 * hold the parser.
 */
export interface TarSink {
  entry(header: TarHeader): void | Promise<void>;
  data(chunk: Buffer): void | Promise<void>;
  entryEnd(): void | Promise<void>;
}

export function invalidTar(why: string, offset?: number): StratumError {
  return new StratumError(
    'ERR_INVALID_ARCHIVE',
    `invalid tar${offset === undefined ? '' : ` (at byte ${offset})`}: ${why}`,
  );
}

type State =
  | 'header' // collecting a 512-byte header
  | 'meta' // collecting the body of an 'x' / 'L' / 'K' header
  | 'sparse-ext' // collecting old-GNU sparse extension blocks
  | 'sparse-map' // collecting a PAX 1.0 sparse map at the start of the body
  | 'body' // passing body bytes to the sink
  | 'skip' // skipping bytes (padding, ignored bodies)
  | 'zero' // saw one zero block: the next block must be zero (or the stream must end)
  | 'done'; // end of archive: the rest is ignored

interface Pending {
  pax: Map<string, string> | undefined;
  paxXattrs: Map<string, Buffer> | undefined;
  paxSparse: number[] | undefined; // GNU sparse 0.0: offset, numbytes, offset, ...
  longName: string | undefined;
  longLink: string | undefined;
}

/** Push-driven tar parser. Call `write(chunk)` for each chunk (awaiting what it returns), then `end()`. */
export class TarReader {
  readonly #sink: TarSink;
  #state: State = 'header';
  /** Bytes consumed so far (offset of the next byte). */
  #pos = 0;
  /** Partial header / metadata being collected. */
  #buf: Buffer = Buffer.allocUnsafe(BLOCK);
  #bufLen = 0;
  #need = BLOCK;
  /** Body bytes left for the current entry; padding after it. */
  #bodyLeft = 0;
  #padAfter = 0;
  #skipLeft = 0;
  #headerOffset = 0;
  #metaFlag = '';
  #pending: Pending = emptyPending();
  /** The header being assembled across sparse extension blocks / a sparse map. */
  #partial: MutableHeader | undefined;
  #sparseExt: SparseSegment[] = [];
  #entries = 0;
  /** Whether the bytes being skipped are only the padding after a complete body. */
  #skipIsPadding = false;
  #sparseMapText: string | undefined;

  constructor(sink: TarSink) {
    this.#sink = sink;
  }

  /** Entries seen so far (not counting PAX / GNU metadata headers). */
  get entries(): number {
    return this.#entries;
  }

  /** Bytes parsed so far. */
  get position(): number {
    return this.#pos;
  }

  /** Whether the end-of-archive marker has been seen. */
  get ended(): boolean {
    return this.#state === 'done';
  }

  /** Feed bytes. Returns a promise only when the sink asked the parser to wait. */
  write(chunk: Buffer): void | Promise<void> {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      switch (this.#state) {
        case 'done':
          this.#pos += len - off;
          return;
        case 'skip': {
          const n = Math.min(this.#skipLeft, len - off);
          this.#skipLeft -= n;
          off += n;
          this.#pos += n;
          if (this.#skipLeft === 0) this.#state = 'header';
          break;
        }
        case 'body': {
          const n = Math.min(this.#bodyLeft, len - off);
          const slice = chunk.subarray(off, off + n);
          this.#bodyLeft -= n;
          off += n;
          this.#pos += n;
          const r = this.#sink.data(slice);
          const after = (): void | Promise<void> => this.#afterBody();
          if (r !== undefined) return r.then(after).then(() => this.#continue(chunk, off));
          const r2 = after();
          if (r2 !== undefined) return r2.then(() => this.#continue(chunk, off));
          break;
        }
        default: {
          // collecting a fixed number of bytes into #buf
          if (this.#bufLen === 0 && len - off >= this.#need && this.#state === 'header') {
            // fast path: a whole header inside this chunk
            const block = chunk.subarray(off, off + BLOCK);
            off += BLOCK;
            this.#pos += BLOCK;
            const r = this.#onHeader(block);
            if (r !== undefined) return r.then(() => this.#continue(chunk, off));
            break;
          }
          const n = Math.min(this.#need - this.#bufLen, len - off);
          chunk.copy(this.#buf, this.#bufLen, off, off + n);
          this.#bufLen += n;
          off += n;
          this.#pos += n;
          if (this.#bufLen === this.#need) {
            const full = this.#buf.subarray(0, this.#need);
            this.#bufLen = 0;
            const r = this.#onCollected(full);
            if (r !== undefined) return r.then(() => this.#continue(chunk, off));
          }
        }
      }
    }
  }

  #continue(chunk: Buffer, off: number): void | Promise<void> {
    return off < chunk.length ? this.write(chunk.subarray(off)) : undefined;
  }

  /** The stream ended: check that it ended in a good place. */
  end(): void {
    switch (this.#state) {
      case 'done':
      case 'zero':
        return;
      case 'header':
        if (this.#bufLen === 0) {
          if (
            this.#pending.pax ||
            this.#pending.longName !== undefined ||
            this.#pending.longLink !== undefined
          ) {
            throw invalidTar('the archive ends after an extended header, without its entry', this.#pos);
          }
          if (this.#pos === 0) throw invalidTar('the stream is empty, not a tar archive', 0);
          return; // no end marker: accepted on a block boundary, as GNU tar and Go do
        }
        throw invalidTar('truncated: the archive ends inside a header', this.#pos);
      case 'skip':
        // a missing final padding after the last body is tolerated (the data is complete)
        if (this.#skipIsPadding) return;
        throw invalidTar('truncated: the archive ends inside an entry', this.#pos);
      default:
        throw invalidTar('truncated: the archive ends inside an entry', this.#pos);
    }
  }

  #afterBody(): void | Promise<void> {
    if (this.#bodyLeft > 0) return;
    this.#startSkip(this.#padAfter, true);
    return this.#sink.entryEnd();
  }

  #startSkip(n: number, padding = false): void {
    this.#skipIsPadding = padding;
    if (n > 0) {
      this.#skipLeft = n;
      this.#state = 'skip';
    } else {
      this.#state = 'header';
    }
    this.#need = BLOCK;
  }

  #collect(state: State, n: number): void {
    this.#state = state;
    this.#need = n;
    if (this.#buf.length < n) this.#buf = Buffer.allocUnsafe(Math.max(n, this.#buf.length * 2));
    this.#bufLen = 0;
  }

  #onCollected(buf: Buffer): void | Promise<void> {
    switch (this.#state) {
      case 'header':
        return this.#onHeader(buf);
      case 'zero':
        if (!isZero(buf)) {
          throw invalidTar(
            'an end-of-archive block is followed by more data (entries after it would be hidden from other tools)',
            this.#pos - BLOCK,
          );
        }
        this.#state = 'done';
        return;
      case 'meta':
        this.#onMeta(buf);
        return;
      case 'sparse-ext':
        return this.#onSparseExt(buf);
      case 'sparse-map':
        return this.#onSparseMap(buf);
      default:
        throw new Error(`tar reader: unexpected state ${this.#state}`);
    }
  }

  #onHeader(block: Buffer): void | Promise<void> {
    const at = this.#pos - BLOCK;
    if (isZero(block)) {
      if (this.#pending.pax || this.#pending.longName !== undefined || this.#pending.longLink !== undefined) {
        throw invalidTar('an extended header is followed by the end of the archive', at);
      }
      this.#state = 'zero';
      this.#need = BLOCK;
      return;
    }
    verifyChecksum(block, at);
    const flag = String.fromCharCode(block[156] as number);
    const size = parseNumber(block, 124, 12, at, 'size');
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      const padded = roundUp(size);
      if (flag === 'g') {
        this.#startSkip(padded);
        return;
      }
      if (size > MAX_META) {
        throw invalidTar(`a metadata header (type ${flag}) of ${size} bytes is larger than ${MAX_META}`, at);
      }
      this.#metaFlag = flag;
      this.#padAfter = padded - size;
      this.#headerOffset = at;
      if (size === 0) {
        this.#onMeta(Buffer.alloc(0));
        return;
      }
      this.#collect('meta', size);
      return;
    }
    return this.#startEntry(block, flag, size, at);
  }

  #onMeta(data: Buffer): void {
    const p = this.#pending;
    switch (this.#metaFlag) {
      case 'x':
        parsePax(data, this.#headerOffset, p);
        break;
      case 'L':
        p.longName = cString(data, 0, data.length, this.#headerOffset);
        break;
      case 'K':
        p.longLink = cString(data, 0, data.length, this.#headerOffset);
        break;
    }
    this.#startSkip(this.#padAfter);
  }

  #startEntry(block: Buffer, rawFlag: string, rawSize: number, at: number): void | Promise<void> {
    const p = this.#pending;
    this.#pending = emptyPending();
    // 'ustar\0' '00' (POSIX) or 'ustar ' ' \0' (GNU)
    const isUstarPrefix =
      block[257] === 0x75 &&
      block[258] === 0x73 &&
      block[259] === 0x74 &&
      block[260] === 0x61 &&
      block[261] === 0x72;
    const ustar = isUstarPrefix && block[262] === 0 && block[263] === 0x30 && block[264] === 0x30;
    const gnu = isUstarPrefix && block[262] === 0x20 && block[263] === 0x20 && block[264] === 0;
    let name = cString(block, 0, 100, at);
    if (ustar) {
      const prefix = cString(block, 345, 155, at);
      if (prefix !== '') name = `${prefix}/${name}`;
    }
    let linkname = cString(block, 157, 100, at);
    const pax = p.pax;
    if (p.longName !== undefined) name = p.longName;
    if (p.longLink !== undefined) linkname = p.longLink;
    let size = rawSize;
    const mode = parseNumber(block, 100, 8, at, 'mode') & 0o7777;
    let uid = parseNumber(block, 108, 8, at, 'uid');
    let gid = parseNumber(block, 116, 8, at, 'gid');
    let mtime = parseNumber(block, 136, 12, at, 'mtime', true);
    let uname = ustar || gnu ? cString(block, 265, 32, at) : '';
    let gname = ustar || gnu ? cString(block, 297, 32, at) : '';
    let devmajor = ustar || gnu ? parseNumber(block, 329, 8, at, 'devmajor') : 0;
    let devminor = ustar || gnu ? parseNumber(block, 337, 8, at, 'devminor') : 0;
    let atime: number | undefined;
    let flag = rawFlag;
    if (pax !== undefined) {
      const v = (k: string): string | undefined => pax.get(k);
      let s = v('path');
      if (s !== undefined) name = s;
      s = v('linkpath');
      if (s !== undefined) linkname = s;
      s = v('size');
      if (s !== undefined) size = paxInt(s, 'size', at);
      s = v('uid');
      if (s !== undefined) uid = paxInt(s, 'uid', at);
      s = v('gid');
      if (s !== undefined) gid = paxInt(s, 'gid', at);
      s = v('uname');
      if (s !== undefined) uname = s;
      s = v('gname');
      if (s !== undefined) gname = s;
      s = v('mtime');
      if (s !== undefined) mtime = paxTime(s, 'mtime', at);
      s = v('atime');
      if (s !== undefined) atime = paxTime(s, 'atime', at);
      s = v('SCHILY.devmajor');
      if (s !== undefined) devmajor = paxInt(s, 'SCHILY.devmajor', at);
      s = v('SCHILY.devminor');
      if (s !== undefined) devminor = paxInt(s, 'SCHILY.devminor', at);
      // GNU sparse 0.1 / 1.0 keep the real name here (Go reads it the same way)
      s = v('GNU.sparse.name');
      if (s !== undefined && s !== '') name = s;
    }
    if (name.includes('\0') || linkname.includes('\0')) {
      throw invalidTar(`entry ${JSON.stringify(name)} has a NUL byte in its name or link`, at);
    }
    if (flag === '\0' || flag === '0' || flag === '7') {
      flag = flag === '\0' && name.endsWith('/') ? '5' : '0';
    }
    let type: TarEntryType;
    let sparse: SparseSegment[] | undefined;
    let realSize = size;
    let bodySize = size;
    switch (flag) {
      case '0':
        type = 'file';
        break;
      case '1':
        type = 'hardlink';
        bodySize = 0;
        break;
      case '2':
        type = 'symlink';
        bodySize = 0;
        break;
      case '3':
        type = 'char';
        bodySize = 0;
        break;
      case '4':
        type = 'block';
        bodySize = 0;
        break;
      case '5':
        type = 'directory';
        bodySize = 0;
        break;
      case '6':
        type = 'fifo';
        bodySize = 0;
        break;
      case 'D':
        // GNU dump directory: a directory whose body lists its contents; the list is skipped
        type = 'directory';
        bodySize = 0;
        break;
      case 'S':
        type = 'file';
        break;
      case 'V': // GNU volume label: not an entry
        this.#startSkip(roundUp(size));
        return;
      default:
        throw invalidTar(
          `entry ${JSON.stringify(name)} has type ${JSON.stringify(flag)}, which is not supported (multi-volume and other exotic tar entries cannot be applied)`,
          at,
        );
    }
    realSize = type === 'file' ? size : 0;
    const header: MutableHeader = {
      name,
      type,
      typeflag: rawFlag,
      linkname,
      mode,
      uid,
      gid,
      uname,
      gname,
      mtime,
      atime,
      size: type === 'directory' ? 0 : bodySize,
      realSize,
      devmajor,
      devminor,
      xattrs: p.paxXattrs,
      sparse: undefined,
      offset: at,
    };
    this.#headerOffset = at;
    this.#bodyLeft = bodySize;
    // a dump directory's listing is skipped with the padding
    this.#padAfter = flag === 'D' ? roundUp(size) : roundUp(bodySize) - bodySize;

    // --- sparse files --------------------------------------------------------------------
    if (flag === 'S') {
      // old GNU: up to 4 segments in the header, more in extension blocks; real size at 483
      if (!gnu) throw invalidTar(`sparse entry ${JSON.stringify(name)} is not in GNU format`, at);
      header.realSize = parseNumber(block, 483, 12, at, 'sparse real size');
      sparse = readOldSparse(block, 386, 4, at);
      if (block[482] !== 0) {
        this.#partial = header;
        this.#sparseExt = sparse;
        this.#collect('sparse-ext', BLOCK);
        return;
      }
      header.sparse = checkSparse(sparse, header.realSize, bodySize, name, at);
    } else if (pax !== undefined && type === 'file') {
      const major = pax.get('GNU.sparse.major');
      const minor = pax.get('GNU.sparse.minor');
      const map = pax.get('GNU.sparse.map');
      if (major === '1' && minor === '0') {
        // 1.0: the map is at the start of the body, in decimal lines, padded to a block
        const real = pax.get('GNU.sparse.realsize') ?? pax.get('GNU.sparse.size');
        if (real === undefined) throw invalidTar(`sparse entry ${JSON.stringify(name)} has no real size`, at);
        header.realSize = paxInt(real, 'GNU.sparse.realsize', at);
        if (bodySize < BLOCK)
          throw invalidTar(`sparse entry ${JSON.stringify(name)} has no room for its map`, at);
        this.#partial = header;
        this.#sparseMapText = undefined;
        this.#collect('sparse-map', BLOCK);
        return;
      }
      if (map !== undefined || p.paxSparse !== undefined) {
        // 0.1 (GNU.sparse.map) or 0.0 (repeated offset / numbytes records)
        const real = pax.get('GNU.sparse.size') ?? pax.get('GNU.sparse.realsize');
        if (real === undefined) throw invalidTar(`sparse entry ${JSON.stringify(name)} has no real size`, at);
        header.realSize = paxInt(real, 'GNU.sparse.size', at);
        const nums =
          map !== undefined
            ? map === ''
              ? []
              : map.split(',').map((x) => paxInt(x, 'GNU.sparse.map', at))
            : (p.paxSparse as number[]);
        if (nums.length % 2 !== 0) throw invalidTar(`sparse map of ${JSON.stringify(name)} is odd`, at);
        const segs: SparseSegment[] = [];
        for (let i = 0; i < nums.length; i += 2)
          segs.push({ offset: nums[i] as number, length: nums[i + 1] as number });
        header.sparse = checkSparse(segs, header.realSize, bodySize, name, at);
      }
    }
    return this.#emit(header);
  }

  #emit(header: MutableHeader): void | Promise<void> {
    this.#entries++;
    const r = this.#sink.entry(header);
    const next = (): void | Promise<void> => {
      if (this.#bodyLeft > 0) {
        this.#state = 'body';
        return;
      }
      this.#startSkip(this.#padAfter, true);
      return this.#sink.entryEnd();
    };
    if (r !== undefined) return r.then(next);
    return next();
  }

  #onSparseExt(block: Buffer): void | Promise<void> {
    const header = this.#partial as MutableHeader;
    this.#bodyLeft = header.size; // extension blocks are not part of the size
    const more = readOldSparse(block, 0, 21, header.offset);
    for (const s of more) this.#sparseExt.push(s);
    if (this.#sparseExt.length > MAX_SPARSE_SEGMENTS) {
      throw invalidTar(`sparse entry ${JSON.stringify(header.name)} has too many segments`, header.offset);
    }
    if (block[504] !== 0) {
      this.#collect('sparse-ext', BLOCK);
      return;
    }
    header.sparse = checkSparse(this.#sparseExt, header.realSize, header.size, header.name, header.offset);
    this.#partial = undefined;
    this.#bodyLeft = header.size;
    this.#padAfter = roundUp(header.size) - header.size;
    return this.#emit(header);
  }

  #onSparseMap(block: Buffer): void | Promise<void> {
    // the map is: count \n (offset \n length \n)*, then padding to a block boundary
    const header = this.#partial as MutableHeader;
    const prev = this.#sparseMapText ?? '';
    const text = prev + block.toString('latin1');
    this.#bodyLeft -= block.length;
    const lines = text.split('\n');
    const count = lines.length > 1 ? paxInt(lines[0] as string, 'GNU sparse map count', header.offset) : -1;
    if (count > MAX_SPARSE_SEGMENTS) {
      throw invalidTar(`sparse entry ${JSON.stringify(header.name)} has too many segments`, header.offset);
    }
    if (count < 0 || lines.length < 2 + count * 2) {
      // need another block of map
      if ((this.#sparseMapText?.length ?? 0) + block.length > MAX_META) {
        throw invalidTar(`the sparse map of ${JSON.stringify(header.name)} is too large`, header.offset);
      }
      if (this.#bodyLeft < BLOCK) {
        throw invalidTar(`the sparse map of ${JSON.stringify(header.name)} is truncated`, header.offset);
      }
      this.#sparseMapText = text;
      this.#collect('sparse-map', BLOCK);
      return;
    }
    this.#sparseMapText = undefined;
    const segs: SparseSegment[] = [];
    for (let i = 0; i < count; i++) {
      segs.push({
        offset: paxInt(lines[1 + i * 2] as string, 'GNU sparse map', header.offset),
        length: paxInt(lines[2 + i * 2] as string, 'GNU sparse map', header.offset),
      });
    }
    const stored = this.#bodyLeft;
    header.size = stored;
    header.sparse = checkSparse(segs, header.realSize, stored, header.name, header.offset);
    this.#partial = undefined;
    // #padAfter was computed from the whole body and still holds
    return this.#emit(header);
  }
}

type MutableHeader = { -readonly [K in keyof TarHeader]: TarHeader[K] };

function emptyPending(): Pending {
  return {
    pax: undefined,
    paxXattrs: undefined,
    paxSparse: undefined,
    longName: undefined,
    longLink: undefined,
  };
}

function roundUp(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

function isZero(b: Buffer): boolean {
  // compare 8 bytes at a time where aligned; blocks from the parser are usually aligned
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function verifyChecksum(block: Buffer, at: number): void {
  const stored = parseNumber(block, 148, 8, at, 'checksum');
  // the checksum field itself counts as eight spaces
  let unsigned = 8 * 0x20;
  for (let i = 0; i < 148; i++) unsigned += block[i] as number;
  for (let i = 156; i < BLOCK; i++) unsigned += block[i] as number;
  if (stored === unsigned) return;
  // some historic tars summed signed bytes
  let high = 0;
  for (let i = 0; i < BLOCK; i++) if ((i < 148 || i >= 156) && (block[i] as number) > 127) high++;
  if (stored !== unsigned - 256 * high) {
    throw invalidTar(
      at === 0 ? 'not a tar archive (the first header has a bad checksum)' : 'bad header checksum',
      at,
    );
  }
}

/** A NUL-terminated string field, decoded as UTF-8 (names that are not UTF-8 are refused). */
function cString(buf: Buffer, start: number, len: number, at: number): string {
  if (buf[start] === 0) return '';
  let end = start;
  const max = start + len;
  let high = false;
  while (end < max) {
    const c = buf[end] as number;
    if (c === 0) break;
    if (c >= 0x80) high = true;
    end++;
  }
  if (!high) return buf.toString('latin1', start, end);
  const s = buf.toString('utf8', start, end);
  if (s.includes('\uFFFD') && !isUtf8(buf.subarray(start, end))) {
    throw new StratumError(
      'ERR_UNSUPPORTED',
      `invalid tar (at byte ${at}): a name is not valid UTF-8 (${JSON.stringify(buf.toString('latin1', start, end))}); such names are not supported`,
    );
  }
  return s;
}

/**
 * An octal or base-256 number field. Base-256: the top bit of the first byte set, the rest a
 * big-endian two's complement number (negative only where `signed`, e.g. mtimes before 1970).
 */
function parseNumber(
  buf: Buffer,
  start: number,
  len: number,
  at: number,
  field: string,
  signed = false,
): number {
  const first = buf[start] as number;
  if (first & 0x80) {
    const negative = (first & 0x40) !== 0;
    if (negative && !signed) throw invalidTar(`negative ${field} in a header`, at);
    let v = negative ? (first & 0x7f) - 0x80 : first & 0x7f;
    for (let i = start + 1; i < start + len; i++) {
      v = v * 256 + (buf[i] as number);
      if (!Number.isSafeInteger(v)) throw invalidTar(`${field} in a header is too large`, at);
    }
    return v;
  }
  let v = 0;
  let i = start;
  const end = start + len;
  while (i < end && (buf[i] === 0x20 || buf[i] === 0)) {
    // leading spaces (and NULs, which some writers use for an empty field)
    if (buf[i] === 0) return 0;
    i++;
  }
  let digits = 0;
  for (; i < end; i++) {
    const c = buf[i] as number;
    if (c >= 0x30 && c <= 0x37) {
      v = v * 8 + (c - 0x30);
      digits++;
    } else if (c === 0x20 || c === 0) {
      break;
    } else {
      throw invalidTar(
        `${field} ${JSON.stringify(buf.toString('latin1', start, end))} is not an octal number`,
        at,
      );
    }
  }
  for (; i < end; i++) {
    const c = buf[i] as number;
    if (c !== 0x20 && c !== 0) {
      throw invalidTar(
        `${field} ${JSON.stringify(buf.toString('latin1', start, end))} is not an octal number`,
        at,
      );
    }
  }
  if (digits > 0 && !Number.isSafeInteger(v)) throw invalidTar(`${field} in a header is too large`, at);
  return v;
}

function paxInt(s: string, key: string, at: number): number {
  if (!/^[0-9]{1,16}$/.test(s))
    throw invalidTar(`PAX ${key} ${JSON.stringify(s.slice(0, 40))} is not a number`, at);
  const v = Number(s);
  if (!Number.isSafeInteger(v)) throw invalidTar(`PAX ${key} is too large`, at);
  return v;
}

function paxTime(s: string, key: string, at: number): number {
  if (!/^-?[0-9]{1,19}(\.[0-9]{1,30})?$/.test(s)) {
    throw invalidTar(`PAX ${key} ${JSON.stringify(s.slice(0, 40))} is not a time`, at);
  }
  const v = Number(s);
  if (!Number.isFinite(v)) throw invalidTar(`PAX ${key} is out of range`, at);
  return v;
}

const SCHILY_XATTR = 'SCHILY.xattr.';
const LIBARCHIVE_XATTR = 'LIBARCHIVE.xattr.';

/** Parse PAX records ("len key=value\n") into `p`; xattr values keep their exact bytes. */
function parsePax(data: Buffer, at: number, p: Pending): void {
  const pax = p.pax ?? new Map<string, string>();
  p.pax = pax;
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding after the last record
    const space = data.indexOf(0x20, pos);
    if (space === -1 || space - pos > 20) throw invalidTar('malformed PAX record (no length)', at);
    const lenText = data.toString('latin1', pos, space);
    if (!/^[0-9]+$/.test(lenText))
      throw invalidTar(`malformed PAX record length ${JSON.stringify(lenText)}`, at);
    const len = Number(lenText);
    const end = pos + len;
    if (len <= space - pos + 1 || end > data.length || data[end - 1] !== 0x0a) {
      throw invalidTar('malformed PAX record (its length does not fit)', at);
    }
    const eq = data.indexOf(0x3d, space + 1);
    if (eq === -1 || eq >= end) throw invalidTar('malformed PAX record (no "=")', at);
    const key = data.toString('utf8', space + 1, eq);
    if (key.startsWith(SCHILY_XATTR)) {
      const name = key.slice(SCHILY_XATTR.length);
      if (name === '') throw invalidTar('PAX xattr record without a name', at);
      const xattrs = p.paxXattrs ?? new Map<string, Buffer>();
      p.paxXattrs = xattrs;
      xattrs.set(name, Buffer.from(data.subarray(eq + 1, end - 1)));
    } else if (key.startsWith(LIBARCHIVE_XATTR)) {
      let name: string;
      try {
        name = decodeURIComponent(key.slice(LIBARCHIVE_XATTR.length));
      } catch {
        throw invalidTar(`PAX record ${JSON.stringify(key)} has a badly encoded xattr name`, at);
      }
      if (name === '') throw invalidTar('PAX xattr record without a name', at);
      const value = Buffer.from(data.toString('latin1', eq + 1, end - 1), 'base64');
      const xattrs = p.paxXattrs ?? new Map<string, Buffer>();
      p.paxXattrs = xattrs;
      // SCHILY wins when both are present (GNU tar and bsdtar may write both)
      if (!xattrs.has(name)) xattrs.set(name, value);
    } else if (key === 'GNU.sparse.offset' || key === 'GNU.sparse.numbytes') {
      // sparse 0.0: these repeat, in order, so they cannot go in the map
      const nums = p.paxSparse ?? [];
      p.paxSparse = nums;
      const v = data.toString('latin1', eq + 1, end - 1);
      const isOffset = key === 'GNU.sparse.offset';
      if (isOffset !== (nums.length % 2 === 0)) throw invalidTar('GNU sparse 0.0 records out of order', at);
      if (nums.length >= MAX_SPARSE_SEGMENTS * 2) throw invalidTar('too many GNU sparse records', at);
      nums.push(paxInt(v, key, at));
    } else {
      const value = data.toString('utf8', eq + 1, end - 1);
      if (
        (key === 'path' || key === 'linkpath' || key === 'GNU.sparse.name') &&
        value.includes('\uFFFD') &&
        !isUtf8(data.subarray(eq + 1, end - 1))
      ) {
        throw new StratumError(
          'ERR_UNSUPPORTED',
          `invalid tar (at byte ${at}): the PAX ${key} is not valid UTF-8; such names are not supported`,
        );
      }
      if (value === '' && (key === 'path' || key === 'linkpath')) {
        // an empty record removes a key (POSIX): the header field is used
        pax.delete(key);
      } else {
        pax.set(key, value);
      }
    }
    pos = end;
  }
}

function readOldSparse(block: Buffer, start: number, count: number, at: number): SparseSegment[] {
  const out: SparseSegment[] = [];
  for (let i = 0; i < count; i++) {
    const o = start + i * 24;
    if (block[o] === 0 && block[o + 12] === 0) break;
    out.push({
      offset: parseNumber(block, o, 12, at, 'sparse offset'),
      length: parseNumber(block, o + 12, 12, at, 'sparse length'),
    });
  }
  return out;
}

/** Segments must be in order, not overlap, lie within the file, and add up to the stored bytes. */
function checkSparse(
  segs: SparseSegment[],
  realSize: number,
  stored: number,
  name: string,
  at: number,
): SparseSegment[] {
  let end = 0;
  let total = 0;
  for (const s of segs) {
    if (s.offset < end || s.offset + s.length > realSize || !Number.isSafeInteger(s.offset + s.length)) {
      throw invalidTar(
        `the sparse map of ${JSON.stringify(name)} is invalid (segments overlap or lie past its end)`,
        at,
      );
    }
    end = s.offset + s.length;
    total += s.length;
  }
  if (total !== stored) {
    throw invalidTar(
      `the sparse map of ${JSON.stringify(name)} describes ${total} bytes but the entry stores ${stored}`,
      at,
    );
  }
  return segs;
}
