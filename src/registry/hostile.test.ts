// Hostile and unusual registries, played by small loopback servers: oversized manifests
// and tokens, schema-1 answers, missing or lying headers, paginated and looping tag lists,
// a referrers API that ignores filters, huge error bodies, TLS failures, cancellation.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import {
  createServer as createHttp,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttps } from 'node:https';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { MediaType } from '../spec/media-types.js';
import { blob, makeImage } from '../testing/images.js';
import { tempDir } from '../testing/tmp.js';
import { RegistryClient } from './client.js';
import { RegistryTarget } from './target.js';

const code = (e: unknown) => (e instanceof StratumError ? e.code : String(e));
type Handler = (req: IncomingMessage, res: ServerResponse) => void;

const client = new RegistryClient({ retries: 2, backoff: { initialMs: 1, maxMs: 5 } });
after(() => client.close());

/** A fake registry; `seen` lists `METHOD url` of every request. */
async function fake(handler: Handler): Promise<{ host: string; seen: string[]; close: () => Promise<void> }> {
  const seen: string[] = [];
  const server: Server = createHttp((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    host,
    seen,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const oci = await makeImage();
const manifestBytes = oci.manifest.bytes;
const manifestDigest = oci.manifest.descriptor.digest;

describe('hostile registries', () => {
  it('a manifest over 4 MiB is ERR_TOO_LARGE (announced, or only streamed)', async () => {
    const huge = Buffer.alloc(5 * 1024 * 1024, 0x20);
    for (const announce of [true, false]) {
      const f = await fake((req, res) => {
        res.writeHead(200, {
          'content-type': MediaType.OciManifest,
          ...(announce ? { 'content-length': String(huge.length) } : {}),
        });
        res.end(req.method === 'HEAD' ? undefined : huge);
      });
      try {
        await assert.rejects(
          new RegistryTarget(client, f.host, 'app').resolve('1'),
          (e) => code(e) === 'ERR_TOO_LARGE',
        );
      } finally {
        await f.close();
      }
    }
  });

  it('digests and tags are validated before any request', async () => {
    const f = await fake((_req, res) => res.end());
    try {
      const t = new RegistryTarget(client, f.host, 'app');
      for (const bad of ['sha256:../../../v2/other/manifests/x', 'sha256:abc/def', 'sha256:%2e%2e']) {
        await assert.rejects(t.resolve(bad), (e) => code(e) === 'ERR_INVALID_DIGEST', bad);
      }
      for (const bad of ['../x', 'a/b', '', 'x?y', 'x#y']) {
        await assert.rejects(t.resolve(bad), (e) => code(e) === 'ERR_INVALID_REFERENCE', bad);
      }
      assert.deepEqual(f.seen, []);
    } finally {
      await f.close();
    }
  });

  it('a schema-1 Content-Type is ERR_SCHEMA1_UNSUPPORTED, on HEAD and on GET', async () => {
    for (const onHead of [true, false]) {
      const f = await fake((req, res) => {
        const schema1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
        const body = Buffer.from('{"schemaVersion":1,"name":"app","tag":"1","fsLayers":[]}');
        res.writeHead(200, {
          'content-type': req.method === 'HEAD' && !onHead ? 'application/octet-stream' : schema1,
          'content-length': String(body.length),
        });
        res.end(req.method === 'HEAD' ? undefined : body);
      });
      try {
        await assert.rejects(new RegistryTarget(client, f.host, 'app').resolve('1'), (e) => {
          assert.equal(code(e), 'ERR_SCHEMA1_UNSUPPORTED');
          assert.match((e as Error).message, /schema 1/);
          return true;
        });
      } finally {
        await f.close();
      }
    }
  });

  it('HEAD without a digest: the manifest is fetched and hashed; its type read from the document', async () => {
    const f = await fake((req, res) => {
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': String(manifestBytes.length),
      });
      res.end(req.method === 'HEAD' ? undefined : manifestBytes);
    });
    try {
      const d = await new RegistryTarget(client, f.host, 'app').resolve('1');
      assert.deepEqual(d, {
        mediaType: MediaType.OciManifest,
        digest: manifestDigest,
        size: manifestBytes.length,
      });
      assert.deepEqual(f.seen, ['HEAD /v2/app/manifests/1', 'GET /v2/app/manifests/1']);
    } finally {
      await f.close();
    }
  });

  it('a registry that lies about a digest is caught', async () => {
    const other = Buffer.from(
      JSON.stringify({ ...JSON.parse(manifestBytes.toString()), annotations: { a: 'b' } }),
    );
    const f = await fake((req, res) => {
      // claims the requested digest, serves other bytes
      res.writeHead(200, {
        'content-type': MediaType.OciManifest,
        'content-length': String(other.length),
        'docker-content-digest': digestBytes(other),
      });
      res.end(req.method === 'HEAD' ? undefined : other);
    });
    try {
      const t = new RegistryTarget(client, f.host, 'app');
      await assert.rejects(t.resolve(manifestDigest), (e) => code(e) === 'ERR_DIGEST_MISMATCH');
      await assert.rejects(t.fetch(oci.manifest.descriptor), (e) => code(e) === 'ERR_SIZE_MISMATCH');
    } finally {
      await f.close();
    }
  });

  it('a blob longer than its descriptor is ERR_SIZE_MISMATCH', async () => {
    const b = blob(MediaType.OciLayer, Buffer.from('exactly this'));
    const f = await fake((_req, res) => {
      res.writeHead(200, { 'content-length': '40' });
      res.end(Buffer.concat([b.bytes, Buffer.alloc(28, 1)]));
    });
    try {
      const s = await new RegistryTarget(client, f.host, 'app').fetch(b.descriptor);
      await assert.rejects(
        (async () => {
          for await (const _ of s) {
          }
        })(),
        (e) => code(e) === 'ERR_SIZE_MISMATCH',
      );
    } finally {
      await f.close();
    }
  });

  it('follows Link pagination (relative), and stops a loop', async () => {
    const all = ['a', 'b', 'c', 'd', 'e'];
    const f = await fake((req, res) => {
      const u = new URL(req.url ?? '', 'http://x');
      if (u.pathname === '/v2/loop/tags/list') {
        res.writeHead(200, {
          link: '</v2/loop/tags/list?last=x>; rel="next"',
          'content-type': 'application/json',
        });
        res.end(JSON.stringify({ name: 'loop', tags: ['x'] }));
        return;
      }
      const n = Number(u.searchParams.get('n') ?? 100);
      const last = u.searchParams.get('last');
      const start = last ? all.indexOf(last) + 1 : 0;
      const page = all.slice(start, start + n);
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (start + n < all.length) headers.link = `</v2/app/tags/list?n=${n}&last=${page.at(-1)}>; rel="next"`;
      res.writeHead(200, headers);
      res.end(JSON.stringify({ name: 'app', tags: page }));
    });
    try {
      const got: string[] = [];
      for await (const t of new RegistryTarget(client, f.host, 'app').tags({ n: 2 })) got.push(t);
      assert.deepEqual(got, all);
      assert.deepEqual(f.seen, [
        'GET /v2/app/tags/list?n=2',
        'GET /v2/app/tags/list?n=2&last=b',
        'GET /v2/app/tags/list?n=2&last=d',
      ]);
      const after: string[] = [];
      for await (const t of new RegistryTarget(client, f.host, 'app').tags({ n: 2, last: 'c' }))
        after.push(t);
      assert.deepEqual(after, ['d', 'e']);
      await assert.rejects(
        (async () => {
          for await (const _ of new RegistryTarget(client, f.host, 'loop').tags()) {
          }
        })(),
        (e) => code(e) === 'ERR_REGISTRY' && /loops/.test(String(e)),
      );
    } finally {
      await f.close();
    }
  });

  it('refuses tag lists with hostile tags', async () => {
    const f = await fake((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: 'app', tags: ['ok', '../../etc'] }));
    });
    try {
      const got: string[] = [];
      await assert.rejects(
        (async () => {
          for await (const t of new RegistryTarget(client, f.host, 'app').tags()) got.push(t);
        })(),
        (e) => code(e) === 'ERR_INVALID_DOCUMENT',
      );
      assert.deepEqual(got, ['ok']);
    } finally {
      await f.close();
    }
  });

  it('referrers API: filters client-side when the registry did not, follows Link', async () => {
    const d = (n: number, artifactType: string) => ({
      mediaType: MediaType.OciManifest,
      digest: digestBytes(`r${n}`),
      size: 10,
      artifactType,
    });
    for (const applied of [false, true]) {
      const f = await fake((req, res) => {
        const u = new URL(req.url ?? '', 'http://x');
        const page2 = u.searchParams.get('page') === '2';
        const wanted = u.searchParams.get('artifactType');
        let manifests = page2 ? [d(3, 'type/sig')] : [d(1, 'type/sbom'), d(2, 'type/sig')];
        if (applied && wanted) manifests = manifests.filter((m) => m.artifactType === wanted);
        const headers: Record<string, string> = { 'content-type': MediaType.OciIndex };
        if (applied && wanted) headers['oci-filters-applied'] = 'artifactType';
        if (!page2)
          headers.link = `<${u.pathname}?page=2${wanted ? `&artifactType=${wanted}` : ''}>; rel="next"`;
        res.writeHead(200, headers);
        res.end(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }));
      });
      try {
        const t = new RegistryTarget(client, f.host, 'app');
        const all = await t.referrers(oci.manifest.descriptor);
        assert.equal(all.length, 3);
        const sigs = await t.referrers(oci.manifest.descriptor, { artifactType: 'type/sig' });
        assert.deepEqual(
          sigs.map((x) => x.digest),
          [digestBytes('r2'), digestBytes('r3')],
        );
        assert.ok(f.seen.every((s) => s.startsWith(`GET /v2/app/referrers/${manifestDigest}`)));
      } finally {
        await f.close();
      }
    }
  });

  it('maps error envelopes, bounds huge error bodies', async () => {
    const f = await fake((req, res) => {
      if (req.url?.includes('denied')) {
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }],
          }),
        );
        return;
      }
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(Buffer.alloc(8 * 1024 * 1024, 0x41));
    });
    try {
      await assert.rejects(new RegistryTarget(client, f.host, 'denied').resolve('1'), (e) => {
        assert.equal(code(e), 'ERR_DENIED');
        assert.equal(
          (e as Error).message,
          `pull manifest ${f.host}/denied:1: denied: requested access to the resource is denied`,
        );
        return true;
      });
      await assert.rejects(
        new RegistryTarget(client, f.host, 'app').tags()[Symbol.asyncIterator]().next(),
        (e) => {
          assert.equal(code(e), 'ERR_REGISTRY');
          assert.ok((e as Error).message.length < 400);
          return true;
        },
      );
    } finally {
      await f.close();
    }
  });

  it('token answers: too large is ERR_TOO_LARGE; without a token is ERR_REGISTRY; realms must be http(s)', async () => {
    let mode = 'large';
    const f = await fake((req, res) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        if (mode === 'large') res.end(`{"token":"${'a'.repeat(2 * 1024 * 1024)}"}`);
        else res.end('{"expires_in": 300}');
        return;
      }
      const realm = mode === 'scheme' ? 'file:///etc/passwd' : `http://${req.headers.host}/token`;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="fake"` });
      res.end();
    });
    try {
      const fresh = () => new RegistryClient({ retries: 0 });
      for (const [m, want] of [
        ['large', 'ERR_TOO_LARGE'],
        ['none', 'ERR_REGISTRY'],
        ['scheme', 'ERR_UNSAFE_REDIRECT'],
      ] as const) {
        mode = m;
        const c = fresh();
        try {
          await assert.rejects(new RegistryTarget(c, f.host, 'app').resolve('1'), (e) => code(e) === want, m);
        } finally {
          await c.close();
        }
      }
    } finally {
      await f.close();
    }
  });

  it('cancellation: an aborted signal is ERR_ABORTED', async () => {
    const f = await fake(() => {
      // never answers
    });
    try {
      const ac = new AbortController();
      const p = new RegistryTarget(client, f.host, 'app').resolve('1', { signal: ac.signal });
      setTimeout(() => ac.abort(), 20);
      await assert.rejects(p, (e) => code(e) === 'ERR_ABORTED');
      await assert.rejects(
        new RegistryTarget(client, f.host, 'app').resolve('1', { signal: AbortSignal.abort() }),
        (e) => code(e) === 'ERR_ABORTED',
      );
    } finally {
      await f.close();
    }
  });
});

describe('TLS', () => {
  it('an untrusted certificate is ERR_TLS; tlsVerify:false or the CA make it work', async (t) => {
    const dir = await tempDir(t);
    await promisify(execFile)('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]);
    const cert = await readFile(join(dir, 'cert.pem'));
    const blobBytes = Buffer.alloc(700_000);
    for (let i = 0; i < blobBytes.length; i++) blobBytes[i] = (i * 31) & 0xff;
    const server = createHttps({ key: await readFile(join(dir, 'key.pem')), cert }, (req, res) => {
      if (req.url?.includes('/blobs/')) {
        // a blob download (over the lean HTTP/1.1 reader), chunked to exercise both framings
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.write(blobBytes.subarray(0, 300_000));
        res.end(blobBytes.subarray(300_000));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    const make = (extra: object) => new RegistryClient({ httpsHosts: [host], retries: 0, ...extra });
    const clients = [make({}), make({ tlsVerify: false }), make({ ca: cert })];
    try {
      await assert.rejects(clients[0]!.ping(host), (e) => code(e) === 'ERR_TLS');
      await clients[1]!.ping(host);
      await clients[2]!.ping(host);
      assert.equal(clients[2]!.baseUrl(host), `https://${host}`);
      const blobGet = (c: RegistryClient) =>
        c.request({
          registry: host,
          method: 'GET',
          url: '/v2/app/blobs/sha256:x',
          scopes: [],
          what: 'blob',
          bulk: true,
        });
      await assert.rejects(blobGet(clients[0]!), (e) => code(e) === 'ERR_TLS');
      for (const c of [clients[1]!, clients[2]!]) {
        const res = await blobGet(c);
        assert.deepEqual(await readAll(res.body, 1 << 20), blobBytes);
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('tlsVerify:false falls back to plain HTTP when the server does not speak TLS', async () => {
    const f = await fake((_req, res) => {
      res.writeHead(200);
      res.end('{}');
    });
    const strict = new RegistryClient({ httpsHosts: [f.host], retries: 0 });
    const lax = new RegistryClient({ httpsHosts: [f.host], tlsVerify: false, retries: 0 });
    try {
      await assert.rejects(strict.ping(f.host), (e) => ['ERR_TLS', 'ERR_NETWORK'].includes(code(e)));
      await lax.ping(f.host);
      assert.equal(lax.baseUrl(f.host), `http://${f.host}`);
    } finally {
      await Promise.all([strict.close(), lax.close(), f.close()]);
    }
  });
});

it('a server that sends a body with its HEAD answers cannot shift the next answer on a kept connection', async () => {
  // connections stay open after HEAD (a push asks one per blob); the stray body must not be
  // read as the start of the next response
  let connections = 0;
  const server = createNetServer((s) => {
    connections++;
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\r\n\r\n'); i >= 0; i = buf.indexOf('\r\n\r\n')) {
        const which = buf.startsWith('GET') ? 'get' : 'head';
        buf = buf.slice(i + 4);
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Which: ${which}\r\n\r\n${which.padEnd(5, '.')}`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new RegistryClient({ backoff: { initialMs: 1, maxMs: 5 } });
  try {
    const head = await client.request({
      registry: host,
      method: 'HEAD',
      url: '/v2/a',
      scopes: [],
      what: 'head',
    });
    assert.equal(head.headers['x-which'], 'head');
    await new Promise((done) => {
      head.body.on('end', done);
      head.body.resume();
    });
    const get = await client.request({
      registry: host,
      method: 'GET',
      url: '/v2/b',
      scopes: [],
      what: 'get',
    });
    assert.equal(get.headers['x-which'], 'get');
    assert.equal((await readAll(get.body, 100)).toString(), 'get..');
    assert.ok(connections >= 1);
  } finally {
    await client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
