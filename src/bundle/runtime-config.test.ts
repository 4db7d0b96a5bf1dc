import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, symlink, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Image } from '../image/image.js';
import { openLayout } from '../layout/layout.js';
import type { ImageConfig } from '../spec/types.js';
import {
  fixturesSkipReason,
  getFixtures,
  normaliseUmociConfig,
  umociBundle,
  umociRuntimeConfig,
} from '../testing/fixtures.js';
import { tempDir } from '../testing/tmp.js';
import {
  Annotation,
  buildRuntimeConfig,
  DEFAULT_PATH,
  formatCreated,
  makeRuntimeConfig,
  serializeRuntimeConfig,
} from './runtime-config.js';
import { parseGroup, parsePasswd, readRootfsFile, resolveInRoot, resolveUser } from './user.js';

const PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
user:x:1000:1000:A User:/home/user:/bin/sh
  spaced:x:1001:1001::/home/spaced:/bin/sh  

dup:x:1002:1002::/first:/bin/sh
dup:x:1003:1003::/second:/bin/sh
nohome:x:1004:1004
`;
const GROUP = `root:x:0:
wheel:x:10:root,user
audio:x:29:user,dup
user:x:1000:
twice:x:1000:
staff:x:50:
`;
const files = { passwd: PASSWD, group: GROUP };

function image(config: ImageConfig['config'] = {}, extra: Partial<ImageConfig> = {}): ImageConfig {
  return { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, config, ...extra };
}

describe('user resolution (libcontainer semantics)', () => {
  it('parses passwd and group lines, trimming and skipping empty lines', () => {
    const p = parsePasswd(PASSWD);
    assert.equal(p.length, 7);
    assert.deepEqual(p[3], {
      name: 'spaced',
      password: 'x',
      uid: 1001,
      gid: 1001,
      gecos: '',
      home: '/home/spaced',
      shell: '/bin/sh',
    });
    assert.deepEqual(p[6], {
      name: 'nohome',
      password: 'x',
      uid: 1004,
      gid: 1004,
      gecos: '',
      home: '',
      shell: '',
    });
    assert.deepEqual(parseGroup(GROUP)[1], {
      name: 'wheel',
      password: 'x',
      gid: 10,
      members: ['root', 'user'],
    });
    assert.deepEqual(parseGroup('g:x:5:')[0]?.members, []);
  });

  const cases: [string, ReturnType<typeof resolveUser>][] = [
    ['', { uid: 0, gid: 0, additionalGids: [10], home: '/root' }],
    ['root', { uid: 0, gid: 0, additionalGids: [10], home: '/root' }],
    ['user', { uid: 1000, gid: 1000, additionalGids: [10, 29], home: '/home/user' }],
    ['1000', { uid: 1000, gid: 1000, additionalGids: [10, 29], home: '/home/user' }],
    ['user:wheel', { uid: 1000, gid: 10, additionalGids: [], home: '/home/user' }],
    ['user:29', { uid: 1000, gid: 29, additionalGids: [], home: '/home/user' }],
    ['1000:777', { uid: 1000, gid: 777, additionalGids: [], home: '/home/user' }],
    ['4242', { uid: 4242, gid: 0, additionalGids: [] }],
    ['4242:staff', { uid: 4242, gid: 50, additionalGids: [] }],
    ['4242:4343', { uid: 4242, gid: 4343, additionalGids: [] }],
    ['spaced', { uid: 1001, gid: 1001, additionalGids: [], home: '/home/spaced' }],
    ['dup', { uid: 1002, gid: 1002, additionalGids: [29], home: '/first' }],
    ['nohome', { uid: 1004, gid: 1004, additionalGids: [] }],
    ['user:1000', { uid: 1000, gid: 1000, additionalGids: [], home: '/home/user' }],
    ['user:wheel:extra', { uid: 1000, gid: 10, additionalGids: [], home: '/home/user' }],
  ];
  for (const [spec, want] of cases) {
    it(`resolves ${JSON.stringify(spec)}`, () => assert.deepEqual(resolveUser(spec, files), want));
  }

  it('refuses names that do not resolve, and numbers out of range', () => {
    for (const spec of ['ghost', 'user:ghosts', '-1', '2147483648', '1:-5', 'user:2147483648']) {
      assert.throws(() => resolveUser(spec, files), { code: 'ERR_INVALID_DOCUMENT' }, spec);
    }
    assert.throws(() => resolveUser('user', {}), /no \/etc\/passwd/);
    assert.throws(() => resolveUser('1000:wheel', { passwd: PASSWD }), /no \/etc\/group/);
  });

  it('resolves numbers without any files', () => {
    assert.deepEqual(resolveUser('', {}), { uid: 0, gid: 0, additionalGids: [] });
    assert.deepEqual(resolveUser('5:6', {}), { uid: 5, gid: 6, additionalGids: [] });
  });
});

describe('reading /etc/passwd from an untrusted rootfs', () => {
  it('resolves symlinks inside the root, never outside', async (t) => {
    const dir = await tempDir(t);
    const root = join(dir, 'rootfs');
    const outside = join(dir, 'outside');
    await mkdir(join(root, 'etc'), { recursive: true });
    await mkdir(join(root, 'usr/lib'), { recursive: true });
    await mkdir(outside, { recursive: true });
    await writeFile(join(outside, 'passwd'), 'evil:x:0:0::/evil:/bin/sh\n');
    await writeFile(join(root, 'usr/lib/passwd'), 'inside:x:7:7::/in:/bin/sh\n');
    // absolute link: means /usr/lib/passwd of the image, not of the host
    await symlink('/usr/lib/passwd', join(root, 'etc/passwd'));
    assert.equal((await readRootfsFile(root, '/etc/passwd'))?.toString(), 'inside:x:7:7::/in:/bin/sh\n');
    // a link climbing out with .. stops at the root
    await symlink(`../../../../../../..${outside}/passwd`, join(root, 'etc/group'));
    assert.equal(await resolveInRoot(root, '/etc/group'), undefined);
    assert.equal(await readRootfsFile(root, '/etc/group'), undefined);
    // ... and lands on the image's own path of that name
    await mkdir(join(root, outside), { recursive: true });
    await writeFile(join(root, outside, 'passwd'), 'mirror:x:8:8::/m:/bin/sh\n');
    assert.equal(await resolveInRoot(root, '/etc/group'), join(root, outside, 'passwd'));
    assert.equal((await readRootfsFile(root, '/etc/group'))?.toString(), 'mirror:x:8:8::/m:/bin/sh\n');
    // a directory symlink pointing outside by absolute path: the image's path of that name
    await symlink(outside, join(root, 'evil'));
    assert.equal((await readRootfsFile(root, '/evil/passwd'))?.toString(), 'mirror:x:8:8::/m:/bin/sh\n');
  });

  it('refuses loops, fifos, directories and huge files without hanging', async (t) => {
    const root = await tempDir(t);
    await mkdir(join(root, 'etc'));
    await symlink('b', join(root, 'etc/a'));
    await symlink('a', join(root, 'etc/b'));
    await assert.rejects(readRootfsFile(root, '/etc/a'), /too many symlinks/);
    execFileSync('mkfifo', [join(root, 'etc/fifo')]);
    await assert.rejects(readRootfsFile(root, '/etc/fifo'), /not a regular file/);
    await mkdir(join(root, 'etc/dir'));
    await assert.rejects(readRootfsFile(root, '/etc/dir'), /not a regular file/);
    await writeFile(join(root, 'etc/big'), '');
    await truncate(join(root, 'etc/big'), 17 * 1024 * 1024);
    await assert.rejects(readRootfsFile(root, '/etc/big'), { code: 'ERR_TOO_LARGE' });
    await writeFile(join(root, 'etc/file'), 'x');
    assert.equal(await readRootfsFile(root, '/etc/file/passwd'), undefined);
    assert.equal(await readRootfsFile(root, '/nothing/passwd'), undefined);
  });

  it('resolves a User through the rootfs files', async (t) => {
    const root = await tempDir(t);
    await mkdir(join(root, 'etc'));
    await writeFile(join(root, 'etc/passwd'), PASSWD);
    await writeFile(join(root, 'etc/group'), GROUP);
    const spec = await makeRuntimeConfig(image({ User: 'user' }), { rootfs: root });
    assert.deepEqual(spec.process.user, { uid: 1000, gid: 1000, additionalGids: [10, 29] });
    assert.ok(spec.process.env.includes('HOME=/home/user'));
  });
});

describe('runtime config', () => {
  it('formats created like Go RFC3339Nano', () => {
    assert.equal(formatCreated(undefined), '0001-01-01T00:00:00Z');
    assert.equal(formatCreated('2024-05-06T07:08:09.123000Z'), '2024-05-06T07:08:09.123Z');
    assert.equal(formatCreated('2024-05-06T07:08:09.000000000Z'), '2024-05-06T07:08:09Z');
    assert.equal(formatCreated('2024-05-06T07:08:09.1234567891Z'), '2024-05-06T07:08:09.123456789Z');
    assert.equal(formatCreated('2024-05-06T07:08:09+00:00'), '2024-05-06T07:08:09Z');
    assert.equal(formatCreated('2024-05-06T07:08:09.5-07:00'), '2024-05-06T07:08:09.5-07:00');
    assert.equal(formatCreated('yesterday'), 'yesterday');
  });

  it('derives process, annotations and mounts from the image config', () => {
    const spec = buildRuntimeConfig(
      image(
        {
          Entrypoint: ['/bin/app'],
          Cmd: ['--flag'],
          Env: ['PATH=/app', 'A=1', 'A=2', 'EMPTY=', 'EQ=a=b', 'HOME=/x'],
          WorkingDir: '/srv',
          Volumes: { '/z': {}, '/a': {} },
          ExposedPorts: { '8080/tcp': {}, '53/udp': {} },
          Labels: { 'org.opencontainers.image.os': 'overridden', team: 'x' },
          StopSignal: 'SIGINT',
        },
        { author: 'me', created: '2020-01-01T00:00:00Z' },
      ),
      { uid: 1, gid: 2, additionalGids: [3], home: '/home/u' },
    );
    assert.deepEqual(spec.process.args, ['/bin/app', '--flag']);
    assert.deepEqual(spec.process.env, [
      'PATH=/app',
      'TERM=xterm',
      'A=2',
      'EMPTY=',
      'EQ=a=b',
      'HOME=/home/u',
    ]);
    assert.equal(spec.process.cwd, '/srv');
    assert.deepEqual(spec.process.user, { uid: 1, gid: 2, additionalGids: [3] });
    assert.deepEqual(spec.annotations, {
      [Annotation.architecture]: 'amd64',
      [Annotation.author]: 'me',
      [Annotation.created]: '2020-01-01T00:00:00Z',
      [Annotation.exposedPorts]: '53/udp,8080/tcp',
      [Annotation.os]: 'linux',
      [Annotation.stopSignal]: 'SIGINT',
      team: 'x',
    });
    assert.deepEqual(
      spec.mounts.slice(-2).map((m) => m.destination),
      ['/a', '/z'],
    );
    assert.deepEqual(Object.keys(spec.annotations), Object.keys(spec.annotations).sort());
    assert.ok(serializeRuntimeConfig(spec).endsWith('}\n'));
  });

  it('keeps the defaults when the image says nothing', () => {
    const spec = buildRuntimeConfig(image(undefined), { uid: 0, gid: 0, additionalGids: [] });
    assert.deepEqual(spec.process.args, ['sh']);
    assert.deepEqual(spec.process.env, [DEFAULT_PATH, 'TERM=xterm']);
    assert.equal(spec.process.cwd, '/');
    assert.deepEqual(spec.process.user, { uid: 0, gid: 0 });
    assert.equal(spec.annotations[Annotation.created], '0001-01-01T00:00:00Z');
  });

  it('refuses bad Env entries and non-linux images', () => {
    const u = { uid: 0, gid: 0, additionalGids: [] };
    assert.throws(() => buildRuntimeConfig(image({ Env: ['NOEQUALS'] }), u), {
      code: 'ERR_INVALID_DOCUMENT',
    });
    assert.throws(() => buildRuntimeConfig(image({ Env: ['=value'] }), u), /has no name/);
    assert.throws(() => buildRuntimeConfig(image({}, { os: 'windows' }), u), { code: 'ERR_UNSUPPORTED' });
  });

  it('makes a rootless config: user namespace mapped to the given ids, no network, no cgroups', () => {
    const spec = buildRuntimeConfig(
      image({}),
      { uid: 0, gid: 0, additionalGids: [5] },
      { rootless: { uid: 1234, gid: 5678 }, resolvConfFlags: ['nosuid', 'nodev'] },
    );
    assert.deepEqual(spec.linux.uidMappings, [{ containerID: 0, hostID: 1234, size: 1 }]);
    assert.deepEqual(spec.linux.gidMappings, [{ containerID: 0, hostID: 5678, size: 1 }]);
    assert.deepEqual(
      spec.linux.namespaces.map((n) => n.type),
      ['pid', 'ipc', 'uts', 'mount', 'user'],
    );
    assert.equal(spec.linux.resources, undefined);
    assert.equal(spec.process.user.additionalGids, undefined);
    assert.ok(!spec.mounts.some((m) => m.options?.some((o) => o.startsWith('gid='))));
    assert.deepEqual(spec.mounts.at(-1), {
      destination: '/etc/resolv.conf',
      type: 'bind',
      source: '/etc/resolv.conf',
      options: ['nosuid', 'nodev', 'rbind', 'ro'],
    });
  });
});

const skip = fixturesSkipReason();

describe('config.json matches umoci unpack', { skip }, () => {
  it('for every fixture image, as root and rootless', async () => {
    const set = await getFixtures();
    const layouts = new Map<string, Awaited<ReturnType<typeof openLayout>>>();
    try {
      for (const fx of set.images) {
        if (fx.oracle !== 'umoci') continue;
        let layout = layouts.get(fx.layout);
        if (!layout) {
          layout = await openLayout(fx.layout);
          layouts.set(fx.layout, layout);
        }
        const tag = fx.location.slice(fx.location.lastIndexOf(':') + 1);
        const config = await new Image(layout, await layout.resolve(tag)).config();
        const rootfs = join(await umociBundle(set.image(fx.base)), 'rootfs');
        for (const rootless of [false, true]) {
          if (fx.badUser) {
            await assert.rejects(umociRuntimeConfig(fx, { rootless }), /cannot parse user spec/);
            await assert.rejects(makeRuntimeConfig(config, { rootfs, rootless }), {
              code: 'ERR_INVALID_DOCUMENT',
            });
            continue;
          }
          const want = await umociRuntimeConfig(fx, { rootless });
          const got = await makeRuntimeConfig(config, { rootfs, rootless });
          assert.deepEqual(
            normaliseUmociConfig(got),
            normaliseUmociConfig(want),
            `${fx.name}${rootless ? ' (rootless)' : ''}`,
          );
        }
      }
    } finally {
      for (const l of layouts.values()) await l.close();
    }
  });
});
