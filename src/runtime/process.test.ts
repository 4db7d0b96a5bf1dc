import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { tempDir } from '../testing/tmp.js';
import { containerCgroupDirs, existingDirs } from './cgroups.js';
import { type ProcessRunOptions, reapProcesses, runProcess, signalOfExitCode } from './process.js';
import { Runtime } from './runc.js';
import { makeBusyboxRootfs, runtimeSkipReason } from './support.test.js';

const skip = runtimeSkipReason();

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await tempDir(t, 'stratum-process-');
  const rootfs = await makeBusyboxRootfs(join(dir, 'rootfs'));
  const runtimeRoot = join(dir, 'state', 'runc');
  const run = async (args: string[], opts: Partial<ProcessRunOptions> = {}) => {
    const out = new Collect();
    const err = new Collect();
    const r = await runProcess({ rootfs, args, stdout: out, stderr: err, runtimeRoot, ...opts });
    return { ...r, out: out.text, err: err.text };
  };
  return { dir, rootfs, runtimeRoot, run };
}

describe('runProcess', { skip }, () => {
  it('runs a command: output, exit code, env, working directory, hostname', async (t) => {
    const { run } = await setup(t);
    const r = await run(['sh', '-c', 'echo "out $FOO $PATH"; echo err >&2; pwd; hostname; exit 7'], {
      env: ['FOO=bar baz'],
      cwd: '/tmp',
      hostname: 'box1',
    });
    assert.equal(r.exitCode, 7);
    assert.equal(r.signal, undefined);
    assert.equal(
      r.out,
      'out bar baz /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/tmp\nbox1\n',
    );
    assert.equal(r.err, 'err\n');
  });

  it('runs as a user by name (with its groups and HOME), by uid:gid, and as root with the default capabilities', async (t) => {
    const { run } = await setup(t);
    const byName = await run(['sh', '-c', 'id; echo $HOME; grep CapEff /proc/self/status'], { user: 'user' });
    assert.equal(byName.exitCode, 0);
    assert.equal(
      byName.out,
      'uid=1000(user) gid=1000(user) groups=2000(extra)\n/home/user\nCapEff:\t0000000000000000\n',
    );
    const numeric = await run(['id'], { user: '1234:2000' });
    assert.equal(numeric.out, 'uid=1234 gid=2000(extra)\n');
    const root = await run(['sh', '-c', 'id -u; grep CapEff /proc/self/status']);
    // docker's 14 default capabilities
    assert.equal(root.out, '0\nCapEff:\t00000000a80425fb\n');
  });

  it('has only loopback with network none, the host interfaces with network host', async (t) => {
    const { run } = await setup(t);
    const ifaces = (out: string) =>
      out
        .split('\n')
        .slice(2)
        .map((l) => l.split(':')[0]?.trim())
        .filter(Boolean)
        .sort();
    const none = await run(['cat', '/proc/net/dev']);
    assert.deepEqual(ifaces(none.out), ['lo']);
    const host = await run(['cat', '/proc/net/dev'], { network: 'host' });
    const hostIfaces = ifaces(await readFile('/proc/net/dev', 'utf8'));
    assert.deepEqual(ifaces(host.out), hostIfaces);
  });

  it('pipes stdin when given one', async (t) => {
    const { run } = await setup(t);
    const input = new PassThrough();
    input.end('line one\nline two\n');
    const r = await run(['sh', '-c', 'wc -l; echo done'], { stdin: input });
    assert.equal(r.out.replace(/ +/g, ''), '2\ndone\n');
  });

  it('binds host directories, read-only when asked', async (t) => {
    const { dir, run } = await setup(t);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'rw'));
    await mkdir(join(dir, 'ro'));
    await writeFile(join(dir, 'ro', 'f'), 'host file\n');
    const r = await run(
      ['sh', '-c', 'echo written > /data/rw/new && cat /data/ro/f && echo x > /data/ro/g'],
      {
        mounts: [
          { source: join(dir, 'ro'), destination: '/data/ro', readOnly: true },
          { source: join(dir, 'rw'), destination: '/data/rw' },
        ],
      },
    );
    assert.notEqual(r.exitCode, 0);
    assert.match(r.err, /Read-only file system/);
    assert.equal(r.out, 'host file\n');
    assert.equal(await readFile(join(dir, 'rw', 'new'), 'utf8'), 'written\n');
    assert.deepEqual(await readdir(join(dir, 'ro')), ['f']);
  });

  it('kills and removes the container when aborted, and leaves no state behind', async (t) => {
    const { dir, run, runtimeRoot } = await setup(t);
    const ac = new AbortController();
    const out = new PassThrough();
    out.on('data', (c: Buffer) => {
      if (c.toString().includes('ready')) ac.abort();
    });
    await assert.rejects(
      runProcess({
        rootfs: join(dir, 'rootfs'),
        args: ['sh', '-c', 'echo ready; sleep 1000'],
        stdout: out,
        runtimeRoot,
        signal: ac.signal,
      }),
      (e: unknown) => e instanceof StratumError && e.code === 'ERR_ABORTED',
    );
    const runtime = await Runtime.open(runtimeRoot);
    assert.deepEqual(await runtime.list(), []);
    assert.deepEqual(await readdir(join(dir, 'state', 'bundles')), []);
    // cgroups of this process's containers are gone
    const mine: string[] = [];
    for (const d of await containerCgroupDirs('x')) {
      const names = await readdir(dirname(d)).catch(() => [] as string[]);
      mine.push(...names.filter((n) => n.startsWith(`proc-${process.pid}-`)));
    }
    assert.deepEqual(mine, []);
    // and a run after it still works
    assert.equal((await run(['true'])).exitCode, 0);
  });

  it('reapProcesses cleans up after a process killed (-9) while its container ran', async (t) => {
    const { rootfs, runtimeRoot, dir } = await setup(t);
    const url = new URL('./process.js', import.meta.url).href;
    const script = `import { runProcess } from ${JSON.stringify(url)};
await runProcess({ rootfs: ${JSON.stringify(rootfs)}, args: ['sh', '-c', 'echo ready; sleep 1000'], stdout: process.stdout, runtimeRoot: ${JSON.stringify(runtimeRoot)} });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise((res) => child.once('exit', res));
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (c: Buffer) => {
        if (c.toString().includes('ready')) res();
      });
      void exited.then(() => rej(new Error('the child exited before its container was ready')));
    });
    child.kill('SIGKILL');
    await exited;
    const runtime = await Runtime.open(runtimeRoot);
    const left = await runtime.list();
    assert.equal(left.length, 1);
    const id = left[0]?.id ?? '';
    assert.ok(id.startsWith(`proc-${child.pid}-`));
    const cgroups = await containerCgroupDirs(id);
    assert.notDeepEqual(await existingDirs(cgroups), []);
    // a live process's container (this one's) is not touched
    const ac = new AbortController();
    const mineReady = new PassThrough();
    const mine = runProcess({
      rootfs,
      args: ['sh', '-c', 'echo ready; sleep 1000'],
      stdout: mineReady,
      runtimeRoot,
      signal: ac.signal,
    }).catch((e: unknown) => e);
    await new Promise<void>((res) => mineReady.once('data', () => res()));
    assert.deepEqual(await reapProcesses({ runtimeRoot }), [id]);
    const live = await runtime.list();
    assert.deepEqual(
      live.map((c) => c.id.startsWith(`proc-${process.pid}-`)),
      [true],
    );
    ac.abort();
    assert.equal(((await mine) as StratumError).code, 'ERR_ABORTED');
    assert.deepEqual(await runtime.list(), []);
    assert.deepEqual(await readdir(join(dir, 'state', 'bundles')), []);
    assert.deepEqual(await existingDirs(cgroups), []);
  });

  it('says when the command does not exist, or the runtime is missing', async (t) => {
    const { run } = await setup(t);
    await assert.rejects(run(['/no/such/program']), (e: unknown) => {
      assert.ok(e instanceof StratumError);
      assert.equal(e.code, 'ERR_RUNTIME');
      assert.match(e.message, /did not start.*no such file or directory/i);
      return true;
    });
    await assert.rejects(run(['true'], { runtime: '/no/such/runc' }), { code: 'ERR_RUNTIME_MISSING' });
    await assert.rejects(run(['true'], { runtime: 'no-such-runtime-xyz' }), { code: 'ERR_RUNTIME_MISSING' });
  });

  it('refuses bad arguments before starting anything', async (t) => {
    const { run } = await setup(t);
    await assert.rejects(run([]), { code: 'ERR_INVALID_ARGUMENT' });
    await assert.rejects(run(['true'], { cwd: 'relative' }), { code: 'ERR_INVALID_ARGUMENT' });
    await assert.rejects(run(['true'], { user: 'nobody-here' }), /no user "nobody-here"/);
    await assert.rejects(run(['true'], { mounts: [{ source: '/tmp', destination: '/' }] }), {
      code: 'ERR_INVALID_ARGUMENT',
    });
    await assert.rejects(run(['true'], { mounts: [{ source: 'rel', destination: '/x' }] }), {
      code: 'ERR_INVALID_ARGUMENT',
    });
  });
});

it('names the signal of an exit status 128+n', () => {
  assert.equal(signalOfExitCode(137), 'SIGKILL');
  assert.equal(signalOfExitCode(143), 'SIGTERM');
  assert.equal(signalOfExitCode(1), undefined);
  assert.equal(signalOfExitCode(128), undefined);
  assert.equal(signalOfExitCode(255), undefined);
});
