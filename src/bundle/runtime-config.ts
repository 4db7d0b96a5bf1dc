// The OCI runtime-spec config.json of a bundle, derived from an image config the way
// `umoci unpack` (v0.4) derives it, on the defaults `runc spec` also starts from:
//
// - process.args = Entrypoint + Cmd (the default `sh` when both are empty, as umoci);
// - process.env = PATH (default) and TERM=xterm, then the image's Env (a name already present
//   is replaced in place), then HOME from the matched passwd entry;
// - process.cwd = WorkingDir or `/`; process.user from `User` (see user.ts);
// - every Volume becomes a tmpfs mount; Labels, os, architecture, author, created, StopSignal
//   and ExposedPorts (sorted, comma-separated) become annotations;
// - terminal on, default capabilities, rlimits, namespaces, masked and read-only paths.
//
// Rootless (`runc spec --rootless`, umoci --rootless): a user namespace mapping container
// root to the calling user, no network namespace, no supplementary groups, no cgroup
// resources, /sys bind-mounted from the host and /etc/resolv.conf bound read-only (keeping the
// host mount's locked flags, which a user namespace cannot drop).
//
// Differences from umoci, on purpose: the hostname is `stratum`; volume mounts are sorted
// (umoci's order is Go map order, i.e. random); /etc/passwd and /etc/group are read inside
// the rootfs (umoci 0.4 follows their symlinks on the host).

import { readFile, realpath } from 'node:fs/promises';
import { StratumError } from '../errors/errors.js';
import type { ImageConfig } from '../spec/types.js';
import { type ExecUser, resolveUser, resolveUserInRootfs } from './user.js';

export interface RuntimeUser {
  readonly uid: number;
  readonly gid: number;
  readonly additionalGids?: readonly number[];
}

export interface RuntimeCapabilities {
  readonly bounding: readonly string[];
  readonly effective: readonly string[];
  readonly inheritable: readonly string[];
  readonly permitted: readonly string[];
  readonly ambient: readonly string[];
}

export interface RuntimeProcess {
  readonly terminal: boolean;
  readonly user: RuntimeUser;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
  readonly capabilities: RuntimeCapabilities;
  readonly rlimits: readonly { readonly type: string; readonly hard: number; readonly soft: number }[];
  readonly noNewPrivileges: boolean;
}

export interface RuntimeMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options?: readonly string[];
}

export interface IdMapping {
  readonly containerID: number;
  readonly hostID: number;
  readonly size: number;
}

export interface RuntimeLinux {
  readonly uidMappings?: readonly IdMapping[];
  readonly gidMappings?: readonly IdMapping[];
  readonly resources?: {
    readonly devices: readonly { readonly allow: boolean; readonly access: string }[];
  };
  readonly namespaces: readonly { readonly type: string }[];
  readonly maskedPaths: readonly string[];
  readonly readonlyPaths: readonly string[];
}

/** The runtime-spec config.json (the part stratum writes). */
export interface RuntimeSpec {
  readonly ociVersion: string;
  readonly process: RuntimeProcess;
  readonly root: { readonly path: string; readonly readonly?: boolean };
  readonly hostname: string;
  readonly mounts: readonly RuntimeMount[];
  readonly annotations: Readonly<Record<string, string>>;
  readonly linux: RuntimeLinux;
}

/** The ids a rootless bundle maps container root to (default: the calling user). */
export interface RootlessIds {
  readonly uid: number;
  readonly gid: number;
}

export const RUNTIME_SPEC_VERSION = '1.0.0';
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_HOSTNAME = 'stratum';

/** Annotations for image-config fields the runtime spec has no place for. */
export const Annotation = {
  os: 'org.opencontainers.image.os',
  architecture: 'org.opencontainers.image.architecture',
  author: 'org.opencontainers.image.author',
  created: 'org.opencontainers.image.created',
  stopSignal: 'org.opencontainers.image.stopSignal',
  exposedPorts: 'org.opencontainers.image.exposedPorts',
} as const;

const DEFAULT_CAPS = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'] as const;

/** Mount options of a volume (a tmpfs, as umoci makes it). */
const VOLUME_OPTIONS = ['rw', 'nosuid', 'nodev', 'noexec', 'relatime'] as const;

/** The mounts every bundle gets (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, cgroups), as umoci writes them. */
export function defaultRuntimeMounts(): RuntimeMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    },
  ];
}

const MASKED_PATHS = [
  '/proc/kcore',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/sys/firmware',
  '/proc/scsi',
] as const;

const READONLY_PATHS = [
  '/proc/asound',
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
] as const;

/**
 * An image `created` time as Go's RFC3339Nano prints it (what umoci writes): fraction without
 * trailing zeros, a zero offset as `Z`; the zero time when absent. A value that is not
 * RFC 3339 is kept as it is.
 */
export function formatCreated(created: string | undefined): string {
  if (created === undefined) return '0001-01-01T00:00:00Z';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/.exec(created);
  if (!m) return created;
  const [, date, time, frac = '', zone] = m as unknown as [
    string,
    string,
    string,
    string | undefined,
    string,
  ];
  const f = frac.slice(0, 9).replace(/0+$/, '');
  const z = zone === '+00:00' || zone === '-00:00' ? 'Z' : zone;
  return `${date}T${time}${f === '' ? '' : `.${f}`}${z}`;
}

function splitEnv(entry: string): [string, string] {
  const eq = entry.indexOf('=');
  if (eq === -1) {
    throw new StratumError(
      'ERR_INVALID_DOCUMENT',
      `image config: Env entry ${JSON.stringify(entry)} has no '=' (want NAME=VALUE)`,
    );
  }
  if (eq === 0) {
    throw new StratumError(
      'ERR_INVALID_DOCUMENT',
      `image config: Env entry ${JSON.stringify(entry)} has no name`,
    );
  }
  return [entry.slice(0, eq), entry.slice(eq + 1)];
}

/** Set NAME=VALUE in env, replacing an existing NAME in place. */
function setEnv(env: string[], name: string, value: string): void {
  const i = env.findIndex((e) => e.startsWith(`${name}=`));
  if (i === -1) env.push(`${name}=${value}`);
  else env[i] = `${name}=${value}`;
}

/** Mount flags the kernel locks on a mount seen from a user namespace (statfs ST_* names). */
const LOCKED_FLAGS = ['ro', 'nodev', 'noexec', 'nosuid', 'noatime', 'nodiratime'] as const;

/**
 * The locked flags of the host mount holding `path` (from /proc/self/mountinfo): a bind
 * mount in a user namespace must repeat them. [] when they cannot be read.
 */
export async function lockedMountFlags(path: string): Promise<string[]> {
  let real: string;
  let info: string;
  try {
    real = await realpath(path);
    info = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const decodeOctal = (s: string): string =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  let best: { point: string; opts: Set<string> } | undefined;
  for (const line of info.split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const f = left.split(' ');
    const point = decodeOctal(f[4] ?? '');
    const inside = point === '/' || real === point || real.startsWith(`${point}/`);
    if (!inside || (best && point.length < best.point.length)) continue;
    const superOpts = (right.split(' ')[2] ?? '').split(',');
    const opts = new Set((f[5] ?? '').split(','));
    if (superOpts.includes('ro')) opts.add('ro');
    best = { point, opts };
  }
  return best ? LOCKED_FLAGS.filter((o) => best.opts.has(o)) : [];
}

export interface RuntimeConfigOptions {
  /** The bundle's rootfs directory name (root.path); default `rootfs`. */
  readonly rootfsName?: string;
  /** The hostname; default `stratum`. */
  readonly hostname?: string;
  /** A rootless bundle: container root maps to these ids (true: the calling user's). */
  readonly rootless?: boolean | RootlessIds;
  /** Locked flags of the host's /etc/resolv.conf mount (rootless only; default: read from the host). */
  readonly resolvConfFlags?: readonly string[];
}

/**
 * The runtime config for an image config, given the resolved user (pure; see
 * {@link makeRuntimeConfig} to resolve the user through a rootfs).
 */
export function buildRuntimeConfig(
  image: ImageConfig,
  user: ExecUser,
  opts: RuntimeConfigOptions & { readonly resolvConfFlags?: readonly string[] } = {},
): RuntimeSpec {
  if (image.os !== 'linux') {
    throw new StratumError(
      'ERR_UNSUPPORTED',
      `cannot make a runtime bundle for os ${JSON.stringify(image.os)}: only linux images can be unpacked`,
    );
  }
  const c = image.config ?? {};

  const env = [DEFAULT_PATH, 'TERM=xterm'];
  for (const e of c.Env ?? []) setEnv(env, ...splitEnv(e));
  if (user.home !== undefined) setEnv(env, 'HOME', user.home);

  const entry = [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
  const args = entry.length > 0 ? entry : ['sh'];

  const annotations: Record<string, string> = { ...(c.Labels ?? {}) };
  annotations[Annotation.os] = image.os;
  annotations[Annotation.architecture] = image.architecture;
  annotations[Annotation.author] = image.author ?? '';
  annotations[Annotation.created] = formatCreated(image.created);
  annotations[Annotation.stopSignal] = c.StopSignal ?? '';
  annotations[Annotation.exposedPorts] = Object.keys(c.ExposedPorts ?? {})
    .sort()
    .join(',');
  const sortedAnnotations = Object.fromEntries(
    Object.keys(annotations)
      .sort()
      .map((k) => [k, annotations[k] as string]),
  );

  let mounts = defaultRuntimeMounts();
  for (const vol of Object.keys(c.Volumes ?? {}).sort()) {
    mounts.push({ destination: vol, type: 'tmpfs', source: 'none', options: [...VOLUME_OPTIONS] });
  }

  const caps = (): string[] => [...DEFAULT_CAPS];
  const rootless = opts.rootless === true ? callingUser() : opts.rootless || undefined;
  let namespaces = [
    { type: 'pid' },
    { type: 'network' },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'mount' },
  ];
  let linuxIds: Pick<RuntimeLinux, 'uidMappings' | 'gidMappings'> = {};
  let resources: RuntimeLinux['resources'] = { devices: [{ allow: false, access: 'rwm' }] };
  if (rootless) {
    linuxIds = {
      uidMappings: [{ containerID: 0, hostID: rootless.uid, size: 1 }],
      gidMappings: [{ containerID: 0, hostID: rootless.gid, size: 1 }],
    };
    namespaces = [...namespaces.filter((n) => n.type !== 'network' && n.type !== 'user'), { type: 'user' }];
    mounts = mounts
      .filter((m) => !m.destination.startsWith('/sys'))
      .map((m) =>
        m.options
          ? { ...m, options: m.options.filter((o) => !o.startsWith('gid=') && !o.startsWith('uid=')) }
          : m,
      );
    mounts.push({
      destination: '/sys',
      type: 'bind',
      source: '/sys',
      options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'],
    });
    mounts.push({
      destination: '/etc/resolv.conf',
      type: 'bind',
      source: '/etc/resolv.conf',
      options: [...(opts.resolvConfFlags ?? []), 'rbind', 'ro'],
    });
    resources = undefined;
  }

  const additionalGids =
    rootless || user.additionalGids.length === 0 ? {} : { additionalGids: [...user.additionalGids] };
  return {
    ociVersion: RUNTIME_SPEC_VERSION,
    process: {
      terminal: true,
      user: { uid: user.uid, gid: user.gid, ...additionalGids },
      args,
      env,
      cwd: c.WorkingDir ? c.WorkingDir : '/',
      capabilities: {
        bounding: caps(),
        effective: caps(),
        inheritable: caps(),
        permitted: caps(),
        ambient: caps(),
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: opts.rootfsName ?? 'rootfs' },
    hostname: opts.hostname ?? DEFAULT_HOSTNAME,
    mounts,
    annotations: sortedAnnotations,
    linux: {
      ...linuxIds,
      ...(resources ? { resources } : {}),
      namespaces,
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}

function callingUser(): RootlessIds {
  return { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 };
}

/**
 * The runtime config for an image whose rootfs is unpacked at `rootfs`: `User` is resolved
 * through the rootfs's /etc/passwd and /etc/group (read safely, see user.ts). Without a
 * rootfs, only numeric users resolve.
 */
export async function makeRuntimeConfig(
  image: ImageConfig,
  opts: RuntimeConfigOptions & { readonly rootfs?: string } = {},
): Promise<RuntimeSpec> {
  const spec = image.config?.User ?? '';
  const user =
    opts.rootfs === undefined ? resolveUser(spec, {}) : await resolveUserInRootfs(opts.rootfs, spec);
  const resolvConfFlags =
    opts.rootless && opts.resolvConfFlags === undefined
      ? await lockedMountFlags('/etc/resolv.conf')
      : opts.resolvConfFlags;
  return buildRuntimeConfig(image, user, { ...opts, ...(resolvConfFlags ? { resolvConfFlags } : {}) });
}

/** config.json bytes as written to a bundle: tab-indented, with a final newline. */
export function serializeRuntimeConfig(spec: RuntimeSpec): string {
  return `${JSON.stringify(spec, null, '\t')}\n`;
}
