// The distribution API of `stratum serve`, request by request, the way the OCI
// conformance suite (distribution-spec v1.1 conformance/) exercises a registry: pull,
// push (monolithic, POST-then-PUT, streamed PATCH, chunked with Content-Range, resumable),
// mount, Range, tags with pagination, deletes, referrers, the error envelope, the
// access log and /metrics.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestBytes } from '../digest/digest.js';
import { MediaType } from '../spec/media-types.js';
import { blob, makeImage, type TestImage } from '../testing/images.js';
import { rawRequest, startServer, type TestServer } from '../testing/serve.js';
import { tempDir } from '../testing/tmp.js';
import { UPLOADS_DIR } from './server.js';

let srv: TestServer;
let n = 0;
const repo = (p = 'proto') => `${p}/r${++n}`;
const req = (method: string, path: string, opts: Parameters<typeof rawRequest>[3] = {}) =>
  rawRequest(srv.url, method, path, opts);

async function pushBlob(name: string, bytes: Buffer): Promise<string> {
  const d = digestBytes(bytes);
  const r = await req('POST', `/v2/${name}/blobs/uploads/?digest=${d}`, { body: bytes });
  assert.equal(r.status, 201, r.body.toString());
  return d;
}

async function pushImageHttp(name: string, img: TestImage, ref: string): Promise<void> {
  for (const b of [...img.layers, img.config]) await pushBlob(name, b.bytes);
  const r = await req('PUT', `/v2/${name}/manifests/${ref}`, {
    body: img.manifest.bytes,
    headers: { 'content-type': img.manifest.descriptor.mediaType },
  });
  assert.equal(r.status, 201, r.body.toString());
}

before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

describe('stratum serve: base and pull', () => {
  it('answers /v2/ with 200, {} and the API version header', async () => {
    const r = await req('GET', '/v2/');
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.deepEqual(r.json(), {});
  });

  it('serves manifests by tag and digest with Content-Type, digest and length; HEAD has no body', async () => {
    const name = repo();
    const img = await makeImage();
    await pushImageHttp(name, img, 'v1');
    const d = img.manifest.descriptor;
    for (const ref of ['v1', d.digest]) {
      const g = await req('GET', `/v2/${name}/manifests/${ref}`, {
        headers: { accept: MediaType.OciManifest },
      });
      assert.equal(g.status, 200);
      assert.equal(g.headers['content-type'], d.mediaType);
      assert.equal(g.headers['docker-content-digest'], d.digest);
      assert.equal(g.headers['content-length'], String(d.size));
      assert.deepEqual(g.body, img.manifest.bytes);
      const h = await req('HEAD', `/v2/${name}/manifests/${ref}`);
      assert.equal(h.status, 200);
      assert.equal(h.headers['content-length'], String(d.size));
      assert.equal(h.headers['docker-content-digest'], d.digest);
      assert.equal(h.body.length, 0);
    }
    // a layer's digest is not a manifest
    const l = await req('GET', `/v2/${name}/manifests/${img.layers[0]!.descriptor.digest}`);
    assert.equal(l.status, 404);
    assert.deepEqual(l.codes, ['MANIFEST_UNKNOWN']);
  });

  it('keeps the Content-Type a manifest without mediaType was pushed with, and Docker types', async () => {
    const name = repo();
    const img = await makeImage({ format: 'docker' });
    await pushImageHttp(name, img, 'docker');
    const g = await req('GET', `/v2/${name}/manifests/docker`);
    assert.equal(g.headers['content-type'], MediaType.DockerManifest);
    // an OCI manifest with no mediaType field
    const doc = JSON.parse(img.manifest.bytes.toString()) as Record<string, unknown>;
    delete doc.mediaType;
    const bare = Buffer.from(
      JSON.stringify({ ...doc, config: { ...(doc.config as object), mediaType: MediaType.OciConfig } }),
    );
    const p = await req('PUT', `/v2/${name}/manifests/bare`, {
      body: bare,
      headers: { 'content-type': MediaType.OciManifest },
    });
    assert.equal(p.status, 201, p.body.toString());
    const b = await req('GET', `/v2/${name}/manifests/${digestBytes(bare)}`);
    assert.equal(b.headers['content-type'], MediaType.OciManifest);
  });

  it('serves blobs with Range: 206 with Content-Range, suffix and open ranges, 416 outside', async () => {
    const name = repo();
    const bytes = randomBytes(1000);
    const d = await pushBlob(name, bytes);
    const full = await req('GET', `/v2/${name}/blobs/${d}`);
    assert.equal(full.status, 200);
    assert.equal(full.headers['docker-content-digest'], d);
    assert.equal(full.headers['accept-ranges'], 'bytes');
    assert.deepEqual(full.body, bytes);
    const cases: [string, number, number][] = [
      ['bytes=0-9', 0, 9],
      ['bytes=990-', 990, 999],
      ['bytes=-5', 995, 999],
      ['bytes=500-5000', 500, 999],
    ];
    for (const [range, s, e] of cases) {
      const r = await req('GET', `/v2/${name}/blobs/${d}`, { headers: { range } });
      assert.equal(r.status, 206, range);
      assert.equal(r.headers['content-range'], `bytes ${s}-${e}/1000`);
      assert.deepEqual(r.body, bytes.subarray(s, e + 1));
    }
    const bad = await req('GET', `/v2/${name}/blobs/${d}`, { headers: { range: 'bytes=1000-' } });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers['content-range'], 'bytes */1000');
    const head = await req('HEAD', `/v2/${name}/blobs/${d}`);
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '1000');
    const missing = await req('GET', `/v2/${name}/blobs/${digestBytes('nothing')}`);
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.codes, ['BLOB_UNKNOWN']);
  });
  it('a client that goes away mid-blob does not disturb the server', async () => {
    const name = repo();
    const bytes = randomBytes(8 * 1024 * 1024);
    const d = await pushBlob(name, bytes);
    const before = srv.log.length;
    await new Promise<void>((resolve) => {
      const r = request(
        { host: '127.0.0.1', port: new URL(srv.url).port, path: `/v2/${name}/blobs/${d}` },
        (res) => {
          res.once('data', () => {
            res.destroy();
            resolve();
          });
        },
      );
      r.on('error', () => resolve());
      r.end();
    });
    for (let i = 0; i < 200 && srv.log.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(srv.log[before]?.aborted, true);
    const again = await req('GET', `/v2/${name}/blobs/${d}`, { headers: { range: 'bytes=8000000-' } });
    assert.equal(again.status, 206);
    assert.deepEqual(again.body, bytes.subarray(8_000_000));
    assert.equal(srv.errors.length, 0);
  });
});

describe('stratum serve: push', () => {
  it('POST then PUT with the body, and a streamed PATCH then an empty PUT', async () => {
    const name = repo();
    const a = randomBytes(5000);
    const post = await req('POST', `/v2/${name}/blobs/uploads/`);
    assert.equal(post.status, 202);
    const loc = post.headers.location!;
    assert.match(loc, new RegExp(`^/v2/${name}/blobs/uploads/[0-9a-f-]{36}$`));
    assert.equal(post.headers['docker-upload-uuid'], loc.slice(loc.lastIndexOf('/') + 1));
    const put = await req('PUT', `${loc}?digest=${digestBytes(a)}`, {
      body: a,
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(put.status, 201);
    assert.equal(put.headers.location, `/v2/${name}/blobs/${digestBytes(a)}`);
    assert.equal(put.headers['docker-content-digest'], digestBytes(a));

    const b = randomBytes(70_000);
    const post2 = await req('POST', `/v2/${name}/blobs/uploads/`);
    const patch = await req('PATCH', post2.headers.location!, { body: b, chunked: true });
    assert.equal(patch.status, 202);
    assert.equal(patch.headers.range, `0-${b.length - 1}`);
    const put2 = await req('PUT', `${patch.headers.location}?digest=${digestBytes(b)}`);
    assert.equal(put2.status, 201);
    assert.deepEqual((await req('GET', `/v2/${name}/blobs/${digestBytes(b)}`)).body, b);
  });

  it('chunked upload with Content-Range: out of order and retried chunks get 416, GET tells the offset', async () => {
    const name = repo();
    const bytes = randomBytes(30_000);
    const c1 = bytes.subarray(0, 10_000);
    const c2 = bytes.subarray(10_000);
    const post = await req('POST', `/v2/${name}/blobs/uploads/`, { headers: { 'content-length': '0' } });
    const loc = post.headers.location!;
    const early = await req('PATCH', loc, { body: c2, headers: { 'content-range': '10000-29999' } });
    assert.equal(early.status, 416);
    assert.deepEqual(early.codes, ['BLOB_UPLOAD_INVALID']);
    const first = await req('PATCH', loc, { body: c1, headers: { 'content-range': '0-9999' } });
    assert.equal(first.status, 202);
    assert.equal(first.headers.range, '0-9999');
    const again = await req('PATCH', loc, { body: c1, headers: { 'content-range': '0-9999' } });
    assert.equal(again.status, 416);
    const status = await req('GET', loc);
    assert.equal(status.status, 204);
    assert.equal(status.headers.range, '0-9999');
    assert.ok(status.headers.location);
    const second = await req('PATCH', status.headers.location!, {
      body: c2,
      headers: { 'content-range': '10000-29999' },
    });
    assert.equal(second.status, 202);
    const done = await req('PUT', `${second.headers.location}?digest=${digestBytes(bytes)}`, {
      headers: { 'content-length': '0' },
    });
    assert.equal(done.status, 201);
    assert.deepEqual((await req('GET', `/v2/${name}/blobs/${digestBytes(bytes)}`)).body, bytes);
    // the session is gone
    assert.equal((await req('GET', loc)).status, 404);
  });

  it('the final chunk may come with the PUT', async () => {
    const name = repo();
    const bytes = randomBytes(2000);
    const post = await req('POST', `/v2/${name}/blobs/uploads/`);
    await req('PATCH', post.headers.location!, {
      body: bytes.subarray(0, 1500),
      headers: { 'content-range': '0-1499' },
    });
    const put = await req('PUT', `${post.headers.location}?digest=${digestBytes(bytes)}`, {
      body: bytes.subarray(1500),
      headers: { 'content-range': '1500-1999' },
    });
    assert.equal(put.status, 201);
  });

  it('a monolithic POST without Content-Length (chunked transfer) is spooled and verified', async () => {
    const name = repo();
    const bytes = randomBytes(50_000);
    const r = await req('POST', `/v2/${name}/blobs/uploads/?digest=${digestBytes(bytes)}`, {
      body: bytes,
      chunked: true,
    });
    assert.equal(r.status, 201);
    assert.deepEqual((await req('GET', `/v2/${name}/blobs/${digestBytes(bytes)}`)).body, bytes);
  });

  it('DELETE of an upload cancels it', async () => {
    const name = repo();
    const post = await req('POST', `/v2/${name}/blobs/uploads/`);
    await req('PATCH', post.headers.location!, { body: Buffer.from('some bytes') });
    assert.equal((await req('DELETE', post.headers.location!)).status, 204);
    const gone = await req('GET', post.headers.location!);
    assert.equal(gone.status, 404);
    assert.deepEqual(gone.codes, ['BLOB_UPLOAD_UNKNOWN']);
  });

  it('an upload cut off mid-chunk keeps what arrived (resumable); nothing reaches the store', async () => {
    const name = repo();
    const bytes = randomBytes(200_000);
    const post = await req('POST', `/v2/${name}/blobs/uploads/`);
    const loc = post.headers.location!;
    await new Promise<void>((resolve) => {
      const r = request({
        host: '127.0.0.1',
        port: new URL(srv.url).port,
        method: 'PATCH',
        path: loc,
        headers: { 'content-range': '0-199999', 'content-length': '200000' },
      });
      r.on('error', () => resolve());
      r.write(bytes.subarray(0, 100_000), () => setImmediate(() => r.destroy()));
      r.on('close', () => resolve());
    });
    // the server sees the cut when its read ends; ask until it has settled
    let range = '';
    for (let i = 0; i < 200; i++) {
      const st = await req('GET', loc);
      range = st.headers.range as string;
      if (st.status === 204 && range === '0-99999') break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(range, '0-99999');
    const rest = await req('PATCH', loc, {
      body: bytes.subarray(100_000),
      headers: { 'content-range': '100000-199999' },
    });
    assert.equal(rest.status, 202);
    assert.equal((await req('PUT', `${loc}?digest=${digestBytes(bytes)}`)).status, 201);
  });

  it('mounts a blob the store has (201, any repository), and opens an upload for one it lacks (202)', async () => {
    const src = repo();
    const dst = repo();
    const d = await pushBlob(src, randomBytes(100));
    const m = await req('POST', `/v2/${dst}/blobs/uploads/?mount=${d}&from=${src}`);
    assert.equal(m.status, 201);
    assert.equal(m.headers.location, `/v2/${dst}/blobs/${d}`);
    assert.equal(m.headers['docker-content-digest'], d);
    const noFrom = await req('POST', `/v2/${dst}/blobs/uploads/?mount=${d}`);
    assert.equal(noFrom.status, 201);
    const absent = await req('POST', `/v2/${dst}/blobs/uploads/?mount=${digestBytes('absent')}&from=${src}`);
    assert.equal(absent.status, 202);
    assert.ok(absent.headers.location?.startsWith(`/v2/${dst}/blobs/uploads/`));
  });

  it('PUT manifest by digest checks the digest; by tag answers Location and Docker-Content-Digest', async () => {
    const name = repo();
    const img = await makeImage();
    for (const b of [...img.layers, img.config]) await pushBlob(name, b.bytes);
    const d = img.manifest.descriptor.digest;
    const ct = { 'content-type': img.manifest.descriptor.mediaType };
    const wrong = await req('PUT', `/v2/${name}/manifests/${digestBytes('other')}`, {
      body: img.manifest.bytes,
      headers: ct,
    });
    assert.equal(wrong.status, 400);
    assert.deepEqual(wrong.codes, ['DIGEST_INVALID']);
    const byDigest = await req('PUT', `/v2/${name}/manifests/${d}`, {
      body: img.manifest.bytes,
      headers: ct,
    });
    assert.equal(byDigest.status, 201);
    assert.equal(byDigest.headers['docker-content-digest'], d);
    assert.equal(byDigest.headers.location, `/v2/${name}/manifests/${d}`);
    assert.equal(byDigest.headers['oci-subject'], undefined);
    const byTag = await req('PUT', `/v2/${name}/manifests/latest`, { body: img.manifest.bytes, headers: ct });
    assert.equal(byTag.status, 201);
    assert.equal(byTag.headers.location, `/v2/${name}/manifests/${d}`);
  });
});

describe('stratum serve: discovery and management', () => {
  it('lists tags in order, pages with n/last and a Link header, n=0 is empty', async () => {
    const name = repo();
    const img = await makeImage();
    const tags = ['b', 'a', 'c2', 'c10', 'd'];
    for (const t of tags) await pushImageHttp(name, img, t);
    const sorted = [...tags].sort();
    const all = await req('GET', `/v2/${name}/tags/list`);
    assert.equal(all.status, 200);
    assert.deepEqual(all.json(), { name, tags: sorted });
    const got: string[] = [];
    let url: string | undefined = `/v2/${name}/tags/list?n=2`;
    let pages = 0;
    while (url) {
      const page = await req('GET', url);
      const body = page.json() as { tags: string[] };
      assert.ok(body.tags.length <= 2);
      got.push(...body.tags);
      const link = page.headers.link as string | undefined;
      url = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
      pages++;
    }
    assert.deepEqual(got, sorted);
    assert.equal(pages, 3);
    const last = await req('GET', `/v2/${name}/tags/list?n=2&last=b`);
    assert.deepEqual((last.json() as { tags: string[] }).tags, ['c10', 'c2']);
    const zero = await req('GET', `/v2/${name}/tags/list?n=0`);
    assert.deepEqual((zero.json() as { tags: string[] }).tags, []);
    assert.equal(zero.headers.link, undefined);
    const unknown = await req('GET', `/v2/${repo()}/tags/list`);
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.codes, ['NAME_UNKNOWN']);
  });

  it('maps repository names onto store names the way docker reads them', async () => {
    const img = await makeImage();
    await pushImageHttp('alpine', img, '3');
    const viaLibrary = await req('GET', '/v2/library/alpine/manifests/3');
    assert.equal(viaLibrary.status, 200);
    assert.equal(
      (await srv.store.resolve('docker.io/library/alpine:3')).digest,
      img.manifest.descriptor.digest,
    );
    await pushImageHttp('ghcr.io/org/tool', img, '1');
    assert.equal((await srv.store.resolve('ghcr.io/org/tool:1')).digest, img.manifest.descriptor.digest);
    const cat = await req('GET', '/v2/_catalog');
    const names = (cat.json() as { repositories: string[] }).repositories;
    assert.ok(names.includes('library/alpine') && names.includes('ghcr.io/org/tool'), names.join(' '));
    // an image the CLI put in the store is served under its familiar path
    await srv.store.tag(img.manifest.descriptor, 'docker.io/library/busybox:latest');
    assert.equal((await req('HEAD', '/v2/library/busybox/manifests/latest')).status, 200);
    assert.equal((await req('HEAD', '/v2/busybox/manifests/latest')).status, 200);
  });

  it('deletes tags, manifests and blobs; refuses to delete what another image still uses', async () => {
    const name = repo();
    const other = repo();
    const img = await makeImage({ layers: [[{ path: 'del', content: randomBytes(8).toString('hex') }]] });
    await pushImageHttp(name, img, 'keep');
    await pushImageHttp(name, img, 'drop');
    assert.equal((await req('DELETE', `/v2/${name}/manifests/drop`)).status, 202);
    assert.equal((await req('GET', `/v2/${name}/manifests/drop`)).status, 404);
    assert.deepEqual(((await req('GET', `/v2/${name}/tags/list`)).json() as { tags: string[] }).tags, [
      'keep',
    ]);
    const layer = img.layers[0]!.descriptor.digest;
    const inUse = await req('DELETE', `/v2/${name}/blobs/${layer}`);
    assert.equal(inUse.status, 405);
    assert.deepEqual(inUse.codes, ['UNSUPPORTED']);
    // another repository holds the same manifest: deleting it here keeps it there
    await pushImageHttp(other, img, 'x');
    const d = img.manifest.descriptor.digest;
    assert.equal((await req('DELETE', `/v2/${name}/manifests/${d}`)).status, 202);
    assert.equal((await req('GET', `/v2/${name}/manifests/keep`)).status, 404);
    assert.equal((await req('GET', `/v2/${other}/manifests/x`)).status, 200);
    // and once nothing uses it, the bytes go
    assert.equal((await req('DELETE', `/v2/${other}/manifests/${d}`)).status, 202);
    assert.equal((await req('GET', `/v2/${other}/manifests/${d}`)).status, 404);
    assert.equal((await req('DELETE', `/v2/${name}/blobs/${layer}`)).status, 202);
    assert.equal((await req('GET', `/v2/${name}/blobs/${layer}`)).status, 404);
    assert.equal((await req('DELETE', `/v2/${name}/blobs/${layer}`)).status, 404);
    assert.equal((await req('DELETE', `/v2/${name}/manifests/${d}`)).status, 404);
    assert.deepEqual(await srv.store.verify(), []);
  });

  it('referrers: OCI-Subject on push, listed with artifactType and annotations, filtered, empty for none', async () => {
    const name = repo();
    const img = await makeImage({ annotations: { unique: randomBytes(8).toString('hex') } });
    await pushImageHttp(name, img, 'v1');
    const empty = blob(MediaType.OciEmpty, Buffer.from('{}'));
    const sbom = blob('application/spdx+json', Buffer.from('{"spdxVersion":"SPDX-2.3"}'));
    for (const b of [empty, sbom]) await pushBlob(name, b.bytes);
    const subject = img.manifest.descriptor;
    const artifact = (artifactType: string, note: string) => {
      const doc = {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        artifactType,
        config: empty.descriptor,
        layers: [sbom.descriptor],
        subject,
        annotations: { note },
      };
      return Buffer.from(JSON.stringify(doc));
    };
    const a1 = artifact('application/vnd.example.sbom.v1', 'one');
    const a2 = artifact('application/vnd.example.sig.v1', 'two');
    for (const a of [a1, a2]) {
      const r = await req('PUT', `/v2/${name}/manifests/${digestBytes(a)}`, {
        body: a,
        headers: { 'content-type': MediaType.OciManifest },
      });
      assert.equal(r.status, 201, r.body.toString());
      assert.equal(r.headers['oci-subject'], subject.digest);
    }
    // an index referrer without artifactType
    const idx = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [], subject }),
    );
    assert.equal(
      (
        await req('PUT', `/v2/${name}/manifests/${digestBytes(idx)}`, {
          body: idx,
          headers: { 'content-type': MediaType.OciIndex },
        })
      ).status,
      201,
    );
    const list = await req('GET', `/v2/${name}/referrers/${subject.digest}`);
    assert.equal(list.status, 200);
    assert.equal(list.headers['content-type'], MediaType.OciIndex);
    const index = list.json() as {
      manifests: { digest: string; artifactType?: string; annotations?: Record<string, string> }[];
    };
    const byDigest = new Map(index.manifests.map((m) => [m.digest, m]));
    assert.equal(index.manifests.length, 3);
    assert.equal(byDigest.get(digestBytes(a1))?.artifactType, 'application/vnd.example.sbom.v1');
    assert.deepEqual(byDigest.get(digestBytes(a2))?.annotations, { note: 'two' });
    assert.equal(byDigest.get(digestBytes(idx))?.artifactType, undefined);
    const filtered = await req(
      'GET',
      `/v2/${name}/referrers/${subject.digest}?artifactType=application/vnd.example.sig.v1`,
    );
    assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
    assert.deepEqual(
      (filtered.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest),
      [digestBytes(a2)],
    );
    const none = await req('GET', `/v2/${name}/referrers/${digestBytes('no such subject')}`);
    assert.equal(none.status, 200);
    assert.deepEqual((none.json() as { manifests: unknown[] }).manifests, []);
    // an image manifest referrer without artifactType shows its config media type
    const plain = JSON.parse(a1.toString()) as Record<string, unknown>;
    delete plain.artifactType;
    plain.config = sbom.descriptor;
    const pb = Buffer.from(JSON.stringify(plain));
    await req('PUT', `/v2/${name}/manifests/${digestBytes(pb)}`, {
      body: pb,
      headers: { 'content-type': MediaType.OciManifest },
    });
    const again = await req(
      'GET',
      `/v2/${name}/referrers/${subject.digest}?artifactType=application/spdx%2Bjson`,
    );
    assert.deepEqual(
      (again.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest),
      [digestBytes(pb)],
    );
  });

  it('finds referrers written into the store by something else', async () => {
    const name = repo();
    const img = await makeImage({ annotations: { unique: randomBytes(8).toString('hex') } });
    await pushImageHttp(name, img, 'v1');
    const empty = blob(MediaType.OciEmpty, Buffer.from('{}'));
    const doc = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        artifactType: 'application/vnd.example.other',
        config: empty.descriptor,
        layers: [],
        subject: img.manifest.descriptor,
      }),
    );
    // warm the index first, then write behind the server's back
    await req('GET', `/v2/${name}/referrers/${img.manifest.descriptor.digest}`);
    await srv.store.push(empty.descriptor, empty.bytes);
    await srv.store.push(
      { mediaType: MediaType.OciManifest, digest: digestBytes(doc), size: doc.length },
      doc,
    );
    const list = await req('GET', `/v2/${name}/referrers/${img.manifest.descriptor.digest}`);
    assert.deepEqual(
      (list.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest),
      [digestBytes(doc)],
    );
  });
});

describe('stratum serve: errors, log and metrics', () => {
  it('answers unknown things in the error envelope with the spec codes', async () => {
    const name = repo();
    const cases: [string, string, number, string][] = [
      ['GET', `/v2/${name}/manifests/nope`, 404, 'MANIFEST_UNKNOWN'],
      ['GET', `/v2/${name}/blobs/${digestBytes('x')}`, 404, 'BLOB_UNKNOWN'],
      ['GET', `/v2/${name}/blobs/sha256:short`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/${name}/tags/list`, 404, 'NAME_UNKNOWN'],
      ['PATCH', `/v2/${name}/blobs/uploads/00000000-0000-0000-0000-000000000000`, 404, 'BLOB_UPLOAD_UNKNOWN'],
      ['GET', '/v2/UPPER/tags/list', 400, 'NAME_INVALID'],
      ['POST', `/v2/${name}/manifests/x`, 405, 'UNSUPPORTED'],
      ['GET', '/v2/x/nothing/here', 404, 'UNSUPPORTED'],
    ];
    for (const [method, path, status, code] of cases) {
      const r = await req(method, path);
      assert.equal(r.status, status, `${method} ${path}`);
      assert.deepEqual(r.codes, [code], `${method} ${path}`);
      assert.equal(r.headers['content-type'], 'application/json');
      const body = r.json() as { errors: { message: string }[] };
      assert.ok(body.errors[0]!.message.length > 0);
    }
  });

  it('logs one line per request and counts them in /metrics', async () => {
    const before = srv.log.length;
    const name = repo();
    const bytes = randomBytes(321);
    await pushBlob(name, bytes);
    await req('GET', `/v2/${name}/blobs/${digestBytes(bytes)}`);
    await req('GET', `/v2/${name}/manifests/none`);
    const entries = srv.log.slice(before);
    assert.equal(entries.length, 3);
    assert.deepEqual(
      entries.map((e) => [e.method, e.route, e.status]),
      [
        ['POST', 'uploads', 201],
        ['GET', 'blob', 200],
        ['GET', 'manifest', 404],
      ],
    );
    assert.equal(entries[0]!.bytesIn, 321);
    assert.equal(entries[1]!.bytesOut, 321);
    assert.ok(entries.every((e) => e.ms >= 0 && !e.aborted));
    const m = (await req('GET', '/metrics')).body.toString();
    assert.match(m, /^stratum_registry_http_requests_total\{method="GET",route="blob",status="200"\} \d+$/m);
    assert.match(
      m,
      /^stratum_registry_http_request_duration_seconds_bucket\{method="GET",route="blob",le="\+Inf"\} \d+$/m,
    );
    assert.match(m, /^stratum_registry_http_sent_bytes_total\{method="GET",route="blob"\} \d+$/m);
    assert.match(m, /^stratum_registry_uploads_in_progress \d+$/m);
  });

  it('leaves no upload files behind when it closes', async (t) => {
    const dir = await tempDir(t);
    const s = await startServer({ root: dir });
    try {
      const post = await rawRequest(s.url, 'POST', '/v2/a/blobs/uploads/');
      await rawRequest(s.url, 'PATCH', post.headers.location!, { body: randomBytes(1000) });
      assert.equal((await readdir(join(dir, UPLOADS_DIR))).length, 1);
    } finally {
      await s.stop();
    }
    assert.deepEqual(await readdir(join(dir, UPLOADS_DIR)), []);
  });

  it('removes an abandoned upload once its TTL has passed', async (t) => {
    const dir = await tempDir(t);
    const s = await startServer({ root: dir, uploadTtlMs: 50 });
    try {
      const post = await rawRequest(s.url, 'POST', '/v2/a/blobs/uploads/');
      await rawRequest(s.url, 'PATCH', post.headers.location!, { body: randomBytes(1000) });
      // the sweep runs every second at most; wait for it (bounded; asking the server would keep the upload alive)
      let left = 1;
      for (let i = 0; i < 100 && left > 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        left = (await readdir(join(dir, UPLOADS_DIR))).length;
      }
      assert.equal(left, 0);
      assert.equal((await rawRequest(s.url, 'GET', post.headers.location!)).status, 404);
      assert.deepEqual(await s.store.layout.listBlobs(), []);
    } finally {
      await s.stop();
    }
  });
});
