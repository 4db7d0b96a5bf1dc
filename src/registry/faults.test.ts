// Resilience against a real registry behind a fault proxy: dropped connections mid-blob
// (resumed with Range, verified), 5xx / 429 / resets (retried with backoff), truncated and
// corrupted bytes (errors, or retried when that is safe), and redirects (credentials never
// leave the registry's origin; non-http schemes and loops refused).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { copy } from '../copy/copy.js';
import { RegistryError, StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { MediaType } from '../spec/media-types.js';
import { type FaultProxy, startFaultProxy } from '../testing/fault-proxy.js';
import { blob, makeImage, pushImage, type TestImage } from '../testing/images.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../testing/registry.js';
import { RegistryClient } from './client.js';
import { staticCredentials } from './credentials.js';
import { RegistryTarget } from './target.js';

const skip = registryAvailable() ? false : 'docker-registry is not installed';
const code = (e: unknown) => (e instanceof StratumError ? e.code : String(e));
const read = (s: NodeJS.ReadableStream) => readAll(s as AsyncIterable<Uint8Array>, 1 << 26);
const RETRIES = 3;
const RESUMES = 3;

describe('faults between client and registry', { skip }, () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  let direct: RegistryTarget;
  let viaProxy: RegistryTarget;
  const big = blob(MediaType.OciLayer, randomBytes(256 * 1024));
  let img: TestImage;
  const BLOB_GET = new RegExp(`/blobs/${big.descriptor.digest}$`);

  before(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg.url);
    client = new RegistryClient({
      retries: RETRIES,
      resumeAttempts: RESUMES,
      chunkSize: 64 * 1024,
      backoff: { initialMs: 1, maxMs: 5, maxRetryAfterMs: 10 },
    });
    direct = new RegistryTarget(client, reg.host, 'app');
    viaProxy = new RegistryTarget(client, proxy.host, 'app');
    await direct.push(big.descriptor, big.bytes);
    img = await makeImage();
    await pushImage(direct, img, 'v1');
  });
  after(async () => {
    await client?.close();
    await proxy?.stop();
    await reg?.stop();
  });
  beforeEach(() => {
    proxy.setPlan([]);
    proxy.requests.length = 0;
  });
  const requestsTo = (re: RegExp, method = 'GET') =>
    proxy.requests.filter((r) => r.method === method && re.test(r.url));

  it('a copy asks about each blob once: push trusts the exists() that came just before', async () => {
    const fresh = new RegistryTarget(client, proxy.host, 'fresh');
    await copy(direct, 'v1', fresh, 'v1');
    const heads = requestsTo(/\/blobs\/sha256:/, 'HEAD');
    assert.equal(heads.length, img.blobs.length - 1, 'one HEAD per blob (the manifest is not a blob)');
    assert.equal(new Set(heads.map((r) => r.url)).size, heads.length);
    // told `absent` for a blob that is there, a push uploads it again: still correct
    await fresh.push(img.layers[0]!.descriptor, img.layers[0]!.bytes, { absent: true });
    assert.ok(await fresh.exists(img.layers[0]!.descriptor));
  });

  it('a connection dropped mid-blob is resumed with Range and verified', async () => {
    proxy.setPlan([
      { method: 'GET', path: BLOB_GET, times: 1, action: { kind: 'drop', afterBytes: 100_000 } },
    ]);
    let progress = 0;
    const bytes = await read(await viaProxy.fetch(big.descriptor, { onProgress: (n) => (progress += n) }));
    assert.deepEqual(bytes, big.bytes);
    assert.equal(progress, big.bytes.length);
    const gets = requestsTo(BLOB_GET);
    assert.equal(gets.length, 2);
    assert.equal(gets[0]?.headers.range, undefined);
    assert.equal(gets[1]?.headers.range, 'bytes=100000-');
  });

  it('a registry that ignores Range (200 instead of 206) has the first bytes skipped', async () => {
    proxy.setPlan([
      { method: 'GET', path: BLOB_GET, times: 1, action: { kind: 'drop', afterBytes: 70_000 } },
      { method: 'GET', path: BLOB_GET, action: { kind: 'headers', removeRequest: ['range'] } },
    ]);
    assert.deepEqual(await read(await viaProxy.fetch(big.descriptor)), big.bytes);
    assert.equal(requestsTo(BLOB_GET).length, 2);
  });

  it('a body that stalls is abandoned after the idle timeout and resumed', async () => {
    const impatient = new RegistryClient({ idleTimeoutMs: 200, backoff: { initialMs: 1, maxMs: 5 } });
    try {
      proxy.setPlan([
        { method: 'GET', path: BLOB_GET, times: 1, action: { kind: 'stall', afterBytes: 50_000 } },
      ]);
      const t = new RegistryTarget(impatient, proxy.host, 'app');
      assert.deepEqual(await read(await t.fetch(big.descriptor)), big.bytes);
      assert.equal(requestsTo(BLOB_GET).at(-1)?.headers.range, 'bytes=50000-');
    } finally {
      await impatient.close();
    }
  });

  it('aborting mid-blob ends the stream with ERR_ABORTED, without resuming', async () => {
    proxy.setPlan([
      { method: 'GET', path: BLOB_GET, times: 1, action: { kind: 'stall', afterBytes: 50_000 } },
    ]);
    const ac = new AbortController();
    const s = await viaProxy.fetch(big.descriptor, {
      signal: ac.signal,
      onProgress: () => ac.abort(),
    });
    await assert.rejects(read(s), (e) => code(e) === 'ERR_ABORTED');
    assert.equal(requestsTo(BLOB_GET).length, 1);
  });

  it('resuming is bounded: a connection that always drops is ERR_NETWORK', async () => {
    proxy.setPlan([{ method: 'GET', path: BLOB_GET, action: { kind: 'drop', afterBytes: 10 } }]);
    await assert.rejects(read(await viaProxy.fetch(big.descriptor)), (e) => code(e) === 'ERR_NETWORK');
    assert.equal(requestsTo(BLOB_GET).length, 1 + RESUMES);
  });

  it('truncated bodies: resumed when a retry gets the rest, else ERR_SIZE_MISMATCH', async () => {
    proxy.setPlan([{ method: 'GET', path: BLOB_GET, times: 1, action: { kind: 'truncate', bytes: 5000 } }]);
    assert.deepEqual(await read(await viaProxy.fetch(big.descriptor)), big.bytes);
    proxy.setPlan([{ method: 'GET', path: BLOB_GET, action: { kind: 'truncate', bytes: 5000 } }]);
    await assert.rejects(read(await viaProxy.fetch(big.descriptor)), (e) => code(e) === 'ERR_SIZE_MISMATCH');
  });

  it('corrupted blob bytes are ERR_DIGEST_MISMATCH', async () => {
    proxy.setPlan([{ method: 'GET', path: BLOB_GET, action: { kind: 'corrupt', at: 12_345 } }]);
    await assert.rejects(
      read(await viaProxy.fetch(big.descriptor)),
      (e) => code(e) === 'ERR_DIGEST_MISMATCH',
    );
  });

  it('damaged manifest bytes are fetched again (never handed out); always damaged is an error', async () => {
    const path = new RegExp(`/manifests/${img.manifest.descriptor.digest}$`);
    proxy.setPlan([{ method: 'GET', path, times: 1, action: { kind: 'corrupt', at: 10 } }]);
    assert.deepEqual(await read(await viaProxy.fetch(img.manifest.descriptor)), img.manifest.bytes);
    proxy.setPlan([{ method: 'GET', path, action: { kind: 'corrupt', at: 10 } }]);
    await assert.rejects(viaProxy.fetch(img.manifest.descriptor), (e) => code(e) === 'ERR_DIGEST_MISMATCH');
    proxy.setPlan([{ method: 'GET', path, action: { kind: 'truncate', bytes: 20 } }]);
    await assert.rejects(viaProxy.fetch(img.manifest.descriptor), (e) => code(e) === 'ERR_SIZE_MISMATCH');
  });

  it('500 now and then is retried; 429 honours Retry-After; resets are retried', async () => {
    const head = /\/manifests\/v1$/;
    proxy.setPlan([{ method: 'HEAD', path: head, times: 2, action: { kind: 'status', status: 500 } }]);
    assert.equal((await viaProxy.resolve('v1')).digest, img.manifest.descriptor.digest);
    assert.equal(requestsTo(head, 'HEAD').length, 3);

    proxy.requests.length = 0;
    proxy.setPlan([
      { method: 'HEAD', path: head, times: 1, action: { kind: 'status', status: 429, retryAfter: '120' } },
    ]);
    assert.equal((await viaProxy.resolve('v1')).digest, img.manifest.descriptor.digest);
    assert.equal(requestsTo(head, 'HEAD').length, 2);

    proxy.requests.length = 0;
    proxy.setPlan([{ method: 'GET', path: BLOB_GET, times: 2, action: { kind: 'reset' } }]);
    assert.deepEqual(await read(await viaProxy.fetch(big.descriptor)), big.bytes);
    assert.equal(requestsTo(BLOB_GET).length, 3);
  });

  it('a registry that keeps failing: ERR_REGISTRY after the retries; 4xx is not retried', async () => {
    const head = /\/manifests\/v1$/;
    proxy.setPlan([{ method: 'HEAD', path: head, action: { kind: 'status', status: 503 } }]);
    await assert.rejects(viaProxy.resolve('v1'), (e) => {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.code, 'ERR_REGISTRY');
      assert.equal(e.status, 503);
      assert.equal(e.retryable, true);
      return true;
    });
    assert.equal(requestsTo(head, 'HEAD').length, 1 + RETRIES);

    proxy.requests.length = 0;
    proxy.setPlan([{ path: head, action: { kind: 'status', status: 400 } }]);
    await assert.rejects(viaProxy.resolve('v1'), (e) => code(e) === 'ERR_REGISTRY');
    // HEAD has no body to explain itself: one GET for the error's words, neither retried
    assert.equal(requestsTo(head, 'HEAD').length, 1);
    assert.equal(requestsTo(head, 'GET').length, 1);
  });

  it('uploads survive 5xx on POST, PATCH and PUT', async () => {
    const t = new RegistryTarget(client, proxy.host, 'pushed');
    proxy.setPlan([
      { method: 'POST', path: /\/blobs\/uploads\/$/, times: 1, action: { kind: 'status', status: 502 } },
      { method: 'PATCH', times: 1, skip: 1, action: { kind: 'status', status: 500 } },
      { method: 'PUT', path: /\/blobs\/uploads\//, times: 1, action: { kind: 'status', status: 503 } },
    ]);
    const chunked = blob(MediaType.OciLayer, randomBytes(150_000));
    await t.push(chunked.descriptor, chunked.bytes);
    const small = blob(MediaType.OciLayer, randomBytes(3000));
    await t.push(small.descriptor, small.bytes);
    assert.deepEqual(
      proxy.requests.filter((r) => r.fault).map((r) => r.method),
      ['POST', 'PATCH', 'PUT'],
    );
    const check = new RegistryTarget(client, reg.host, 'pushed');
    assert.deepEqual(await read(await check.fetch(chunked.descriptor)), chunked.bytes);
    assert.deepEqual(await read(await check.fetch(small.descriptor)), small.bytes);
  });

  it('a failed upload is cancelled', async () => {
    const t = new RegistryTarget(client, proxy.host, 'cancelled');
    proxy.setPlan([{ method: 'PATCH', action: { kind: 'status', status: 400 } }]);
    const b = blob(MediaType.OciLayer, randomBytes(150_000));
    await assert.rejects(t.push(b.descriptor, b.bytes), (e) => code(e) === 'ERR_REGISTRY');
    const deletes = proxy.requests.filter((r) => r.method === 'DELETE');
    assert.equal(deletes.length, 1);
    assert.match(deletes[0]?.url ?? '', /\/blobs\/uploads\//);
  });

  it('redirects: non-http schemes are refused, loops are cut', async () => {
    proxy.setPlan([
      { method: 'GET', path: BLOB_GET, action: { kind: 'redirect', location: 'file:///etc/passwd' } },
    ]);
    await assert.rejects(viaProxy.fetch(big.descriptor), (e) => code(e) === 'ERR_UNSAFE_REDIRECT');
    proxy.requests.length = 0;
    proxy.setPlan([{ method: 'GET', path: BLOB_GET, action: { kind: 'redirect', location: (p) => p } }]);
    await assert.rejects(
      viaProxy.fetch(big.descriptor),
      (e) => code(e) === 'ERR_REGISTRY' && /redirects/.test(String(e)),
    );
    assert.equal(requestsTo(BLOB_GET).length, 6);
  });
});

describe('credentials never follow a redirect to another host', { skip }, () => {
  it('the blob store gets no Authorization; the registry does', async () => {
    const reg = await startRegistry({ auth: { htpasswd: { user: 'alice', password: 's3cret' } } });
    const proxy = await startFaultProxy(reg.url);
    const seen: IncomingHttpHeaders[] = [];
    const b = blob(MediaType.OciLayer, randomBytes(50_000));
    const store = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-length': String(b.bytes.length) });
      res.end(b.bytes);
    });
    await new Promise<void>((r) => store.listen(0, '127.0.0.1', r));
    const storeUrl = `http://127.0.0.1:${(store.address() as AddressInfo).port}`;
    const client = new RegistryClient({
      backoff: { initialMs: 1, maxMs: 5 },
      credentials: staticCredentials({ [proxy.host]: { username: 'alice', password: 's3cret' } }),
    });
    try {
      const t = new RegistryTarget(client, proxy.host, 'secret');
      await t.push(b.descriptor, b.bytes);
      proxy.setPlan([
        {
          method: 'GET',
          path: /\/blobs\/sha256:/,
          action: { kind: 'redirect', location: (p) => `${storeUrl}/storage${p}?X-Signature=abc` },
        },
      ]);
      proxy.requests.length = 0;
      assert.deepEqual(await read(await t.fetch(b.descriptor)), b.bytes);
      const atRegistry = proxy.requests.filter((r) => r.method === 'GET' && /\/blobs\//.test(r.url));
      assert.ok(atRegistry.length >= 1);
      assert.ok(atRegistry.at(-1)?.headers.authorization?.startsWith('Basic '));
      assert.equal(seen.length, 1);
      assert.equal(seen[0]?.authorization, undefined);
      assert.equal(seen[0]?.cookie, undefined);
    } finally {
      await client.close();
      store.closeAllConnections();
      await new Promise<void>((r) => store.close(() => r()));
      await proxy.stop();
      await reg.stop();
    }
  });
});
