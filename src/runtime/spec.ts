// The OCI runtime spec (config.json) stratum gives runc for a container: what docker's
// default spec holds, written out here so that it can be read in one place.
//
// - namespaces mount, pid, uts, ipc, and network unless `network: 'host'`;
// - docker's 14 default capabilities; a non-root process gets them only in its bounding and
//   inheritable sets (as moby does since 20.10), none ambient; no_new_privs off (as docker);
// - proc, a tmpfs /dev, devpts, /dev/shm, mqueue, read-only sysfs and cgroup mounts; masked
//   and read-only /proc and /sys paths as moby's defaults; RLIMIT_NOFILE 1024:1024 (runc spec);
// - bind mounts (volumes) rbind + rprivate, `ro` honoured, sorted so that a parent is mounted
//   before what is mounted inside it;
// - cgroup (v1 here) memory, pids and CPU quota limits; all devices denied except the
//   defaults runc always adds (null, zero, full, tty, random, urandom, ptmx, pts);
// - a cgroupsPath relative to the cgroup mount, so runc makes and removes `stratum/<id>` in
//   every controller.

import { existsSync } from 'node:fs';
import { isAbsolute, posix } from 'node:path';
import {
  defaultRuntimeMounts,
  type RuntimeCapabilities,
  type RuntimeMount,
  type RuntimeProcess,
  type RuntimeUser,
} from '../bundle/runtime-config.js';
import { StratumError } from '../errors/errors.js';

export const OCI_VERSION = '1.0.2';

/** docker's default capability set. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
] as const;

export const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
] as const;

export const READONLY_PATHS = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
] as const;

export interface BindMount {
  /** Host path. */
  readonly source: string;
  /** Absolute path in the container. */
  readonly destination: string;
  readonly readOnly?: boolean;
}

export interface Resources {
  /** Memory limit in bytes (swap limited to the same: no swap beyond it). */
  readonly memory?: number;
  /** Most processes (and threads) at once. */
  readonly pids?: number;
  /** CPUs worth of time (CFS quota / period), e.g. 0.5. */
  readonly cpus?: number;
}

/** The user a process runs as (uid, gid, additional gids), as in config.json. */
export type ProcessUser = RuntimeUser;

export interface ProcessSpec {
  readonly terminal?: boolean;
  readonly user: ProcessUser;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly cwd: string;
}

export interface SpecOptions {
  /** Absolute path of the (mounted) root filesystem. */
  readonly rootfs: string;
  readonly readonlyRootfs?: boolean;
  readonly process: ProcessSpec;
  readonly hostname?: string;
  readonly network?: 'none' | 'host';
  readonly mounts?: readonly BindMount[];
  readonly resources?: Resources;
  /** Relative to the cgroup mounts, e.g. `stratum/<id>`. */
  readonly cgroupsPath?: string;
  readonly annotations?: Readonly<Record<string, string>>;
  /** The default seccomp filter (see DEFAULT_SECCOMP), or none ('unconfined'). Default 'default'. */
  readonly seccomp?: 'default' | 'unconfined';
}

export interface SeccompRule {
  readonly names: readonly string[];
  readonly action: 'SCMP_ACT_ERRNO';
  readonly errnoRet: number;
  readonly args?: readonly {
    readonly index: number;
    readonly value: number;
    readonly valueTwo: number;
    readonly op: string;
  }[];
}

export interface Seccomp {
  readonly defaultAction: 'SCMP_ACT_ALLOW';
  readonly architectures: readonly string[];
  readonly syscalls: readonly SeccompRule[];
}

const EPERM = 1;
const ENOSYS = 38;
/** clone(2) flags that make namespaces (CLONE_NEWNS ... CLONE_NEWNET, and CLONE_NEWCGROUP). */
const CLONE_NEW = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000];

/**
 * The default seccomp filter: everything is allowed except what docker's default profile
 * keeps from containers — loading kernel code, keyrings, bpf, perf, clock and swap control,
 * reboot, quota, handle-based opens, and new namespaces (unshare, setns, clone with a
 * CLONE_NEW* flag; clone3 answers ENOSYS so that libc falls back to clone). Most of these
 * need capabilities a container lacks anyway; the filter also stops them for root in a
 * container and through kernel bugs. A denylist, not docker's allowlist: new harmless
 * syscalls keep working.
 */
export const DEFAULT_SECCOMP: Seccomp = {
  defaultAction: 'SCMP_ACT_ALLOW',
  architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32', 'SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'],
  syscalls: [
    {
      names: [
        'acct',
        'add_key',
        'bpf',
        'clock_adjtime',
        'clock_settime',
        'create_module',
        'delete_module',
        'finit_module',
        'fsconfig',
        'fsmount',
        'fsopen',
        'fspick',
        'get_kernel_syms',
        'init_module',
        'ioperm',
        'iopl',
        'kexec_file_load',
        'kexec_load',
        'keyctl',
        'lookup_dcookie',
        'mount',
        'mount_setattr',
        'move_mount',
        'name_to_handle_at',
        'nfsservctl',
        'open_by_handle_at',
        'open_tree',
        'perf_event_open',
        'pivot_root',
        'query_module',
        'quotactl',
        'quotactl_fd',
        'reboot',
        'request_key',
        'setns',
        'settimeofday',
        'stime',
        'swapoff',
        'swapon',
        'sysfs',
        '_sysctl',
        'umount',
        'umount2',
        'unshare',
        'uselib',
        'userfaultfd',
        'ustat',
        'vm86',
        'vm86old',
      ],
      action: 'SCMP_ACT_ERRNO',
      errnoRet: EPERM,
    },
    { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ...CLONE_NEW.map((flag) => ({
      names: ['clone'],
      action: 'SCMP_ACT_ERRNO' as const,
      errnoRet: EPERM,
      args: [{ index: 0, value: flag, valueTwo: flag, op: 'SCMP_CMP_MASKED_EQ' }],
    })),
  ],
};

// the runtime-spec types are shared with bundle/ (which writes config.json as umoci does)
export type OciMount = RuntimeMount;
export type OciCapabilities = RuntimeCapabilities;
export type OciProcess = RuntimeProcess;

/** The config.json stratum writes for runc. */
export interface OciSpec {
  readonly ociVersion: string;
  readonly process: OciProcess;
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly mounts: readonly OciMount[];
  readonly annotations?: Readonly<Record<string, string>>;
  readonly linux: {
    readonly cgroupsPath?: string;
    readonly resources: {
      readonly devices: readonly { readonly allow: boolean; readonly access: string }[];
      readonly memory?: { readonly limit: number; readonly swap?: number };
      readonly pids?: { readonly limit: number };
      readonly cpu?: { readonly quota: number; readonly period: number };
    };
    readonly namespaces: readonly { readonly type: string }[];
    readonly maskedPaths: readonly string[];
    readonly readonlyPaths: readonly string[];
    readonly seccomp?: Seccomp;
  };
}

function defaultMounts(): OciMount[] {
  // umoci's set (bundle/), with /proc also nosuid, noexec and nodev, as docker mounts it
  return defaultRuntimeMounts().map((m) =>
    m.destination === '/proc' ? { ...m, options: ['nosuid', 'noexec', 'nodev'] } : m,
  );
}

/** A container path: absolute, normalised, not `/`. */
export function containerPath(p: string, what: string): string {
  if (!p.startsWith('/')) {
    throw new StratumError('ERR_INVALID_ARGUMENT', `${what} ${JSON.stringify(p)} is not an absolute path`);
  }
  const n = posix.normalize(p).replace(/\/+$/, '');
  if (n === '' || n === '/') {
    throw new StratumError('ERR_INVALID_ARGUMENT', `${what} cannot be the container's root directory`);
  }
  if (n.includes('\0')) throw new StratumError('ERR_INVALID_ARGUMENT', `${what} holds a NUL byte`);
  return n;
}

function bindMounts(mounts: readonly BindMount[]): OciMount[] {
  const seen = new Set<string>();
  const out = mounts.map((m) => {
    if (!isAbsolute(m.source)) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `bind mount source ${JSON.stringify(m.source)} is not an absolute path`,
      );
    }
    const destination = containerPath(m.destination, 'bind mount destination');
    if (seen.has(destination)) {
      throw new StratumError('ERR_INVALID_ARGUMENT', `two mounts at ${destination} in the container`);
    }
    seen.add(destination);
    return {
      destination,
      type: 'bind',
      source: m.source,
      options: ['rbind', 'rprivate', m.readOnly ? 'ro' : 'rw'],
    };
  });
  // parents first: fewer path components first (a stable sort keeps the given order otherwise)
  return out.sort((a, b) => a.destination.split('/').length - b.destination.split('/').length);
}

const CFS_PERIOD = 100_000;

function resources(r: Resources | undefined): OciSpec['linux']['resources'] {
  const out: {
    devices: { allow: boolean; access: string }[];
    memory?: { limit: number; swap?: number };
    pids?: { limit: number };
    cpu?: { quota: number; period: number };
  } = { devices: [{ allow: false, access: 'rwm' }] };
  if (r?.memory !== undefined) {
    if (!Number.isSafeInteger(r.memory) || r.memory < 4 * 1024 * 1024) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `memory limit ${r.memory} is below the minimum of 4 MiB`,
      );
    }
    // without swap accounting there is no memsw file and runc refuses a swap limit
    const swapAccounting = existsSync('/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes');
    out.memory = { limit: r.memory, ...(swapAccounting ? { swap: r.memory } : {}) };
  }
  if (r?.pids !== undefined) {
    if (!Number.isSafeInteger(r.pids) || r.pids < 1) {
      throw new StratumError('ERR_INVALID_ARGUMENT', `pids limit ${r.pids} is not a positive whole number`);
    }
    out.pids = { limit: r.pids };
  }
  if (r?.cpus !== undefined) {
    if (!Number.isFinite(r.cpus) || r.cpus <= 0) {
      throw new StratumError('ERR_INVALID_ARGUMENT', `cpus ${r.cpus} is not a positive number`);
    }
    out.cpu = { quota: Math.max(1000, Math.round(r.cpus * CFS_PERIOD)), period: CFS_PERIOD };
  }
  return out;
}

/** The runtime spec for one container. */
export function containerSpec(o: SpecOptions): OciSpec {
  if (!isAbsolute(o.rootfs)) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `rootfs ${JSON.stringify(o.rootfs)} is not an absolute path`,
    );
  }
  if (o.process.args.length === 0) {
    throw new StratumError('ERR_INVALID_ARGUMENT', 'no command to run in the container');
  }
  const root = o.process.user.uid === 0;
  const caps = [...DEFAULT_CAPABILITIES];
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if ((o.network ?? 'none') === 'none') namespaces.push({ type: 'network' });
  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: o.process.terminal ?? false,
      user: {
        uid: o.process.user.uid,
        gid: o.process.user.gid,
        ...(o.process.user.additionalGids?.length
          ? { additionalGids: [...o.process.user.additionalGids] }
          : {}),
      },
      args: [...o.process.args],
      env: [...o.process.env],
      cwd: containerCwd(o.process.cwd),
      capabilities: {
        bounding: caps,
        effective: root ? caps : [],
        inheritable: caps,
        permitted: root ? caps : [],
        ambient: [],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: false,
    },
    root: { path: o.rootfs, readonly: o.readonlyRootfs ?? false },
    hostname: o.hostname ?? 'stratum',
    mounts: [...defaultMounts(), ...bindMounts(o.mounts ?? [])],
    ...(o.annotations ? { annotations: { ...o.annotations } } : {}),
    linux: {
      ...(o.cgroupsPath ? { cgroupsPath: o.cgroupsPath } : {}),
      resources: resources(o.resources),
      namespaces,
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
      ...((o.seccomp ?? 'default') === 'default' ? { seccomp: DEFAULT_SECCOMP } : {}),
    },
  };
}

function containerCwd(cwd: string): string {
  if (cwd === '' || cwd === '/') return '/';
  return containerPath(cwd, 'working directory');
}

/** config.json bytes. */
export function serializeSpec(spec: OciSpec): string {
  return `${JSON.stringify(spec, null, 2)}\n`;
}

/** A size like docker's --memory: a number with an optional unit b, k, m, g (KiB multiples), e.g. `32m`. */
export function parseByteSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `size ${JSON.stringify(text)}: want a number with an optional unit (b, k, m, g), e.g. 32m`,
    );
  }
  const unit = (m[2] ?? '').toLowerCase();
  const mult = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[unit] ?? 1;
  const n = Math.floor(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n))
    throw new StratumError('ERR_INVALID_ARGUMENT', `size ${JSON.stringify(text)} is too large`);
  return n;
}
