// The demo: the main job of stratum — build, ship, run — offline, on loopback, printing each
// step and the command it runs: make a busybox base image from this machine's busybox-static,
// build an app image on it from a Dockerfile (RUN, COPY, ENV, WORKDIR, CMD), push it to
// `stratum serve` started on 127.0.0.1, pull it into an empty store, run it (overlay
// snapshots + runc), change a container and commit it, rebuild from the cache, look at the
// layers, copy to a docker archive and back, unpack a bundle, verify and gc. It needs Node,
// busybox-static, GNU tar and (for run and build, as root) runc.

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// the `stratum` command as users run it (package.json's bin: the bundled CLI)
const CLI = fileURLToPath(new URL('./stratum.cjs', import.meta.url));

const DOCKERFILE = `FROM demo/busybox:1
RUN mkdir -p /app && echo "this line was written by a RUN step" > /app/built.txt
COPY hello.sh /app/hello.sh
ENV GREETING="hello from stratum"
WORKDIR /app
CMD ["/bin/sh", "/app/hello.sh"]
`;

const HELLO_SH = `echo "$GREETING (in $(pwd), on host $(hostname))"
cat /app/built.txt
`;
const BUSYBOX = '/bin/busybox';

let stepNo = 0;
function step(title: string): void {
  stepNo++;
  process.stdout.write(`\n\x1b[1m== ${stepNo}. ${title}\x1b[0m\n`);
}

function shellQuote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`;
}

function stratum(root: string, args: readonly string[], opts: { echo?: boolean } = {}): string {
  process.stdout.write(`$ STRATUM_ROOT=${root} stratum ${args.map(shellQuote).join(' ')}\n`);
  const r = spawnSync(process.execPath, [CLI, ...args], {
    env: { ...process.env, STRATUM_ROOT: root },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (opts.echo !== false) process.stdout.write(r.stdout);
  if (r.status !== 0) throw new Error(`stratum ${args[0]} failed with exit code ${r.status}`);
  return r.stdout;
}

async function makeRootfsTar(dir: string): Promise<string> {
  if (!existsSync(BUSYBOX)) {
    throw new Error(
      `${BUSYBOX} is missing: install the busybox-static package (apt-get install busybox-static)`,
    );
  }
  const rootfs = join(dir, 'rootfs');
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'sys', 'dev'])
    await mkdir(join(rootfs, d), { recursive: true });
  await chmod(join(rootfs, 'tmp'), 0o1777);
  await copyFile(BUSYBOX, join(rootfs, 'bin', 'busybox'));
  const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const a of applets)
    if (a !== 'busybox') await symlink('busybox', join(rootfs, 'bin', a)).catch(() => {});
  const tar = join(dir, 'busybox-rootfs.tar');
  execFileSync('tar', [
    '--numeric-owner',
    '--owner=0',
    '--group=0',
    '--sort=name',
    '--mtime=@0',
    '-C',
    rootfs,
    '-cf',
    tar,
    '.',
  ]);
  return tar;
}

/** Start `stratum serve` on a free loopback port; resolves with its address once it listens. */
function startServe(root: string): Promise<{ child: ChildProcess; host: string }> {
  const args = ['serve', '--addr', '127.0.0.1:0', '--json', '-q'];
  process.stdout.write(`$ STRATUM_ROOT=${root} stratum ${args.join(' ')} &\n`);
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, STRATUM_ROOT: root },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl !== -1) resolve({ child, host: (JSON.parse(out.slice(0, nl)) as { address: string }).address });
    });
    child.once('exit', (code) => reject(new Error(`stratum serve exited with code ${code}`)));
  });
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'stratum-demo-'));
  const storeA = join(work, 'store-a');
  const storeB = join(work, 'store-b');
  let registry: { child: ChildProcess; host: string } | undefined;
  try {
    step('Serve a registry on loopback: stratum serve, over a store of its own');
    registry = await startServe(join(work, 'registry-store'));
    process.stdout.write(`registry at http://${registry.host}\n`);

    step("Make a base image from this machine's busybox-static");
    const tar = await makeRootfsTar(work);
    stratum(storeA, ['import', '-c', 'CMD ["/bin/sh"]', tar, 'demo/busybox:1']);
    const canRun = process.getuid?.() === 0 && existsSync('/usr/sbin/runc');
    let app = 'demo/busybox:1';
    if (canRun) {
      step('Build an app image on it from a Dockerfile: each RUN and COPY is a layer');
      const context = join(work, 'context');
      await mkdir(context);
      await writeFile(join(context, 'Dockerfile'), DOCKERFILE);
      await writeFile(join(context, 'hello.sh'), HELLO_SH);
      process.stdout.write(`${DOCKERFILE.replace(/^/gm, '  | ')}\n`);
      stratum(storeA, ['build', '-t', 'demo/app:1', context]);
      step('Build it again: every step comes from the cache');
      stratum(storeA, ['build', '-t', 'demo/app:1', context]);
      app = 'demo/app:1';
    } else {
      process.stdout.write('(not root or no runc: skipping build; shipping the base image)\n');
    }
    stratum(storeA, ['images']);

    const remote = `docker://${registry.host}/${app}`;
    step('Push it to the registry');
    stratum(storeA, ['push', app, remote]);

    step('Pull it back into an empty store');
    stratum(storeB, ['pull', remote]);
    stratum(storeB, ['images']);

    step('Push again: every blob already exists');
    stratum(storeB, ['push', `${registry.host}/${app}`]);

    if (canRun) {
      step('Run it: its layers as shared overlay snapshots, a writable layer, runc');
      stratum(storeB, ['run', '--rm', `${registry.host}/${app}`]);
      step('Change a container and commit it as a new image');
      stratum(storeB, [
        'run',
        '--name',
        'demo-change',
        `${registry.host}/${app}`,
        'sh',
        '-c',
        'rm /app/built.txt && echo committed > /app/new.txt',
      ]);
      stratum(storeB, ['commit', 'demo-change', 'demo/app:2']);
      stratum(storeB, ['rm', 'demo-change']);
      stratum(storeB, ['run', '--rm', 'demo/app:2', 'ls', '/app']);
    }

    const archive = join(work, 'app.tar');
    step('Copy it to a docker save archive, and back');
    stratum(storeB, ['copy', `${registry.host}/${app}`, `docker-archive:${archive}:${app}`]);
    stratum(storeB, ['copy', `docker-archive:${archive}`, 'demo/app:from-archive']);
    const a = JSON.parse(
      stratum(storeB, ['inspect', '--json', `${registry.host}/${app}`], { echo: false }),
    ) as {
      Layers: string[];
    };
    const b = JSON.parse(
      stratum(storeB, ['inspect', '--json', 'demo/app:from-archive'], { echo: false }),
    ) as {
      Layers: string[];
    };
    process.stdout.write(
      `registry layers: ${a.Layers.join(', ')}\narchive layers:  ${b.Layers.join(', ')} (docker archives hold uncompressed layers)\n`,
    );

    step('Look at its layers, and unpack it into an OCI runtime bundle');
    stratum(storeB, ['layers', `${registry.host}/${app}`]);
    stratum(storeB, ['unpack', `${registry.host}/${app}`, join(work, 'bundle')]);
    if (canRun) {
      step(
        'Run the bundle with runc (the config asks for a terminal; the demo has none, so it turns that off)',
      );
      const configPath = join(work, 'bundle', 'config.json');
      const spec = JSON.parse(await readFile(configPath, 'utf8')) as { process: { terminal: boolean } };
      spec.process.terminal = false;
      await writeFile(configPath, JSON.stringify(spec));
      const id = `stratum-demo-${process.pid}`;
      process.stdout.write(`$ runc run --bundle ${join(work, 'bundle')} ${id}\n`);
      const r = spawnSync('runc', ['run', '--bundle', join(work, 'bundle'), id], {
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      spawnSync('runc', ['delete', '-f', id], { stdio: 'ignore' });
      if (r.status !== 0) throw new Error(`runc run exited with ${r.status}`);
    }

    step('Check the store, and collect what nothing uses');
    stratum(storeB, ['verify']);
    stratum(storeB, ['rmi', 'demo/app:from-archive']);
    stratum(storeB, ['gc']);
    process.stdout.write(
      `\nDemo finished: ${canRun ? 'build -> ' : ''}push (stratum serve) -> pull -> ${canRun ? 'run -> commit -> ' : ''}archive round trip -> layers -> unpack -> verify -> gc, all offline.\n`,
    );
  } finally {
    if (registry) {
      const exited = new Promise((resolve) => registry?.child.once('exit', resolve));
      registry.child.kill('SIGTERM');
      await exited;
    }
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
