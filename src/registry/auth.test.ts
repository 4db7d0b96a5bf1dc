// Authentication against real registries: htpasswd (Basic) and token auth (a local token
// server issuing ES256 JWTs), token scopes and reuse, credentials from a DOCKER_CONFIG
// directory and from credential helpers on PATH, login and logout.

import assert from 'node:assert/strict';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { startFaultProxy } from '../testing/fault-proxy.js';
import { makeImage, pushImage } from '../testing/images.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../testing/registry.js';
import { makeTempDir, tempDir } from '../testing/tmp.js';
import { startTokenServer, type TokenServer } from '../testing/token-server.js';
import { RegistryClient } from './client.js';
import { DockerConfigCredentials, login, logout, staticCredentials } from './credentials.js';
import { RegistryTarget } from './target.js';

const skip = registryAvailable() ? false : 'docker-registry is not installed';
const code = (e: unknown) => (e instanceof StratumError ? e.code : String(e));
const fast = { backoff: { initialMs: 1, maxMs: 5 } } as const;
let n = 0;
const repo = (p = 'r') => `${p}${++n}`;

async function roundTrip(t: RegistryTarget): Promise<void> {
  const img = await makeImage({ layers: [[{ path: 'f', content: `content ${t.repository}` }]] });
  await pushImage(t, img, 'v1');
  const d = await t.resolve('v1');
  assert.equal(d.digest, img.manifest.descriptor.digest);
  const layer = img.layers[0]!;
  assert.deepEqual(await readAll(await t.fetch(layer.descriptor), 1 << 20), layer.bytes);
}

/** A fake `docker-credential-<name>` (a node script) keeping its store in a JSON file. */
async function makeHelper(
  dir: string,
  name: string,
  initial: Record<string, { Username: string; Secret: string }>,
) {
  const state = join(dir, `${name}.json`);
  await writeFile(
    state,
    JSON.stringify(Object.fromEntries(Object.entries(initial).map(([k, v]) => [k, { ServerURL: k, ...v }]))),
  );
  const script = `#!/usr/bin/env node
const fs = require('fs');
const state = ${JSON.stringify(state)};
const action = process.argv[2];
const input = fs.readFileSync(0, 'utf8');
const db = JSON.parse(fs.readFileSync(state, 'utf8'));
fs.appendFileSync(state + '.log', action + ' ' + input.trim() + '\\n');
const notFound = () => { process.stdout.write('credentials not found in native keychain\\n'); process.exit(1); };
if (action === 'get') {
  const e = db[input.trim()];
  if (!e) notFound();
  process.stdout.write(JSON.stringify({ ServerURL: input.trim(), Username: e.Username, Secret: e.Secret }));
} else if (action === 'store') {
  const o = JSON.parse(input);
  db[o.ServerURL] = o;
  fs.writeFileSync(state, JSON.stringify(db));
} else if (action === 'erase') {
  if (!db[input.trim()]) notFound();
  delete db[input.trim()];
  fs.writeFileSync(state, JSON.stringify(db));
} else { process.exit(2); }
`;
  const path = join(dir, `docker-credential-${name}`);
  await writeFile(path, script);
  await chmod(path, 0o755);
  return {
    state,
    log: async () =>
      (await readFile(`${state}.log`, 'utf8').catch(() => '')).trim().split('\n').filter(Boolean),
    db: async () =>
      JSON.parse(await readFile(state, 'utf8')) as Record<string, { Username: string; Secret: string }>,
  };
}

describe('htpasswd (Basic) auth', { skip }, () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ auth: { htpasswd: { user: 'alice', password: 's3cret' } } });
  });
  after(async () => reg?.stop());

  it('works with the right password', async () => {
    const client = new RegistryClient({
      ...fast,
      credentials: staticCredentials({ [reg.host]: { username: 'alice', password: 's3cret' } }),
    });
    try {
      await roundTrip(new RegistryTarget(client, reg.host, repo()));
    } finally {
      await client.close();
    }
  });

  it('a wrong password or none is ERR_UNAUTHORIZED, naming what was asked', async () => {
    for (const credentials of [
      staticCredentials({ [reg.host]: { username: 'alice', password: 'wrong' } }),
      undefined,
    ]) {
      const client = new RegistryClient({ ...fast, ...(credentials ? { credentials } : {}) });
      try {
        const t = new RegistryTarget(client, reg.host, 'app');
        await assert.rejects(t.resolve('1'), (e) => {
          assert.equal(code(e), 'ERR_UNAUTHORIZED');
          assert.match((e as Error).message, new RegExp(`^pull manifest ${reg.host}/app:1: unauthorized`));
          return true;
        });
      } finally {
        await client.close();
      }
    }
  });

  it('login checks the password first: a wrong one writes nothing', async (t) => {
    const dir = await tempDir(t);
    await assert.rejects(
      login(reg.host, 'alice', 'wrong', { configDir: dir }),
      (e) => code(e) === 'ERR_UNAUTHORIZED',
    );
    await assert.rejects(stat(join(dir, 'config.json')), { code: 'ENOENT' });
  });

  it('login stores base64 auth (mode 0600, other settings kept); credentials are read back; logout removes them', async (t) => {
    const dir = await tempDir(t);
    const path = join(dir, 'config.json');
    await writeFile(
      path,
      JSON.stringify({ psFormat: 'table', auths: { 'other.example': { auth: 'eDp5' } } }),
    );
    await login(reg.host, 'alice', 's3cret', { configDir: dir });
    const cfg = JSON.parse(await readFile(path, 'utf8'));
    assert.equal(cfg.psFormat, 'table');
    assert.equal(cfg.auths['other.example'].auth, 'eDp5');
    assert.equal(Buffer.from(cfg.auths[reg.host].auth, 'base64').toString(), 'alice:s3cret');
    assert.equal((await stat(path)).mode & 0o777, 0o600);

    const client = new RegistryClient({
      ...fast,
      credentials: new DockerConfigCredentials({ configDir: dir }),
    });
    try {
      await roundTrip(new RegistryTarget(client, reg.host, repo()));
    } finally {
      await client.close();
    }

    await logout(reg.host, { configDir: dir });
    const after = JSON.parse(await readFile(path, 'utf8'));
    assert.equal(after.auths[reg.host], undefined);
    assert.equal(after.auths['other.example'].auth, 'eDp5');
    await assert.rejects(logout(reg.host, { configDir: dir }), (e) => code(e) === 'ERR_NOT_FOUND');
  });

  it('login accepts a URL for the host as docker does, and refuses what is not a host', async (t) => {
    const dir = await tempDir(t);
    await login(`http://${reg.host}/`, 'alice', 's3cret', { configDir: dir });
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(Object.keys(cfg.auths), [reg.host]);
    for (const bad of ['a b', 'host/path', '']) {
      await assert.rejects(
        login(bad, 'alice', 's3cret', { configDir: dir }),
        (e) => code(e) === 'ERR_INVALID_ARGUMENT',
      );
    }
    await assert.rejects(
      login(reg.host, 'al:ice', 's3cret', { configDir: dir }),
      (e) => code(e) === 'ERR_INVALID_ARGUMENT',
    );
  });

  it('reads DOCKER_CONFIG from the environment, with username/password entries', async (t) => {
    const dir = await tempDir(t);
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({ auths: { [`http://${reg.host}/v2/`]: { username: 'alice', password: 's3cret' } } }),
    );
    const creds = new DockerConfigCredentials({ env: { DOCKER_CONFIG: dir, HOME: '/nonexistent' } });
    assert.deepEqual(await creds.get(reg.host), { username: 'alice', password: 's3cret' });
    assert.equal(await creds.get('elsewhere.example'), undefined);
  });

  it('gets credentials from a credential helper on PATH', async (t) => {
    const dir = await tempDir(t);
    const helper = await makeHelper(dir, 'stratumtest', {
      [reg.host]: { Username: 'alice', Secret: 's3cret' },
    });
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credHelpers: { [reg.host]: 'stratumtest' } }));
    const env = { DOCKER_CONFIG: dir, PATH: `${dir}:${process.env.PATH}` };
    const client = new RegistryClient({ ...fast, credentials: new DockerConfigCredentials({ env }) });
    try {
      await roundTrip(new RegistryTarget(client, reg.host, repo()));
    } finally {
      await client.close();
    }
    // asked once for the whole round trip, with the server URL on stdin
    assert.deepEqual(await helper.log(), [`get ${reg.host}`]);
    // a host the helper does not know: no credentials, not an error
    assert.equal(await new DockerConfigCredentials({ env }).get('unknown.example'), undefined);
  });

  it('login and logout through a credsStore', async (t) => {
    const dir = await tempDir(t);
    const helper = await makeHelper(dir, 'stratumstore', {});
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'stratumstore' }));
    const env = { DOCKER_CONFIG: dir, PATH: `${dir}:${process.env.PATH}` };
    await login(reg.host, 'alice', 's3cret', { env });
    assert.deepEqual((await helper.db())[reg.host], {
      ServerURL: reg.host,
      Username: 'alice',
      Secret: 's3cret',
    });
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    assert.deepEqual(cfg.auths[reg.host], {}); // no secret in the file
    assert.deepEqual(await new DockerConfigCredentials({ env }).get(reg.host), {
      username: 'alice',
      password: 's3cret',
    });
    await logout(reg.host, { env });
    assert.equal((await helper.db())[reg.host], undefined);
    await assert.rejects(logout(reg.host, { env }), (e) => code(e) === 'ERR_NOT_FOUND');
  });

  it('a failing helper is ERR_CREDENTIALS with what it said; a missing one too', async (t) => {
    const dir = await tempDir(t);
    const bad = join(dir, 'docker-credential-broken');
    await writeFile(bad, '#!/bin/sh\necho "keychain is locked" >&2\nexit 3\n');
    await chmod(bad, 0o755);
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({ credHelpers: { 'a.example': 'broken', 'b.example': 'absent' } }),
    );
    const creds = new DockerConfigCredentials({ env: { DOCKER_CONFIG: dir, PATH: `${dir}:/usr/bin:/bin` } });
    await assert.rejects(creds.get('a.example'), (e) => {
      assert.equal(code(e), 'ERR_CREDENTIALS');
      assert.match((e as Error).message, /docker-credential-broken get failed: keychain is locked/);
      return true;
    });
    await assert.rejects(
      creds.get('b.example'),
      (e) => code(e) === 'ERR_CREDENTIALS' && /not installed/.test(String(e)),
    );
  });

  it('hostile config files are ERR_CREDENTIALS', async (t) => {
    const dir = await tempDir(t);
    const creds = new DockerConfigCredentials({ configDir: dir });
    for (const text of [
      '{not json',
      '[]',
      '{"auths": 5}',
      `{"auths": {"${reg.host}": {"auth": "bm9jb2xvbg=="}}}`,
    ]) {
      await writeFile(join(dir, 'config.json'), text);
      await assert.rejects(creds.get(reg.host), (e) => code(e) === 'ERR_CREDENTIALS', text);
    }
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({ credHelpers: { [reg.host]: '../../bin/sh' } }),
    );
    await assert.rejects(creds.get(reg.host), (e) => code(e) === 'ERR_CREDENTIALS');
  });

  it('Docker Hub entries are found under https://index.docker.io/v1/', async (t) => {
    const dir = await tempDir(t);
    const auth = Buffer.from('hubuser:hubpass').toString('base64');
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth } } }),
    );
    const creds = new DockerConfigCredentials({ configDir: dir });
    for (const h of ['docker.io', 'registry-1.docker.io', 'index.docker.io']) {
      assert.deepEqual(await creds.get(h), { username: 'hubuser', password: 'hubpass' });
    }
  });
});

describe('token auth', { skip }, () => {
  let tokens: TokenServer;
  let reg: TestRegistry;
  before(async () => {
    tokens = await startTokenServer({
      users: { alice: 'pw', bob: 'pw' },
      allowAnonymous: true,
      refreshTokens: { 'rt-alice': 'alice' },
      grant: ({ account, name, actions }) => {
        if (account === 'alice') return actions;
        if (account === 'bob') return name.startsWith('bob') ? actions : [];
        return actions.filter((a) => a === 'pull');
      },
    });
    reg = await startRegistry({ auth: { token: tokens.registryAuth } });
  });
  after(async () => {
    await reg?.stop();
    await tokens?.stop();
  });
  const asUser = (user: string, password = 'pw') =>
    new RegistryClient({
      ...fast,
      credentials: staticCredentials({ [reg.host]: { username: user, password } }),
    });

  it('one token (pull,push) serves a whole push and pull of a repository', async () => {
    const client = asUser('alice');
    try {
      const before = tokens.requests.length;
      const t = new RegistryTarget(client, reg.host, repo('tok'));
      await roundTrip(t);
      const asked = tokens.requests.slice(before);
      assert.deepEqual(asked, [
        { method: 'GET', account: 'alice', scopes: [`repository:${t.repository}:pull,push`], issued: true },
      ]);
      // another repository needs its own token
      await roundTrip(new RegistryTarget(client, reg.host, repo('tok')));
      assert.equal(tokens.requests.length - before, 2);
    } finally {
      await client.close();
    }
  });

  it('concurrent requests that meet the first challenge together share one token', async () => {
    const client = asUser('alice');
    try {
      const before = tokens.requests.length;
      const t = new RegistryTarget(client, reg.host, repo('par'));
      const img = await makeImage({
        layers: [0, 1, 2, 3, 4, 5].map((i) => [{ path: `f${i}`, content: `layer ${i}` }]),
      });
      await Promise.all(img.layers.map((l) => t.push(l.descriptor, l.bytes)));
      assert.equal(tokens.requests.length - before, 1);
    } finally {
      await client.close();
    }
  });

  it('anonymous users pull but cannot push; a wrong password is ERR_UNAUTHORIZED from the token server', async () => {
    const alice = asUser('alice');
    const anon = new RegistryClient(fast);
    const wrong = asUser('alice', 'nope');
    try {
      const name = repo('pub');
      await roundTrip(new RegistryTarget(alice, reg.host, name));
      const d = await new RegistryTarget(anon, reg.host, name).resolve('v1');
      assert.equal(d.mediaType, 'application/vnd.oci.image.manifest.v1+json');
      const img = await makeImage({ layers: [[{ path: 'x', content: 'anonymous' }]] });
      await assert.rejects(
        pushImage(new RegistryTarget(anon, reg.host, name), img),
        (e) => code(e) === 'ERR_UNAUTHORIZED',
      );
      await assert.rejects(new RegistryTarget(wrong, reg.host, name).resolve('v1'), (e) => {
        assert.equal(code(e), 'ERR_UNAUTHORIZED');
        assert.match((e as Error).message, /token server refused/);
        return true;
      });
    } finally {
      await Promise.all([alice.close(), anon.close(), wrong.close()]);
    }
  });

  it('a mount asks for pull on the source too; without it the mount is declined', async () => {
    const alice = asUser('alice');
    const bob = asUser('bob');
    try {
      const src = new RegistryTarget(alice, reg.host, repo('src'));
      const img = await makeImage({ layers: [[{ path: 'm', content: 'mount me' }]] });
      await pushImage(src, img, 'v1');
      const layer = img.layers[0]!.descriptor;
      const dst = new RegistryTarget(alice, reg.host, repo('dst'));
      const before = tokens.requests.length;
      assert.equal(await dst.mount(layer, src.repository), true);
      const scopes = tokens.requests.slice(before).flatMap((r) => r.scopes);
      assert.ok(scopes.includes(`repository:${src.repository}:pull`), scopes.join(' '));
      assert.ok(scopes.includes(`repository:${dst.repository}:pull,push`), scopes.join(' '));
      assert.equal(await dst.exists(layer), true);

      const bobs = new RegistryTarget(bob, reg.host, repo('bob'));
      assert.equal(await bobs.mount(layer, src.repository), false);
      assert.equal(await bobs.exists(layer), false);
    } finally {
      await Promise.all([alice.close(), bob.close()]);
    }
  });

  it('an identity token from config.json is exchanged with the OAuth2 refresh grant', async (t) => {
    const dir = await tempDir(t);
    await writeFile(
      join(dir, 'config.json'),
      JSON.stringify({ auths: { [reg.host]: { identitytoken: 'rt-alice' } } }),
    );
    const client = new RegistryClient({
      ...fast,
      credentials: new DockerConfigCredentials({ configDir: dir }),
    });
    try {
      const before = tokens.requests.length;
      await roundTrip(new RegistryTarget(client, reg.host, repo('idt')));
      assert.deepEqual(
        tokens.requests.slice(before).map((r) => [r.method, r.account, r.issued]),
        [['POST', 'alice', true]],
      );
    } finally {
      await client.close();
    }
  });

  it('a token the registry stops accepting is dropped and fetched again', async () => {
    const proxy = await startFaultProxy(reg.url);
    const client = new RegistryClient({
      ...fast,
      credentials: staticCredentials({ [proxy.host]: { username: 'alice', password: 'pw' } }),
    });
    try {
      const t = new RegistryTarget(client, proxy.host, repo('refresh'));
      await roundTrip(t);
      const before = tokens.requests.length;
      const { service, realm } = tokens.registryAuth;
      proxy.setPlan([
        {
          method: 'HEAD',
          path: /\/manifests\/v1$/,
          times: 1,
          action: {
            kind: 'status',
            status: 401,
            headers: {
              'www-authenticate': `Bearer realm="${realm}",service="${service}",scope="repository:${t.repository}:pull",error="invalid_token"`,
            },
          },
        },
      ]);
      await t.resolve('v1');
      assert.equal(tokens.requests.length - before, 1);
      // the faulted request went out with the old token, the retry with a new one
      const auths = proxy.requests
        .filter((r) => r.url.endsWith('/manifests/v1'))
        .slice(-2)
        .map((r) => r.headers.authorization);
      assert.equal(auths.length, 2);
      assert.ok(auths[0]?.startsWith('Bearer ') && auths[1]?.startsWith('Bearer '));
      assert.notEqual(auths[0], auths[1]);
    } finally {
      await client.close();
      await proxy.stop();
    }
  });

  it('login against a token registry checks the password at the token server', async () => {
    const { path, cleanup } = await makeTempDir();
    try {
      await assert.rejects(
        login(reg.host, 'alice', 'wrong', { configDir: path }),
        (e) => code(e) === 'ERR_UNAUTHORIZED',
      );
      await assert.rejects(stat(join(path, 'config.json')), { code: 'ENOENT' });
      await login(reg.host, 'alice', 'pw', { configDir: path });
      const cfg = JSON.parse(await readFile(join(path, 'config.json'), 'utf8'));
      assert.equal(Buffer.from(cfg.auths[reg.host].auth, 'base64').toString(), 'alice:pw');
    } finally {
      await cleanup();
    }
  });
});
