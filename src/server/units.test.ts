// Unit tests of the server's parts: repository names and their store names, routes,
// Range and Content-Range, Basic credentials and htpasswd parsing, the error mapping, the
// access-log line and the Prometheus rendering, and upload session expiry and cleanup.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, readdir, truncate, writeFile } from 'node:fs/promises';
import { createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { tempDir } from '../testing/tmp.js';
import { parseBasicAuth, parseHtpasswd } from './htpasswd.js';
import { RegistryHttpError, toHttpError } from './http-error.js';
import { parseContentRange, parseRange } from './http-util.js';
import { formatAccessLine, ServerMetrics } from './metrics.js';
import { isValidTag, parseRepository, servedName, splitStoreRef, tagRefName } from './names.js';
import { matchRoute } from './routes.js';
import { sendFileRange } from './send-file.js';
import { UploadManager } from './uploads.js';

const code = (e: unknown) => (e instanceof RegistryHttpError ? e.registryCode : String(e));

describe('server units: names', () => {
  it('reads repository names the way docker reads image names', () => {
    const cases: [string, string][] = [
      ['alpine', 'docker.io/library/alpine'],
      ['library/alpine', 'docker.io/library/alpine'],
      ['docker.io/library/alpine', 'docker.io/library/alpine'],
      ['team/app', 'docker.io/team/app'],
      ['ghcr.io/org/app', 'ghcr.io/org/app'],
      ['localhost/x', 'localhost/x'],
      ['a.b-c/d__e/f', 'a.b-c/d__e/f'],
    ];
    for (const [name, key] of cases) assert.equal(parseRepository(name).key, key, name);
    assert.equal(tagRefName(parseRepository('team/app'), '1'), 'docker.io/team/app:1');
  });

  it('refuses names outside the grammar with NAME_INVALID', () => {
    for (const bad of [
      '',
      'UPPER',
      '../x',
      'a/../b',
      'a//b',
      '/a',
      'a/',
      'a%2fb',
      'a:5000/b',
      '-a',
      'a/.b',
      `${'a'.repeat(256)}`,
      'a b',
    ]) {
      assert.throws(
        () => parseRepository(bad),
        (e) => code(e) === 'NAME_INVALID',
        bad,
      );
    }
  });

  it('splits store ref names and serves them under the names they came from', () => {
    assert.deepEqual(splitStoreRef('docker.io/library/alpine:3'), {
      key: 'docker.io/library/alpine',
      tag: '3',
    });
    assert.equal(splitStoreRef('latest'), undefined);
    assert.equal(splitStoreRef('not a ref'), undefined);
    assert.equal(servedName('docker.io/library/alpine'), 'library/alpine');
    assert.equal(servedName('docker.io/team/app'), 'team/app');
    assert.equal(servedName('ghcr.io/org/app'), 'ghcr.io/org/app');
    assert.equal(servedName('localhost:5000/x'), undefined);
    for (const name of ['library/alpine', 'team/app', 'ghcr.io/org/app']) {
      assert.equal(servedName(parseRepository(name).key), name);
    }
  });

  it('validates tags as the spec writes them', () => {
    for (const ok of ['latest', 'v1.2.3', '_x', 'A-b_c.d', 'x'.repeat(128)]) assert.ok(isValidTag(ok), ok);
    for (const bad of ['', '.x', '-x', 'a/b', 'a:b', 'x'.repeat(129), 'ü']) assert.ok(!isValidTag(bad), bad);
  });
});

describe('server units: routes and ranges', () => {
  it('matches API paths from the end, so names may hold any number of /', () => {
    assert.deepEqual(matchRoute('/v2/'), { kind: 'base' });
    assert.deepEqual(matchRoute('/v2/a/b/c/manifests/latest'), {
      kind: 'manifest',
      name: 'a/b/c',
      reference: 'latest',
    });
    assert.deepEqual(matchRoute('/v2/a/blobs/uploads/'), { kind: 'uploads', name: 'a' });
    assert.deepEqual(matchRoute('/v2/a/blobs/uploads/id-1'), { kind: 'upload', name: 'a', id: 'id-1' });
    assert.deepEqual(matchRoute('/v2/a/blobs/sha256:x'), { kind: 'blob', name: 'a', digest: 'sha256:x' });
    assert.deepEqual(matchRoute('/v2/a/tags/list'), { kind: 'tags', name: 'a' });
    assert.deepEqual(matchRoute('/v2/a/referrers/sha256:x'), {
      kind: 'referrers',
      name: 'a',
      digest: 'sha256:x',
    });
    assert.deepEqual(matchRoute('/v2/_catalog'), { kind: 'catalog' });
    assert.deepEqual(matchRoute('/v3/a/tags/list'), { kind: 'unknown' });
    assert.deepEqual(matchRoute('/v2/a/manifests/'), { kind: 'unknown' });
  });

  it('parses Range against a size', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
    assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
    assert.deepEqual(parseRange('bytes=-1000', 100), { start: 0, end: 99 });
    assert.deepEqual(parseRange('bytes=50-1000', 100), { start: 50, end: 99 });
    assert.equal(parseRange('bytes=100-', 100), 'unsatisfiable');
    assert.equal(parseRange('bytes=9-5', 100), 'unsatisfiable');
    assert.equal(parseRange('bytes=-0', 100), 'unsatisfiable');
    assert.equal(parseRange('bytes=0-', 0), 'unsatisfiable');
    assert.equal(parseRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseRange('items=0-1', 100), undefined);
    assert.equal(parseRange(undefined, 100), undefined);
  });

  it('parses a chunk Content-Range in the forms clients send', () => {
    assert.deepEqual(parseContentRange('0-99'), { start: 0, end: 99 });
    assert.deepEqual(parseContentRange('bytes 100-199/*'), { start: 100, end: 199 });
    assert.deepEqual(parseContentRange('bytes=100-199'), { start: 100, end: 199 });
    for (const bad of ['', '5', '9-5', 'a-b', '1-2-3', '0-99999999999999999']) {
      assert.throws(
        () => parseContentRange(bad),
        (e) => code(e) === 'BLOB_UPLOAD_INVALID',
        bad,
      );
    }
  });
});

describe('server units: auth and errors', () => {
  it('parses Basic credentials, passwords with colons included', () => {
    const h = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;
    assert.deepEqual(parseBasicAuth(h('u:p:q')), { user: 'u', password: 'p:q' });
    assert.deepEqual(parseBasicAuth(h('u:')), { user: 'u', password: '' });
    assert.equal(parseBasicAuth(h('no-colon')), undefined);
    assert.equal(parseBasicAuth('Bearer x'), undefined);
    assert.equal(parseBasicAuth(undefined), undefined);
    assert.equal(parseBasicAuth(`Basic ${'A'.repeat(9000)}`), undefined);
  });

  it('reads htpasswd like distribution: trimmed lines, comments, first colon', () => {
    const hash = `$2y$05$${'a'.repeat(53)}`;
    const e = parseHtpasswd(`  # comment\n\nalice:${hash}  \r\nbob:${hash}\n`);
    assert.deepEqual([...e.users.keys()], ['alice', 'bob']);
    assert.equal(e.users.get('alice'), hash);
    assert.deepEqual(e.warnings, []);
  });

  it('a real htpasswd -B file, if the tool is installed, is read', async (t) => {
    const r = spawnSync('htpasswd', ['-nbB', 'user', 'pw'], { encoding: 'utf8' });
    if (r.error || r.status !== 0) {
      t.skip('htpasswd (apache2-utils) is not installed');
      return;
    }
    assert.deepEqual([...parseHtpasswd(r.stdout).users.keys()], ['user']);
  });

  it('maps library errors onto spec codes and statuses', () => {
    const m = (c: StratumError['code'], what?: 'manifest' | 'upload') => {
      const h = toHttpError(new StratumError(c, 'x'), what);
      return [h.status, h.registryCode];
    };
    assert.deepEqual(m('ERR_NOT_FOUND'), [404, 'BLOB_UNKNOWN']);
    assert.deepEqual(m('ERR_NOT_FOUND', 'manifest'), [404, 'MANIFEST_UNKNOWN']);
    assert.deepEqual(m('ERR_NOT_FOUND', 'upload'), [404, 'BLOB_UPLOAD_UNKNOWN']);
    assert.deepEqual(m('ERR_DIGEST_MISMATCH'), [400, 'DIGEST_INVALID']);
    assert.deepEqual(m('ERR_SIZE_MISMATCH'), [400, 'SIZE_INVALID']);
    assert.deepEqual(m('ERR_TOO_LARGE'), [413, 'SIZE_INVALID']);
    assert.deepEqual(m('ERR_MEDIA_TYPE_MISMATCH'), [400, 'MANIFEST_INVALID']);
    assert.deepEqual(m('ERR_READ_ONLY'), [405, 'UNSUPPORTED']);
    const internal = toHttpError(new Error('/secret/path exploded'));
    assert.equal(internal.status, 500);
    assert.doesNotMatch(internal.message, /secret/);
  });
});

describe('server units: log and metrics', () => {
  it('writes one printable line per request, escaping what a client sent', () => {
    const line = formatAccessLine({
      time: new Date(0),
      remote: '127.0.0.1',
      user: 'ev\nil',
      method: 'GET',
      path: '/v2/x\r\n2026 forged "line"',
      route: 'unknown',
      status: 404,
      bytesIn: 0,
      bytesOut: 10,
      ms: 1.25,
      aborted: false,
    });
    assert.equal(line.includes('\n'), false);
    assert.equal(line.includes('\r'), false);
    assert.match(
      line,
      /^1970-01-01T00:00:00.000Z 127\.0\.0\.1 ev%0ail "GET \/v2\/x%0d%0a2026%20forged%20"line"" 404 10 1\.3ms$/,
    );
  });

  it('renders counters, byte totals and a cumulative histogram', () => {
    const m = new ServerMetrics();
    const entry = (method: string, status: number, ms: number) => ({
      time: new Date(),
      remote: '-',
      user: undefined,
      method,
      path: '/',
      route: 'blob',
      status,
      bytesIn: 5,
      bytesOut: 100,
      ms,
      aborted: false,
    });
    for (const [method, status, ms] of [
      ['GET', 200, 3],
      ['GET', 200, 300],
      ['GET', 404, 1],
      ['BREW', 418, 1],
    ] as const) {
      m.started();
      m.observe(entry(method, status, ms));
    }
    const text = m.render();
    assert.match(text, /^stratum_registry_http_requests_total\{method="GET",route="blob",status="200"\} 2$/m);
    assert.match(
      text,
      /^stratum_registry_http_requests_total\{method="OTHER",route="blob",status="418"\} 1$/m,
    );
    assert.match(text, /^stratum_registry_http_sent_bytes_total\{method="GET",route="blob"\} 300$/m);
    assert.match(
      text,
      /^stratum_registry_http_request_duration_seconds_bucket\{method="GET",route="blob",le="0.005"\} 2$/m,
    );
    assert.match(
      text,
      /^stratum_registry_http_request_duration_seconds_bucket\{method="GET",route="blob",le="0.5"\} 3$/m,
    );
    assert.match(
      text,
      /^stratum_registry_http_request_duration_seconds_count\{method="GET",route="blob"\} 3$/m,
    );
    assert.match(text, /^# TYPE stratum_registry_http_request_duration_seconds histogram$/m);
  });
});

describe('server units: uploads', () => {
  it('expire after the TTL of idleness, but not while a request uses them', async (t) => {
    const dir = await tempDir(t);
    const m = new UploadManager({ dir, ttlMs: 1000, maxUploads: 10, maxBytes: 1 << 20 });
    const a = await m.create('k');
    const b = await m.create('k');
    await m.append(a, Readable.from([Buffer.from('hello')]));
    assert.equal(a.size, 5);
    b.busy = true;
    assert.equal(await m.sweep(Date.now() + 500), 0);
    assert.equal(await m.sweep(Date.now() + 5000), 1);
    assert.equal(m.get(a.id, 'k'), undefined);
    assert.ok(m.get(b.id, 'k'));
    assert.deepEqual(await readdir(dir), [`${process.pid}-${b.id}`]);
    await m.close();
    assert.deepEqual(await readdir(dir), []);
  });

  it('refuse more than maxUploads at once, and bytes past maxBytes', async (t) => {
    const dir = await tempDir(t);
    const m = new UploadManager({ dir, ttlMs: 60_000, maxUploads: 2, maxBytes: 10 });
    const s = await m.create('k');
    await m.create('k');
    await assert.rejects(m.create('k'), (e) => code(e) === 'TOOMANYREQUESTS');
    await assert.rejects(
      m.append(s, Readable.from([Buffer.alloc(6), Buffer.alloc(6)])),
      (e) => e instanceof StratumError && e.code === 'ERR_TOO_LARGE',
    );
    assert.ok(s.size <= 10);
    await m.close();
  });

  it('on start, remove what dead processes left, keep what live ones use', async (t) => {
    const dir = await tempDir(t);
    // pid 2^22+1 is above Linux's pid_max, so it is never alive
    await writeFile(join(dir, '4194305-00000000-0000-0000-0000-000000000000'), 'stale');
    await writeFile(join(dir, `${process.ppid}-11111111-1111-1111-1111-111111111111`), 'live');
    await writeFile(join(dir, 'not-ours'), 'x');
    const m = new UploadManager({ dir, ttlMs: 60_000, maxUploads: 2, maxBytes: 10 });
    await m.ready();
    assert.deepEqual((await readdir(dir)).sort(), [
      `${process.ppid}-11111111-1111-1111-1111-111111111111`,
      'not-ours',
    ]);
    await m.close();
  });
});

describe('server units: sending files', () => {
  /** Serve one file range with sendFileRange, fetch it, return what arrived and how it ended. */
  async function fetchRange(
    path: string,
    start: number,
    end: number,
    opts: Parameters<typeof sendFileRange>[4] = {},
    before?: () => Promise<void>,
  ): Promise<{ body: Buffer; complete: boolean; sendError: unknown }> {
    let sendError: unknown;
    let sent: Promise<void> = Promise.resolve();
    const srv = createServer((_req, res) => {
      sent = (async () => {
        const fh = await open(path);
        res.setHeader('content-length', String(end - start + 1));
        await before?.();
        // the handler settles after closing its file, which may be after the client saw the end
        await sendFileRange(fh, res, start, end, opts).catch((e: unknown) => {
          sendError = e;
        });
      })();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    try {
      return await new Promise((resolve) => {
        get({ host: '127.0.0.1', port: (srv.address() as AddressInfo).port, path: '/' }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', () => {});
          res.on('close', () => {
            void sent.then(() => resolve({ body: Buffer.concat(chunks), complete: res.complete, sendError }));
          });
        });
      });
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  }

  it('sends exact ranges, in place and through the thread pool once reads are slow', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'blob');
    const bytes = randomBytes(3 * 1024 * 1024 + 123);
    await writeFile(file, bytes);
    const fast = await fetchRange(file, 0, bytes.length - 1);
    assert.ok(fast.complete);
    assert.deepEqual(fast.body, bytes);
    let pooled = false;
    let counted = 0;
    const slow = await fetchRange(file, 1000, 2_500_000, {
      slowReadNs: 0n,
      onPooled: () => {
        pooled = true;
      },
      onBytes: (n) => {
        counted += n;
      },
    });
    assert.equal(pooled, true);
    assert.equal(counted, 2_499_001);
    assert.deepEqual(slow.body, bytes.subarray(1000, 2_500_001));
  });

  it('a file shorter than promised ends the response as incomplete, never as whole', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'blob');
    await writeFile(file, randomBytes(500_000));
    const r = await fetchRange(file, 0, 499_999, {}, () => truncate(file, 200_000));
    assert.equal(r.complete, false);
    assert.ok(r.body.length <= 200_000);
    assert.ok(r.sendError instanceof StratumError && r.sendError.code === 'ERR_SIZE_MISMATCH');
  });
});
