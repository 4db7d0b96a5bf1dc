// The `stratum` bin (src/cli/stratum.cts): it runs the CLI bundle as `node dist/cli/main.js`
// runs the CLI — same output, same exit codes — with a code cache or without, whatever state
// the cache file is in (missing, for another bundle, truncated, damaged, refused by V8, being
// written by another process, impossible to write), and it writes the cache only where it may.
// Each test runs a private copy of the bin and the bundle, so the cache is the test's own.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Script } from 'node:vm';
import { CLI_MAIN, STRATUM_BIN } from '../testing/cli.js';
import { tempDir } from '../testing/tmp.js';

const REPO = join(STRATUM_BIN, '..', '..', '..');

interface Install {
  readonly dir: string;
  readonly bin: string;
  readonly cliDir: string;
  readonly env: NodeJS.ProcessEnv;
}

/** A copy of the package as npm installs it: package.json, the bin, the bundle (and its map). */
async function install(t: { after: (fn: () => Promise<void>) => void }): Promise<Install> {
  const dir = await tempDir(t, 'stratum-bin-');
  const cliDir = join(dir, 'dist', 'cli');
  mkdirSync(cliDir, { recursive: true });
  for (const f of ['stratum.cjs', 'stratum-bundle.cjs', 'stratum-bundle.cjs.map']) {
    copyFileSync(join(REPO, 'dist', 'cli', f), join(cliDir, f));
  }
  copyFileSync(join(REPO, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  mkdirSync(join(dir, 'xdg'));
  mkdirSync(join(dir, 'store'));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: join(dir, 'home'),
    XDG_CACHE_HOME: join(dir, 'xdg'),
    STRATUM_ROOT: join(dir, 'store'),
  };
  return { dir, bin: join(cliDir, 'stratum.cjs'), cliDir, env };
}

interface Result {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv, node: string[] = []): Result {
  const r = spawnSync(process.execPath, [...node, file, ...args], { env, encoding: 'utf8', cwd: '/' });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** The cache files in a directory (and no temp file left behind). */
function caches(dir: string): string[] {
  const names = existsSync(dir) ? readdirSync(dir) : [];
  assert.deepEqual(
    names.filter((n) => n.endsWith('.tmp')),
    [],
  );
  return names.filter((n) => n.endsWith('.codecache')).map((n) => join(dir, n));
}

function onlyCache(dir: string): string {
  const found = caches(dir);
  assert.equal(found.length, 1, `cache files in ${dir}: ${found.join(' ')}`);
  return found[0]!;
}

/** What identifies a file's version: rewritten (a temp file renamed over it) means a new inode. */
function version(file: string): string {
  const st = statSync(file);
  return `${st.ino} ${st.mtimeMs} ${st.size}`;
}

const VERSION = `stratum ${(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version}\n`;

describe('the stratum bin', () => {
  it('gives what dist/cli/main.js gives — output and exit code — without a cache and with one', async (t) => {
    const inst = await install(t);
    const out = join(inst.dir, 'out');
    const cases: string[][] = [
      ['--version'],
      [],
      ['help'],
      ['bogus'],
      ['copy', 'only-one'],
      ['copy', 'oci:/nonexistent/layout:t', `oci:${out}:t`],
      ['copy', '--json', 'oci:/nonexistent/layout:t', `oci:${out}:t`],
      ['images'],
      ['--json', 'images'],
      ['run', '--help'],
      ['inspect', `oci:${out}`],
    ];
    for (const args of cases) {
      const want = run(CLI_MAIN, args, inst.env);
      for (const f of caches(inst.cliDir)) rmSync(f);
      const first = run(inst.bin, args, inst.env);
      assert.deepEqual(first, want, `stratum ${args.join(' ')}, no cache`);
      const cached = run(inst.bin, args, inst.env);
      assert.deepEqual(cached, want, `stratum ${args.join(' ')}, cached`);
    }
    assert.equal(run(CLI_MAIN, ['copy', 'only-one'], inst.env).status, 2);
    assert.equal(run(CLI_MAIN, ['copy', 'oci:/nonexistent/layout:t', `oci:${out}:t`], inst.env).status, 1);
  });

  it('writes its cache beside the bundle on the first run, and uses it from the second', async (t) => {
    const inst = await install(t);
    assert.deepEqual(caches(inst.cliDir), []);
    assert.equal(run(inst.bin, ['--version'], inst.env).stdout, VERSION);
    const file = onlyCache(inst.cliDir);
    assert.match(
      readFileSync(file, 'latin1').slice(0, 200),
      /^stratum-code-cache 1 \d+ [\d.]+ \d+ [0-9a-f]{64}\n/,
    );
    const before = version(file);
    // V8 took it: a refused cache would be written again
    assert.equal(run(inst.bin, ['images'], inst.env).status, 0);
    assert.equal(run(inst.bin, ['--version'], inst.env).stdout, VERSION);
    assert.equal(version(file), before);
    assert.deepEqual(caches(join(inst.dir, 'xdg', 'stratum')), []);
  });

  it('runs with a damaged cache file and replaces it', async (t) => {
    const inst = await install(t);
    run(inst.bin, ['--version'], inst.env);
    const file = onlyCache(inst.cliDir);
    const good = readFileSync(file);
    const header = good.indexOf(10) + 1;
    const flipped = Buffer.from(good);
    for (let i = header + 1000; i < header + 1064; i++) flipped[i] = flipped[i]! ^ 0xff;
    const damaged: Record<string, Buffer> = {
      empty: Buffer.alloc(0),
      'header only': good.subarray(0, header),
      truncated: good.subarray(0, good.length >> 1),
      // V8 checks its data's header, not the body: without our digest this would crash node
      'body bytes changed': flipped,
      garbage: Buffer.from('\x00\x01garbage'.repeat(1000), 'latin1'),
    };
    for (const [what, bytes] of Object.entries(damaged)) {
      writeFileSync(file, bytes);
      const r = run(inst.bin, ['--version'], inst.env);
      assert.deepEqual([r.status, r.stdout, r.stderr], [0, VERSION, ''], what);
      assert.notDeepEqual(readFileSync(file), bytes, `${what}: replaced`);
      const replaced = version(file);
      run(inst.bin, ['--version'], inst.env);
      assert.equal(version(onlyCache(inst.cliDir)), replaced, `${what}: the new one is taken`);
    }
  });

  it('replaces a cache made for another bundle, or that V8 refuses', async (t) => {
    const inst = await install(t);
    run(inst.bin, ['--version'], inst.env);
    const file = onlyCache(inst.cliDir);
    // the bundle rebuilt (another mtime): the old cache is not used
    const bundle = join(inst.cliDir, 'stratum-bundle.cjs');
    const later = new Date(statSync(bundle).mtimeMs + 5000);
    utimesSync(bundle, later, later);
    let before = version(file);
    assert.equal(run(inst.bin, ['--version'], inst.env).stdout, VERSION);
    assert.notEqual(version(file), before);
    // right header and digest, but V8's data for another script: V8 refuses it, we replace it
    const st = statSync(bundle);
    const data = new Script('"another script"').createCachedData();
    const digest = createHash('sha256').update(data).digest('hex');
    writeFileSync(
      file,
      Buffer.concat([
        Buffer.from(`stratum-code-cache 1 ${st.size} ${st.mtimeMs} ${st.ino} ${digest}\n`, 'latin1'),
        data,
      ]),
    );
    before = version(file);
    assert.equal(run(inst.bin, ['--version'], inst.env).stdout, VERSION);
    assert.notEqual(version(file), before);
    assert.ok(statSync(file).size > 10_000);
  });

  it('goes to $XDG_CACHE_HOME/stratum when the bundle directory is not writable, and runs without a cache when nothing is', async (t) => {
    const inst = await install(t);
    let env = inst.env;
    let spawnAs: { uid?: number; gid?: number } = {};
    if (process.getuid?.() === 0) {
      // root writes anywhere: run as nobody, who can read the copy but not write beside the bundle
      spawnAs = { uid: 65534, gid: 65534 };
      for (const d of [inst.dir, join(inst.dir, 'dist'), inst.cliDir]) chmodSync(d, 0o755);
      chmodSync(join(inst.dir, 'xdg'), 0o777);
      chmodSync(join(inst.dir, 'store'), 0o777);
      const probe = spawnSync(process.execPath, ['-e', '0'], { ...spawnAs, cwd: '/' });
      if (probe.error || probe.status !== 0) {
        t.skip(`cannot run as nobody here: ${probe.error?.message ?? probe.status}`);
        return;
      }
    } else {
      chmodSync(inst.cliDir, 0o555);
      t.after(() => chmodSync(inst.cliDir, 0o755));
    }
    const runAs = (args: string[]): Result => {
      const r = spawnSync(process.execPath, [inst.bin, ...args], {
        env,
        encoding: 'utf8',
        cwd: '/',
        ...spawnAs,
      });
      return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
    };
    assert.deepEqual(runAs(['--version']), { status: 0, signal: null, stdout: VERSION, stderr: '' });
    assert.deepEqual(caches(inst.cliDir), []);
    const file = onlyCache(join(inst.dir, 'xdg', 'stratum'));
    const before = version(file);
    assert.equal(runAs(['images']).status, 0);
    assert.equal(version(file), before);
    // nowhere to write (the cache directory cannot be made): same output, no cache
    writeFileSync(join(inst.dir, 'not-a-dir'), '');
    env = { ...inst.env, XDG_CACHE_HOME: join(inst.dir, 'not-a-dir', 'cache') };
    const want = run(CLI_MAIN, ['copy', 'oci:/nonexistent/layout:t', `oci:${inst.dir}/out:t`], inst.env);
    assert.equal(want.status, 1);
    assert.deepEqual(runAs(['copy', 'oci:/nonexistent/layout:t', `oci:${inst.dir}/out:t`]), want);
    assert.deepEqual(caches(inst.cliDir), []);
  });

  it('STRATUM_NO_COMPILE_CACHE=1 neither reads nor writes a cache', async (t) => {
    const inst = await install(t);
    const env = { ...inst.env, STRATUM_NO_COMPILE_CACHE: '1' };
    assert.deepEqual(run(inst.bin, ['--version'], env), {
      status: 0,
      signal: null,
      stdout: VERSION,
      stderr: '',
    });
    assert.deepEqual(caches(inst.cliDir), []);
    assert.deepEqual(caches(join(inst.dir, 'xdg', 'stratum')), []);
    // a cache file it would otherwise replace stays as it is
    run(inst.bin, ['--version'], inst.env);
    const file = onlyCache(inst.cliDir);
    writeFileSync(file, 'stale');
    assert.equal(run(inst.bin, ['images'], env).status, 0);
    assert.equal(readFileSync(file, 'utf8'), 'stale');
  });

  it('first runs at the same time all succeed and leave one whole cache', async (t) => {
    const inst = await install(t);
    const results = await Promise.all(
      Array.from(
        { length: 6 },
        () =>
          new Promise<[number | null, string]>((resolve) => {
            const child = spawn(process.execPath, [inst.bin, '--version'], { env: inst.env, cwd: '/' });
            let out = '';
            child.stdout.on('data', (c: Buffer) => {
              out += c.toString();
            });
            child.on('close', (code) => resolve([code, out]));
          }),
      ),
    );
    for (const r of results) assert.deepEqual(r, [0, VERSION]);
    const file = onlyCache(inst.cliDir);
    const before = version(file);
    assert.equal(run(inst.bin, ['--version'], inst.env).stdout, VERSION);
    assert.equal(version(file), before);
  });

  it('keeps a cache per set of Node flags, so switching does not rewrite them', async (t) => {
    const inst = await install(t);
    run(inst.bin, ['--version'], inst.env);
    run(inst.bin, ['--version'], inst.env, ['--max-old-space-size=300']);
    const files = caches(inst.cliDir);
    assert.equal(files.length, 2);
    const before = files.map(version);
    run(inst.bin, ['--version'], inst.env);
    run(inst.bin, ['--version'], inst.env, ['--max-old-space-size=300']);
    assert.deepEqual(files.map(version), before);
  });

  it('names the bundle in stack traces, and src/ with node --enable-source-maps', async (t) => {
    const inst = await install(t);
    const args = ['copy', '--debug', 'oci:/nonexistent/layout:t', `oci:${inst.dir}/out:t`];
    const plain = run(inst.bin, args, inst.env);
    assert.equal(plain.status, 1);
    assert.match(plain.stderr, /at .*stratum-bundle\.cjs:\d+:\d+/);
    const mapped = run(inst.bin, args, inst.env, ['--enable-source-maps']);
    assert.equal(mapped.status, 1);
    assert.match(mapped.stderr, /at .*src\/ops\/copy-image\.ts:\d+:\d+/);
  });
});
