// stratum unpack against the oracles: for every fixture image, the same rootfs tree (path,
// type, mode, owner, size, content, link target, device, xattrs, hardlinks, mtimes) and a
// compatible config.json as `umoci unpack` (GNU tar for what umoci cannot read); the
// runnable bundles run under runc and print what umoci's bundles print.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, lstat, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it, type TestContext } from 'node:test';
import { unpack } from '../ops/unpack.js';
import { STRATUM_BIN as CLI } from '../testing/cli.js';
import {
  type FixtureImage,
  type FixtureSet,
  fixturesSkipReason,
  getFixtures,
  normaliseUmociConfig,
  umociBundle,
} from '../testing/fixtures.js';
import { tempDir } from '../testing/tmp.js';
import { compareTrees, describeTree, type TreeEntry } from '../testing/tree.js';

const skip = fixturesSkipReason();
const haveRunc = spawnSync('runc', ['--version']).status === 0;
const runcSkip = skip ?? (haveRunc ? undefined : 'runc is not installed (apt-get install runc)');

/** The images compared with an oracle; the debian ones need debootstrap and a mirror. */
const IMAGES = [
  'busybox',
  'busybox-user',
  'busybox-config',
  'layers',
  'layers-zstd',
  'sparse-gnu',
  'debian',
] as const;

let set: FixtureSet;

async function rootOf(dir: string): Promise<{ mode: number; uid: number; gid: number }> {
  const st = await lstat(dir);
  return { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
}

/**
 * Compare two rootfs trees; [] when they are the same. For rootless bundles: umoci records
 * each file's owner in a `user.rootlesscontainers` xattr and turns device nodes into empty
 * files, where stratum does neither (it skips devices); `rootless` names a non-rootless tree
 * of the same image to find the devices in, and that xattr is not compared.
 */
async function diffTrees(
  ours: string,
  theirs: string,
  oracle: string,
  rootless?: { readonly devicesFrom: string },
): Promise<string[]> {
  const opts = { mtimes: true, ...(rootless ? { ignoreXattrs: ['user.rootlesscontainers'] } : {}) };
  const [a, b] = await Promise.all([describeTree(ours, opts), describeTree(theirs, opts)]);
  const devices = new Set(
    rootless
      ? (await describeTree(rootless.devicesFrom, { xattrs: false }))
          .filter((e) => e.type === 'char' || e.type === 'block')
          .map((e) => e.path)
      : [],
  );
  const out = compareTrees(
    a,
    b.filter((e) => !devices.has(e.path)),
    ['stratum', oracle],
  );
  const [ra, rb] = await Promise.all([rootOf(ours), rootOf(theirs)]);
  if (JSON.stringify(ra) !== JSON.stringify(rb))
    out.push(`rootfs itself: ${JSON.stringify(ra)} vs ${JSON.stringify(rb)}`);
  return out;
}

function fixture(t: TestContext, name: string): FixtureImage | undefined {
  const fx = set.images.find((i) => i.name === name);
  if (!fx) t.skip(set.debianSkipReason ?? `no fixture ${name}`);
  return fx;
}

describe('stratum unpack gives the same bundle as umoci unpack', { skip }, () => {
  before(async () => {
    set = await getFixtures();
  });

  for (const name of IMAGES) {
    it(name, async (t) => {
      const fx = fixture(t, name);
      if (!fx) return;
      const dir = await tempDir(t);
      const r = await unpack(fx.location, join(dir, 'bundle'), { root: join(dir, 'store') });
      if (fx.oracle === 'tar') {
        const ref = join(dir, 'tar');
        await mkdir(ref, { mode: 0o755 });
        for (const tar of fx.tars ?? []) {
          execFileSync('tar', [
            '--xattrs',
            '--xattrs-include=*',
            '--numeric-owner',
            '--same-owner',
            '-p',
            '-C',
            ref,
            '-xf',
            tar,
          ]);
        }
        assert.deepEqual(await diffTrees(r.rootfs, ref, 'GNU tar'), []);
        return;
      }
      const theirs = await umociBundle(fx);
      assert.deepEqual(await diffTrees(r.rootfs, join(theirs, 'rootfs'), 'umoci'), []);
      const want = JSON.parse(await readFile(join(theirs, 'config.json'), 'utf8'));
      const got = JSON.parse(await readFile(join(r.bundle, 'config.json'), 'utf8'));
      assert.deepEqual(normaliseUmociConfig(got), normaliseUmociConfig(want));
    });
  }

  for (const name of ['busybox-user', 'layers'] as const) {
    it(`${name} --rootless`, async (t) => {
      const fx = fixture(t, name);
      if (!fx) return;
      const dir = await tempDir(t);
      const r = await unpack(fx.location, join(dir, 'bundle'), { root: join(dir, 'store'), rootless: true });
      const theirs = await umociBundle(fx, { rootless: true });
      const devicesFrom = join(await umociBundle(fx), 'rootfs');
      assert.deepEqual(
        await diffTrees(r.rootfs, join(theirs, 'rootfs'), 'umoci --rootless', { devicesFrom }),
        [],
      );
      const warnings = r.warnings.filter((w) => w.code === 'W_DEVICE_SKIPPED').length;
      assert.equal(warnings, name === 'layers' ? 2 : 0);
      const want = JSON.parse(await readFile(join(theirs, 'config.json'), 'utf8'));
      assert.deepEqual(normaliseUmociConfig(r.config), normaliseUmociConfig(want));
    });
  }

  it('layers --rootless by an unprivileged user (nobody)', async (t) => {
    if (!existsSync('/usr/bin/setpriv')) return t.skip('setpriv (util-linux) is missing');
    const fx = set.image('layers');
    const dir = await tempDir(t);
    await chmod(dir, 0o777);
    const layout = join(dir, 'layout');
    await cp(fx.layout, layout, { recursive: true });
    execFileSync('chmod', ['-R', 'a+rX', layout]);
    const bundle = join(dir, 'bundle');
    const run = spawnSync(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        CLI,
        'unpack',
        '--rootless',
        '--json',
        `oci:${layout}:layers`,
        bundle,
      ],
      { encoding: 'utf8', env: { ...process.env, HOME: dir, STRATUM_ROOT: join(dir, 'store') } },
    );
    assert.equal(run.status, 0, run.stderr);
    const events = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; warning?: { code: string } });
    const codes = events.flatMap((e) => (e.warning ? [e.warning.code] : []));
    assert.equal(codes.filter((c) => c === 'W_DEVICE_SKIPPED').length, 2);
    assert.ok(codes.includes('W_XATTR_SKIPPED'));
    const config = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
    assert.deepEqual(config.linux.uidMappings, [{ containerID: 0, hostID: 65534, size: 1 }]);
    // everything belongs to nobody; only user.* xattrs can be set without privileges
    const strip = (e: TreeEntry): TreeEntry => {
      const x = Object.entries(e.xattrs ?? {}).filter(
        ([k]) => k.startsWith('user.') && k !== 'user.rootlesscontainers',
      );
      const { xattrs: _x, ...rest } = e;
      return { ...rest, uid: 0, gid: 0, ...(x.length > 0 ? { xattrs: Object.fromEntries(x) } : {}) };
    };
    const theirs = join(await umociBundle(fx, { rootless: true }), 'rootfs');
    const devices = new Set(
      (await describeTree(join(await umociBundle(fx), 'rootfs'), { xattrs: false }))
        .filter((e) => e.type === 'char' || e.type === 'block')
        .map((e) => e.path),
    );
    const ours = (await describeTree(join(bundle, 'rootfs'), { mtimes: true })).map(strip);
    assert.ok(
      (await describeTree(join(bundle, 'rootfs'), { xattrs: false })).every(
        (e) => e.uid === 65534 && e.gid === 65534,
      ),
    );
    const want = (await describeTree(theirs, { mtimes: true }))
      .filter((e) => !devices.has(e.path))
      .map(strip);
    assert.deepEqual(compareTrees(ours, want, ['stratum as nobody', 'umoci --rootless']), []);
  });

  it('a docker-archive written by skopeo', async (t) => {
    const dir = await tempDir(t);
    const r = await unpack(`docker-archive:${set.dockerArchive}`, join(dir, 'bundle'), {
      root: join(dir, 'store'),
    });
    const theirs = await umociBundle(set.image('busybox'));
    assert.deepEqual(await diffTrees(r.rootfs, join(theirs, 'rootfs'), 'umoci'), []);
    const want = JSON.parse(await readFile(join(theirs, 'config.json'), 'utf8'));
    assert.deepEqual(normaliseUmociConfig(r.config), normaliseUmociConfig(want));
  });

  it('a User that does not resolve fails as umoci fails, leaving nothing', async (t) => {
    const dir = await tempDir(t);
    for (const name of ['busybox-ghost', 'busybox-ghost-group']) {
      await assert.rejects(umociBundle(set.image(name)), /cannot parse user spec/);
      await assert.rejects(
        unpack(set.image(name).location, join(dir, 'bundle'), { root: join(dir, 'store') }),
        {
          code: 'ERR_INVALID_DOCUMENT',
          message: /image config: User/,
        },
      );
      assert.equal(existsSync(join(dir, 'bundle')), false);
    }
  });
});

describe('stratum unpack (command line)', { skip }, () => {
  before(async () => {
    set = await getFixtures();
  });

  it('unpacks, prints the bundle, refuses a second unpack into the same place', async (t) => {
    const dir = await tempDir(t);
    const bundle = join(dir, 'bundle');
    const env = { ...process.env, STRATUM_ROOT: join(dir, 'store') };
    const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8' });
    const ok = run(['unpack', '--json', set.image('busybox').location, bundle]);
    assert.equal(ok.status, 0, ok.stderr);
    const lines = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; bundle?: string });
    assert.deepEqual(lines.at(-1)?.event, 'result');
    assert.equal(lines.at(-1)?.bundle, bundle);
    assert.ok(lines.some((l) => l.event === 'layer-done'));
    assert.ok(existsSync(join(bundle, 'config.json')));
    const again = run(['unpack', set.image('busybox').location, bundle]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already holds rootfs .*\[ERR_INVALID_ARGUMENT\]/);
    const usage = run(['unpack', set.image('busybox').location]);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /usage: stratum unpack/);
    const text = run(['unpack', '--rootless', set.image('busybox').location, join(dir, 'b2')]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^Unpacked .* -> .*b2\nDigest: sha256:[0-9a-f]{64}\nLayers: 1\n/);
    assert.match(text.stderr, /Unpacking layer 1\/1/);
    const missing = run(['unpack', `oci:${join(dir, 'nothing')}:x`, join(dir, 'b3')]);
    assert.notEqual(missing.status, 0);
    assert.equal(existsSync(join(dir, 'b3')), false);
  });
});

/** Run a bundle under runc (no terminal); its stdout, or the failure. */
function runcRun(bundle: string): string {
  const id = `stratum-test-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const r = spawnSync('runc', ['run', '--bundle', bundle, id], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `runc run failed (${r.status}): ${r.stderr}`);
    return r.stdout;
  } finally {
    spawnSync('runc', ['delete', '-f', id]);
  }
}

/** A copy of a bundle's config.json without a terminal, in `dir`, with root.path pointing at `rootfs`. */
async function runnable(configPath: string, rootfs: string, dir: string): Promise<string> {
  const config = JSON.parse(await readFile(configPath, 'utf8'));
  config.process.terminal = false;
  config.root.path = rootfs;
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

describe('unpacked bundles run under runc', {
  skip: runcSkip ?? (process.getuid?.() === 0 ? undefined : 'runc run needs root'),
}, () => {
  before(async () => {
    set = await getFixtures();
  });

  for (const name of ['busybox', 'busybox-user', 'debian'] as const) {
    it(name, async (t) => {
      const fx = fixture(t, name);
      if (!fx?.runnable) return;
      const dir = await tempDir(t);
      const r = await unpack(fx.location, join(dir, 'bundle'), { root: join(dir, 'store') });
      const ours = runcRun(await runnable(join(r.bundle, 'config.json'), r.rootfs, join(dir, 'run-ours')));
      const theirs = await umociBundle(fx);
      const umocis = runcRun(
        await runnable(join(theirs, 'config.json'), join(theirs, 'rootfs'), join(dir, 'run-umoci')),
      );
      assert.match(ours, new RegExp(fx.runnable.expect));
      assert.equal(ours, umocis);
    });
  }
});
