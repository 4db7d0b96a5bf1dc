// `stratum layers`, `stratum diff`, `stratum flatten` as commands: text and --json output over
// a store and an oci: layout, and as processes: exit codes (0, 1 for a missing image with
// ERR_NOT_FOUND, 1 for --exit-code with differences, 2 for usage).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { dir, file, makeTarball } from '../layer/apply-fixtures.js';
import { openLayout } from '../layout/layout.js';
import { STRATUM_BIN as CLI, captureContext } from '../testing/cli.js';
import { makeImage, pushImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { COMMANDS } from './commands.js';

const context = (): ReturnType<typeof captureContext> => captureContext();

function run(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    p.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A two-layer image with 100 wasted bytes of 160, in an oci: layout (tag `v1`) and a copy with one more file (`v2`). */
async function setup(t: { after: (fn: () => Promise<void>) => void }): Promise<{ dir: string; oci: string }> {
  const d = await tempDir(t);
  const v1 = await makeImage({
    layers: [
      makeTarball([dir('app'), file('app/big', 'x'.repeat(100)), file('app/keep', 'k'.repeat(10))]),
      makeTarball([{ name: 'app/.wh.big' }, file('app/new', 'n'.repeat(50))]),
    ],
    config: { history: [{ created_by: 'COPY app /app' }, { created_by: 'RUN rm /app/big' }] },
  });
  const v2 = await makeImage({
    layers: [
      makeTarball([dir('app'), file('app/big', 'x'.repeat(100)), file('app/keep', 'k'.repeat(10))]),
      makeTarball([{ name: 'app/.wh.big' }, file('app/new', 'n'.repeat(50)), file('app/extra', 'e')]),
    ],
  });
  const layout = await openLayout(join(d, 'oci'), { create: true });
  try {
    await pushImage(layout, v1, 'v1');
    await pushImage(layout, v2, 'v2');
  } finally {
    await layout.close();
  }
  return { dir: d, oci: join(d, 'oci') };
}

describe('stratum layers / diff / flatten (commands)', () => {
  it('layers: a table for people, the report with --json', async (t) => {
    const { dir: d, oci } = await setup(t);
    const c = context();
    assert.equal(await COMMANDS.layers!.run([`oci:${oci}:v1`, '--root', join(d, 'store')], c.ctx), 0);
    const text = c.out();
    assert.match(text, /^Image: sha256:[0-9a-f]{64}\n/);
    assert.match(text, /\n1 {2}[0-9a-f]{12} .* 3 +0 +0 +100B {2}COPY app \/app\n/);
    assert.match(text, /\n2 {2}[0-9a-f]{12} .* 1 +0 +1 +0B {2}RUN rm \/app\/big\n/);
    assert.match(text, /Wasted: 100B {3}Efficiency: 37\.50%/); // 1 - 100/160
    assert.match(text, /100B {2}\/app\/big {2}\(layer 1\)/);

    const j = context();
    assert.equal(await COMMANDS.layers!.run([`oci:${oci}:v1`, '--json', '--paths'], j.ctx), 0);
    const report = JSON.parse(j.out());
    assert.equal(report.wastedBytes, 100);
    assert.equal(report.totalBytes, 160);
    assert.equal(report.efficiency, 0.375);
    assert.deepEqual(report.layers[1].paths, [
      { path: '/app/big', kind: 'deleted' },
      { path: '/app/new', kind: 'added' },
    ]);
  });

  it('diff: A/C/D lines, --json, and identical images', async (t) => {
    const { oci } = await setup(t);
    const c = context();
    assert.equal(await COMMANDS.diff!.run([`oci:${oci}:v1`, `oci:${oci}:v2`], c.ctx), 0);
    assert.equal(c.out(), 'A /app/extra\n');
    assert.equal(c.err(), '1 added, 0 removed, 0 changed\n');
    const j = context();
    assert.equal(await COMMANDS.diff!.run([`oci:${oci}:v2`, `oci:${oci}:v1`, '--json', '--fast'], j.ctx), 0);
    const d = JSON.parse(j.out());
    assert.deepEqual([d.added, d.removed, d.changed], [0, 1, 0]);
    assert.equal(d.paths[0].path, '/app/extra');
    assert.equal(d.paths[0].kind, 'removed');
    const same = context();
    assert.equal(
      await COMMANDS.diff!.run([`oci:${oci}:v1`, `oci:${oci}:v1`, '--exit-code', '-q'], same.ctx),
      0,
    );
    assert.equal(same.out(), '');
  });

  it('flatten: into the store by default, then inspected and compared there', async (t) => {
    const { dir: d, oci } = await setup(t);
    const root = join(d, 'store');
    const c = context();
    assert.equal(await COMMANDS.flatten!.run([`oci:${oci}:v1`, 'flat/app:1', '--root', root], c.ctx), 0);
    assert.match(c.out(), /^Flattened oci:.*:v1 \(2 layers\) -> flat\/app:1\nDigest: sha256:[0-9a-f]{64}\n/);
    assert.match(c.err(), /Reading layer 1\/2/);
    const l = context();
    assert.equal(await COMMANDS.layers!.run(['flat/app:1', '--root', root, '--json'], l.ctx), 0);
    const report = JSON.parse(l.out());
    assert.equal(report.layers.length, 1);
    assert.equal(report.layers[0].instruction, 'stratum flatten');
    assert.equal(report.wastedBytes, 0);
    assert.equal(report.totalBytes, 60);
    const diff = context();
    assert.equal(
      await COMMANDS.diff!.run([`oci:${oci}:v1`, 'flat/app:1', '--root', root, '--exit-code'], diff.ctx),
      0,
    );
    assert.equal(diff.out(), '');
    // --json, zstd, to an oci: layout
    const j = context();
    assert.equal(
      await COMMANDS.flatten!.run(
        [`oci:${oci}:v2`, `oci:${join(d, 'out')}:flat`, '--compress', 'zstd', '--json'],
        j.ctx,
      ),
      0,
    );
    const r = JSON.parse(j.out());
    assert.equal(r.ref, 'flat');
    assert.equal(r.layers, 2);
    assert.equal(r.layer.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  });

  it('exit codes and errors, as a process', async (t) => {
    const { dir: d, oci } = await setup(t);
    const root = join(d, 'store');
    const missing = await run(['layers', '--root', root, 'no/such:image']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^stratum layers: .*no image named.*\[ERR_NOT_FOUND\]\n$/);
    const missingJson = await run(['diff', '--root', root, '--json', `oci:${oci}:v1`, 'no/such:image']);
    assert.equal(missingJson.code, 1);
    assert.equal(JSON.parse(missingJson.stdout).error.code, 'ERR_NOT_FOUND');
    const differ = await run(['diff', '--exit-code', '-q', `oci:${oci}:v1`, `oci:${oci}:v2`]);
    assert.equal(differ.code, 1);
    assert.equal(differ.stdout, 'A /app/extra\n');
    const usage = await run(['flatten', `oci:${oci}:v1`]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /missing arguments/);
    const badCompress = await run(['flatten', '--compress', 'lz4', `oci:${oci}:v1`, 'x:1']);
    assert.equal(badCompress.code, 2);
    assert.match(badCompress.stderr, /--compress takes gzip, zstd or none/);
    const help = await run(['layers', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /usage: stratum layers/);
  });
});
