// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text uses ${VAR} literally
// End-to-end builds on a busybox-static base image in a store under a tmpfs temp dir: RUN in
// runc over overlay snapshots, COPY (context, --from, .dockerignore, hostile paths), the
// cache, reproducible digests, failures that leave nothing behind, and the result checked by
// the real tools (umoci unpack, runc run).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { COMMANDS } from '../cli/commands.js';
import { isStratumError } from '../errors/errors.js';
import { Image } from '../image/image.js';
import { makeTarball, file as tarFile, symlink as tarSymlink } from '../layer/apply-fixtures.js';
import { openStore, type Store } from '../layout/store.js';
import { runImage } from '../ops/run.js';
import { mountsUnder } from '../snapshot/overlay.js';
import { captureContext } from '../testing/cli.js';
import { makeImage, makeIndex, makeTar, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { type BuildEvent, type BuildOptions, type BuildResult, build } from './build.js';
import { buildCacheRoots, pruneBuildCache } from './cache.js';

const exec = promisify(execFile);

function which(p: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => existsSync(join(d, p)));
}

const skip =
  process.geteuid?.() !== 0
    ? 'builds mount overlays and run runc: they need root'
    : !existsSync('/bin/busybox')
      ? '/bin/busybox is missing (apt-get install busybox-static)'
      : !which('runc')
        ? 'runc is missing (apt-get install runc)'
        : undefined;

const BASE = 'docker.io/library/busybox:latest';
const APPLETS = [
  'sh',
  'echo',
  'cat',
  'mkdir',
  'ls',
  'touch',
  'true',
  'false',
  'id',
  'test',
  'rm',
  'env',
  'stat',
  'pwd',
];

/** A store with a small busybox image tagged busybox:latest; the base has an `escape` symlink to `/`. */
async function setup(
  t: { after: (fn: () => Promise<void>) => void },
  format: 'oci' | 'docker' = 'oci',
): Promise<{
  store: Store;
  root: string;
  ctx: string;
}> {
  const dir = await tempDir(t, 'stratum-build-');
  const root = join(dir, 'store');
  const ctx = join(dir, 'ctx');
  await mkdir(ctx);
  const store = await openStore({ root });
  t.after(() => store.close());
  const image = await makeImage({
    format,
    layers: [
      [
        { path: 'bin/', type: 'directory' },
        { path: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
        ...APPLETS.map((a) => ({ path: `bin/${a}`, type: 'symlink' as const, linkname: 'busybox' })),
        { path: 'etc/', type: 'directory' },
        {
          path: 'etc/passwd',
          content: 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1001::/home/user:/bin/sh\n',
        },
        { path: 'etc/group', content: 'root:x:0:\nusers:x:1001:\n' },
        { path: 'etc/hosts', content: '127.0.0.1 localhost image-hosts\n' },
        { path: 'proc/', type: 'directory' },
        { path: 'sys/', type: 'directory' },
        { path: 'dev/', type: 'directory' },
        { path: 'tmp/', type: 'directory', mode: 0o1777 },
        { path: 'real/', type: 'directory' },
        { path: 'link', type: 'symlink', linkname: '/real' },
        { path: 'flink', type: 'symlink', linkname: '/real/ftarget.txt' },
        { path: 'escape', type: 'symlink', linkname: '../../../../../../' },
      ],
    ],
  });
  await pushImage(store, image, BASE);
  return { store, root, ctx };
}

async function files(dir: string, entries: Record<string, string>): Promise<void> {
  for (const [name, content] of Object.entries(entries)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
}

async function run(
  store: Store,
  ctx: string,
  opts: Partial<BuildOptions> = {},
): Promise<BuildResult & { events: BuildEvent[]; output: string }> {
  const events: BuildEvent[] = [];
  let output = '';
  const { Writable } = await import('node:stream');
  const r = await build({
    store,
    context: ctx,
    onEvent: (e) => events.push(e),
    output: new Writable({
      write(c: Buffer, _e, cb) {
        output += c.toString();
        cb();
      },
    }),
    pull: async (ref) => {
      throw new Error(`no pulling in tests (${ref})`);
    },
    ...opts,
  });
  return { ...r, events, output };
}

async function configOf(store: Store, r: BuildResult) {
  const img = new Image(store, r.manifest);
  return { config: await img.config(), layers: await img.layers() };
}

/** Steps that were cache hits, by number. */
function hits(events: readonly BuildEvent[]): number[] {
  return events.flatMap((e) => (e.type === 'cache-hit' ? [e.step] : []));
}

const MULTI = `# a multi-stage build
ARG BASE=busybox
FROM \${BASE} AS build
ARG GREETING=hello
RUN mkdir -p /out && echo "$GREETING from build" > /out/msg && echo made > /out/made.txt
FROM busybox
LABEL org.example.title="multi stage" version=1
ENV APP=/app NAME="a b"
WORKDIR $APP
COPY --from=build /out/msg ./msg
COPY --chown=1000 app.sh $APP/bin/
EXPOSE 8080 53/udp
USER user
ENTRYPOINT ["/bin/sh", "/app/bin/app.sh"]
CMD ["arg1"]
`;

describe('stratum build', { skip }, () => {
  it('builds a multi-stage Dockerfile whose image runs under runc after umoci unpack', async (t) => {
    // a Docker-format base: its layers go into the OCI manifest with their OCI media type
    const { store, root, ctx } = await setup(t, 'docker');
    await files(ctx, {
      Dockerfile: MULTI,
      'app.sh': 'echo "$(cat /app/msg) $NAME $1 $(id -u):$(id -g) $(pwd)"\n',
    });
    const r = await run(store, ctx, { tags: ['docker.io/library/app:1'], buildArgs: { GREETING: 'hi' } });
    assert.deepEqual(r.tags, ['docker.io/library/app:1']);
    const { config, layers } = await configOf(store, r);
    assert.equal(layers.length, 1 + 3, 'base + WORKDIR + two COPYs');
    assert.ok(layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+gzip'));
    const c = config.config ?? {};
    assert.deepEqual(c.Entrypoint, ['/bin/sh', '/app/bin/app.sh']);
    assert.deepEqual(c.Cmd, ['arg1']);
    assert.equal(c.User, 'user');
    assert.equal(c.WorkingDir, '/app');
    assert.ok(c.Env?.includes('APP=/app'));
    assert.ok(c.Env?.includes('NAME=a b'));
    assert.ok(!c.Env?.some((e) => e.startsWith('GREETING=')), 'build args are not persisted');
    assert.deepEqual(c.Labels, { 'org.example.title': 'multi stage', version: '1' });
    assert.deepEqual(c.ExposedPorts, { '8080/tcp': {}, '53/udp': {} });
    // history: one entry per instruction after FROM, empty_layer for metadata
    const own = (config.history ?? []).slice(1);
    assert.deepEqual(
      own.map((h) => [h.created_by?.split(' ')[0], h.empty_layer === true]),
      [
        ['LABEL', true],
        ['ENV', true],
        ['WORKDIR', false],
        ['COPY', false],
        ['COPY', false],
        ['EXPOSE', true],
        ['USER', true],
        ['ENTRYPOINT', true],
        ['CMD', true],
      ],
    );
    assert.equal(config.rootfs.diff_ids.length, layers.length);

    const bundle = join(root, '..', 'bundle');
    await exec('umoci', ['unpack', '--image', `${root}:docker.io/library/app:1`, bundle]);
    const made = await readFile(join(bundle, 'rootfs/app/msg'), 'utf8');
    assert.equal(made, 'hi from build\n');
    assert.equal(existsSync(join(bundle, 'rootfs/out')), false, 'the build stage is not in the image');
    const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
    spec.process.terminal = false;
    await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
    const id = `stratum-build-test-${process.pid}`;
    const { stdout } = await exec('runc', ['run', '--bundle', bundle, id]).finally(() =>
      exec('runc', ['delete', '--force', id]).catch(() => {}),
    );
    assert.equal(stdout, 'hi from build a b arg1 1000:1001 /app\n');
    // the copied script is owned by --chown=1000 (gid = uid), its parent dir too
    const st = await exec('stat', [
      '-c',
      '%u:%g',
      join(bundle, 'rootfs/app/bin/app.sh'),
      join(bundle, 'rootfs/app/bin'),
    ]);
    assert.equal(st.stdout, '1000:1000\n1000:1000\n');

    // stratum runs it too (on its snapshots), and skopeo reads it from the store
    let out = '';
    const ran = await runImage('docker.io/library/app:1', {
      root,
      pull: 'never',
      autoRemove: true,
      stdout: new Writable({
        write(c: Buffer, _e, cb) {
          out += c.toString();
          cb();
        },
      }),
    });
    assert.equal(ran.exitCode, 0);
    assert.equal(out, 'hi from build a b arg1 1000:1001 /app\n');
    const inspected = JSON.parse(
      (await exec('skopeo', ['inspect', `oci:${root}:docker.io/library/app:1`])).stdout,
    );
    assert.equal(inspected.Digest, r.manifest.digest);
  });

  it('a rebuild with nothing changed reuses every step; a changed file rebuilds from its step on', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile:
        'FROM busybox\nENV A=1\nCOPY one.txt /one.txt\nRUN echo ran > /ran.txt\nCOPY two.txt /two.txt\nRUN cat /one.txt /two.txt > /both\n',
      'one.txt': 'one\n',
      'two.txt': 'two\n',
    });
    const first = await run(store, ctx, { tags: ['docker.io/library/c:1'] });
    assert.equal(first.cacheHits, 0);
    assert.equal(first.builtLayers, 4);
    const again = await run(store, ctx, { tags: ['docker.io/library/c:1'] });
    assert.equal(again.cacheHits, again.steps);
    assert.equal(again.steps, 5);
    assert.equal(again.builtLayers, 0);
    assert.equal(again.output, '', 'nothing ran');
    assert.equal(again.manifest.digest, first.manifest.digest, 'the same image');

    await writeFile(join(ctx, 'two.txt'), 'TWO\n');
    const changed = await run(store, ctx);
    assert.deepEqual(hits(changed.events), [2, 3, 4], 'ENV, COPY one, RUN from the cache');
    assert.equal(changed.builtLayers, 2, 'COPY two and the RUN after it');
    const { layers } = await configOf(store, changed);
    const { layers: before } = await configOf(store, first);
    assert.deepEqual(layers.slice(0, 3), before.slice(0, 3));
    assert.notDeepEqual(layers[3], before[3]);

    const noCache = await run(store, ctx, { noCache: true });
    assert.equal(noCache.cacheHits, 0);
    assert.equal(noCache.builtLayers, 4);
  });

  it('two builds with the same timestamp give the same manifest digest', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile:
        'FROM busybox\nCOPY . /src/\nRUN mkdir /gen && echo generated > /gen/f && touch /gen/g\nWORKDIR /work\nCMD ["cat", "/gen/f"]\n',
      'a.txt': 'a\n',
      'sub/b.txt': 'b\n',
    });
    const T = 1700000000;
    const one = await run(store, ctx, { timestamp: T, noCache: true });
    const two = await run(store, ctx, { timestamp: T, noCache: true });
    assert.equal(two.manifest.digest, one.manifest.digest);
    const { config } = await configOf(store, one);
    const iso = new Date(T * 1000).toISOString();
    assert.equal(config.created, iso);
    assert.ok((config.history ?? []).slice(1).every((h) => h.created === iso));
    // SOURCE_DATE_EPOCH from the environment does the same
    const three = await run(store, ctx, { env: { SOURCE_DATE_EPOCH: String(T) }, noCache: true });
    assert.equal(three.manifest.digest, one.manifest.digest);
    const other = await run(store, ctx, { timestamp: T + 1, noCache: true });
    assert.notEqual(other.manifest.digest, one.manifest.digest);
  });

  it('two builds of the same Dockerfile at once in one store both succeed with the same image', async (t) => {
    const { store, ctx, root } = await setup(t);
    await files(ctx, {
      Dockerfile: 'FROM busybox\nCOPY a.txt /a.txt\nRUN echo run > /r\nWORKDIR /w\n',
      'a.txt': 'a\n',
    });
    const [one, two] = await Promise.all([
      run(store, ctx, { timestamp: 1, tags: ['docker.io/library/same:1'] }),
      run(store, ctx, { timestamp: 1, tags: ['docker.io/library/same:2'] }),
    ]);
    assert.equal(one.manifest.digest, two.manifest.digest);
    assert.deepEqual(await mountsUnder(root), []);
    const again = await run(store, ctx, { timestamp: 1 });
    assert.equal(again.cacheHits, again.steps);
  });

  it('syntax errors name the file and line', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, { Dockerfile: 'FROM busybox\nRUN true\n\nFROBNICATE now\n' });
    await assert.rejects(run(store, ctx), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_BUILD_SYNTAX');
      assert.match(e.message, /Dockerfile:4: unknown instruction: FROBNICATE/);
      return true;
    });
    await files(ctx, { Dockerfile: 'FROM busybox\nENV A=${B\n' });
    await assert.rejects(run(store, ctx), /Dockerfile:2: .*substitution/);
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY only-one\n' });
    await assert.rejects(run(store, ctx), /Dockerfile:2: COPY needs at least one source and a destination/);
  });

  it('refuses COPY of ../x and of a symlink leading out of the context', async (t) => {
    const { store, ctx } = await setup(t);
    await writeFile(join(ctx, '..', 'outside.txt'), 'secret\n');
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY ../outside.txt /x\n' });
    await assert.rejects(run(store, ctx), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_UNSAFE_PATH');
      assert.match(e.message, /Dockerfile:2: forbidden path outside the build context/);
      return true;
    });
    await symlink('../outside.txt', join(ctx, 'link'));
    await symlink('/etc', join(ctx, 'etclink'));
    for (const src of ['link', 'etclink/passwd', 'etclink']) {
      await files(ctx, { Dockerfile: `FROM busybox\nCOPY ${src} /x\n` });
      await assert.rejects(run(store, ctx), (e: unknown) => {
        assert.ok(isStratumError(e));
        assert.equal(e.code, 'ERR_UNSAFE_PATH', src);
        assert.match(e.message, /outside the build context/);
        return true;
      });
    }
    // a symlink inside a copied directory is copied as a link, not followed
    await mkdir(join(ctx, 'dir'));
    await symlink('/etc/shadow', join(ctx, 'dir', 'l'));
    await files(ctx, {
      Dockerfile: 'FROM busybox\nCOPY dir /d/\nRUN test -L /d/l && echo "$(ls -l /d/l)"\n',
    });
    const r = await run(store, ctx);
    assert.match(r.output, /\/d\/l -> \/etc\/shadow/);
  });

  it('COPY into the image follows its symlinks inside the root only', async (t) => {
    const { store, ctx, root } = await setup(t);
    await files(ctx, {
      Dockerfile: [
        'FROM busybox',
        'COPY f.txt /link/f.txt',
        'COPY f.txt /escape/tmp/escaped.txt',
        'COPY tree/ /',
        'COPY f.txt /flink',
        'RUN cat /real/f.txt /tmp/escaped.txt /real/inner.txt /real/ftarget.txt && test -L /link && test -L /flink',
      ].join('\n'),
      'f.txt': 'through the link\n',
      'tree/link/inner.txt': 'merged into the linked directory\n',
    });
    const r = await run(store, ctx);
    assert.equal(
      r.output,
      'through the link\nthrough the link\nmerged into the linked directory\nthrough the link\n',
    );
    assert.equal(existsSync('/tmp/escaped.txt'), false, 'nothing written on the host');
    assert.deepEqual(await mountsUnder(root), []);
  });

  it('honours .dockerignore with ! exceptions', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile: 'FROM busybox\nCOPY . /ctx/\nRUN ls -a -R /ctx\n',
      '.dockerignore': '# ignore\n*.log\nsecret/\n!secret/public.txt\n**/tmp-*\nDockerfile\n',
      'keep.txt': 'k',
      'debug.log': 'x',
      'secret/key': 'x',
      'secret/public.txt': 'p',
      'a/b/tmp-1': 'x',
      'a/b/c.txt': 'c',
    });
    const r = await run(store, ctx);
    const out = r.output;
    assert.match(out, /keep\.txt/);
    assert.match(out, /public\.txt/);
    assert.match(out, /c\.txt/);
    assert.match(out, /\.dockerignore/);
    for (const gone of ['debug.log', 'key', 'tmp-1', 'Dockerfile'])
      assert.doesNotMatch(out, new RegExp(gone));
    // a source excluded by .dockerignore is not found, also through a symlink in the context
    await symlink('secret', join(ctx, 'secret-link'));
    await assert.rejects(
      run(store, ctx, { dockerfileText: 'FROM busybox\nCOPY secret-link/key /x\n' }),
      /excluded by \.dockerignore/,
    );
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY secret-link /s/\nRUN ls /s\n' });
    assert.equal((await run(store, ctx)).output, 'public.txt\n');
    await assert.rejects(
      run(store, ctx, { dockerfileText: 'FROM busybox\nCOPY debug.log /x\n' }),
      /excluded by \.dockerignore/,
    );
  });

  it('hostile inputs: ADD of a tar that climbs out, a symlink loop in the context, ${X:?} unset', async (t) => {
    const { store, ctx, root } = await setup(t);
    const marker = join(root, '..', 'pwned');
    await writeFile(
      join(ctx, 'evil.tar'),
      makeTarball([
        tarFile('ok.txt', 'fine\n'),
        tarFile(`../../../../../../../..${marker}`, 'x'),
        tarSymlink('up', '../../../../../..'),
        tarFile('up/pwned2', 'x'),
      ]),
    );
    await files(ctx, { Dockerfile: 'FROM busybox\nADD evil.tar /x/\n' });
    await assert.rejects(run(store, ctx), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_UNSAFE_PATH');
      assert.match(e.message, /^\S+Dockerfile:2: /);
      return true;
    });
    assert.equal(existsSync(marker), false);
    await symlink('loop', join(ctx, 'loop'));
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY loop /x\n' });
    await assert.rejects(run(store, ctx), (e: unknown) => isStratumError(e) && e.code === 'ERR_UNSAFE_PATH');
    await files(ctx, { Dockerfile: 'FROM busybox\nWORKDIR ${NOPE:?must be set}\n' });
    await assert.rejects(run(store, ctx), /Dockerfile:2: NOPE: must be set/);
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY --chown=ghost Dockerfile /\n' });
    await assert.rejects(run(store, ctx), /Dockerfile:2: cannot find user "ghost"/);
    assert.deepEqual(await mountsUnder(root), []);
    assert.deepEqual(await readdir(join(root, 'build-cache', 'work')), []);
  });

  it('COPY globs and several sources; RUN exec form and --network=none; ADD of a URL is refused', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile: [
        'FROM busybox',
        'COPY *.txt conf/*/x.conf /dst/',
        'COPY ["a.txt", "/json dest/"]',
        `RUN ["/bin/sh", "-c", "ls /dst /dst/x.conf '/json dest'"]`,
        'RUN --network=none ls /sys/class/net',
      ].join('\n'),
      'a.txt': 'a',
      'b.txt': 'b',
      'c.md': 'c',
      'conf/one/x.conf': '1',
    });
    const r = await run(store, ctx, { network: 'host' });
    assert.equal(r.output, '/dst/x.conf\n\n/dst:\na.txt\nb.txt\nx.conf\n\n/json dest:\na.txt\nlo\n');
    const where = /Dockerfile:2: /;
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY a.txt b.txt /not-a-dir\n' });
    await assert.rejects(
      run(store, ctx),
      /Dockerfile:2: when COPY has more than one source, the destination must be a directory and end with a \//,
    );
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY *.nothing /x/\n' });
    await assert.rejects(run(store, ctx), /Dockerfile:2: no source files were specified/);
    await files(ctx, { Dockerfile: 'FROM busybox\nADD https://example.com/f.tgz /x/\n' });
    await assert.rejects(run(store, ctx), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_UNSUPPORTED');
      assert.match(e.message, where);
      assert.match(e.message, /download the file into the context/);
      return true;
    });
  });

  it('a failing RUN shows its output and exit code, and leaves no tag, mount or work directory', async (t) => {
    const { store, ctx, root } = await setup(t);
    await files(ctx, {
      Dockerfile: 'FROM busybox\nCOPY Dockerfile /\nRUN echo about to fail; echo on stderr >&2; exit 3\n',
    });
    await assert.rejects(run(store, ctx, { tags: ['docker.io/library/bad:1'] }), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_BUILD_STEP_FAILED');
      assert.match(e.message, /Dockerfile:3/);
      assert.match(e.message, /exited with code 3/);
      // stdout and stderr are two pipes: their relative order is not kept
      assert.match(e.message, /about to fail/);
      assert.match(e.message, /on stderr/);
      assert.equal((e as unknown as { exitCode: number }).exitCode, 3);
      return true;
    });
    await assert.rejects(store.resolve('docker.io/library/bad:1'), (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_NOT_FOUND');
      return true;
    });
    assert.deepEqual(await mountsUnder(root), []);
    assert.deepEqual(await readdir(join(root, 'build-cache', 'work')), []);
  });

  it('RUN and WORKDIR that change nothing make no layer; ADD extracts a local tar; heredocs', async (t) => {
    const { store, ctx } = await setup(t);
    await writeFile(
      join(ctx, 'files.tar'),
      await makeTar([
        { path: 'x/', type: 'directory' },
        { path: 'x/inner.txt', content: 'from the tar\n' },
      ]),
    );
    await files(ctx, {
      Dockerfile: [
        'FROM busybox',
        'RUN true',
        'WORKDIR /tmp',
        'ADD files.tar /unpacked/',
        'COPY --chmod=0750 <<EOF /script.sh',
        'echo heredoc $HOME',
        'EOF',
        'RUN <<EOF',
        'echo first line',
        'cat /unpacked/x/inner.txt',
        'stat -c %a /script.sh',
        'EOF',
        'COPY <<a.txt <<b.txt /two/',
        'A',
        'a.txt',
        'B',
        'b.txt',
        'RUN cat <<EOF > /from-stdin && cat /two/a.txt /two/b.txt /from-stdin',
        'via stdin',
        'EOF',
      ].join('\n'),
    });
    const r = await run(store, ctx, { buildArgs: { UNUSED: '1' } });
    const empty = r.events.filter((e) => e.type === 'empty-layer').map((e) => e.step);
    assert.deepEqual(empty, [2, 3, 6], 'RUN true, WORKDIR of an existing dir, a RUN that only prints');
    assert.equal(r.builtLayers, 4);
    assert.equal(r.output, 'first line\nfrom the tar\n750\nA\nB\nvia stdin\n');
    assert.ok(r.events.some((e) => e.type === 'warning' && /UNUSED/.test(e.message)));
    const { config } = await configOf(store, r);
    assert.equal(config.history?.filter((h) => !h.empty_layer).length, 1 + 4);
  });

  it('ARG scoping: global args in FROM, stage args in RUN, ENV wins, --target', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile: [
        'ARG TAG=latest',
        'FROM busybox:${TAG} AS first',
        'ARG TAG',
        'ARG X=default',
        'ENV Y=from-env',
        'ARG Y=from-arg',
        'RUN echo "tag=$TAG x=$X y=$Y" > /args',
        'FROM first AS second',
        'RUN cat /args; echo "second x=[$X]"',
        'FROM busybox',
        'RUN exit 1',
      ].join('\n'),
    });
    const r = await run(store, ctx, { target: 'second', buildArgs: { X: 'given' } });
    assert.equal(r.output, 'tag=latest x=given y=from-env\nsecond x=[]\n');
    const { config } = await configOf(store, r);
    const runEntry = config.history?.find((h) => h.created_by?.includes('/args'));
    assert.match(runEntry?.created_by ?? '', /^RUN \|2 TAG=latest X=given \/bin\/sh -c/);
    await assert.rejects(run(store, ctx, { target: 'nope' }), /target stage "nope" is not in/);
  });

  it('config instructions: SHELL, shell-form ENTRYPOINT, HEALTHCHECK, STOPSIGNAL, VOLUME, ONBUILD; COPY --from an image', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile: [
        'FROM busybox',
        'MAINTAINER someone',
        'SHELL ["/bin/sh", "-ec"]',
        'ENTRYPOINT exec echo "$0 $@"',
        'HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD test -f /ok',
        'STOPSIGNAL SIGTERM',
        'VOLUME ["/data", "/logs"]',
        'ONBUILD RUN echo triggered > /trigger',
        'COPY --from=busybox /bin/busybox /copied-busybox',
        `COPY <<EOF /quoted.txt`,
        `say "\${NAME:-x}" 'and \\$NAME'`,
        'EOF',
      ].join('\n'),
    });
    const r = await run(store, ctx, { tags: ['docker.io/library/parent:1'] });
    const { config } = await configOf(store, r);
    const c = config.config ?? {};
    assert.equal(config.author, 'someone');
    assert.deepEqual(c.Shell, ['/bin/sh', '-ec']);
    assert.deepEqual(c.Entrypoint, ['/bin/sh', '-ec', 'exec echo "$0 $@"']);
    assert.equal(c.Cmd, undefined, 'ENTRYPOINT resets an inherited CMD');
    assert.deepEqual(c.Healthcheck, {
      Test: ['CMD-SHELL', 'test -f /ok'],
      Interval: 30e9,
      Timeout: 90e9,
      Retries: 3,
    });
    assert.equal(c.StopSignal, 'SIGTERM');
    assert.deepEqual(c.Volumes, { '/data': {}, '/logs': {} });
    assert.deepEqual(c.OnBuild, ['RUN echo triggered > /trigger']);

    // a child build runs the trigger first; the child's OnBuild is empty
    await files(ctx, {
      Dockerfile: 'FROM parent:1\nRUN cat /trigger /quoted.txt && cmp /copied-busybox /bin/busybox\n',
    });
    const child = await run(store, ctx);
    assert.equal(child.output, `triggered\nsay "x" 'and \\$NAME'\n`);
    assert.equal((await configOf(store, child)).config.config?.OnBuild, undefined);
  });

  it('an aborted build stops its RUN and leaves no mount or work directory', async (t) => {
    const { store, ctx, root } = await setup(t);
    await files(ctx, { Dockerfile: 'FROM busybox\nRUN echo started; sleep 60; echo never\n' });
    const ac = new AbortController();
    const { Writable } = await import('node:stream');
    const p = build({
      store,
      context: ctx,
      signal: ac.signal,
      output: new Writable({
        write(c: Buffer, _e, cb) {
          if (c.toString().includes('started')) ac.abort();
          cb();
        },
      }),
    });
    await assert.rejects(p, (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_ABORTED');
      return true;
    });
    assert.deepEqual(await mountsUnder(root), []);
    assert.deepEqual(await readdir(join(root, 'build-cache', 'work')), []);
  });

  it('after a build is killed with -9 mid-RUN, the next build cleans up its container, mount and work directory', async (t) => {
    const { store, ctx, root } = await setup(t);
    await files(ctx, { Dockerfile: 'FROM busybox\nRUN echo started; sleep 600\n' });
    await store.close();
    const script = join(ctx, '..', 'child.mjs');
    await writeFile(
      script,
      [
        `import { openStore } from ${JSON.stringify(new URL('../layout/store.js', import.meta.url).href)};`,
        `import { build } from ${JSON.stringify(new URL('./build.js', import.meta.url).href)};`,
        `const store = await openStore({ root: ${JSON.stringify(root)} });`,
        `await build({ store, context: ${JSON.stringify(ctx)}, output: process.stdout });`,
      ].join('\n'),
    );
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (c: Buffer) => {
        if (c.toString().includes('started')) resolve();
      });
      child.on('exit', () => reject(new Error('the build ended before its RUN started')));
    });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    assert.ok((await mountsUnder(root)).length > 0, 'the killed build left its overlay mounted');
    assert.equal((await readdir(join(root, 'build-cache', 'work'))).length, 1);

    const next = await openStore({ root });
    t.after(() => next.close());
    await files(ctx, { Dockerfile: 'FROM busybox\nRUN echo fine\n' });
    const r = await run(next, ctx);
    assert.equal(r.output, 'fine\n');
    assert.deepEqual(await mountsUnder(root), []);
    assert.deepEqual(await readdir(join(root, 'build-cache', 'work')), []);
    const { stdout } = await exec('runc', ['--root', '/run/stratum/runc', 'list', '-q']);
    assert.ok(!stdout.split('\n').some((id) => id.startsWith(`proc-${child.pid}-`)), 'its container is gone');
  });

  it('buildCacheRoots lists what the cache uses; pruneBuildCache empties it', async (t) => {
    const { store, ctx, root } = await setup(t);
    await files(ctx, { Dockerfile: 'FROM busybox\nCOPY Dockerfile /\nRUN echo x > /x\n' });
    const r = await run(store, ctx);
    const { layers } = await configOf(store, r);
    const roots = await buildCacheRoots(root);
    assert.deepEqual(
      [...roots.blobs].sort(),
      layers
        .slice(1)
        .map((l) => l.digest)
        .sort(),
    );
    assert.equal(roots.chainIds.size, 2, 'the snapshot each step ends with');
    // entries whose blob is gone go; then everything
    const gone = layers[2]?.digest;
    const pruned = await pruneBuildCache(root, { olderThanMs: 3600_000, hasBlob: async (d) => d !== gone });
    assert.equal(pruned.removed, 1);
    const again = await run(store, ctx);
    assert.deepEqual(hits(again.events), [2], 'the COPY is still cached, the RUN is not');
    // the work directory of a build killed with -9 (its pid is gone), with a mount left in it
    const dead = await new Promise<number>((resolve) => {
      const child = execFile('true');
      child.on('exit', () => resolve(child.pid as number));
    });
    const orphan = join(root, 'build-cache', 'work', `build-${dead}-abcdef`);
    await mkdir(join(orphan, 'step-1', 'merged'), { recursive: true });
    await exec('mount', ['-t', 'tmpfs', 'tmpfs', join(orphan, 'step-1', 'merged')]);
    assert.ok((await pruneBuildCache(root)).removed >= 2);
    assert.equal(existsSync(orphan), false);
    assert.deepEqual(await mountsUnder(root), []);
    assert.equal((await run(store, ctx)).cacheHits, 0);
  });

  it('FROM scratch; a --from stage named through a stage ARG is built when needed', async (t) => {
    const { store, ctx } = await setup(t);
    await files(ctx, {
      Dockerfile: [
        'FROM busybox AS tools',
        'RUN echo tool > /tool',
        'FROM scratch',
        'ARG SRC=tools',
        'COPY --from=$SRC /tool /bin/tool',
        'COPY f.txt /',
      ].join('\r\n'),
      'f.txt': 'f\n',
    });
    const r = await run(store, ctx);
    const { config, layers } = await configOf(store, r);
    assert.equal(layers.length, 2);
    assert.deepEqual(config.config?.Env, [
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    ]);
    assert.equal(r.steps, 4, 'RUN (the tools stage, built on demand), ARG, two COPYs');
    const bundle = join(ctx, '..', 'scratch-bundle');
    await store.tag(r.manifest, 'docker.io/library/scratch-test:1');
    await exec('umoci', ['unpack', '--image', `${store.root}:docker.io/library/scratch-test:1`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    assert.equal(await readFile(join(rootfs, 'bin/tool'), 'utf8'), 'tool\n');
    assert.equal(await readFile(join(rootfs, 'f.txt'), 'utf8'), 'f\n');
  });

  it('a base image that is an index gives the platform asked for', async (t) => {
    const { store, ctx } = await setup(t);
    const arch = (a: string) =>
      makeImage({
        platform: { os: 'linux', architecture: a },
        layers: [[{ path: 'arch', content: `${a}\n` }]],
      });
    const amd = await arch('amd64');
    const arm = await arch('arm64');
    for (const i of [amd, arm]) await pushImage(store, i);
    const index = makeIndex([
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    await store.push(index.descriptor, index.bytes);
    await store.tag(index.descriptor, 'docker.io/library/multi:1');
    await files(ctx, {
      Dockerfile: 'FROM multi:1 AS m\nFROM busybox\nCOPY --from=m /arch /arch\nRUN cat /arch\n',
    });
    const r = await run(store, ctx, { platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(r.output, 'arm64\n');
    const { config } = await configOf(store, r);
    assert.equal(config.architecture, 'amd64', 'the busybox stage keeps its own platform');
    const m = await run(store, ctx, {
      dockerfileText: 'FROM multi:1\n',
      platform: { os: 'linux', architecture: 'amd64' },
    });
    assert.equal((await configOf(store, m)).config.architecture, 'amd64');
  });

  it('the build command: -q prints the image digest, --json prints events and a result', async (t) => {
    const { root, ctx } = await setup(t);
    await files(ctx, { Dockerfile: 'FROM busybox\nRUN echo out > /o\nCMD ["cat", "/o"]\n' });
    const q = captureContext();
    assert.equal(await COMMANDS.build!.run(['--root', root, '-q', '-t', 'cli:1', ctx], q.ctx), 0);
    assert.match(q.out(), /^sha256:[a-f0-9]{64}\n$/);
    assert.equal(q.err(), '');
    const j = captureContext();
    assert.equal(await COMMANDS.build!.run(['--root', root, '--json', '-t', 'cli:2', ctx], j.ctx), 0);
    const lines = j
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.filter((l) => l.event === 'step').map((l) => l.step),
      [1, 2, 3],
    );
    const result = lines.find((l) => l.event === 'result');
    assert.equal(result.digest, q.out().trim());
    assert.equal(result.cacheHits, 2);
    assert.deepEqual(result.tags, ['docker.io/library/cli:2']);
    const p = captureContext();
    assert.equal(await COMMANDS.build!.run(['--root', root, '--no-cache', ctx], p.ctx), 0);
    assert.match(p.err(), /STEP 2\/3: RUN echo out > \/o\n/);
    await assert.rejects(
      COMMANDS.build!.run(['--root', root, '--network', 'bridge', ctx], p.ctx),
      /--network takes none or host/,
    );
  });
});
