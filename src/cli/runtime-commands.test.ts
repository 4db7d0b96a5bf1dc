// The container commands, through the real CLI in child processes (as a user runs them, and
// as a second stratum process sees the first one's containers).

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { containerCgroupDirs, existingDirs } from '../runtime/cgroups.js';
import { findRuntime } from '../runtime/runc.js';
import { makeBusyboxStore, runtimeSkipReason } from '../runtime/support.test.js';
import { mountsUnder } from '../snapshot/overlay.js';
import { STRATUM_BIN as CLI } from '../testing/cli.js';
import { makeTempDir } from '../testing/tmp.js';
import { splitAtFirstPositional } from './runtime-commands.js';

const skip = runtimeSkipReason();

it('splits run/exec arguments at the image: what follows is the command, with its own options', () => {
  const spec = {
    env: { type: 'string', short: 'e', multiple: true },
    tty: { type: 'boolean', short: 't' },
    interactive: { type: 'boolean', short: 'i' },
    name: { type: 'string' },
  } as const;
  assert.deepEqual(
    splitAtFirstPositional(['-it', '-e', 'A=1', '--name', 'x', 'img', 'sh', '-c', 'echo -e'], spec),
    {
      options: ['-it', '-e', 'A=1', '--name', 'x'],
      first: 'img',
      rest: ['sh', '-c', 'echo -e'],
    },
  );
  assert.deepEqual(splitAtFirstPositional(['-eA=1', '--name=x', '--root', '/r', 'img'], spec), {
    options: ['-eA=1', '--name=x', '--root', '/r'],
    first: 'img',
    rest: [],
  });
  assert.deepEqual(splitAtFirstPositional(['-te', 'A=1', '--', '-img-', '-x'], spec), {
    options: ['-te', 'A=1'],
    first: '-img-',
    rest: ['-x'],
  });
  assert.deepEqual(splitAtFirstPositional(['--rm'], spec), { options: ['--rm'], first: undefined, rest: [] });
});

it('says to install runc when there is none', async () => {
  await assert.rejects(findRuntime('runc', ['/nonexistent']), (e: unknown) => {
    assert.equal((e as { code?: string }).code, 'ERR_RUNTIME_MISSING');
    assert.match((e as Error).message, /apt-get install runc/);
    return true;
  });
});

describe('container commands', { skip }, () => {
  let dir: string;
  let root: string;
  let cleanup: () => Promise<void>;
  const IMAGE = 'busybox:cli';

  before(async () => {
    const tmp = await makeTempDir('stratum-cli-run-');
    dir = tmp.path;
    cleanup = tmp.cleanup;
    root = join(dir, 'store');
    await makeBusyboxStore(root, dir, IMAGE);
  });

  after(async () => {
    const ids = stratum(['ps', '-aq', '--no-trunc']).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) stratum(['rm', '-f', ...ids]);
    assert.deepEqual(await mountsUnder(root), []);
    await cleanup();
  });

  /** Run the CLI to its end. */
  function stratum(args: string[], opts: { input?: string; detached?: boolean } = {}) {
    const [cmd, ...rest] = args;
    const r = spawnSync(process.execPath, [CLI, cmd as string, '--root', root, ...rest], {
      encoding: 'utf8',
      input: opts.input ?? '',
      env: { ...process.env, STRATUM_ROOT: '' },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** Start the CLI; resolves once its stdout says `ready`. */
  function start(
    args: string[],
  ): Promise<{ child: ChildProcess; out: () => string; exited: Promise<number | null> }> {
    const [cmd, ...rest] = args;
    const child = spawn(process.execPath, [CLI, cmd as string, '--root', root, ...rest], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const exited = new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
    return new Promise((res, rej) => {
      child.stdout?.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('ready')) res({ child, out: () => out, exited });
      });
      child.stderr?.on('data', (c: Buffer) => {
        out += c.toString();
      });
      void exited.then((c) => rej(new Error(`stratum ${cmd} exited with ${c} before it was ready: ${out}`)));
    });
  }

  it('run: output, exit code, env, the command after the image with its own options, stdin with -i', async () => {
    const r = stratum([
      'run',
      '--rm',
      '-e',
      'A=b c',
      IMAGE,
      'sh',
      '-c',
      'echo "$A"; echo -n err >&2; exit 5',
    ]);
    assert.equal(r.code, 5);
    assert.equal(r.stdout, 'b c\n');
    assert.equal(r.stderr, 'err');
    await writeFile(join(dir, 'env.list'), '# a comment\nFROM_FILE=1\n\nA=from file\n');
    const envFile = stratum([
      'run',
      '--rm',
      '--env-file',
      join(dir, 'env.list'),
      '-e',
      'A=from flag',
      IMAGE,
      'sh',
      '-c',
      'echo "$FROM_FILE $A"',
    ]);
    assert.equal(envFile.stdout, '1 from flag\n');
    const i = stratum(['run', '--rm', '-i', IMAGE, 'sh', '-c', 'tr a-z A-Z'], { input: 'piped in\n' });
    assert.equal(i.stdout, 'PIPED IN\n');
    const noI = stratum(['run', '--rm', IMAGE, 'cat'], { input: 'not read\n' });
    assert.equal(noI.code, 0);
    assert.equal(noI.stdout, '');
    const missing = stratum(['run', '--rm', IMAGE, '/no/such/cmd']);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /did not start.*no such file or directory \[ERR_RUNTIME\]/);
    assert.doesNotMatch(missing.stderr.split('\n')[0] ?? '', /^runc/, "runc's own line is not repeated");
    const noRuntime = stratum(['run', '--rm', '--runtime', '/no/such/runc', IMAGE, 'true']);
    assert.equal(noRuntime.code, 125);
    assert.match(noRuntime.stderr, /\/no\/such\/runc does not exist/);
    const usage = stratum(['run', '--network', 'bridge', IMAGE]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--network takes none or host/);
  });

  it('a second process sees, follows, stops, kills and removes the containers of the first', async (t) => {
    t.after(() => {
      stratum(['rm', '-f', 'bg1', 'fg1']);
    });
    const d = stratum(['run', '-d', '--name', 'bg1', IMAGE, 'sh', '-c', 'echo one; sleep 1000']);
    assert.equal(d.code, 0, d.stderr);
    const id = d.stdout.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const fg = await start(['run', '--name', 'fg1', IMAGE, 'sh', '-c', 'echo ready; sleep 1000']);
    const ps = stratum(['ps']);
    assert.match(ps.stdout, /^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+NAMES$/m);
    assert.match(
      ps.stdout,
      new RegExp(
        `^${id.slice(0, 12)}\\s+${IMAGE}\\s+"sh -c 'echo one; sl[^"]*…"\\s+.*\\s+Up .*\\s+bg1$`,
        'm',
      ),
    );
    assert.match(ps.stdout, /\sfg1$/m);
    const json = JSON.parse(stratum(['ps', '--json']).stdout) as { name: string; state: string }[];
    assert.deepEqual(json.map((c) => [c.name, c.state]).sort(), [
      ['bg1', 'running'],
      ['fg1', 'running'],
    ]);
    // a detached container's output reaches its log as it writes it: wait for it a little
    let bgLog = stratum(['logs', 'bg1']);
    for (let i = 0; i < 100 && bgLog.stdout === ''; i++) {
      await new Promise((res) => setTimeout(res, 50));
      bgLog = stratum(['logs', 'bg1']);
    }
    assert.equal(
      bgLog.stdout,
      'one\n',
      `logs said ${JSON.stringify(bgLog)}; ps -a: ${stratum(['ps', '-a']).stdout}`,
    );
    assert.equal(stratum(['logs', 'fg1']).stdout, 'ready\n');
    const ex = stratum(['exec', 'bg1', 'sh', '-c', 'echo from exec; exit 3']);
    assert.equal(ex.code, 3);
    assert.equal(ex.stdout, 'from exec\n');
    // kill the foreground one from here: the first process reports the signal's exit code
    assert.equal(stratum(['kill', 'fg1']).code, 0);
    assert.equal(await fg.exited, 137);
    // stop with logs -f following: it ends when the container does
    const follow = spawn(process.execPath, [CLI, 'logs', '--root', root, '-f', 'bg1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let followed = '';
    follow.stdout.on('data', (c: Buffer) => {
      followed += c.toString();
    });
    const followExit = new Promise((res) => follow.once('exit', res));
    const stop = stratum(['stop', '-t', '0', 'bg1']);
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(await followExit, 0);
    assert.equal(followed, 'one\n');
    const all = stratum(['ps', '-a']).stdout;
    assert.match(all, /Exited \(137\).*bg1$/m);
    assert.match(all, /Exited \(137\).*fg1$/m);
    assert.equal(stratum(['ps', '-q']).stdout, '');
    const rm = stratum(['rm', 'bg1', 'fg1']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(stratum(['ps', '-aq']).stdout, '');
    const gone = stratum(['logs', 'bg1']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /no container "bg1" \(by name or id\) \[ERR_NOT_FOUND\]/);
  });

  it('create, then start attached (-a: its output and exit code) or in the background; start again once exited', async () => {
    const c = stratum([
      'create',
      '--name',
      'made',
      IMAGE,
      'sh',
      '-c',
      'echo run $(cat /n 2>/dev/null || echo 0); echo 1 > /n; exit 4',
    ]);
    assert.equal(c.code, 0, c.stderr);
    const id = c.stdout.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.match(stratum(['ps', '-a']).stdout, /Created\s+made/);
    const a = stratum(['start', '-a', 'made']);
    assert.equal(a.stdout, 'run 0\n');
    assert.equal(a.code, 4);
    // an exited container starts again, with the changes it made
    const again = stratum(['start', '-a', 'made']);
    assert.equal(again.stdout, 'run 1\n');
    assert.equal(again.code, 4);
    assert.equal(stratum(['logs', 'made']).stdout, 'run 0\nrun 1\n');
    assert.equal(stratum(['rm', 'made']).code, 0);
    assert.deepEqual(await mountsUnder(join(root, 'containers', id)), []);

    const bg = stratum(['create', '--name', 'bg', IMAGE, 'sh', '-c', 'echo in the background']);
    assert.equal(bg.code, 0, bg.stderr);
    const s = stratum(['start', 'bg']);
    assert.equal(s.code, 0, s.stderr);
    assert.equal(s.stdout, 'bg\n');
    let ps = stratum(['ps', '-a']).stdout;
    for (let i = 0; i < 200 && !/Exited \(0\)[^\n]*bg/.test(ps); i++) {
      await new Promise((res) => setTimeout(res, 50));
      ps = stratum(['ps', '-a']).stdout;
    }
    assert.match(ps, /Exited \(0\)[^\n]*bg/);
    assert.equal(stratum(['logs', 'bg']).stdout, 'in the background\n');
    assert.equal(stratum(['rm', 'bg']).code, 0);
    assert.equal(stratum(['create', '-d', IMAGE]).code, 2, 'create -d is a usage error');
  });

  it('run -d --rm: the monitor removes the container when it exits', async () => {
    const d = stratum(['run', '-d', '--rm', IMAGE, 'sh', '-c', 'echo bye']);
    assert.equal(d.code, 0, d.stderr);
    const id = d.stdout.trim();
    let left = stratum(['ps', '-aq', '--no-trunc']).stdout;
    for (let i = 0; i < 200 && left.includes(id); i++) {
      await new Promise((res) => setTimeout(res, 50));
      left = stratum(['ps', '-aq', '--no-trunc']).stdout;
    }
    assert.equal(left.includes(id), false);
    assert.equal(existsSync(join(root, 'containers', id)), false);
  });

  it('kill -9 of a running `stratum run` leaves nothing that `rm -f` cannot clean', async (t) => {
    t.after(() => {
      stratum(['rm', '-f', 'k9']);
    });
    const fg = await start([
      'run',
      '--name',
      'k9',
      '-m',
      '64m',
      '--pids-limit',
      '20',
      IMAGE,
      'sh',
      '-c',
      'echo ready; sleep 1000',
    ]);
    fg.child.kill('SIGKILL');
    await fg.exited;
    const info = (
      JSON.parse(stratum(['ps', '-a', '--json']).stdout) as { id: string; name: string; state: string }[]
    ).find((c) => c.name === 'k9');
    assert.ok(info);
    assert.equal(info.state, 'running', 'the container outlives the killed stratum');
    const cgroups = await containerCgroupDirs(info.id);
    assert.notDeepEqual(await existingDirs(cgroups), []);
    const rm = stratum(['rm', 'k9']);
    assert.equal(rm.code, 1);
    assert.match(rm.stderr, /is running: stop it first, or remove it with --force/);
    const rmf = stratum(['rm', '-f', 'k9']);
    assert.equal(rmf.code, 0, rmf.stderr);
    assert.deepEqual(await mountsUnder(root), []);
    assert.deepEqual(await existingDirs(cgroups), []);
    assert.deepEqual(
      (await readdir(join(root, 'runc'))).filter((n) => n === info.id),
      [],
      "runc's state is gone",
    );
    assert.equal(existsSync(join(root, 'snapshots', 'holders', info.id)), false);
    assert.equal(existsSync(join(root, 'containers', info.id)), false);
  });

  it('forwards SIGTERM to the container of a foreground run', async () => {
    const fg = await start([
      'run',
      '--rm',
      IMAGE,
      'sh',
      '-c',
      'trap "echo got term; exit 4" TERM; echo ready; while true; do sleep 0.05; done',
    ]);
    fg.child.kill('SIGTERM');
    assert.equal(await fg.exited, 4);
    assert.match(fg.out(), /got term/);
  });

  it('commit makes an image that runs', (t) => {
    t.after(() => {
      stratum(['rm', '-f', 'tocommit']);
    });
    assert.equal(
      stratum(['run', '--name', 'tocommit', IMAGE, 'sh', '-c', 'echo made > /made; rm /bin/wget']).code,
      0,
    );
    const c = stratum(['commit', '-m', 'by test', 'tocommit', 'cli-committed:1']);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /^sha256:[0-9a-f]{12} docker\.io\/library\/cli-committed:1\n$/);
    const r = stratum(['run', '--rm', 'cli-committed:1', 'sh', '-c', 'cat /made; ls /bin/wget 2>&1']);
    assert.equal(r.stdout, 'made\nls: /bin/wget: No such file or directory\n', r.stderr);
    assert.match(stratum(['images']).stdout, /cli-committed\s+1/);
    assert.equal(stratum(['rm', 'tocommit']).code, 0);
  });

  it('volumes: create, use, list, refuse to remove while used', async (t) => {
    t.after(() => {
      stratum(['rm', '-f', 'uses-v1']);
    });
    assert.equal(stratum(['volume', 'create', 'v1']).stdout, 'v1\n');
    const w = stratum([
      'run',
      '--name',
      'uses-v1',
      '-v',
      'v1:/data',
      IMAGE,
      'sh',
      '-c',
      'echo kept > /data/f',
    ]);
    assert.equal(w.code, 0, w.stderr);
    assert.equal(await readFile(join(root, 'volumes', 'v1', '_data', 'f'), 'utf8'), 'kept\n');
    assert.match(stratum(['volume', 'ls']).stdout, /^v1\s/m);
    const busy = stratum(['volume', 'rm', 'v1']);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /used by container\(s\) uses-v1/);
    assert.equal(stratum(['rm', 'uses-v1']).code, 0);
    assert.equal(stratum(['volume', 'rm', 'v1']).code, 0);
    assert.equal(stratum(['volume', 'ls', '--json']).stdout.trim(), '[]');
    assert.equal(stratum(['run', '--rm', '-v', 'relative/path:/x', IMAGE, 'true']).code, 2);
  });

  it('-t: a terminal when there is one (script(1) makes one); a clear error when there is none', () => {
    // setsid: a new session, without a controlling terminal
    const none = spawnSync(
      'setsid',
      ['-w', process.execPath, CLI, 'run', '--root', root, '--rm', '-t', IMAGE, 'tty'],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(none.status, 1);
    assert.match(none.stderr, /no controlling terminal/);
    if (!existsSync('/usr/bin/script')) return;
    const cmd = `${process.execPath} ${CLI} run --root ${root} --rm -t ${IMAGE} sh -c 'tty; echo in-tty'`;
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { encoding: 'utf8', input: '' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /\/dev\/pts\/\d+\r?\nin-tty/);
    // exec -t too
    const d = stratum(['run', '-d', '--name', 'for-exec-t', IMAGE, 'sleep', '1000']);
    assert.equal(d.code, 0, d.stderr);
    try {
      const e = spawnSync(
        'script',
        [
          '-qec',
          `${process.execPath} ${CLI} exec --root ${root} -t for-exec-t sh -c 'tty; exit 6'`,
          '/dev/null',
        ],
        { encoding: 'utf8', input: '' },
      );
      assert.match(e.stdout, /\/dev\/pts\/\d+/);
      assert.equal(e.status, 6);
    } finally {
      stratum(['rm', '-f', 'for-exec-t']);
    }
  });
});
