import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { digestBytes } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { MediaType } from './media-types.js';
import { parseDescriptor, parseImageConfig, parseManifestDocument } from './validate.js';

const enc = (v: unknown) => Buffer.from(JSON.stringify(v));
const d = (s: string) => digestBytes(s);
const layer = { mediaType: MediaType.OciLayerGzip, digest: d('l'), size: 1 };
const config = { mediaType: MediaType.OciConfig, digest: d('c'), size: 2 };
const manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] };
const index = {
  schemaVersion: 2,
  mediaType: MediaType.OciIndex,
  manifests: [
    {
      mediaType: MediaType.OciManifest,
      digest: d('m'),
      size: 3,
      platform: { os: 'linux', architecture: 'amd64' },
    },
  ],
};

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof StratumError, `not a StratumError: ${e}`);
    return e.code;
  }
  assert.fail('did not throw');
}

describe('parseManifestDocument', () => {
  it('accepts an OCI manifest and index, and Docker schema 2 forms', () => {
    const m = parseManifestDocument(enc(manifest), { mediaType: MediaType.OciManifest });
    assert.equal(m.kind, 'manifest');
    const i = parseManifestDocument(enc(index), { mediaType: `${MediaType.OciIndex}; charset=utf-8` });
    assert.equal(i.kind, 'index');
    const dm = parseManifestDocument(enc({ ...manifest, mediaType: MediaType.DockerManifest }));
    assert.equal(dm.mediaType, MediaType.DockerManifest);
    const dl = parseManifestDocument(enc({ ...index, mediaType: MediaType.DockerManifestList }));
    assert.equal(dl.kind, 'index');
  });

  it('takes the kind from the outer media type when the document has none', () => {
    const { mediaType: _, ...bare } = index;
    const r = parseManifestDocument(enc(bare), { mediaType: MediaType.DockerManifestList });
    assert.equal(r.kind, 'index');
    assert.equal(r.mediaType, MediaType.DockerManifestList);
  });

  it('rejects a document with both layers and manifests (CVE-2021-41190)', () => {
    assert.equal(
      code(() => parseManifestDocument(enc({ ...manifest, manifests: index.manifests }))),
      'ERR_MEDIA_TYPE_MISMATCH',
    );
  });

  it('rejects a declared mediaType that disagrees with the descriptor or Content-Type', () => {
    assert.equal(
      code(() => parseManifestDocument(enc(manifest), { mediaType: MediaType.OciIndex })),
      'ERR_MEDIA_TYPE_MISMATCH',
    );
  });

  it('rejects an index-typed document shaped like a manifest', () => {
    const { mediaType: _, ...bare } = manifest;
    assert.equal(
      code(() => parseManifestDocument(enc(bare), { mediaType: MediaType.OciIndex })),
      'ERR_MEDIA_TYPE_MISMATCH',
    );
  });

  it('says clearly that schema 1 is unsupported', () => {
    assert.equal(
      code(() => parseManifestDocument(enc({ schemaVersion: 1, name: 'x', fsLayers: [] }))),
      'ERR_SCHEMA1_UNSUPPORTED',
    );
    assert.equal(
      code(() => parseManifestDocument(enc(manifest), { mediaType: MediaType.DockerSchema1Signed })),
      'ERR_SCHEMA1_UNSUPPORTED',
    );
  });

  it('rejects negative, fractional and absurd sizes', () => {
    for (const size of [-1, 1.5, 2 ** 60, '12']) {
      const bad = { ...manifest, layers: [{ ...layer, size }] };
      assert.equal(
        code(() => parseManifestDocument(enc(bad))),
        'ERR_INVALID_DOCUMENT',
        `size ${size}`,
      );
    }
  });

  it('rejects digests with path characters or bad form', () => {
    for (const digest of [
      'sha256:../../etc/passwd',
      `sha256:${'a'.repeat(63)}/`,
      'md5:abc',
      `sha256:${'A'.repeat(64)}`,
    ]) {
      const bad = { ...manifest, config: { ...config, digest } };
      assert.match(
        code(() => parseManifestDocument(enc(bad))),
        /^ERR_(INVALID_DIGEST|UNSUPPORTED_ALGORITHM)$/,
        digest,
      );
    }
  });

  it('rejects an oversized manifest', () => {
    const big = { ...manifest, annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } };
    assert.equal(
      code(() => parseManifestDocument(enc(big))),
      'ERR_TOO_LARGE',
    );
  });

  it('rejects non-JSON, wrong schemaVersion, unknown media types and missing fields', () => {
    assert.equal(
      code(() => parseManifestDocument(Buffer.from('{nope'))),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseManifestDocument(enc([1]))),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseManifestDocument(enc({ ...manifest, schemaVersion: 3 }))),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseManifestDocument(enc({ ...manifest, mediaType: 'application/x-weird' }))),
      'ERR_UNSUPPORTED_MEDIA_TYPE',
    );
    const { config: _c, ...noConfig } = manifest;
    assert.equal(
      code(() => parseManifestDocument(enc(noConfig))),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseManifestDocument(enc({ ...manifest, layers: 'x' }))),
      'ERR_INVALID_DOCUMENT',
    );
  });
});

describe('parseDescriptor', () => {
  it('checks embedded data length and platform shape', () => {
    assert.equal(
      code(() => parseDescriptor({ ...layer, data: Buffer.from('xy').toString('base64') }, 'd')),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseDescriptor({ ...layer, platform: { os: 'linux' } }, 'd')),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseDescriptor({ ...layer, mediaType: 'not a type' }, 'd')),
      'ERR_INVALID_DOCUMENT',
    );
    assert.deepEqual(parseDescriptor(layer, 'd'), layer);
  });
});

describe('parseImageConfig', () => {
  const cfg = {
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [d('x')] },
    config: { Env: ['A=1'] },
  };
  it('accepts a valid config and rejects bad ones', () => {
    assert.equal(parseImageConfig(enc(cfg)).os, 'linux');
    assert.equal(
      code(() => parseImageConfig(enc({ ...cfg, os: 1 }))),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseImageConfig(enc({ ...cfg, rootfs: { type: 'x', diff_ids: [] } }))),
      'ERR_INVALID_DOCUMENT',
    );
    assert.equal(
      code(() => parseImageConfig(enc({ ...cfg, rootfs: { type: 'layers', diff_ids: ['sha256:zz'] } }))),
      'ERR_INVALID_DIGEST',
    );
    assert.equal(
      code(() => parseImageConfig(enc({ ...cfg, config: { Env: 'A=1' } }))),
      'ERR_INVALID_DOCUMENT',
    );
  });
});
