// Entries Node cannot make by itself: device nodes and fifos (Node has no mknod) and anything
// that carries xattrs (Node has no setxattr). They are written, in order, as a small tar
// stream into one GNU tar process per batch (`tar -x --xattrs`), which makes them with the
// real system calls. GNU tar is part of every Debian system (it is Essential).
//
// The caller has already done the safety work: names are clean and relative, every parent is
// a real directory inside the root, and whatever was at the path has been removed — so tar
// only ever creates new nodes (or, for a directory entry, sets the xattrs and metadata of the
// directory that is there). Until `flush()` resolves, the entries are not guaranteed to exist:
// `pending` lists their paths, and a caller that needs one of them (a hard link to it, or a
// later entry at the same path) flushes first.
//
// One process serves many entries: a layer's whiteouts in overlay form (character devices 0/0)
// cost one spawn, not one each.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { findProgram } from '../compression/compression.js';
import { StratumError } from '../errors/errors.js';

export interface SpecialEntry {
  /** Clean relative path. */
  readonly name: string;
  readonly type: 'file' | 'directory' | 'symlink' | 'char' | 'block' | 'fifo';
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Seconds since the epoch (fractions kept to the microsecond). */
  readonly mtime: number;
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Bytes of body to follow with `data()` (type 'file' only). */
  readonly size?: number;
  readonly xattrs?: ReadonlyMap<string, Buffer> | undefined;
}

const BLOCK = 512;
const STDERR_LIMIT = 8192;

let gnuTar: string | undefined | null = null;

/** The GNU tar program, or undefined when this machine has none. */
export function findGnuTar(): string | undefined {
  if (gnuTar !== null) return gnuTar;
  gnuTar = undefined;
  const path = findProgram('tar');
  if (path !== undefined) {
    const r = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0 && /GNU tar/.test(r.stdout)) gnuTar = path;
  }
  return gnuTar;
}

function noTar(): StratumError {
  return new StratumError(
    'ERR_UNSUPPORTED',
    'this layer has device nodes, fifos or extended attributes, which Node cannot create by itself; stratum makes them with GNU tar, and no GNU tar was found (install the tar package)',
  );
}

/** Writes special entries into the root through batches of `tar -x`. */
export class SpecialEntries {
  readonly #root: string;
  readonly #sameOwner: boolean;
  readonly pending = new Set<string>();
  /** Every directory above a pending path ('' included): they must not be replaced before the flush. */
  readonly pendingAbove = new Set<string>();
  #child: ChildProcess | undefined;
  #exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  #stderr = '';
  #spawnError: Error | undefined;
  #bodyLeft = 0;
  #padding = 0;
  #count = 0;

  constructor(root: string, opts: { sameOwner: boolean }) {
    this.#root = root;
    this.#sameOwner = opts.sameOwner;
  }

  /** Entries written through tar so far (all batches). */
  get count(): number {
    return this.#count;
  }

  #start(): ChildProcess {
    if (this.#child) return this.#child;
    const tar = findGnuTar();
    if (tar === undefined) throw noTar();
    const args = [
      '-x',
      '-f',
      '-',
      '-C',
      this.#root,
      '--numeric-owner',
      '--same-permissions',
      this.#sameOwner ? '--same-owner' : '--no-same-owner',
      '--xattrs',
      '--xattrs-include=*',
      '--warning=no-timestamp',
      '--warning=no-unknown-keyword',
    ];
    const child = spawn(tar, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    this.#stderr = '';
    this.#spawnError = undefined;
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      if (this.#stderr.length < STDERR_LIMIT) this.#stderr += s.slice(0, STDERR_LIMIT - this.#stderr.length);
    });
    child.stdin?.on('error', () => {}); // an early exit is reported by flush()
    this.#exit = new Promise((resolve) => {
      child.on('error', (e) => {
        this.#spawnError = e;
        resolve({ code: null, signal: null });
      });
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    this.#child = child;
    return child;
  }

  #write(buf: Buffer): void | Promise<void> {
    const stdin = this.#start().stdin;
    if (!stdin || stdin.destroyed) return;
    if (stdin.write(buf)) return;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        stdin.off('drain', done);
        stdin.off('close', done);
        resolve();
      };
      stdin.on('drain', done);
      stdin.on('close', done);
    });
  }

  /** Start an entry; a 'file' entry's body follows with `data()` then `end()`. */
  begin(entry: SpecialEntry): void | Promise<void> {
    this.pending.add(entry.name);
    for (let i = entry.name.lastIndexOf('/'); i !== -1; i = entry.name.lastIndexOf('/', i - 1)) {
      const dir = entry.name.slice(0, i);
      if (this.pendingAbove.has(dir)) break;
      this.pendingAbove.add(dir);
    }
    this.pendingAbove.add('');
    this.#count++;
    const size = entry.type === 'file' ? (entry.size ?? 0) : 0;
    this.#bodyLeft = size;
    this.#padding = (BLOCK - (size % BLOCK)) % BLOCK;
    return this.#write(encodeEntry(entry, size));
  }

  data(chunk: Buffer): void | Promise<void> {
    if (chunk.length > this.#bodyLeft) throw new Error('special entries: more body than announced');
    this.#bodyLeft -= chunk.length;
    // the caller's slice is only valid until we return; the pipe may keep it longer
    return this.#write(Buffer.from(chunk));
  }

  end(): void | Promise<void> {
    if (this.#bodyLeft !== 0) throw new Error('special entries: body shorter than announced');
    if (this.#padding === 0) return;
    const pad = Buffer.alloc(this.#padding);
    this.#padding = 0;
    return this.#write(pad);
  }

  /** Finish the batch: every entry written so far exists once this resolves. */
  async flush(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    child.stdin?.end(Buffer.alloc(BLOCK * 2));
    const { code, signal } = await (this.#exit as Promise<{
      code: number | null;
      signal: NodeJS.Signals | null;
    }>);
    this.pending.clear();
    this.pendingAbove.clear();
    if (this.#spawnError !== undefined) {
      throw new StratumError('ERR_UNSUPPORTED', `could not run GNU tar: ${this.#spawnError.message}`, {
        cause: this.#spawnError,
      });
    }
    if (code !== 0) {
      const text = this.#stderr
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l !== '' && !/^tar: Exiting with failure status/.test(l))
        .join('; ');
      throw new StratumError(
        'ERR_UNSUPPORTED',
        `could not create device nodes, fifos or extended attributes with GNU tar (${signal ? `killed by ${signal}` : `exit status ${code}`}): ${text || 'no message'}`,
      );
    }
  }

  /** Stop at once (on failure): the process is killed. */
  destroy(): void {
    const child = this.#child;
    this.#child = undefined;
    this.pending.clear();
    this.pendingAbove.clear();
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

// --- encoding -------------------------------------------------------------------------------

const TYPEFLAG: Readonly<Record<SpecialEntry['type'], string>> = {
  file: '0',
  directory: '5',
  symlink: '2',
  char: '3',
  block: '4',
  fifo: '6',
};

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), body]);
}

function fitsOctal(n: number, width: number): boolean {
  return Number.isInteger(n) && n >= 0 && n < 8 ** (width - 1);
}

function writeOctal(buf: Buffer, off: number, width: number, n: number): void {
  const s = (fitsOctal(n, width) ? n : 0).toString(8).padStart(width - 1, '0');
  buf.write(s, off, width - 1, 'latin1');
  buf[off + width - 1] = 0;
}

function header(name: string, flag: string, size: number, e: SpecialEntry | undefined, link = ''): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  writeOctal(h, 100, 8, e ? e.mode & 0o7777 : 0o644);
  writeOctal(h, 108, 8, e?.uid ?? 0);
  writeOctal(h, 116, 8, e?.gid ?? 0);
  writeOctal(h, 124, 12, size);
  writeOctal(h, 136, 12, e ? Math.max(0, Math.floor(e.mtime)) : 0);
  h[156] = flag.charCodeAt(0);
  h.write(link, 157, 100, 'utf8');
  h.write('ustar\u000000', 257, 8, 'latin1');
  writeOctal(h, 329, 8, e?.devmajor ?? 0);
  writeOctal(h, 337, 8, e?.devminor ?? 0);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i] as number;
  h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1');
  return h;
}

const ASCII_SHORT = /^[\x20-\x7e]{1,99}$/;

/** A PAX header (path, linkpath, ids, time, xattrs as needed) and the ustar header of one entry. */
export function encodeEntry(e: SpecialEntry, size: number): Buffer {
  const records: Buffer[] = [];
  const name = e.type === 'directory' ? `${e.name}/` : e.name;
  const link = e.linkname ?? '';
  const shortName = ASCII_SHORT.test(name);
  const shortLink = link === '' || ASCII_SHORT.test(link);
  if (!shortName) records.push(paxRecord('path', Buffer.from(name, 'utf8')));
  if (!shortLink) records.push(paxRecord('linkpath', Buffer.from(link, 'utf8')));
  if (!fitsOctal(e.uid, 8)) records.push(paxRecord('uid', Buffer.from(String(e.uid))));
  if (!fitsOctal(e.gid, 8)) records.push(paxRecord('gid', Buffer.from(String(e.gid))));
  if (!fitsOctal(size, 12)) records.push(paxRecord('size', Buffer.from(String(size))));
  if (!Number.isInteger(e.mtime) || !fitsOctal(e.mtime, 12)) {
    records.push(paxRecord('mtime', Buffer.from(e.mtime.toFixed(6))));
  }
  if (e.xattrs) for (const [k, v] of e.xattrs) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
  const parts: Buffer[] = [];
  if (records.length > 0) {
    const body = Buffer.concat(records);
    parts.push(header('././@PaxHeader', 'x', body.length, undefined));
    parts.push(body);
    const pad = (BLOCK - (body.length % BLOCK)) % BLOCK;
    if (pad > 0) parts.push(Buffer.alloc(pad));
  }
  parts.push(header(shortName ? name : 'pax-name', TYPEFLAG[e.type], size, e, shortLink ? link : 'pax-link'));
  return Buffer.concat(parts);
}
