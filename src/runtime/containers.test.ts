import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, lstat, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { openStore } from '../layout/store.js';
import { push } from '../ops/copy-image.js';
import { importTarball } from '../ops/import.js';
import { commit, type RunImageOptions, runImage, withContainers } from '../ops/run.js';
import { mountsUnder } from '../snapshot/overlay.js';
import { diskUsage } from '../snapshot/snapshots.js';
import { registryAvailable, startRegistry } from '../testing/registry.js';
import { makeTempDir } from '../testing/tmp.js';
import { existingCgroups } from './cgroups.js';
import { type Containers, hasControllingTerminal } from './containers.js';
import { makeBusyboxRootfs, makeBusyboxStore, runtimeSkipReason } from './support.test.js';
import { parseVolumeSpec } from './volumes.js';

const skip = runtimeSkipReason();

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

describe('containers', { skip }, () => {
  let dir: string;
  let root: string;
  let cleanup: () => Promise<void>;
  const IMAGE = 'busybox:test';

  before(async () => {
    const tmp = await makeTempDir('stratum-containers-');
    dir = tmp.path;
    cleanup = tmp.cleanup;
    root = join(dir, 'store');
    await makeBusyboxStore(root, dir, IMAGE, {
      Cmd: ['sh', '-c', 'echo default command'],
      Env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'FROM_IMAGE=yes'],
      WorkingDir: '/home',
    });
  });

  after(async () => {
    // whatever a failed test left: remove every container, then nothing may stay mounted
    await withContainers({ root }, async (c) => {
      for (const x of await c.list({ all: true })) await c.remove(x.id, { force: true }).catch(() => {});
    });
    assert.deepEqual(await mountsUnder(root), []);
    await cleanup();
  });

  const containers = <T>(fn: (c: Containers) => Promise<T>) => withContainers({ root }, fn);

  async function run(command: string[] | undefined, opts: Partial<RunImageOptions> = {}) {
    const out = new Collect();
    const err = new Collect();
    const r = await runImage(IMAGE, {
      root,
      ...(command ? { command } : {}),
      stdout: out,
      stderr: err,
      ...opts,
    });
    return { ...r, out: out.text, err: err.text };
  }

  it("runs the image's command, or the one given: output, exit code, env, workdir, user, hostname", async () => {
    const d = await run(undefined, { autoRemove: true });
    assert.equal(d.exitCode, 0);
    assert.equal(d.out, 'default command\n');
    const r = await run(
      ['sh', '-c', 'echo "$FROM_IMAGE $X $HOSTNAME"; pwd; id; hostname; echo oops >&2; exit 42'],
      {
        env: ['X=1 2'],
        workdir: '/tmp',
        user: 'user',
        hostname: 'web1',
        autoRemove: true,
      },
    );
    assert.equal(r.exitCode, 42);
    assert.equal(r.out, 'yes 1 2 web1\n/tmp\nuid=1000(user) gid=1000(user) groups=2000(extra)\nweb1\n');
    assert.equal(r.err, 'oops\n');
    // autoRemove: gone
    await assert.rejects(
      containers((c) => c.inspect(r.id)),
      { code: 'ERR_NOT_FOUND' },
    );
  });

  it('writes land in the upper directory only; the snapshots stay as they were; commit keeps a deletion as a whiteout', async () => {
    const r = await run(
      ['sh', '-c', 'echo new > /etc/added && rm /bin/wget && echo changed > /etc/hostname.txt'],
      {
        name: 'writer',
      },
    );
    assert.equal(r.exitCode, 0, r.err);
    await containers(async (c) => {
      const info = await c.inspect('writer');
      assert.equal(info.state, 'exited');
      assert.equal(info.exitCode, 0);
      // the overlay is unmounted once the process is gone
      assert.deepEqual(await mountsUnder(c.dirOf(info.id)), []);
      const upper = c.upperOf(info.id);
      assert.equal(await readFile(join(upper, 'etc', 'added'), 'utf8'), 'new\n');
      const wh = await lstat(join(upper, 'bin', 'wget'));
      assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'an overlay whiteout for the deleted file');
      const base = c.snapshots.dirOf(info.chainIds[0] as never);
      assert.equal(existsSync(join(base, 'etc', 'added')), false);
      assert.equal((await lstat(join(base, 'bin', 'wget'))).isSymbolicLink(), true);
    });
    const inUse = await containers((c) => c.manifestsInUse());
    assert.ok(inUse.some((d) => d.digest === (r.container.manifest.digest as string)));
    const cm = await commit('writer', 'committed:1', { root, comment: 'test commit' });
    assert.equal(cm.ref, 'docker.io/library/committed:1');
    const blob = join(root, 'blobs', 'sha256', cm.layer.digest.slice('sha256:'.length));
    const names = execFileSync('tar', ['-tzf', blob], { encoding: 'utf8' }).split('\n').filter(Boolean);
    assert.ok(names.includes('bin/.wh.wget'), names.join(' '));
    assert.ok(names.includes('etc/added'), names.join(' '));
    // etc/ (copied up from the init layer) keeps the image's mode and owner (its mtime is
    // the container's: it wrote into etc/)
    const x = join(dir, 'extracted');
    await mkdir(x);
    execFileSync('tar', ['-xzf', blob, '-C', x]);
    const baseEtc = await containers(async (c) =>
      lstat(join(c.snapshots.dirOf((await c.inspect('writer')).chainIds[0] as never), 'etc')),
    );
    const layerEtc = await lstat(join(x, 'etc'));
    assert.equal(baseEtc.mode & 0o7777, 0o775);
    assert.equal(layerEtc.mode, baseEtc.mode);
    assert.equal(layerEtc.uid, baseEtc.uid);
    const cfg = JSON.parse(
      await readFile(join(root, 'blobs', 'sha256', cm.config.digest.slice('sha256:'.length)), 'utf8'),
    ) as { rootfs: { diff_ids: string[] }; history: { created_by?: string; comment?: string }[] };
    assert.equal(cfg.rootfs.diff_ids.length, 2);
    assert.equal(cfg.rootfs.diff_ids[1], cm.diffId);
    assert.equal(cfg.history.at(-1)?.comment, 'test commit');
    assert.match(cfg.history.at(-1)?.created_by ?? '', /rm \/bin\/wget/);
    // the committed image runs, with the change and the deletion
    const out = new Collect();
    const again = await runImage('committed:1', {
      root,
      command: ['sh', '-c', 'cat /etc/added; test -e /bin/wget && echo wget still here || echo wget gone'],
      stdout: out,
      autoRemove: true,
    });
    assert.equal(again.exitCode, 0);
    assert.equal(out.text, 'new\nwget gone\n');
    await containers((c) => c.remove('writer'));
  });

  it('twenty containers from one image share its snapshots: the disk grows by their upper directories only', async () => {
    const snapshots = join(root, 'snapshots');
    // warm: the image's layers are extracted by the first run
    assert.equal((await run(['true'], { autoRemove: true })).exitCode, 0);
    const extracted = async () => {
      const dirs = (await readdir(snapshots)).filter((n) => /^[0-9a-f]{64}$/.test(n));
      let bytes = 0;
      for (const d of dirs) bytes += await diskUsage(join(snapshots, d));
      return { count: dirs.length, bytes };
    };
    const before = await extracted();
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const r = await run(['sh', '-c', `echo container ${i} > /tmp/mine && cat /tmp/mine`], {
        name: `share-${i}`,
      });
      assert.equal(r.exitCode, 0, r.err);
      assert.equal(r.out, `container ${i}\n`);
      ids.push(r.id);
    }
    await containers(async (c) => {
      let uppers = 0;
      for (const id of ids) uppers += await diskUsage(c.upperOf(id));
      // each upper holds its one small file (and the directory it is in)
      assert.ok(uppers < 20 * 64 * 1024, `the uppers take ${uppers} bytes`);
      for (const id of ids) await c.remove(id);
    });
    // nothing was extracted again, and nothing was written into the snapshots
    assert.deepEqual(await extracted(), before);
  });

  it('binds host directories (read-only when asked) and named volumes, outside the overlay', async () => {
    const host = join(dir, 'host-data');
    await mkdir(host, { recursive: true });
    await writeFile(join(host, 'in.txt'), 'from host\n');
    const r = await run(
      ['sh', '-c', 'cat /ro/in.txt; echo hello > /rw/out.txt; echo vol > /vol/v.txt; echo x > /ro/no.txt'],
      {
        volumes: [
          parseVolumeSpec(`${host}:/ro:ro`),
          parseVolumeSpec(`${host}:/rw`),
          parseVolumeSpec('data1:/vol'),
        ],
        name: 'vols',
      },
    );
    assert.notEqual(r.exitCode, 0);
    assert.match(r.err, /Read-only file system/);
    assert.equal(r.out, 'from host\n');
    assert.equal(await readFile(join(host, 'out.txt'), 'utf8'), 'hello\n');
    assert.equal(existsSync(join(host, 'no.txt')), false);
    assert.equal(await readFile(join(root, 'volumes', 'data1', '_data', 'v.txt'), 'utf8'), 'vol\n');
    await containers(async (c) => {
      const upper = c.upperOf((await c.inspect('vols')).id);
      assert.equal(existsSync(join(upper, 'rw', 'out.txt')), false);
      assert.equal(existsSync(join(upper, 'vol', 'v.txt')), false);
      // a volume in use is not removed
      await assert.rejects(c.removeVolume('data1'), /used by container\(s\) vols/);
      await c.remove('vols');
      await c.removeVolume('data1');
      assert.deepEqual(await c.volumes.list(), []);
    });
    // the next container sees a named volume's data
    await containers((c) => c.volumes.create('data2'));
    await writeFile(join(root, 'volumes', 'data2', '_data', 'f'), 'kept\n');
    const again = await run(['cat', '/v/f'], { volumes: [parseVolumeSpec('data2:/v')], autoRemove: true });
    assert.equal(again.out, 'kept\n');
  });

  it("an image's VOLUME paths get volumes of their own: filled from the image, outside the overlay, removed with the container", async () => {
    // an image with VOLUME /data (holding a file) and VOLUME /escape, a symlink leading out
    const rootfs = await makeBusyboxRootfs(join(dir, 'volume-rootfs'));
    await mkdir(join(rootfs, 'data'), { mode: 0o750 });
    await chmod(join(rootfs, 'data'), 0o750);
    await writeFile(join(rootfs, 'data', 'seed'), 'from the image\n');
    const outside = join(dir, 'outside-marker');
    await mkdir(outside);
    await writeFile(join(outside, 'host-secret'), 'no\n');
    await symlink(outside, join(rootfs, 'escape'));
    const tar = join(dir, 'volume.tar');
    execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', tar, '.']);
    const store = await openStore({ root });
    await importTarball(tar, store, 'docker.io/library/volumes:1', {
      config: { Cmd: ['sh'], Volumes: { '/data': {}, '/escape': {} } },
    });
    await store.close();
    const r = await runImage('volumes:1', {
      root,
      name: 'anon',
      command: ['sh', '-c', 'cat /data/seed; echo written > /data/new; ls -A /escape; stat -c %a /data'],
      stdout: new Collect(),
    });
    assert.equal(r.exitCode, 0);
    await containers(async (c) => {
      const info = await c.inspect('anon');
      assert.equal(info.anonymousVolumes?.length, 2);
      const data = c.volumes.pathOf(info.anonymousVolumes![0]!);
      assert.equal(await readFile(join(data, 'seed'), 'utf8'), 'from the image\n');
      assert.equal(await readFile(join(data, 'new'), 'utf8'), 'written\n');
      assert.equal((await lstat(data)).mode & 0o777, 0o750, "the volume takes the image directory's mode");
      assert.equal(existsSync(join(c.upperOf(info.id), 'data', 'new')), false, 'not in the upper directory');
      // the symlink led out of the image: the volume starts empty, nothing of the host copied
      assert.deepEqual(await readdir(c.volumes.pathOf(info.anonymousVolumes![1]!)), []);
      await c.remove('anon');
      assert.equal(await c.volumes.exists(info.anonymousVolumes![0]!), false);
      assert.equal(await c.volumes.exists(info.anonymousVolumes![1]!), false);
    });
    assert.equal((r.container as { name: string }).name, 'anon');
  });

  it('the default seccomp filter refuses new namespaces; --security-opt seccomp=unconfined lifts it', async () => {
    const script = ['sh', '-c', 'unshare -U true 2>/dev/null; echo "unshare $?"; sh -c "echo child works"'];
    const confined = await run(script, { autoRemove: true });
    assert.equal(confined.exitCode, 0, confined.err);
    assert.equal(confined.out, 'unshare 1\nchild works\n');
    const unconfined = await run(script, { autoRemove: true, seccomp: 'unconfined' });
    // a host may forbid user namespaces to everyone; then only the filter's absence is seen
    const userns = await readFile('/proc/sys/user/max_user_namespaces', 'utf8').catch(() => '1');
    if (Number(userns) > 0) assert.equal(unconfined.out, 'unshare 0\nchild works\n');
    else assert.equal(unconfined.exitCode, 0);
  });

  it('--read-only makes the root file system read-only', async () => {
    const r = await run(['sh', '-c', 'echo x > /x'], { readOnly: true, autoRemove: true });
    assert.notEqual(r.exitCode, 0);
    assert.match(r.err, /Read-only file system/);
  });

  it('host network: the host interfaces, hosts and resolv.conf; none: loopback only', async () => {
    const host = await run(['sh', '-c', 'cat /etc/resolv.conf; ls /sys/class/net | sort'], {
      network: 'host',
      autoRemove: true,
    });
    const hostIfaces = (await readdir('/sys/class/net')).sort();
    assert.equal(host.out, `${await readFile('/etc/resolv.conf', 'utf8')}${hostIfaces.join('\n')}\n`);
    const none = await run(['ls', '/sys/class/net'], { autoRemove: true });
    assert.equal(none.out, 'lo\n');
  });

  it('a memory limit OOM-kills a process that allocates more', async () => {
    const r = await run(
      [
        'sh',
        '-c',
        '(x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo survived); echo "sub $?"; sleep 1000',
      ],
      { resources: { memory: 32 * 1024 * 1024 }, detach: true, name: 'oom' },
    );
    await containers(async (c) => {
      const cg = (r.container.cgroups ?? []).find((d) => d.includes('/memory/')) ?? '';
      assert.ok(existsSync(cg), `memory cgroup ${cg}`);
      assert.equal(
        (await readFile(join(cg, 'memory.limit_in_bytes'), 'utf8')).trim(),
        String(32 * 1024 * 1024),
      );
      const log = new Collect();
      // wait for the subshell's fate (the log says it)
      for (let i = 0; i < 600 && !/sub \d+/.test(log.text); i++) {
        log.text = '';
        await c.logs('oom', log);
        if (!/sub \d+/.test(log.text)) await new Promise((res) => setTimeout(res, 50));
      }
      if (!/^sub 137$/m.test(log.text)) {
        // say what happened, for a failure that could not be reproduced (seen once, under load)
        const info = await c.inspect('oom').catch((e: unknown) => String(e));
        const oom = await readFile(join(cg, 'memory.oom_control'), 'utf8').catch(() => '?');
        assert.fail(`log ${JSON.stringify(log.text)}; container ${JSON.stringify(info)}; oom_control ${oom}`);
      }
      // (memory.failcnt stays 0 on this kernel; the peak and the OOM kill count say it)
      const peak = Number((await readFile(join(cg, 'memory.max_usage_in_bytes'), 'utf8')).trim());
      assert.ok(peak >= 30 * 1024 * 1024 && peak <= 32 * 1024 * 1024, `peak ${peak}`);
      assert.match(await readFile(join(cg, 'memory.oom_control'), 'utf8'), /oom_kill [1-9]/);
      await c.remove('oom', { force: true });
      assert.deepEqual(await existingCgroups(r.id), []);
    });
  });

  it('a pids limit stops a fork bomb', async () => {
    const r = await run(['sh', '-c', 'for i in $(seq 50); do sleep 5 & done; echo all forked'], {
      resources: { pids: 10 },
      autoRemove: true,
    });
    assert.notEqual(r.exitCode, 0);
    assert.match(r.err, /can't fork/);
    assert.doesNotMatch(r.out, /all forked/);
  });

  it('runs two containers at once, each its own; exec, stop (TERM, trapped), kill, logs', async () => {
    const a = await run(
      ['sh', '-c', 'trap "echo got TERM; exit 3" TERM; echo a ready; while true; do sleep 0.05; done'],
      { detach: true, name: 'two-a' },
    );
    const b = await run(['sh', '-c', 'echo b ready; sleep 1000'], { detach: true, name: 'two-b' });
    assert.notEqual(a.id, b.id);
    await containers(async (c) => {
      const running = (await c.list()).map((x) => x.name).filter((n) => n.startsWith('two-'));
      assert.deepEqual(running.sort(), ['two-a', 'two-b']);
      const outA = new Collect();
      const ea = await c.exec('two-a', {
        args: ['sh', '-c', 'hostname; echo $X; echo hi > /tmp/a'],
        env: ['X=y'],
        stdout: outA,
      });
      assert.equal(ea.exitCode, 0);
      assert.equal(outA.text, `${a.id.slice(0, 12)}\ny\n`);
      const outB = new Collect();
      const eb = await c.exec('two-b', {
        args: ['sh', '-c', 'test -e /tmp/a && echo shared || echo separate; exit 9'],
        stdout: outB,
      });
      assert.equal(eb.exitCode, 9);
      assert.equal(outB.text, 'separate\n');
      await assert.rejects(c.exec('two-b', { args: ['/no/such'] }), (e: unknown) => {
        assert.ok(e instanceof StratumError && e.code === 'ERR_RUNTIME');
        assert.match(e.message, /no such file/);
        return true;
      });
      // TERM is trapped: the container's own exit code
      const stopped = await c.stop('two-a', { timeoutSeconds: 30 });
      assert.equal(stopped.state, 'exited');
      assert.equal(stopped.exitCode, 3);
      const log = new Collect();
      await c.logs('two-a', log);
      assert.equal(log.text, 'a ready\ngot TERM\n');
      // sh as pid 1 ignores TERM: stop falls back to KILL
      await c.kill('two-b', 'TERM');
      assert.equal((await c.inspect('two-b')).state, 'running');
      const killed = await c.stop('two-b', { timeoutSeconds: 0 });
      assert.equal(killed.exitCode, 137);
      await assert.rejects(c.kill('two-b', 'KILL'), /not running/);
      await c.remove('two-a');
      await c.remove('two-b');
    });
  });

  it('refuses to remove a running container without force; force cleans mounts and cgroups', async () => {
    const r = await run(['sleep', '1000'], { detach: true, name: 'busy' });
    await containers(async (c) => {
      await assert.rejects(c.remove('busy'), /is running: stop it first/);
      assert.notDeepEqual(await existingCgroups(r.id), []);
      assert.notDeepEqual(await mountsUnder(c.dirOf(r.id)), []);
      await c.remove(r.id.slice(0, 8), { force: true });
      assert.deepEqual(await existingCgroups(r.id), []);
      assert.deepEqual(await mountsUnder(c.dirOf(r.id)), []);
      assert.equal(existsSync(c.dirOf(r.id)), false);
      assert.equal((await c.snapshots.holders()).has(r.id), false);
    });
  });

  it('keeps names unique when two creations race for one', async () => {
    const results = await Promise.allSettled([
      run(['true'], { name: 'same' }),
      run(['true'], { name: 'same' }),
    ]);
    const ok = results.filter((x) => x.status === 'fulfilled');
    const failed = results.filter((x): x is PromiseRejectedResult => x.status === 'rejected');
    assert.equal(ok.length, 1);
    assert.equal(failed.length, 1);
    assert.match(String(failed[0]?.reason), /name "same" is already used/);
    await containers((c) => c.remove('same'));
  });

  it('says what is wrong: unknown container, bad name, bad signal, no command, no runtime, no terminal', async () => {
    const before = await containers(async (c) => (await c.list({ all: true })).map((x) => x.id));
    await containers(async (c) => {
      await assert.rejects(c.inspect('no-such-container'), { code: 'ERR_NOT_FOUND' });
      await assert.rejects(c.kill('no-such-container'), { code: 'ERR_NOT_FOUND' });
    });
    await assert.rejects(run(['true'], { name: '../evil' }), { code: 'ERR_INVALID_ARGUMENT' });
    await assert.rejects(run(['true'], { name: 'x'.repeat(300) }), { code: 'ERR_INVALID_ARGUMENT' });
    await assert.rejects(run(['true'], { hostname: 'bad host' }), { code: 'ERR_INVALID_ARGUMENT' });
    await assert.rejects(run(undefined, { entrypoint: '' }), /no command to run/);
    await assert.rejects(run(['true'], { runtime: '/no/such/runc' }), { code: 'ERR_RUNTIME_MISSING' });
    await assert.rejects(run(['true'], { user: 'nobody-here' }), /no user "nobody-here"/);
    if (!hasControllingTerminal()) {
      await assert.rejects(run(['true'], { tty: true }), /no controlling terminal/);
    }
    const d = await run(['sleep', '1000'], { detach: true, name: 'sig' });
    await containers(async (c) => {
      await assert.rejects(c.kill('sig', 'NOPE'), /unknown signal/);
      await assert.rejects(c.kill('sig', '99'), /unknown signal/);
      await c.remove(d.id, { force: true });
    });
    // nothing was left behind by the refused ones
    await containers(async (c) =>
      assert.deepEqual(
        (await c.list({ all: true })).filter((x) => !before.includes(x.id)).map((x) => x.name),
        [],
      ),
    );
  });

  it('a creation cut short by a dead process shows as dead, and is removed with its mounts and hold', async () => {
    const c0 = await withContainers({ root }, async (c) => {
      const { storeImage } = await import('../ops/run.js');
      const { Session } = await import('../ops/session.js');
      const session = new Session({ root });
      try {
        const { image, name } = await storeImage(session, IMAGE);
        return await c.create({ image, imageName: name, command: ['true'], name: 'half' });
      } finally {
        await session.close();
      }
    });
    const dead = spawnSync('true').pid;
    await containers(async (c) => {
      // while its creator lives, not even --force removes it
      await c.records.update(c0.id, (r) => ({ ...r, status: 'creating', creatorPid: process.pid }));
      assert.equal((await c.inspect('half')).state, 'creating');
      await assert.rejects(c.remove('half', { force: true }), /is being created by process/);
      await c.records.update(c0.id, (r) => ({ ...r, status: 'creating', creatorPid: dead }));
      assert.equal((await c.inspect('half')).state, 'dead');
      assert.notDeepEqual(await mountsUnder(c.dirOf(c0.id)), []);
      assert.equal((await c.snapshots.holders()).has(c0.id), true);
      await c.remove('half');
      assert.deepEqual(await mountsUnder(c.dirOf(c0.id)), []);
      assert.equal((await c.snapshots.holders()).has(c0.id), false);
      assert.equal(existsSync(c.dirOf(c0.id)), false);
    });
  });

  it('pulls a missing image from its registry first (unless told not to)', {
    skip: registryAvailable() ? false : 'no docker-registry',
  }, async (t) => {
    const registry = await startRegistry();
    t.after(() => registry.stop());
    await push(IMAGE, `docker://${registry.host}/test/bb:1`, { root });
    const root2 = join(dir, 'store-pull');
    await assert.rejects(
      runImage(`${registry.host}/test/bb:1`, { root: root2, command: ['true'], pull: 'never' }),
      /not in the local store \(and pulling is off\)/,
    );
    const pulled: string[] = [];
    const out = new Collect();
    const r = await runImage(`${registry.host}/test/bb:1`, {
      root: root2,
      command: ['sh', '-c', 'echo $FROM_IMAGE'],
      stdout: out,
      autoRemove: true,
      onPull: (name) => pulled.push(name),
    });
    assert.equal(r.exitCode, 0);
    assert.equal(out.text, 'yes\n');
    assert.deepEqual(pulled, [`${registry.host}/test/bb:1`]);
    // a committed image (made by an earlier test) goes to the registry and runs from there
    await push('committed:1', `docker://${registry.host}/test/committed:1`, { root });
    const out2 = new Collect();
    const c2 = await runImage(`${registry.host}/test/committed:1`, {
      root: root2,
      command: ['sh', '-c', 'cat /etc/added; test -e /bin/wget || echo no wget'],
      stdout: out2,
      autoRemove: true,
    });
    assert.equal(c2.exitCode, 0);
    assert.equal(out2.text, 'new\nno wget\n');
    // now it is there: no second pull
    await runImage(`${registry.host}/test/bb:1`, {
      root: root2,
      command: ['true'],
      autoRemove: true,
      onPull: (n) => pulled.push(n),
    });
    assert.equal(pulled.length, 1);
  });

  it("--entrypoint replaces the image's, and drops its Cmd unless a command is given; --cpus sets the CFS quota", async () => {
    const a = await run(undefined, { entrypoint: 'echo', autoRemove: true });
    assert.equal(a.out, '\n');
    const b = await run(['from', 'args'], { entrypoint: 'echo', autoRemove: true });
    assert.equal(b.out, 'from args\n');
    const d = await run(['sleep', '1000'], { resources: { cpus: 0.5 }, detach: true, name: 'cpus' });
    await containers(async (c) => {
      const cpu = (d.container.cgroups ?? []).find((x) => /\/cpu\//.test(x)) ?? '';
      assert.equal((await readFile(join(cpu, 'cpu.cfs_quota_us'), 'utf8')).trim(), '50000');
      assert.equal((await readFile(join(cpu, 'cpu.cfs_period_us'), 'utf8')).trim(), '100000');
      await c.remove('cpus', { force: true });
    });
  });

  it('a command that does not exist fails to start with ERR_RUNTIME, and the record says so', async () => {
    await assert.rejects(run(['/no/such/cmd'], { name: 'nocmd' }), (e: unknown) => {
      assert.ok(e instanceof StratumError);
      assert.equal(e.code, 'ERR_RUNTIME');
      assert.match(e.message, /did not start.*no such file or directory/);
      return true;
    });
    await containers(async (c) => {
      const info = await c.inspect('nocmd');
      assert.equal(info.state, 'exited');
      assert.equal(info.exitCode, undefined);
      assert.match(info.error ?? '', /no such file/);
      await c.remove('nocmd');
    });
  });
});
