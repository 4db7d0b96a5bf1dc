// The image config's `User` resolved to uid, gid and supplementary groups through the
// rootfs's /etc/passwd and /etc/group, as runc's libcontainer/user (GetExecUser) does and
// therefore as `umoci unpack` does:
//
//   ''            the passwd entry with uid 0 (if any) gives HOME and the groups listing it
//   NAME | UID    a passwd entry by name (a number is always a uid); a number without an
//                 entry is accepted as it is, a name without one is an error
//   USER:GROUP    as above, and the gid from a group entry by name or number (a number
//                 without an entry is accepted); no supplementary groups in this form
//
// Supplementary groups are the groups whose member list names the matched user. HOME comes
// from the matched passwd entry. Parsing follows libcontainer: lines are trimmed, empty lines
// skipped, fields split on ':', a field that is not a number reads as 0.
//
// The rootfs is untrusted: the files are found by resolving symlinks inside the rootfs (an
// absolute link, or `..`, never leaves it, as under chroot), opened without following a
// final symlink, must be regular files and are read up to a limit.

import { constants } from 'node:fs';
import { lstat, open, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { StratumError, TooLargeError } from '../errors/errors.js';

export interface PasswdEntry {
  readonly name: string;
  readonly password: string;
  readonly uid: number;
  readonly gid: number;
  readonly gecos: string;
  readonly home: string;
  readonly shell: string;
}

export interface GroupEntry {
  readonly name: string;
  readonly password: string;
  readonly gid: number;
  readonly members: readonly string[];
}

/** Who the container's process runs as. */
export interface ExecUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids: readonly number[];
  /** The matched passwd entry's home directory, if an entry matched. */
  readonly home?: string;
}

/** Largest uid/gid accepted (as libcontainer: 0 .. 2^31-1). */
export const MAX_ID = 2 ** 31 - 1;

/** /etc/passwd and /etc/group larger than this are refused. */
export const ACCOUNT_FILE_LIMIT = 16 * 1024 * 1024;

/** Go's strconv.Atoi: optional sign, decimal digits; anything else is not a number. */
function atoi(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

/** Parse /etc/passwd text (name:password:uid:gid:gecos:home:shell). */
export function parsePasswd(text: string): PasswdEntry[] {
  return lines(text).map((line) => {
    const f = line.split(':');
    return {
      name: f[0] ?? '',
      password: f[1] ?? '',
      uid: atoi(f[2] ?? '') ?? 0,
      gid: atoi(f[3] ?? '') ?? 0,
      gecos: f[4] ?? '',
      home: f[5] ?? '',
      shell: f[6] ?? '',
    };
  });
}

/** Parse /etc/group text (name:password:gid:member,member). */
export function parseGroup(text: string): GroupEntry[] {
  return lines(text).map((line) => {
    const f = line.split(':');
    const list = f[3] ?? '';
    return {
      name: f[0] ?? '',
      password: f[1] ?? '',
      gid: atoi(f[2] ?? '') ?? 0,
      members: list === '' ? [] : list.split(','),
    };
  });
}

function invalidUser(spec: string, why: string): StratumError {
  return new StratumError('ERR_INVALID_DOCUMENT', `image config: User ${JSON.stringify(spec)}: ${why}`);
}

function checkRange(spec: string, what: string, n: number): number {
  if (n < 0 || n > MAX_ID) throw invalidUser(spec, `${what} ${n} is outside 0..${MAX_ID}`);
  return n;
}

/**
 * Resolve a `User` value. `passwd` / `group` are the files' text, or undefined when the
 * image has no such file (then names cannot be resolved, numbers still can).
 */
export function resolveUser(
  spec: string,
  files: { readonly passwd?: string | undefined; readonly group?: string | undefined },
): ExecUser {
  const parts = spec.split(':');
  const userArg = parts[0] ?? '';
  const groupArg = parts[1] ?? '';
  const uidArg = atoi(userArg);
  const gidArg = atoi(groupArg);

  let uid = 0;
  let gid = 0;
  let home: string | undefined;
  let additionalGids: number[] = [];
  let matchedName = '';

  const users = files.passwd === undefined ? [] : parsePasswd(files.passwd);
  const user = users.find((u) =>
    userArg === '' ? u.uid === 0 : uidArg !== undefined ? u.uid === uidArg : u.name === userArg,
  );
  if (user) {
    matchedName = user.name;
    uid = user.uid;
    gid = user.gid;
    home = user.home;
  } else if (userArg !== '') {
    if (uidArg === undefined) {
      throw invalidUser(
        spec,
        files.passwd === undefined
          ? `the image has no /etc/passwd to find the user ${JSON.stringify(userArg)} in`
          : `no user ${JSON.stringify(userArg)} in the image's /etc/passwd`,
      );
    }
    uid = checkRange(spec, 'uid', uidArg);
  }

  if (groupArg !== '' || matchedName !== '') {
    const groups = files.group === undefined ? [] : parseGroup(files.group);
    if (groupArg !== '') {
      const g = groups.find((x) => (gidArg !== undefined ? x.gid === gidArg : x.name === groupArg));
      if (g) gid = g.gid;
      else if (gidArg === undefined) {
        throw invalidUser(
          spec,
          files.group === undefined
            ? `the image has no /etc/group to find the group ${JSON.stringify(groupArg)} in`
            : `no group ${JSON.stringify(groupArg)} in the image's /etc/group`,
        );
      } else gid = checkRange(spec, 'gid', gidArg);
    } else {
      additionalGids = groups.filter((g) => g.members.includes(matchedName)).map((g) => g.gid);
    }
  }
  return { uid, gid, additionalGids, ...(home !== undefined && home !== '' ? { home } : {}) };
}

const MAX_SYMLINKS = 40;

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/**
 * Resolve `path` inside `root` as if `root` were `/`: symlinks are followed but can never
 * lead out (absolute targets restart at root, `..` stops at root). Returns the host path of
 * the result, or undefined when some component does not exist.
 */
export async function resolveInRoot(root: string, path: string): Promise<string | undefined> {
  const pending = path.split('/');
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, part);
    let st: import('node:fs').Stats;
    try {
      st = await lstat(host);
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) {
        throw new StratumError('ERR_INVALID_DOCUMENT', `too many symlinks resolving ${path} in the image`);
      }
      const target = await readlink(host);
      if (target.startsWith('/')) done.length = 0;
      pending.unshift(...target.split('/'));
      continue;
    }
    if (pending.some((p) => p !== '' && p !== '.') && !st.isDirectory()) return undefined;
    done.push(part);
  }
  return join(root, ...done);
}

/**
 * Read a file of the rootfs (e.g. `/etc/passwd`) safely: resolved inside the root, no final
 * symlink followed, regular files only, at most `limit` bytes. undefined when it does not exist.
 */
export async function readRootfsFile(
  root: string,
  path: string,
  limit = ACCOUNT_FILE_LIMIT,
): Promise<Buffer | undefined> {
  const host = await resolveInRoot(root, path);
  if (host === undefined) return undefined;
  let fh: import('node:fs/promises').FileHandle;
  try {
    fh = await open(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if (isMissing(e)) return undefined;
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new StratumError('ERR_INVALID_DOCUMENT', `${path} in the image changed while it was read`);
    }
    throw e;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      throw new StratumError('ERR_INVALID_DOCUMENT', `${path} in the image is not a regular file`);
    }
    if (st.size > limit) throw new TooLargeError(`${path} in the image`, limit);
    const buf = Buffer.alloc(st.size);
    let n = 0;
    while (n < buf.length) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

/** Resolve `User` through the rootfs's /etc/passwd and /etc/group (read safely). */
export async function resolveUserInRootfs(rootfs: string, spec: string): Promise<ExecUser> {
  const [passwd, group] = await Promise.all([
    readRootfsFile(rootfs, '/etc/passwd'),
    readRootfsFile(rootfs, '/etc/group'),
  ]);
  return resolveUser(spec, { passwd: passwd?.toString('utf8'), group: group?.toString('utf8') });
}
