// Where COPY and ADD read from, and what they read: the build context (a host directory
// filtered by .dockerignore, which no source may leave — `..` or a symlink pointing out is
// refused), or the root filesystem of a stage or image (`--from`, where symlinks resolve
// inside that root as under chroot). Sources may be globs (`*`, `?`, `[...]` per path
// component, as docker's filepath.Match). The files a source names are listed in a stable
// order with their metadata, and hashed (path, type, mode, size, content or link target) for
// the build cache.

import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from 'node:fs';
import { lstat, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, posix, relative } from 'node:path';
import { resolveInRoot } from '../bundle/user.js';
import { type Digest, digestBytes } from '../digest/digest.js';
import { StratumError, UnsafePathError } from '../errors/errors.js';
import { IgnoreMatcher, parseDockerignore, patternToRegExp } from './dockerignore.js';

/** Files up to this size are hashed with one synchronous read. */
const SMALL_FILE = 4 * 1024 * 1024;

export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

/** One thing to copy: `rel` is its path below the source it was found in ('' for the source itself). */
export interface SourceEntry {
  readonly rel: string;
  readonly abs: string;
  readonly type: EntryType;
  readonly mode: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly link?: string;
}

/** A source as named by COPY after globbing: its entries (a directory's first, then its contents). */
export interface ResolvedSource {
  /** The path it was named by, relative to the source root. */
  readonly name: string;
  readonly type: EntryType;
  readonly entries: readonly SourceEntry[];
}

function typeOf(st: Stats): EntryType {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  return 'other';
}

function hasGlob(p: string): boolean {
  return /[*?[]/.test(p);
}

function isMissing(e: unknown): boolean {
  const c = (e as NodeJS.ErrnoException).code;
  return c === 'ENOENT' || c === 'ENOTDIR';
}

function within(root: string, p: string): boolean {
  return p === root || p.startsWith(`${root}/`);
}

/** A tree COPY reads from. */
export class SourceTree {
  readonly root: string;
  readonly kind: 'context' | 'rootfs';
  readonly #ignore: IgnoreMatcher;
  readonly #hashes = new Map<string, string>();
  #realRoot: string | undefined;

  private constructor(root: string, kind: 'context' | 'rootfs', ignore: IgnoreMatcher) {
    this.root = root;
    this.kind = kind;
    this.#ignore = ignore;
  }

  /** The build context at `dir`, with its .dockerignore (or the patterns given). */
  static async context(dir: string, ignorePatterns?: readonly string[]): Promise<SourceTree> {
    let patterns = ignorePatterns;
    if (patterns === undefined) {
      const text = await readFile(join(dir, '.dockerignore'), 'utf8').catch((e: unknown) => {
        if (isMissing(e)) return '';
        throw e;
      });
      patterns = parseDockerignore(text);
    }
    const st = await stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) {
      throw new StratumError('ERR_NOT_FOUND', `build context ${dir} is not a directory`);
    }
    return new SourceTree(dir, 'context', new IgnoreMatcher(patterns));
  }

  /** The root filesystem of a stage or image (no ignore rules). */
  static rootfs(dir: string): SourceTree {
    return new SourceTree(dir, 'rootfs', new IgnoreMatcher([]));
  }

  async #real(): Promise<string> {
    this.#realRoot ??= await realpath(this.root);
    return this.#realRoot;
  }

  excluded(rel: string): boolean {
    return this.kind === 'context' && rel !== '' && this.#ignore.excludes(rel);
  }

  /**
   * The host path of `rel` (clean, relative): in the context every symlink on the way must
   * stay inside it (else ERR_UNSAFE_PATH); in a rootfs symlinks resolve inside the root.
   * undefined when it does not exist.
   */
  async #resolve(rel: string, where: string): Promise<string | undefined> {
    if (this.kind === 'rootfs') return resolveInRoot(this.root, rel);
    const root = await this.#real();
    let real: string;
    try {
      real = await realpath(join(root, rel));
    } catch (e) {
      if (isMissing(e)) return undefined;
      if ((e as NodeJS.ErrnoException).code === 'ELOOP') {
        throw new UnsafePathError(rel, `${where}: too many levels of symbolic links`);
      }
      throw e;
    }
    if (!within(root, real)) {
      throw new UnsafePathError(
        rel,
        `${where}: it is a symbolic link to ${real}, outside the build context; COPY only reads files inside the context`,
      );
    }
    return real;
  }

  /** Clean a source path as written; refuses leaving the root. */
  #clean(p: string, where: string): string {
    const c = posix.normalize(`/${p}`).replace(/\/+$/, '');
    const rel = c.replace(/^\/+/, '');
    if (this.kind === 'context' && posix.normalize(p.replace(/^\/+/, '')).split('/')[0] === '..') {
      throw new UnsafePathError(p, `${where}: forbidden path outside the build context`);
    }
    return rel === '.' ? '' : rel;
  }

  /**
   * Walk `rel`'s directory recursively: entries below it (sorted, ignore rules applied).
   * Synchronous: thousands of small calls cost less than their thread-pool round trips.
   */
  #walk(abs: string, rel: string, out: SourceEntry[], base: string): void {
    const names = readdirSync(abs).sort();
    for (const name of names) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      const childAbs = join(abs, name);
      const st = lstatSync(childAbs);
      const type = typeOf(st);
      const excluded = this.excluded(childRel);
      if (excluded && !(type === 'directory' && this.#ignore.hasExceptions)) continue;
      const entryRel = base === '' ? childRel : childRel.slice(base.length + 1);
      if (type === 'directory') {
        const before = out.length;
        if (!excluded) out.push(this.#entry(entryRel, childAbs, st, undefined));
        this.#walk(childAbs, childRel, out, base);
        if (excluded && out.length > before) {
          // an exception inside an excluded directory: the directory comes along as a parent
          out.splice(before, 0, this.#entry(entryRel, childAbs, st, undefined));
        }
      } else {
        out.push(
          this.#entry(entryRel, childAbs, st, type === 'symlink' ? readlinkSync(childAbs) : undefined),
        );
      }
    }
  }

  #entry(rel: string, abs: string, st: Stats, link: string | undefined): SourceEntry {
    return {
      rel,
      abs,
      type: typeOf(st),
      mode: st.mode & 0o7777,
      size: st.isFile() ? st.size : 0,
      mtimeMs: st.mtimeMs,
      ...(link === undefined ? {} : { link }),
    };
  }

  /** Paths below the root matching a glob (per component), sorted. */
  async #glob(pattern: string, where: string): Promise<string[]> {
    const parts = pattern.split('/');
    let dirs = [''];
    for (const part of parts) {
      const next: string[] = [];
      for (const dir of dirs) {
        if (!hasGlob(part)) {
          next.push(dir === '' ? part : `${dir}/${part}`);
          continue;
        }
        const host = dir === '' ? this.root : await this.#resolve(dir, where);
        if (host === undefined) continue;
        const re = patternToRegExp(part);
        const names = await readdir(host).catch((e: unknown) => {
          if (isMissing(e) || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return [] as string[];
          throw e;
        });
        for (const n of names.sort()) {
          const rel = dir === '' ? n : `${dir}/${n}`;
          if (re.test(n) && !this.excluded(rel)) next.push(rel);
        }
      }
      dirs = next;
    }
    const out: string[] = [];
    for (const p of dirs) if ((await this.#resolve(p, where)) !== undefined) out.push(p);
    return out;
  }

  /**
   * Resolve COPY source patterns: each names files or directories (globs expand; a glob that
   * matches nothing is an error, as is a missing or excluded path).
   */
  async resolve(patterns: readonly string[], where: string): Promise<ResolvedSource[]> {
    const out: ResolvedSource[] = [];
    for (const raw of patterns) {
      const pattern = this.#clean(raw, where);
      const names = hasGlob(pattern) ? await this.#glob(pattern, where) : [pattern];
      if (names.length === 0) {
        throw new StratumError(
          'ERR_NOT_FOUND',
          `${where}: no source files were specified: ${raw} matches nothing`,
        );
      }
      for (const name of names) {
        const gone = (why: string) =>
          new StratumError('ERR_NOT_FOUND', `${where}: ${raw}: not found in the build context (${why})`);
        const host = await this.#resolve(name, where);
        if (host === undefined) {
          throw new StratumError(
            'ERR_NOT_FOUND',
            `${where}: ${raw}: not found in ${this.kind === 'context' ? 'the build context' : 'the source stage or image'}`,
          );
        }
        // what a symlink in the context leads to must not be excluded either
        const realRel = this.kind === 'context' ? relative(await this.#real(), host) : name;
        const excluded = this.excluded(name) || this.excluded(realRel);
        const st = await lstat(host);
        // an excluded directory is there only as the parent of files an exception re-includes
        if (excluded && !(st.isDirectory() && this.#ignore.hasExceptions)) {
          throw gone(
            realRel === name
              ? 'excluded by .dockerignore'
              : `it leads to ${realRel}, excluded by .dockerignore`,
          );
        }
        const entries: SourceEntry[] = [this.#entry('', host, st, undefined)];
        if (st.isDirectory()) this.#walk(host, realRel, entries, realRel);
        if (excluded && entries.length === 1) throw gone('excluded by .dockerignore');
        out.push({ name, type: typeOf(st), entries });
      }
    }
    return out;
  }

  async #fileHash(abs: string, st: SourceEntry): Promise<string> {
    const key = `${abs}\0${st.size}\0${st.mtimeMs}`;
    const known = this.#hashes.get(key);
    if (known) return known;
    const h = createHash('sha256');
    if (st.size <= SMALL_FILE) h.update(readFileSync(abs));
    else for await (const chunk of createReadStream(abs)) h.update(chunk as Buffer);
    const d = h.digest('hex');
    this.#hashes.set(key, d);
    return d;
  }

  /** A digest of what the sources hold (names, types, modes, contents, link targets). */
  async hash(sources: readonly ResolvedSource[]): Promise<Digest> {
    const lines: string[] = [];
    for (const s of sources) {
      lines.push(`source ${JSON.stringify(s.name)} ${s.type}`);
      for (const e of s.entries) {
        let what = '';
        if (e.type === 'file') what = await this.#fileHash(e.abs, e);
        else if (e.type === 'symlink') what = JSON.stringify(e.link);
        lines.push(`${JSON.stringify(e.rel)} ${e.type} ${e.mode.toString(8)} ${e.size} ${what}`);
      }
    }
    return digestBytes(lines.join('\n'));
  }
}
