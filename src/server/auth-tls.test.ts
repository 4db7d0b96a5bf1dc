// `stratum serve` with Basic auth (htpasswd with bcrypt entries as `htpasswd -B` writes
// them, or a callback), read-only mode, and TLS with a self-signed certificate made by
// openssl — checked with raw requests, stratum's client and skopeo.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { hashSync } from 'bcryptjs';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { openStore } from '../layout/store.js';
import { copyImage } from '../ops/copy-image.js';
import { RegistryClient } from '../registry/client.js';
import { staticCredentials } from '../registry/credentials.js';
import { RegistryTarget } from '../registry/target.js';
import { makeImage, pushImage } from '../testing/images.js';
import { rawRequest, startServer } from '../testing/serve.js';
import { tempDir } from '../testing/tmp.js';
import { Htpasswd } from './htpasswd.js';

const exec = promisify(execFile);
const haveSkopeo = existsSync('/usr/bin/skopeo');
const haveOpenssl = existsSync('/usr/bin/openssl');

/** A bcrypt line the way `htpasswd -B` writes it ($2y$). */
function htpasswdLine(user: string, password: string, cost = 4): string {
  return `${user}:${hashSync(password, cost).replace(/^\$2b\$/, '$2y$')}`;
}

const basic = (user: string, password: string) => ({
  authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
});

describe('stratum serve: Basic auth', () => {
  it('refuses missing and wrong credentials with 401 and a Basic challenge; accepts right ones', async () => {
    const s = await startServer({
      htpasswd: Htpasswd.fromText(`# users\n${htpasswdLine('alice', 's3cret')}\n\n`),
    });
    try {
      for (const path of ['/v2/', '/v2/x/tags/list', '/metrics']) {
        const none = await rawRequest(s.url, 'GET', path);
        assert.equal(none.status, 401, path);
        assert.deepEqual(none.codes, ['UNAUTHORIZED']);
        assert.match(none.headers['www-authenticate'] as string, /^Basic realm="stratum"/);
      }
      const cases: [Record<string, string>, number][] = [
        [basic('alice', 'wrong'), 401],
        [basic('bob', 's3cret'), 401],
        [basic('alice', 's3cret '), 401],
        [{ authorization: 'Basic !!!not-base64' }, 401],
        [{ authorization: 'Bearer abc' }, 401],
        [basic('alice', 's3cret'), 200],
      ];
      for (const [headers, status] of cases) {
        const r = await rawRequest(s.url, 'GET', '/v2/', { headers });
        assert.equal(r.status, status, JSON.stringify(headers));
      }
      assert.equal(s.log.at(-1)?.user, 'alice');
    } finally {
      await s.stop();
    }
  });

  it("stratum's client and skopeo push and pull with credentials; without them they are refused", async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'htpasswd');
    await writeFile(file, `${htpasswdLine('ci', 'pw-1')}\n`);
    const s = await startServer({ htpasswd: file, realm: 'test realm' });
    const anon = new RegistryClient({ retries: 0 });
    const authed = new RegistryClient({
      credentials: staticCredentials({ [s.host]: { username: 'ci', password: 'pw-1' } }),
    });
    try {
      const img = await makeImage();
      await assert.rejects(
        pushImage(new RegistryTarget(anon, s.host, 'auth/app'), img, 'v1'),
        (e) => e instanceof StratumError && e.code === 'ERR_UNAUTHORIZED',
      );
      await pushImage(new RegistryTarget(authed, s.host, 'auth/app'), img, 'v1');
      assert.equal(
        (await new RegistryTarget(authed, s.host, 'auth/app').resolve('v1')).digest,
        img.manifest.descriptor.digest,
      );
      if (haveSkopeo) {
        const out = join(dir, 'out');
        await exec('skopeo', [
          'copy',
          '--src-tls-verify=false',
          '--src-creds',
          'ci:pw-1',
          `docker://${s.host}/auth/app:v1`,
          `oci:${out}:x`,
        ]);
        await assert.rejects(
          exec('skopeo', [
            'copy',
            '--src-tls-verify=false',
            '--src-creds',
            'ci:nope',
            `docker://${s.host}/auth/app:v1`,
            `oci:${out}:y`,
          ]),
        );
        await exec('skopeo', [
          'copy',
          '--dest-tls-verify=false',
          '--dest-creds',
          'ci:pw-1',
          `oci:${out}:x`,
          `docker://${s.host}/auth/copy:1`,
        ]);
        assert.equal((await s.store.resolve('docker.io/auth/copy:1')).digest, img.manifest.descriptor.digest);
      }
      // the file is re-read when it changes
      await writeFile(file, `${htpasswdLine('ci', 'pw-2')}\n`);
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        await new Promise((r) => setTimeout(r, 50));
        status = (await rawRequest(s.url, 'GET', '/v2/', { headers: basic('ci', 'pw-2') })).status;
      }
      assert.equal(status, 200);
      assert.equal((await rawRequest(s.url, 'GET', '/v2/', { headers: basic('ci', 'pw-1') })).status, 401);
    } finally {
      await anon.close();
      await authed.close();
      await s.stop();
    }
  });

  it('entries that are not bcrypt never match, and loading says so', () => {
    const h = Htpasswd.fromText(
      [
        'md5:$apr1$GZ650zxv$99/Dg0Y6os0zquEMaYoJx1',
        'sha:{SHA}m3eMTmxi2IBKIZgAnySjD/tg8W8=',
        'plain:plain',
        htpasswdLine('ok', 'x'),
      ].join('\n'),
    );
    assert.deepEqual(h.users, ['ok']);
    assert.equal(h.warnings.length, 3);
    assert.ok(h.warnings.every((w) => !w.includes('$apr1$') && !w.includes('{SHA}m3e')));
    assert.throws(() => Htpasswd.fromText('no colon here'), /line 1/);
  });

  it('an auth callback decides instead of a file', async () => {
    const s = await startServer({ auth: (u, p) => u === 'robot' && p === 'token' });
    try {
      assert.equal(
        (await rawRequest(s.url, 'GET', '/v2/', { headers: basic('robot', 'token') })).status,
        200,
      );
      assert.equal((await rawRequest(s.url, 'GET', '/v2/', { headers: basic('robot', 'x') })).status, 401);
    } finally {
      await s.stop();
    }
  });

  it('a flood of password guesses is bounded: 401 or 429, never a crash, never a 200', async () => {
    const s = await startServer({ htpasswd: Htpasswd.fromText(htpasswdLine('alice', 'right', 8)) });
    try {
      const statuses = await Promise.all(
        Array.from({ length: 150 }, (_, i) =>
          rawRequest(s.url, 'GET', '/v2/', { headers: basic('alice', `guess-${i}`) }),
        ),
      );
      const counts = new Map<number, number>();
      for (const r of statuses) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
      assert.deepEqual([...counts.keys()].sort(), [401, 429]);
      const tooMany = statuses.find((r) => r.status === 429)!;
      assert.deepEqual(tooMany.codes, ['TOOMANYREQUESTS']);
      assert.ok(tooMany.headers['retry-after']);
    } finally {
      await s.stop();
    }
  });
});

describe('stratum serve: read-only', () => {
  it('serves pulls and refuses every write with 405 UNSUPPORTED', async (t) => {
    const root = await tempDir(t);
    const store = await openStore({ root });
    const img = await makeImage();
    await pushImage(store, img, 'docker.io/ro/app:1');
    await store.close();
    const ro = await openStore({ root, readOnly: true });
    const s = await startServer({ store: ro });
    const client = new RegistryClient({ retries: 0 });
    try {
      const got = await rawRequest(s.url, 'GET', '/v2/ro/app/manifests/1');
      assert.equal(got.status, 200);
      assert.equal(got.headers['docker-content-digest'], img.manifest.descriptor.digest);
      const d = digestBytes('x');
      const writes: [string, string][] = [
        ['POST', '/v2/ro/app/blobs/uploads/'],
        ['POST', `/v2/ro/app/blobs/uploads/?digest=${d}`],
        ['PUT', '/v2/ro/app/manifests/2'],
        ['DELETE', '/v2/ro/app/manifests/1'],
        ['DELETE', `/v2/ro/app/blobs/${img.layers[0]!.descriptor.digest}`],
        ['PATCH', '/v2/ro/app/blobs/uploads/00000000-0000-0000-0000-000000000000'],
      ];
      for (const [method, path] of writes) {
        const r = await rawRequest(s.url, method, path, { body: Buffer.from('x') });
        assert.equal(r.status, 405, `${method} ${path}`);
        assert.deepEqual(r.codes, ['UNSUPPORTED']);
      }
      const out = join(root, 'pulled');
      const r = await copyImage(`docker://${s.host}/ro/app:1`, `oci:${out}:x`, { registry: { retries: 0 } });
      assert.equal(r.descriptor.digest, img.manifest.descriptor.digest);
      await assert.rejects(
        copyImage(`oci:${out}:x`, `docker://${s.host}/ro/other:1`, { registry: { retries: 0 } }),
      );
      assert.equal((await rawRequest(s.url, 'GET', '/v2/ro/app/tags/list')).status, 200);
    } finally {
      await client.close();
      await s.stop();
      await ro.close();
    }
  });

  it('readOnly: true refuses writes even on a writable store', async () => {
    const s = await startServer({ readOnly: true });
    try {
      assert.equal((await rawRequest(s.url, 'POST', '/v2/a/blobs/uploads/')).status, 405);
      assert.equal((await rawRequest(s.url, 'GET', '/v2/')).status, 200);
    } finally {
      await s.stop();
    }
  });
});

describe('stratum serve: TLS', { skip: haveOpenssl ? false : 'openssl is not installed' }, () => {
  it('serves HTTPS with a self-signed certificate to clients that trust it', async (t) => {
    const dir = await tempDir(t);
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    await exec('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    const { readFile } = await import('node:fs/promises');
    const pem = await readFile(cert);
    const s = await startServer({ tls: { cert: pem, key: await readFile(key) } });
    const client = new RegistryClient({ ca: pem, httpsHosts: [s.host], retries: 0 });
    const untrusting = new RegistryClient({ httpsHosts: [s.host], retries: 0 });
    try {
      assert.ok(s.url.startsWith('https://'));
      assert.equal((await rawRequest(s.url, 'GET', '/v2/', { ca: pem })).status, 200);
      await assert.rejects(rawRequest(s.url, 'GET', '/v2/'), /self.signed|certificate/i);
      const img = await makeImage();
      await pushImage(new RegistryTarget(client, s.host, 'tls/app'), img, 'v1');
      assert.equal(
        (await new RegistryTarget(client, s.host, 'tls/app').resolve('v1')).digest,
        img.manifest.descriptor.digest,
      );
      await assert.rejects(
        new RegistryTarget(untrusting, s.host, 'tls/app').resolve('v1'),
        (e) => e instanceof StratumError && e.code === 'ERR_TLS',
      );
      if (haveSkopeo) {
        const certs = join(dir, 'certs');
        await mkdir(certs);
        await writeFile(join(certs, 'ca.crt'), pem);
        const { stdout } = await exec('skopeo', [
          'inspect',
          '--cert-dir',
          certs,
          `docker://${s.host}/tls/app:v1`,
        ]);
        assert.equal((JSON.parse(stdout) as { Digest: string }).Digest, img.manifest.descriptor.digest);
      }
    } finally {
      await client.close();
      await untrusting.close();
      await s.stop();
    }
  });
});
