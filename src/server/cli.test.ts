// `stratum serve` as a command: in-process (its options, what it prints, a clean stop when
// the signal aborts) and as a process started like a user would (SIGTERM ends it with 0).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { hashSync } from 'bcryptjs';
import { parseAddr, serveCommand } from '../cli/serve-command.js';
import { StratumError } from '../errors/errors.js';
import { openStore } from '../layout/store.js';
import { RegistryClient } from '../registry/client.js';
import { staticCredentials } from '../registry/credentials.js';
import { RegistryTarget } from '../registry/target.js';
import { STRATUM_BIN as CLI, captureContext } from '../testing/cli.js';
import { makeImage, pushImage } from '../testing/images.js';
import { rawRequest } from '../testing/serve.js';
import { tempDir } from '../testing/tmp.js';

const context = (): ReturnType<typeof captureContext> => captureContext();

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), 'condition not reached in time');
}

describe('stratum serve (command)', () => {
  it('serves a store until the signal aborts, then stops with 0 and leaves it consistent', async (t) => {
    const root = await tempDir(t);
    const users = join(root, '..', `${process.pid}-htpasswd-${Date.now()}`);
    await writeFile(users, `ci:${hashSync('pw', 4)}\n`);
    t.after(() => import('node:fs/promises').then((fs) => fs.rm(users, { force: true })));
    const c = context();
    const running = serveCommand.run(
      ['--addr', '127.0.0.1:0', '--root', root, '--htpasswd', users, '--json'],
      c.ctx,
    );
    await until(() => c.out().includes('\n'));
    const info = JSON.parse(c.out()) as { address: string; url: string; root: string; auth: boolean };
    assert.equal(info.root, root);
    assert.equal(info.auth, true);
    const client = new RegistryClient({
      credentials: staticCredentials({ [info.address]: { username: 'ci', password: 'pw' } }),
    });
    try {
      const img = await makeImage();
      await pushImage(new RegistryTarget(client, info.address, 'cli/app'), img, 'v1');
      // the access log goes to stderr
      await until(() => c.err().includes('PUT /v2/cli/app/manifests/v1'));
    } finally {
      await client.close();
    }
    c.abort();
    assert.equal(await running, 0);
    await assert.rejects(rawRequest(info.url, 'GET', '/v2/'), /ECONNREFUSED/);
    const store = await openStore({ root });
    assert.ok((await store.resolve('docker.io/cli/app:v1')).digest);
    assert.deepEqual(await store.verify(), []);
    await store.close();
  });

  it('refuses bad options with usage errors', async (t) => {
    const root = await tempDir(t);
    for (const argv of [
      ['--addr', 'nope'],
      ['--addr', '127.0.0.1:99999'],
      ['--addr', '[zz]:1'],
      ['--tls-cert', 'c.pem'],
      ['extra'],
    ]) {
      const c = context();
      await assert.rejects(
        serveCommand.run([...argv, '--root', root], c.ctx),
        (e) => e instanceof StratumError && e.code === 'ERR_USAGE',
        argv.join(' '),
      );
    }
    assert.deepEqual(parseAddr('[::1]:5000'), { host: '::1', port: 5000 });
    assert.deepEqual(parseAddr(':5000'), { host: '0.0.0.0', port: 5000 });
    const c = context();
    assert.equal(await serveCommand.run(['--help'], c.ctx), 0);
    assert.match(c.out(), /usage: stratum serve/);
  });

  it('runs as `stratum serve` in its own process and exits 0 on SIGTERM', async (t) => {
    const root = await tempDir(t);
    const child = spawn(
      process.execPath,
      [CLI, 'serve', '--addr', '127.0.0.1:0', '--root', root, '--read-only', '--json'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      // read-only needs an existing store; with --json the error is a JSON line on stdout
      assert.equal(await exited, 1, err);
      assert.equal((JSON.parse(out) as { error: { code: string } }).error.code, 'ERR_INVALID_LAYOUT');
    } finally {
      child.kill('SIGKILL');
    }
    await (await openStore({ root })).close();
    const child2 = spawn(
      process.execPath,
      [CLI, 'serve', '--addr', '127.0.0.1:0', '--root', root, '--read-only', '--json'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out2 = '';
    child2.stdout.on('data', (c: Buffer) => {
      out2 += c.toString();
    });
    const exited2 = new Promise<number | null>((resolve) => child2.on('exit', (code) => resolve(code)));
    try {
      await until(() => out2.includes('\n'));
      const info = JSON.parse(out2) as { url: string; readOnly: boolean };
      assert.equal(info.readOnly, true);
      assert.equal((await rawRequest(info.url, 'GET', '/v2/')).status, 200);
      assert.equal((await rawRequest(info.url, 'POST', '/v2/x/blobs/uploads/')).status, 405);
      child2.kill('SIGTERM');
      assert.equal(await exited2, 0);
    } finally {
      child2.kill('SIGKILL');
    }
  });
});
