// Pure parts of the runtime: the spec, -v values, sizes, signals, env files, cgroup files.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCgroupMounts, parseProcCgroup } from './cgroups.js';
import { normalizeSignal, parseEnvFile, resolveEnvArgs } from './containers.js';
import { runtimeMessage } from './runc.js';
import { containerSpec, DEFAULT_CAPABILITIES, parseByteSize } from './spec.js';
import { parseVolumeSpec } from './volumes.js';

const proc = { user: { uid: 0, gid: 0 }, args: ['sh'], env: ['PATH=/bin'], cwd: '/' };

describe('containerSpec', () => {
  it("gives root docker's 14 capabilities, a non-root user none effective, nobody ambient ones", () => {
    const root = containerSpec({ rootfs: '/r', process: proc });
    assert.equal(DEFAULT_CAPABILITIES.length, 14);
    assert.deepEqual(root.process.capabilities.effective, [...DEFAULT_CAPABILITIES]);
    assert.deepEqual(root.process.capabilities.ambient, []);
    const user = containerSpec({ rootfs: '/r', process: { ...proc, user: { uid: 1000, gid: 1000 } } });
    assert.deepEqual(user.process.capabilities.effective, []);
    assert.deepEqual(user.process.capabilities.permitted, []);
    assert.deepEqual(user.process.capabilities.bounding, [...DEFAULT_CAPABILITIES]);
    assert.deepEqual(root.process.rlimits, [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }]);
    assert.ok(root.linux.maskedPaths.includes('/proc/kcore'));
    assert.ok(root.linux.readonlyPaths.includes('/proc/sys'));
  });

  it('has the default seccomp filter unless asked for none: namespaces and kernel-level calls denied', () => {
    const spec = containerSpec({ rootfs: '/r', process: proc });
    const seccomp = spec.linux.seccomp;
    assert.ok(seccomp);
    assert.equal(seccomp.defaultAction, 'SCMP_ACT_ALLOW');
    const denied = seccomp.syscalls.flatMap((r) => (r.args ? [] : r.names));
    for (const n of ['unshare', 'setns', 'mount', 'kexec_load', 'init_module', 'bpf', 'keyctl']) {
      assert.ok(denied.includes(n), n);
    }
    for (const n of ['read', 'clone', 'ptrace', 'chroot']) assert.ok(!denied.includes(n), n);
    // clone only with a CLONE_NEW* flag, one rule per flag; clone3 says ENOSYS (libc falls back)
    const clone = seccomp.syscalls.filter((r) => r.names.includes('clone'));
    assert.equal(clone.length, 7);
    assert.ok(
      clone.every((r) => r.args?.[0]?.op === 'SCMP_CMP_MASKED_EQ' && r.args[0].value === r.args[0].valueTwo),
    );
    assert.equal(seccomp.syscalls.find((r) => r.names.includes('clone3'))?.errnoRet, 38);
    assert.equal(
      containerSpec({ rootfs: '/r', process: proc, seccomp: 'unconfined' }).linux.seccomp,
      undefined,
    );
  });

  it('has a network namespace unless the network is the host', () => {
    const types = (n: 'none' | 'host') =>
      containerSpec({ rootfs: '/r', process: proc, network: n })
        .linux.namespaces.map((x) => x.type)
        .sort();
    assert.deepEqual(types('none'), ['ipc', 'mount', 'network', 'pid', 'uts']);
    assert.deepEqual(types('host'), ['ipc', 'mount', 'pid', 'uts']);
  });

  it('mounts parents before what goes inside them, rbind and ro as asked; refuses two at one place', () => {
    const s = containerSpec({
      rootfs: '/r',
      process: proc,
      mounts: [
        { source: '/h/b', destination: '/data/sub/' },
        { source: '/h/a', destination: '/data', readOnly: true },
      ],
    });
    const binds = s.mounts.filter((m) => m.type === 'bind');
    assert.deepEqual(
      binds.map((m) => [m.destination, m.options]),
      [
        ['/data', ['rbind', 'rprivate', 'ro']],
        ['/data/sub', ['rbind', 'rprivate', 'rw']],
      ],
    );
    assert.throws(
      () =>
        containerSpec({
          rootfs: '/r',
          process: proc,
          mounts: [
            { source: '/a', destination: '/x' },
            { source: '/b', destination: '/x/./' },
          ],
        }),
      /two mounts at \/x/,
    );
    assert.throws(
      () => containerSpec({ rootfs: '/r', process: proc, mounts: [{ source: '/a', destination: '/../..' }] }),
      /root directory/,
    );
  });

  it('turns limits into cgroup resources and refuses nonsense', () => {
    const s = containerSpec({
      rootfs: '/r',
      process: proc,
      resources: { memory: 32 * 1024 * 1024, pids: 10, cpus: 1.5 },
      cgroupsPath: 'stratum/x',
    });
    assert.equal(s.linux.resources.memory?.limit, 32 * 1024 * 1024);
    assert.deepEqual(s.linux.resources.pids, { limit: 10 });
    assert.deepEqual(s.linux.resources.cpu, { quota: 150_000, period: 100_000 });
    assert.equal(s.linux.cgroupsPath, 'stratum/x');
    assert.throws(
      () => containerSpec({ rootfs: '/r', process: proc, resources: { memory: 1000 } }),
      /minimum/,
    );
    assert.throws(() => containerSpec({ rootfs: '/r', process: proc, resources: { pids: 0 } }), /positive/);
    assert.throws(() => containerSpec({ rootfs: '/r', process: proc, resources: { cpus: -1 } }), /positive/);
    assert.throws(() => containerSpec({ rootfs: 'rel', process: proc }), /not an absolute path/);
    assert.throws(() => containerSpec({ rootfs: '/r', process: { ...proc, args: [] } }), /no command/);
  });
});

it('parses -v values: host paths, named volumes, ro/rw; refuses the rest', () => {
  assert.deepEqual(parseVolumeSpec('/h/x/../y:/c:ro'), {
    type: 'bind',
    source: '/h/y',
    destination: '/c',
    readOnly: true,
  });
  assert.deepEqual(parseVolumeSpec('data:/c/'), {
    type: 'volume',
    source: 'data',
    destination: '/c',
    readOnly: false,
  });
  for (const bad of [
    'x',
    '/h:/c:rx',
    '/h:rel',
    'a:b:c:d',
    '../x:/c',
    'bad/name:/c',
    ':/c',
    '/h:/',
    'x'.repeat(200) + ':/c',
  ]) {
    assert.throws(() => parseVolumeSpec(bad), { code: 'ERR_INVALID_ARGUMENT' }, bad);
  }
});

it('parses sizes like docker --memory', () => {
  assert.equal(parseByteSize('32m'), 32 * 1024 * 1024);
  assert.equal(parseByteSize('1g'), 1024 ** 3);
  assert.equal(parseByteSize('1.5k'), 1536);
  assert.equal(parseByteSize('100'), 100);
  assert.equal(parseByteSize('64MiB'), 64 * 1024 * 1024);
  for (const bad of ['', 'm', '-1m', '1x', '1e9', '99999999999999999999t']) {
    assert.throws(() => parseByteSize(bad), { code: 'ERR_INVALID_ARGUMENT' }, bad);
  }
});

it('names signals for runc, refusing unknown ones', () => {
  assert.equal(normalizeSignal('SIGTERM'), 'TERM');
  assert.equal(normalizeSignal('kill'), 'KILL');
  assert.equal(normalizeSignal('9'), '9');
  for (const bad of ['0', '65', 'SIGNOPE', 'TERM; rm -rf /', ''])
    assert.throws(() => normalizeSignal(bad), /unknown signal/);
});

it('reads -e and --env-file values', () => {
  assert.deepEqual(resolveEnvArgs(['A=1', 'B', 'C', 'D='], { B: 'from host' }), ['A=1', 'B=from host', 'D=']);
  assert.throws(() => resolveEnvArgs(['=x']), /has no name/);
  assert.throws(() => resolveEnvArgs(['A=\0']), /NUL/);
  assert.deepEqual(parseEnvFile('# c\r\nA=1\r\n\n  # indented comment\nB = 2\nC\n'), ['A=1', 'B = 2', 'C']);
});

it('reads cgroup mounts and a process cgroup file (escaped mount points included)', () => {
  const info = [
    '30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory',
    '31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct',
    '32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd',
    '33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw',
    '34 25 0:30 / /mnt/odd\\040name rw - cgroup cgroup rw,pids',
    '35 25 0:31 / /proc rw - proc proc rw',
  ].join('\n');
  const mounts = parseCgroupMounts(info);
  assert.deepEqual(
    mounts.map((m) => [m.point, m.version, [...m.controllers].sort()]),
    [
      ['/sys/fs/cgroup/memory', 1, ['memory']],
      ['/sys/fs/cgroup/cpu,cpuacct', 1, ['cpu', 'cpuacct']],
      ['/sys/fs/cgroup/systemd', 1, ['name=systemd']],
      ['/sys/fs/cgroup/unified', 2, []],
      ['/mnt/odd name', 1, ['pids']],
    ],
  );
  assert.deepEqual(parseProcCgroup('4:memory:/a/b\n1:cpu,cpuacct:/\n0::/u\ngarbage\n'), [
    { controllers: ['memory'], path: '/a/b' },
    { controllers: ['cpu', 'cpuacct'], path: '/' },
    { controllers: [], path: '/u' },
  ]);
});

it("takes runc's message out of its log lines", () => {
  assert.equal(
    runtimeMessage('time="2026-01-01T00:00:00Z" level=error msg="container \\"x\\" does not exist"\n'),
    'container "x" does not exist',
  );
  assert.equal(runtimeMessage('plain words\n\n'), 'plain words');
});
