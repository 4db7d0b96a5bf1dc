// Test fixtures for unpack and layer tests: real images made by the real tools, cached on
// tmpfs so that every test process of a run (and later runs) shares one build.
//
//   busybox*      this machine's busybox-static with applet symlinks, /etc/passwd and
//                 /etc/group; made with `umoci unpack` + `umoci repack`, configured with
//                 `umoci config` (one tag per interesting `User` and config)
//   debian*       a `debootstrap --variant=minbase bookworm` rootfs (through apt's configured
//                 mirror), added with `umoci raw add-layer`. Without debootstrap or a mirror
//                 these tags are missing and `debianSkipReason` says why.
//   layers        four crafted layers: modes (setuid, setgid, sticky, 0000, read-only dirs),
//                 owners, symlink chains, hardlinks, fifos, devices, xattrs, long names (PAX
//                 and GNU), PAX sparse files; then whiteouts and opaque directories in awkward
//                 orders, hardlinks to lower layers, type changes, metadata-only changes
//   sparse-gnu    old GNU sparse entries (typeflag 'S'), which umoci cannot read: the oracle
//                 for it is GNU tar
//   zstd/         the `layers` image recompressed to zstd by skopeo (umoci cannot read zstd)
//   busybox-docker.tar  the busybox image as a docker-archive, written by skopeo
//
// Run as a script to build (or find) them: `node dist/testing/fixtures.js` (or
// scripts/make-fixtures.sh) prints the directory, $STRATUM_FIXTURES or
// /dev/shm/stratum-fixtures-vN. Building needs root (devices, owners), GNU tar, umoci, skopeo
// and busybox; `fixturesSkipReason()` says what is missing. The debootstrap tar is kept apart
// (it takes a minute to make) so that a new fixture version does not remake it. The oracles
// are cached with the fixtures too: `umociBundle()` (umoci unpack, once per image) and
// `umociRuntimeConfig()` (umoci raw runtime-config over a base image's rootfs).

import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  link,
  lutimes,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { pack } from 'tar-stream';
import { tempName } from '../internal/fs.js';
import { withFileLock } from '../internal/lock.js';
import { TMP_ROOT } from './tmp.js';

const exec = promisify(execFile);

/** Bump when a fixture changes: the cache directory is keyed by it. */
export const FIXTURES_VERSION = 1;

export interface FixtureImage {
  /** Tag in the layout. */
  readonly name: string;
  /** OCI layout directory. */
  readonly layout: string;
  /** `oci:LAYOUT:TAG` — a location stratum opens. */
  readonly location: string;
  /** Which tool is the oracle for its unpacked tree. */
  readonly oracle: 'umoci' | 'tar';
  /** For oracle 'umoci': the layout and tag umoci unpacks (the gzip twin of a zstd image). */
  readonly umociImage?: string;
  /** For oracle 'tar': the layer tars to extract in order with GNU tar. */
  readonly tars?: readonly string[];
  /** Whether umoci refuses its config (a `User` that does not resolve). */
  readonly badUser?: boolean;
  /** The fixture with the same layers (busybox-user -> busybox): its rootfs serves this one's config. */
  readonly base: string;
  /** Whether the bundle runs under runc (busybox and debian). */
  readonly runnable?: { readonly args: readonly string[]; readonly expect: string };
  readonly about: string;
}

export interface FixtureSet {
  readonly dir: string;
  readonly images: readonly FixtureImage[];
  /** The docker-archive of the busybox image (skopeo). */
  readonly dockerArchive: string;
  /** The four layer tars of the `layers` image, uncompressed, in order. */
  readonly layerTars: readonly string[];
  /** Why the debian images are missing, if they are. */
  readonly debianSkipReason?: string;
  image(name: string): FixtureImage;
}

const BUSYBOX = '/bin/busybox';
const TOOLS = ['umoci', 'skopeo', 'tar', 'setfattr', 'mknod', 'mkfifo'] as const;

function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** Why fixtures cannot be built here (undefined: they can). */
export function fixturesSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'fixtures need root (device nodes, file owners)';
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} is missing (apt-get install busybox-static)`;
  const missing = TOOLS.filter((t) => which(t) === undefined);
  if (missing.length > 0) return `missing programs: ${missing.join(', ')} (see scripts/setup.sh)`;
  return undefined;
}

async function run(cmd: string, args: readonly string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await exec(cmd, args, { maxBuffer: 64 << 20, ...opts });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}

/** A fixed time for every entry we make (2001-02-03T04:05:06Z). */
const MTIME = new Date('2001-02-03T04:05:06Z');

async function walkSetTimes(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walkSetTimes(p);
    await lutimes(p, MTIME, MTIME);
  }
  await lutimes(dir, MTIME, MTIME);
}

/** GNU tar of a directory's contents (`./` names), numeric owners, sorted. */
async function tarDir(
  src: string,
  out: string,
  format: 'pax' | 'gnu',
  extra: readonly string[] = [],
): Promise<void> {
  await run('tar', [
    `--format=${format}`,
    '--numeric-owner',
    '--sort=name',
    ...(format === 'pax' ? ['--xattrs', '--xattrs-include=*', '--pax-option=delete=atime,delete=ctime'] : []),
    ...extra,
    '-C',
    src,
    '-cf',
    out,
    '.',
  ]);
}

// ---- busybox ---------------------------------------------------------------------------

const PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:A User:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`;

const GROUP = `root:x:0:
daemon:x:1:
wheel:x:10:root,user
audio:x:29:user
users:x:100:
user:x:1000:
nogroup:x:65534:
`;

async function busyboxRootfs(rootfs: string): Promise<void> {
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'sys', 'dev', 'home/user']) {
    await mkdir(join(rootfs, d), { recursive: true });
  }
  await chmod(join(rootfs, 'tmp'), 0o1777);
  await chmod(join(rootfs, 'root'), 0o700);
  await chown(join(rootfs, 'home/user'), 1000, 1000);
  await chmod(join(rootfs, 'home/user'), 0o750);
  await copyFile(BUSYBOX, join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  const applets = (await run(BUSYBOX, ['--list'])).split('\n').filter((a) => a !== '' && a !== 'busybox');
  for (const a of applets) await symlink('busybox', join(rootfs, 'bin', a));
  await writeFile(join(rootfs, 'etc/passwd'), PASSWD, { mode: 0o644 });
  await writeFile(join(rootfs, 'etc/group'), GROUP, { mode: 0o644 });
  await writeFile(join(rootfs, 'etc/hostname'), 'busybox\n');
  await walkSetTimes(rootfs);
}

async function umociConfig(layout: string, from: string, to: string, args: readonly string[]): Promise<void> {
  await run('umoci', ['config', '--image', `${layout}:${from}`, '--tag', to, ...args]);
}

async function buildBusybox(work: string, layout: string): Promise<void> {
  const img = `${layout}:busybox`;
  await run('umoci', ['new', '--image', img]);
  const bundle = join(work, 'busybox-bundle');
  await run('umoci', ['unpack', '--image', img, bundle]);
  await busyboxRootfs(join(bundle, 'rootfs'));
  await run('umoci', ['repack', '--image', img, bundle]);
  await rm(bundle, { recursive: true, force: true });
  await run('umoci', [
    'config',
    '--image',
    img,
    '--created',
    '2024-05-06T07:08:09.123000Z',
    '--author',
    'stratum fixtures <fixtures@stratum.invalid>',
    '--config.entrypoint',
    '/bin/sh',
    '--config.entrypoint',
    '-c',
    '--config.cmd',
    'echo "hello from $GREETING"; id; pwd; echo "HOME=$HOME"',
    '--config.env',
    'GREETING=stratum',
    '--config.workingdir',
    '/tmp',
  ]);
  // one tag per interesting User (same layer, another config)
  const users: readonly [string, string][] = [
    ['busybox-user', 'user'],
    ['busybox-uid', '1000'],
    ['busybox-user-group', 'user:wheel'],
    ['busybox-uid-gid', '1000:29'],
    ['busybox-unknown-uid', '4242'],
    ['busybox-unknown-ids', '4242:4343'],
    ['busybox-nobody', 'nobody:nogroup'],
    ['busybox-root', 'root'],
  ];
  for (const [tag, user] of users) await umociConfig(layout, 'busybox', tag, ['--config.user', user]);
  await umociConfig(layout, 'busybox', 'busybox-ghost', ['--config.user', 'ghost']);
  await umociConfig(layout, 'busybox', 'busybox-ghost-group', ['--config.user', 'user:ghosts']);
  await umociConfig(layout, 'busybox', 'busybox-config', [
    '--config.user',
    '1000:audio',
    '--config.volume',
    '/data',
    '--config.volume',
    '/var/cache/app',
    '--config.exposedports',
    '80/tcp',
    '--config.exposedports',
    '53/udp',
    '--config.exposedports',
    '443/tcp',
    '--config.label',
    'org.example.team=images',
    '--config.label',
    'org.opencontainers.image.title=busybox <test> & more',
    '--config.stopsignal',
    'SIGQUIT',
    '--config.env',
    'PATH=/bin',
    '--config.env',
    'HOME=/ignored',
    '--config.env',
    'EMPTY=',
    '--config.env',
    'EQUALS=a=b=c',
    '--config.env',
    'TERM=dumb',
    '--config.cmd',
    'echo',
    '--config.cmd',
    'configured',
  ]);
}

// ---- debian ----------------------------------------------------------------------------

/** The Debian mirror apt is configured with (deb822 or one-line sources), else deb.debian.org. */
export function aptMirror(): string {
  const files = ['/etc/apt/sources.list'];
  try {
    for (const f of readdirSync('/etc/apt/sources.list.d')) {
      if (f.endsWith('.list') || f.endsWith('.sources')) files.push(join('/etc/apt/sources.list.d', f));
    }
  } catch {}
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const stanza of text.split(/\n\s*\n/)) {
      const uri = /^URIs:\s*(\S+)/im.exec(stanza)?.[1];
      const suites = /^Suites:\s*(.+)$/im.exec(stanza)?.[1] ?? '';
      if (uri && /(^|\s)bookworm(\s|$)/.test(suites) && /\/debian\/?$/.test(uri)) return uri;
    }
    for (const line of text.split('\n')) {
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/.exec(line);
      if (m?.[1] && /\/debian\/?$/.test(m[1])) return m[1];
    }
  }
  return 'http://deb.debian.org/debian';
}

/** The debootstrap rootfs as a tar, made once and kept beside the fixtures (it takes a minute). */
async function debootstrapTar(): Promise<{ tar?: string; reason?: string }> {
  const tar = join(TMP_ROOT, 'stratum-fixtures-debootstrap-bookworm-minbase.tar');
  if (existsSync(tar)) return { tar };
  if (!which('debootstrap')) return { reason: 'debootstrap is not installed (apt-get install debootstrap)' };
  return withFileLock(
    `${tar}.lock`,
    async () => {
      if (existsSync(tar)) return { tar };
      const dir = tempName(TMP_ROOT, 'stratum-debootstrap-');
      const mirror = aptMirror();
      try {
        await run('debootstrap', ['--variant=minbase', 'bookworm', dir, mirror]);
        const tmp = `${tar}.tmp-${process.pid}`;
        await tarDir(dir, tmp, 'pax');
        await rename(tmp, tar);
        return { tar };
      } catch (e) {
        return {
          reason: `debootstrap --variant=minbase bookworm from ${mirror} failed: ${(e as Error).message.slice(0, 400)}`,
        };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    { timeoutMs: 15 * 60_000 },
  );
}

async function buildDebian(layout: string): Promise<string | undefined> {
  const { tar, reason } = await debootstrapTar();
  if (!tar) return reason;
  const img = `${layout}:debian`;
  await run('umoci', ['new', '--image', img]);
  await run('umoci', ['raw', 'add-layer', '--image', img, tar]);
  await run('umoci', [
    'config',
    '--image',
    img,
    '--config.cmd',
    '/bin/sh',
    '--config.cmd',
    '-c',
    '--config.cmd',
    'cat /etc/debian_version >/dev/null && echo "debian $(id -un)"',
  ]);
  await umociConfig(layout, 'debian', 'debian-nobody', ['--config.user', 'nobody']);
  await umociConfig(layout, 'debian', 'debian-apt', ['--config.user', '_apt:mail']);
  return undefined;
}

// ---- crafted layers --------------------------------------------------------------------

const LONG = 'l'.repeat(150);
const LONG_DIR = 'd'.repeat(200);

/** Layer 1 (GNU tar, PAX): everything a rootfs can hold. */
async function layer1(dir: string): Promise<void> {
  const f = async (p: string, content: string | Buffer, mode = 0o644, uid = 0, gid = 0): Promise<void> => {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), content);
    await chown(join(dir, p), uid, gid);
    await chmod(join(dir, p), mode);
  };
  const d = async (p: string, mode = 0o755, uid = 0, gid = 0): Promise<void> => {
    await mkdir(join(dir, p), { recursive: true });
    await chown(join(dir, p), uid, gid);
    await chmod(join(dir, p), mode);
  };
  await d('modes');
  await f('modes/f644', 'plain\n');
  await f('modes/f755', '#!/bin/sh\n', 0o755);
  await f('modes/setuid', 'suid\n', 0o4755);
  await f('modes/setgid', 'sgid\n', 0o2755, 0, 50);
  await f('modes/f600', 'secret\n', 0o600);
  await f('modes/f000', 'nothing\n', 0o000);
  await d('modes/sticky', 0o1777);
  await f('modes/sticky/inside', 'x\n');
  await d('modes/d700', 0o700);
  await f('modes/d700/inside', 'x\n');
  await d('modes/d555', 0o555);
  await f('modes/d555/inside', 'x\n');
  await chmod(join(dir, 'modes/d555'), 0o555);
  await d('owners');
  await f('owners/u1000', 'a\n', 0o644, 1000, 1000);
  await f('owners/u65534', 'b\n', 0o644, 65534, 65534);
  await f('owners/u123g456', 'c\n', 0o640, 123, 456);
  await d('owners/dir1000', 0o750, 1000, 1000);
  await f('owners/dir1000/file', 'd\n', 0o644, 1000, 1000);
  await d('links');
  await f('links/target', 'the target\n');
  await symlink('chain2', join(dir, 'links/chain1'));
  await symlink('chain3', join(dir, 'links/chain2'));
  await symlink('target', join(dir, 'links/chain3'));
  await symlink('/links/target', join(dir, 'links/abs'));
  await symlink('nowhere', join(dir, 'links/dangling'));
  await symlink('../modes', join(dir, 'links/dirlink'));
  await symlink('../../../../../etc', join(dir, 'links/climb'));
  await f('links/hard1', 'hardlinked\n', 0o640, 1000, 100);
  await link(join(dir, 'links/hard1'), join(dir, 'links/hard2'));
  await link(join(dir, 'links/hard1'), join(dir, 'links/hard3'));
  await d('special');
  await run('mkfifo', ['-m', '0620', join(dir, 'special/fifo')]);
  await run('mknod', ['-m', '0666', join(dir, 'special/null'), 'c', '1', '3']);
  await run('mknod', ['-m', '0660', join(dir, 'special/loop'), 'b', '7', '0']);
  await d('xattrs');
  await f('xattrs/file', 'xattrs\n', 0o755);
  await run('setfattr', ['-n', 'user.greeting', '-v', 'hello', join(dir, 'xattrs/file')]);
  await run('setfattr', ['-n', 'trusted.note', '-v', '0x00ff10', join(dir, 'xattrs/file')]);
  // cap_net_bind_service+ep, as setcap writes it
  await run('setfattr', [
    '-n',
    'security.capability',
    '-v',
    '0x0100000200040000000000000000000000000000',
    join(dir, 'xattrs/file'),
  ]);
  await d('xattrs/dir');
  await run('setfattr', ['-n', 'user.dirattr', '-v', 'on a directory', join(dir, 'xattrs/dir')]);
  await d('long');
  await f(`long/${LONG}`, 'long name\n');
  await d(`long/${LONG_DIR}/${LONG_DIR}`);
  await f(`long/${LONG_DIR}/${LONG_DIR}/${LONG}`, 'deep and long\n');
  await symlink(`${LONG_DIR}/${LONG_DIR}/${LONG}`, join(dir, 'long/longlink'));
  await link(join(dir, `long/${LONG_DIR}/${LONG_DIR}/${LONG}`), join(dir, `long/hard-${LONG}`));
  await d('sparse');
  const holes = join(dir, 'sparse/holes');
  await run('truncate', ['-s', '10M', holes]);
  await run('sh', [
    '-c',
    `printf start | dd of="$1" conv=notrunc 2>/dev/null; printf middle | dd of="$1" bs=1 seek=5000000 conv=notrunc 2>/dev/null; printf end | dd of="$1" bs=1 seek=10485757 conv=notrunc 2>/dev/null`,
    'sh',
    holes,
  ]);
  await run('truncate', ['-s', '1M', join(dir, 'sparse/all-holes')]);
  await d('empty');
  await f('emptyfile', '');
  await d('w');
  await f('w/file1', 'whited out\n');
  await f('w/file2', 'kept\n');
  await d('w/dir1/b');
  await f('w/dir1/a', 'a\n');
  await f('w/dir1/b/c', 'c\n');
  await d('w/dir3');
  await f('w/dir3/old', 'old\n');
  await d('opq/sub');
  await f('opq/lower1', 'lower\n');
  await f('opq/sub/lower2', 'lower\n');
  await d('opq2');
  await f('opq2/lower3', 'lower\n');
  await d('hl');
  await f('hl/lowerfile', 'lower content\n', 0o600, 1000, 1000);
  await f('hl/lowerfile2', 'lower 2\n');
  await d('replace/dir-becomes-file');
  await f('replace/dir-becomes-file/child', 'child\n');
  await f('replace/file-becomes-dir', 'file\n');
  await symlink('../links/target', join(dir, 'replace/link-becomes-file'));
  await f('replace/file-becomes-link', 'file\n');
  await d('meta/dir');
  await f('meta/dir/child', 'child\n');
  await d('same');
  await walkSetTimes(dir);
}

interface CraftEntry {
  readonly name: string;
  readonly type?: 'file' | 'directory' | 'symlink' | 'link';
  readonly content?: string;
  readonly linkname?: string;
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
}

/** A tar with entries exactly in the given order (tar-stream), for whiteout-order cases. */
async function craftTar(entries: readonly CraftEntry[], out: string): Promise<void> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: MTIME,
      ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
    };
    if (type === 'file') p.entry(header, Buffer.from(e.content ?? ''));
    else p.entry(header);
  }
  p.finalize();
  await done;
  await writeFile(out, Buffer.concat(chunks));
}

/** Layer 2: whiteouts and opaque markers in awkward orders, cross-layer hardlinks, type changes. */
const LAYER2: readonly CraftEntry[] = [
  { name: 'w/.wh.file1' },
  { name: 'w/.wh.dir1' },
  { name: 'w/.wh.never-existed' },
  { name: 'w/dir3/new', content: 'new in layer 2\n' },
  { name: 'w/.wh.dir3' }, // after a same-layer child: removes only what lower layers had
  { name: 'opq/new1', content: 'written before the marker\n' },
  { name: 'opq/.wh..wh..opq' }, // after a same-layer entry: it stays
  { name: 'opq2/.wh..wh..opq' },
  { name: 'opq2/new2', content: 'written after the marker\n' },
  { name: 'hl/link-to-lower', type: 'link', linkname: 'hl/lowerfile' },
  { name: 'hl/lowerfile2', content: 'replaced in layer 2\n', mode: 0o755 },
  { name: 'hl/same-layer', content: 'same layer\n' },
  { name: 'hl/same-layer-link', type: 'link', linkname: 'hl/same-layer' },
  { name: 'replace/dir-becomes-file', content: 'now a file\n' },
  { name: 'replace/file-becomes-dir', type: 'directory', mode: 0o700 },
  { name: 'replace/file-becomes-dir/child', content: 'child\n' },
  { name: 'replace/link-becomes-file', content: 'now a file\n' },
  { name: 'replace/file-becomes-link', type: 'symlink', linkname: '../links/target' },
  { name: 'meta/dir', type: 'directory', mode: 0o700, uid: 1000, gid: 1000 },
  { name: 'same/new', content: 'same layer\n' },
  { name: 'same/.wh.new' }, // a whiteout never removes what its own layer wrote
  { name: '.wh..wh.plnk', content: '' }, // aufs metadata: ignored
  { name: 'links/.wh.hard3' }, // one name of a hardlinked inode goes
];

/** Layer 3 (GNU format): GNU long names and long link targets, replacing one hardlinked name. */
async function layer3(dir: string): Promise<void> {
  const deep = join(dir, 'gnu', LONG_DIR, LONG_DIR);
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, LONG), 'gnu long name\n');
  await symlink(`${LONG_DIR}/${LONG_DIR}/${LONG}`, join(dir, 'gnu', `symlink-${LONG}`));
  await link(join(deep, LONG), join(dir, 'gnu', `hard-${LONG}`));
  await mkdir(join(dir, 'links'));
  await writeFile(join(dir, 'links/hard1'), 'a new file, no longer linked\n');
  await walkSetTimes(dir);
}

/** Layer 4 (PAX): a file's xattrs replaced, a PAX sparse file replaced, a new fifo owner. */
async function layer4(dir: string): Promise<void> {
  await mkdir(join(dir, 'xattrs'), { recursive: true });
  await writeFile(join(dir, 'xattrs/file'), 'xattrs, again\n');
  await run('setfattr', ['-n', 'user.greeting', '-v', 'changed', join(dir, 'xattrs/file')]);
  await mkdir(join(dir, 'sparse'));
  await run('truncate', ['-s', '3M', join(dir, 'sparse/holes')]);
  await run('sh', [
    '-c',
    'printf tail | dd of="$1" bs=1 seek=3145000 conv=notrunc 2>/dev/null',
    'sh',
    join(dir, 'sparse/holes'),
  ]);
  await walkSetTimes(dir);
}

async function buildLayers(work: string, layout: string): Promise<string[]> {
  const img = `${layout}:layers`;
  await run('umoci', ['new', '--image', img]);
  const tars: string[] = [];
  for (const [i, make] of [
    async (d: string, t: string) => {
      await layer1(d);
      await tarDir(d, t, 'pax', ['--sparse']);
    },
    async (_d: string, t: string) => craftTar(LAYER2, t),
    async (d: string, t: string) => {
      await layer3(d);
      await tarDir(d, t, 'gnu');
    },
    async (d: string, t: string) => {
      await layer4(d);
      await tarDir(d, t, 'pax', ['--sparse']);
    },
  ].entries()) {
    const d = join(work, `layer${i + 1}`);
    await mkdir(d);
    const t = join(work, `layer${i + 1}.tar`);
    await make(d, t);
    await run('umoci', ['raw', 'add-layer', '--image', img, t]);
    tars.push(t);
  }
  await run('umoci', ['config', '--image', img, '--config.cmd', '/bin/true', '--config.user', '1000:1000']);
  return tars;
}

/** One layer of old-style GNU sparse entries (typeflag 'S'), which umoci cannot read. */
async function buildSparseGnu(work: string, layout: string): Promise<string> {
  const d = join(work, 'sparse-gnu');
  await mkdir(d);
  const file = join(d, 'holes');
  await run('truncate', ['-s', '20M', file]);
  await run('sh', [
    '-c',
    'printf one | dd of="$1" bs=1 seek=4096 conv=notrunc 2>/dev/null; printf two | dd of="$1" bs=1 seek=15000000 conv=notrunc 2>/dev/null',
    'sh',
    file,
  ]);
  await run('truncate', ['-s', '64K', join(d, 'all-holes')]);
  await writeFile(join(d, 'dense'), 'not sparse\n');
  await walkSetTimes(d);
  const t = join(work, 'sparse-gnu.tar');
  await tarDir(d, t, 'gnu', ['--sparse']);
  await run('umoci', ['new', '--image', `${layout}:sparse-gnu`]);
  await run('umoci', ['raw', 'add-layer', '--image', `${layout}:sparse-gnu`, t]);
  return t;
}

// ---- the set ---------------------------------------------------------------------------

interface Manifest {
  readonly version: number;
  readonly debianSkipReason?: string;
  /** Relative to the fixture directory. */
  readonly layersTars: readonly string[];
  readonly sparseTar: string;
}

function describe(dir: string, m: Manifest): FixtureSet {
  const layout = join(dir, 'oci');
  const zstd = join(dir, 'zstd');
  const img = (name: string, extra: Partial<FixtureImage> & { about: string }): FixtureImage => ({
    name,
    layout,
    location: `oci:${layout}:${name}`,
    oracle: 'umoci',
    umociImage: `${layout}:${name}`,
    base: name.startsWith('busybox') ? 'busybox' : name.startsWith('debian') ? 'debian' : name,
    ...extra,
  });
  const busyboxRun = { args: [] as string[], expect: 'hello from stratum' };
  const images: FixtureImage[] = [
    img('busybox', { about: 'busybox-static with applets, made with umoci repack', runnable: busyboxRun }),
    img('busybox-user', { about: 'User=user (passwd name, groups)', runnable: busyboxRun }),
    img('busybox-uid', { about: 'User=1000' }),
    img('busybox-user-group', { about: 'User=user:wheel' }),
    img('busybox-uid-gid', { about: 'User=1000:29' }),
    img('busybox-unknown-uid', { about: 'User=4242 (no passwd entry)' }),
    img('busybox-unknown-ids', { about: 'User=4242:4343' }),
    img('busybox-nobody', { about: 'User=nobody:nogroup' }),
    img('busybox-root', { about: 'User=root' }),
    img('busybox-ghost', { about: 'User=ghost (no such user)', badUser: true }),
    img('busybox-ghost-group', { about: 'User=user:ghosts (no such group)', badUser: true }),
    img('busybox-config', {
      about: 'volumes, ports, labels, stop signal, env overrides, numeric user with a named group',
    }),
    img('layers', {
      about:
        'four crafted layers: modes, owners, links, devices, xattrs, long names, sparse, whiteouts, opaque dirs',
    }),
    {
      name: 'layers-zstd',
      layout: zstd,
      location: `oci:${zstd}:layers`,
      oracle: 'umoci',
      umociImage: `${layout}:layers`,
      base: 'layers',
      about: 'the layers image with zstd layers (skopeo); umoci unpacks the gzip twin',
    },
    img('sparse-gnu', {
      oracle: 'tar',
      tars: [join(dir, m.sparseTar)],
      about: 'old GNU sparse entries; GNU tar is the oracle',
    }),
  ];
  if (m.debianSkipReason === undefined) {
    images.push(
      img('debian', {
        about: 'debootstrap --variant=minbase bookworm',
        runnable: { args: [], expect: 'debian root' },
      }),
      img('debian-nobody', { about: 'debian, User=nobody' }),
      img('debian-apt', { about: 'debian, User=_apt:mail' }),
    );
  }
  return {
    dir,
    images,
    dockerArchive: join(dir, 'busybox-docker.tar'),
    layerTars: m.layersTars.map((t) => join(dir, t)),
    ...(m.debianSkipReason === undefined ? {} : { debianSkipReason: m.debianSkipReason }),
    image(name) {
      const found = images.find((i) => i.name === name);
      if (!found)
        throw new Error(`no fixture image ${name}${m.debianSkipReason ? ` (${m.debianSkipReason})` : ''}`);
      return found;
    },
  };
}

async function build(dir: string): Promise<Manifest> {
  const work = join(dir, 'work');
  await mkdir(work, { recursive: true });
  const layout = join(dir, 'oci');
  await run('umoci', ['init', '--layout', layout]);
  await buildBusybox(work, layout);
  const layersTars = await buildLayers(work, layout);
  const sparseTar = await buildSparseGnu(work, layout);
  const debianSkipReason = await buildDebian(layout);
  await run('skopeo', [
    'copy',
    '--quiet',
    '--dest-compress-format',
    'zstd',
    `oci:${layout}:layers`,
    `oci:${join(dir, 'zstd')}:layers`,
  ]);
  await run('skopeo', [
    'copy',
    '--quiet',
    `oci:${layout}:busybox`,
    `docker-archive:${join(dir, 'busybox-docker.tar')}:stratum/busybox:1`,
  ]);
  // keep the layer tars (oracles), drop the rest of the work tree
  for (const e of await readdir(work, { withFileTypes: true })) {
    if (e.isDirectory()) await rm(join(work, e.name), { recursive: true, force: true });
  }
  return {
    version: FIXTURES_VERSION,
    ...(debianSkipReason === undefined ? {} : { debianSkipReason }),
    layersTars: layersTars.map((t) => relative(dir, t)),
    sparseTar: relative(dir, sparseTar),
  };
}

/**
 * `umoci unpack` of a fixture image (its gzip twin for zstd), made once and kept with the
 * fixtures: the oracle tree and config.json. `rootless` adds `--rootless`. Read-only: copy it
 * before changing anything.
 */
export async function umociBundle(image: FixtureImage, opts: { rootless?: boolean } = {}): Promise<string> {
  if (image.oracle !== 'umoci' || image.umociImage === undefined) {
    throw new Error(`fixture ${image.name} has no umoci oracle`);
  }
  const set = await getFixtures();
  const key = `${image.umociImage.slice(image.umociImage.lastIndexOf(':') + 1)}${opts.rootless ? '-rootless' : ''}`;
  const bundle = join(set.dir, 'umoci', key);
  if (existsSync(join(bundle, 'config.json'))) return bundle;
  await mkdir(join(set.dir, 'umoci'), { recursive: true });
  return withFileLock(
    `${bundle}.lock`,
    async () => {
      if (existsSync(join(bundle, 'config.json'))) return bundle;
      const tmp = `${bundle}.tmp-${process.pid}`;
      await rm(tmp, { recursive: true, force: true });
      try {
        await run('umoci', [
          'unpack',
          ...(opts.rootless ? ['--rootless'] : []),
          '--image',
          image.umociImage as string,
          tmp,
        ]);
        await rm(bundle, { recursive: true, force: true });
        await rename(tmp, bundle);
      } catch (e) {
        await rm(tmp, { recursive: true, force: true });
        throw e;
      }
      return bundle;
    },
    { timeoutMs: 10 * 60_000 },
  );
}

/**
 * umoci's config.json for a fixture image, from `umoci raw runtime-config` over the rootfs of
 * its base image's umoci bundle (the same as `umoci unpack` writes, without unpacking again).
 */
export async function umociRuntimeConfig(
  image: FixtureImage,
  opts: { rootless?: boolean } = {},
): Promise<unknown> {
  if (image.umociImage === undefined) throw new Error(`fixture ${image.name} has no umoci oracle`);
  const set = await getFixtures();
  const rootfs = join(await umociBundle(set.image(image.base)), 'rootfs');
  const out = tempName(set.dir, '.config-');
  try {
    await run('umoci', [
      'raw',
      'runtime-config',
      ...(opts.rootless ? ['--rootless'] : []),
      '--image',
      image.umociImage,
      '--rootfs',
      rootfs,
      out,
    ]);
    return JSON.parse(await readFile(out, 'utf8'));
  } finally {
    await rm(out, { force: true });
  }
}

/**
 * A config.json with what may differ between stratum and umoci made equal: the hostname,
 * the order of volume mounts (umoci's is Go map order) and of the locked resolv.conf flags.
 */
export function normaliseUmociConfig(spec: unknown): unknown {
  const s = JSON.parse(JSON.stringify(spec)) as {
    hostname?: string;
    mounts?: { destination: string; source: string; options?: string[] }[];
  };
  s.hostname = '<hostname>';
  const mounts = s.mounts ?? [];
  const volumes = mounts
    .filter((m) => m.source === 'none')
    .sort((a, b) => (a.destination < b.destination ? -1 : 1));
  s.mounts = [...mounts.filter((m) => m.source !== 'none'), ...volumes];
  for (const m of s.mounts) if (m.destination === '/etc/resolv.conf') m.options?.sort();
  return s;
}

let cached: Promise<FixtureSet> | undefined;

/**
 * The fixture set, built once per machine (until tmpfs is cleared or the version changes) and
 * shared by concurrent test processes through a lock. Check `fixturesSkipReason()` first.
 */
export function getFixtures(): Promise<FixtureSet> {
  cached ??= (async () => {
    const reason = fixturesSkipReason();
    if (reason) throw new Error(`cannot build fixtures: ${reason}`);
    const dir = process.env.STRATUM_FIXTURES ?? join(TMP_ROOT, `stratum-fixtures-v${FIXTURES_VERSION}`);
    const manifestPath = join(dir, 'fixtures.json');
    const load = async (): Promise<FixtureSet | undefined> => {
      try {
        return describe(dir, JSON.parse(await readFile(manifestPath, 'utf8')) as Manifest);
      } catch {
        return undefined;
      }
    };
    const ready = await load();
    if (ready) return ready;
    await mkdir(join(dir, '..'), { recursive: true });
    return withFileLock(
      `${dir}.lock`,
      async () => {
        const again = await load();
        if (again) return again;
        await rm(dir, { recursive: true, force: true });
        const tmp = `${dir}.tmp-${process.pid}`;
        await rm(tmp, { recursive: true, force: true });
        try {
          const m = await build(tmp);
          await writeFile(join(tmp, 'fixtures.json'), JSON.stringify(m, null, 2));
          await rename(tmp, dir);
        } catch (e) {
          await rm(tmp, { recursive: true, force: true });
          throw e;
        }
        return (await load()) as FixtureSet;
      },
      { timeoutMs: 20 * 60_000 },
    );
  })();
  return cached;
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const reason = fixturesSkipReason();
  if (reason) {
    process.stderr.write(`fixtures: ${reason}\n`);
    process.exit(1);
  }
  const set = await getFixtures();
  process.stdout.write(`${set.dir}\n`);
  for (const i of set.images) process.stdout.write(`  ${i.location}  ${i.about}\n`);
  if (set.debianSkipReason) process.stdout.write(`debian images missing: ${set.debianSkipReason}\n`);
}
