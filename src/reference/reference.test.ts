// Tests for image references. Most tables are ported from the published test vectors of
// github.com/distribution/reference (reference_test.go, regexp_test.go, normalize_test.go);
// where our rules deliberately differ, the row says so.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import {
  familiarName,
  familiarString,
  formatReference,
  isValidDomain,
  parseNormalizedReference,
  parseReference,
  parseRepositoryName,
  type Reference,
  referenceOf,
  registryHost,
  repositoryName,
  sameReference,
  withDefaultTag,
  withDigest,
  withoutTagOrDigest,
  withTag,
} from './reference.js';

const F64 = 'f'.repeat(64);
const SHA256_F = `sha256:${F64}`;
const SHA512_F = `sha512:${'f'.repeat(128)}`;
const BE17 = 'sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912';

function assertInvalid(fn: () => unknown, message?: string | RegExp): StratumError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof StratumError, `expected a StratumError, got ${String(caught)}`);
  assert.equal(caught.code, 'ERR_INVALID_REFERENCE');
  if (typeof message === 'string') assert.ok(caught.message.includes(message), caught.message);
  else if (message) assert.match(caught.message, message);
  return caught;
}

// --- reference_test.go TestReferenceParse --------------------------------------------------

interface ParseCase {
  input: string;
  err?: string | RegExp | true;
  name?: string;
  domain?: string;
  tag?: string;
  digest?: string;
}

const parseCases: ParseCase[] = [
  { input: 'test_com', name: 'test_com', domain: '' },
  { input: 'test.com:tag', name: 'test.com', domain: '', tag: 'tag' },
  { input: 'test.com:5000', name: 'test.com', domain: '', tag: '5000' },
  { input: 'test.com/repo:tag', domain: 'test.com', name: 'test.com/repo', tag: 'tag' },
  { input: 'test:5000/repo', domain: 'test:5000', name: 'test:5000/repo' },
  { input: 'test:5000/repo:tag', domain: 'test:5000', name: 'test:5000/repo', tag: 'tag' },
  { input: `test:5000/repo@${SHA256_F}`, domain: 'test:5000', name: 'test:5000/repo', digest: SHA256_F },
  {
    input: `test:5000/repo:tag@${SHA256_F}`,
    domain: 'test:5000',
    name: 'test:5000/repo',
    tag: 'tag',
    digest: SHA256_F,
  },
  { input: '', err: 'reference is empty' },
  { input: ':justtag', err: 'repository name is missing' },
  { input: `@${SHA256_F}`, err: 'repository name is missing' },
  { input: 'repo@sha256:ffffffffffffffffffffffffffffffffff', err: 'want 64 lowercase hex' },
  { input: `validname@invaliddigest:${F64}`, err: 'unsupported digest algorithm' },
  { input: 'Uppercase:tag', err: 'repository name must be lowercase' },
  // "Uppercase/lowercase:tag": the uppercase first part is a domain, as upstream (their FIXME)
  { input: 'Uppercase/lowercase:tag', domain: 'Uppercase', name: 'Uppercase/lowercase', tag: 'tag' },
  { input: 'test:5000/Uppercase/lowercase:tag', err: 'repository name must be lowercase' },
  { input: 'lowercase:Uppercase', name: 'lowercase', domain: '', tag: 'Uppercase' },
  { input: `${'a/'.repeat(128)}a:tag`, err: 'must not be more than 255 characters' },
  // upstream's greedy split makes the first "a" a domain; ours only takes host-looking parts
  {
    input: `${'a/'.repeat(127)}a:tag-puts-this-over-max`,
    domain: '',
    name: `${'a/'.repeat(127)}a`,
    tag: 'tag-puts-this-over-max',
  },
  { input: 'aa/asdf$$^/aa', err: 'path component "asdf$$^" is invalid' },
  {
    input: 'sub-dom1.foo.com/bar/baz/quux',
    domain: 'sub-dom1.foo.com',
    name: 'sub-dom1.foo.com/bar/baz/quux',
  },
  {
    input: 'sub-dom1.foo.com/bar/baz/quux:some-long-tag',
    domain: 'sub-dom1.foo.com',
    name: 'sub-dom1.foo.com/bar/baz/quux',
    tag: 'some-long-tag',
  },
  {
    input: 'b.gcr.io/test.example.com/my-app:test.example.com',
    domain: 'b.gcr.io',
    name: 'b.gcr.io/test.example.com/my-app',
    tag: 'test.example.com',
  },
  {
    input: 'xn--n3h.com/myimage:xn--n3h.com',
    domain: 'xn--n3h.com',
    name: 'xn--n3h.com/myimage',
    tag: 'xn--n3h.com',
  },
  {
    input: `xn--7o8h.com/myimage:xn--7o8h.com@${SHA512_F}`,
    domain: 'xn--7o8h.com',
    name: 'xn--7o8h.com/myimage',
    tag: 'xn--7o8h.com',
    digest: SHA512_F,
  },
  { input: 'foo_bar.com:8080', domain: '', name: 'foo_bar.com', tag: '8080' },
  // upstream: domain "foo"
  { input: 'foo/foo_bar.com:8080', domain: '', name: 'foo/foo_bar.com', tag: '8080' },
  { input: '192.168.1.1', domain: '', name: '192.168.1.1' },
  { input: '192.168.1.1:tag', domain: '', name: '192.168.1.1', tag: 'tag' },
  { input: '192.168.1.1:5000', domain: '', name: '192.168.1.1', tag: '5000' },
  { input: '192.168.1.1/repo', domain: '192.168.1.1', name: '192.168.1.1/repo' },
  { input: '192.168.1.1:5000/repo', domain: '192.168.1.1:5000', name: '192.168.1.1:5000/repo' },
  {
    input: '192.168.1.1:5000/repo:5050',
    domain: '192.168.1.1:5000',
    name: '192.168.1.1:5000/repo',
    tag: '5050',
  },
  { input: '[2001:db8::1]', err: 'IPv6 registry host must be followed by "/"' },
  { input: '[2001:db8::1]:5000', err: 'IPv6 registry host must be followed by "/"' },
  { input: '[2001:db8::1]:tag', err: 'IPv6 registry host must be followed by "/"' },
  { input: '[2001:db8::1]/repo', domain: '[2001:db8::1]', name: '[2001:db8::1]/repo' },
  {
    input: '[2001:db8:1:2:3:4:5:6]/repo:tag',
    domain: '[2001:db8:1:2:3:4:5:6]',
    name: '[2001:db8:1:2:3:4:5:6]/repo',
    tag: 'tag',
  },
  { input: '[2001:db8::1]:5000/repo', domain: '[2001:db8::1]:5000', name: '[2001:db8::1]:5000/repo' },
  {
    input: '[2001:db8::1]:5000/repo:tag',
    domain: '[2001:db8::1]:5000',
    name: '[2001:db8::1]:5000/repo',
    tag: 'tag',
  },
  {
    input: `[2001:db8::1]:5000/repo@${SHA256_F}`,
    domain: '[2001:db8::1]:5000',
    name: '[2001:db8::1]:5000/repo',
    digest: SHA256_F,
  },
  {
    input: `[2001:db8::1]:5000/repo:tag@${SHA256_F}`,
    domain: '[2001:db8::1]:5000',
    name: '[2001:db8::1]:5000/repo',
    tag: 'tag',
    digest: SHA256_F,
  },
  { input: '[2001:db8::]:5000/repo', domain: '[2001:db8::]:5000', name: '[2001:db8::]:5000/repo' },
  { input: '[::1]:5000/repo', domain: '[::1]:5000', name: '[::1]:5000/repo' },
  { input: '[fe80::1%eth0]:5000/repo', err: 'not a valid IPv6 address' },
  { input: '[fe80::1%@invalidzone]:5000/repo', err: 'is not of the form algorithm:hex' },
];

function checkParsed(r: Reference, c: ParseCase): void {
  assert.equal(formatReference(r), c.input);
  if (c.name !== undefined) assert.equal(repositoryName(r), c.name);
  if (c.domain !== undefined) assert.equal(r.domain, c.domain);
  assert.equal(r.tag, c.tag);
  assert.equal(r.digest, c.digest);
  // exactOptionalPropertyTypes: absent means absent, not undefined
  assert.equal('tag' in r, c.tag !== undefined);
  assert.equal('digest' in r, c.digest !== undefined);
  assert.ok(Object.isFrozen(r));
}

describe('parseReference: distribution/reference TestReferenceParse vectors', () => {
  for (const c of parseCases) {
    it(c.input.length > 80 ? `${c.input.slice(0, 77)}...` : c.input || '(empty)', () => {
      if (c.err !== undefined) {
        assertInvalid(() => parseReference(c.input), c.err === true ? undefined : c.err);
        return;
      }
      const r = parseReference(c.input);
      checkParsed(r, c);
      assert.ok(sameReference(parseReference(formatReference(r)), r), 'round trip');
    });
  }
});

// --- regexp_test.go TestDomainRegexp ------------------------------------------------------

const domainCases: [string, boolean, string?][] = [
  ['test.com', true],
  ['test.com:10304', true],
  ['test.com:http', false],
  ['localhost', true],
  ['localhost:8080', true],
  ['a', true],
  ['a.b', true],
  ['ab.cd.com', true],
  ['a-b.com', true],
  ['-ab.com', false],
  ['ab-.com', false],
  ['ab.c-om', true],
  ['ab.-com', false],
  ['ab.com-', false],
  ['0101.com', true],
  ['001a.com', true],
  ['b.gbc.io:443', true],
  ['b.gbc.io', true],
  ['xn--n3h.com', true],
  ['Asdf.com', true],
  ['192.168.1.1:75050', false, 'upstream matches; we refuse ports above 65535'],
  ['192.168.1.1:750050', false, 'upstream: "will fail on validation"'],
  ['192.168.1.1:7505', true],
  ['[fd00:1:2::3]:75050', false, 'upstream matches; port out of range'],
  ['[fd00:1:2::3]:7505', true],
  ['[fd00:1:2::3]75050', false],
  ['[fd00:1:2::3]::75050', false],
  ['[fd00:1:2::3%eth0]:75050', false],
  ['[fd00123123123]:75050', false, 'upstream: "will fail in validation"'],
  ['[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:75050', false, 'port out of range'],
  ['[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:7505', true],
  ['[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:750505', false],
  ['fd00:1:2::3:75050', false],
  ['localhost:0', false, 'port 0 cannot be dialled'],
  ['', false],
  ['[]', false],
  ['[::1', false],
];

describe('isValidDomain: TestDomainRegexp vectors', () => {
  for (const [input, ok, note] of domainCases) {
    it(`${input || '(empty)'} → ${ok}${note ? ` (${note})` : ''}`, () => {
      assert.equal(isValidDomain(input), ok);
      // and the same answer through a full reference when the part reads as a domain
      if (input === '' || !/[.:A-Z]|^localhost$/.test(input)) return;
      if (ok) assert.equal(parseReference(`${input}/repo`).domain, input);
      else assertInvalid(() => parseReference(`${input}/repo`));
    });
  }
});

// --- regexp_test.go TestFullNameRegexp ----------------------------------------------------
// [input, domain, path] or [input, false]. Upstream splits the first component greedily as a
// domain ("simple/name" → "simple"); ours keeps host-looking parts only, so domains differ.

const nameCases: ([string, string, string] | [string, false])[] = [
  ['', false],
  ['short', '', 'short'],
  ['simple/name', '', 'simple/name'],
  ['library/ubuntu', '', 'library/ubuntu'],
  ['docker/stevvooe/app', '', 'docker/stevvooe/app'],
  ['aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb', '', 'aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb'],
  ['aa/aa/bb/bb/bb', '', 'aa/aa/bb/bb/bb'],
  ['a/a/a/a', '', 'a/a/a/a'],
  ['a/a/a/a/', false],
  ['a//a/a', false],
  ['a', '', 'a'],
  ['a/aa', '', 'a/aa'],
  ['a/aa/a', '', 'a/aa/a'],
  ['foo.com', '', 'foo.com'],
  ['foo.com/', false],
  ['foo.com:8080/bar', 'foo.com:8080', 'bar'],
  ['foo.com:http/bar', false],
  ['foo.com/bar', 'foo.com', 'bar'],
  ['foo.com/bar/baz', 'foo.com', 'bar/baz'],
  ['localhost:8080/bar', 'localhost:8080', 'bar'],
  ['sub-dom1.foo.com/bar/baz/quux', 'sub-dom1.foo.com', 'bar/baz/quux'],
  ['blog.foo.com/bar/baz', 'blog.foo.com', 'bar/baz'],
  ['a^a', false],
  ['aa/asdf$$^/aa', false],
  ['asdf$$^/aa', false],
  ['aa-a/a', '', 'aa-a/a'],
  // upstream's regexp matches (no length check there); 257 characters is over our limit
  [`${'a/'.repeat(128)}a`, false],
  [`${'a/'.repeat(127)}a`, '', `${'a/'.repeat(127)}a`],
  ['a-/a/a/a', false],
  ['foo.com/a-/a/a', false],
  ['-foo/bar', false],
  ['foo/bar-', false],
  ['foo-/bar', false],
  ['foo/-bar', false],
  ['_foo/bar', false],
  ['foo_bar', '', 'foo_bar'],
  ['foo_bar.com', '', 'foo_bar.com'],
  ['foo_bar.com:8080', false],
  ['foo_bar.com:8080/app', false],
  ['foo.com/foo_bar', 'foo.com', 'foo_bar'],
  ['____/____', false],
  ['_docker/_docker', false],
  ['docker_/docker_', false],
  ['b.gcr.io/test.example.com/my-app', 'b.gcr.io', 'test.example.com/my-app'],
  ['xn--n3h.com/myimage', 'xn--n3h.com', 'myimage'],
  ['xn--7o8h.com/myimage', 'xn--7o8h.com', 'myimage'],
  ['example.com/xn--7o8h.com/myimage', 'example.com', 'xn--7o8h.com/myimage'],
  ['example.com/some_separator__underscore/myimage', 'example.com', 'some_separator__underscore/myimage'],
  ['example.com/__underscore/myimage', false],
  ['example.com/..dots/myimage', false],
  ['example.com/.dots/myimage', false],
  ['example.com/nodouble..dots/myimage', false],
  ['docker./docker', false],
  ['.docker/docker', false],
  ['docker-/docker', false],
  ['-docker/docker', false],
  ['do..cker/docker', false],
  ['do__cker:8080/docker', false],
  ['do__cker/docker', '', 'do__cker/docker'],
  [
    'registry.io/foo/project--id.module--name.ver---sion--name',
    'registry.io',
    'foo/project--id.module--name.ver---sion--name',
  ],
  ['Asdf.com/foo/bar', 'Asdf.com', 'foo/bar'],
  ['Foo/FarB', false],
];

describe('parseRepositoryName: TestFullNameRegexp vectors', () => {
  for (const c of nameCases) {
    const input = c[0];
    it(input.length > 80 ? `${input.slice(0, 77)}...` : input || '(empty)', () => {
      if (c[1] === false) {
        assertInvalid(() => parseRepositoryName(input));
        return;
      }
      const r = parseRepositoryName(input);
      assert.equal(r.domain, c[1]);
      assert.equal(r.path, c[2]);
      assert.equal(repositoryName(r), input);
    });
  }
  it('refuses a tag or a digest', () => {
    assertInvalid(() => parseRepositoryName('foo:bar'), 'without a tag or digest');
    assertInvalid(() => parseRepositoryName(`foo@${SHA256_F}`), 'without a tag or digest');
  });
});

// --- regexp_test.go TestReferenceRegexp ---------------------------------------------------

const refCases: ([string, string, string | undefined, string | undefined] | [string, false])[] = [
  ['registry.com:8080/myapp:tag', 'registry.com:8080/myapp', 'tag', undefined],
  [`registry.com:8080/myapp@${BE17}`, 'registry.com:8080/myapp', undefined, BE17],
  [`registry.com:8080/myapp:tag2@${BE17}`, 'registry.com:8080/myapp', 'tag2', BE17],
  ['registry.com:8080/myapp@sha256:badbadbadbad', false],
  ['registry.com:8080/myapp:invalid~tag', false],
  ['bad_hostname.com:8080/myapp:tag', false],
  [`localhost:8080@${BE17}`, 'localhost', '8080', BE17],
  [`localhost:8080/name@${BE17}`, 'localhost:8080/name', undefined, BE17],
  [`localhost:http/name@${BE17}`, false],
  [`localhost@${BE17}`, 'localhost', undefined, BE17],
  ['registry.com:8080/myapp@bad', false],
  ['registry.com:8080/myapp@2bad', false],
];

describe('parseReference: TestReferenceRegexp vectors', () => {
  for (const c of refCases) {
    it(c[0], () => {
      if (c[1] === false) {
        assertInvalid(() => parseReference(c[0]));
        return;
      }
      const r = parseReference(c[0]);
      assert.equal(repositoryName(r), c[1]);
      assert.equal(r.tag, c[2]);
      assert.equal(r.digest, c[3]);
    });
  }
});

// --- normalize_test.go -----------------------------------------------------------------

const HEX64 = '1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a';

describe('parseNormalizedReference: TestValidateReferenceName vectors', () => {
  const valid = [
    'docker/docker',
    'library/debian',
    'debian',
    'docker.io/docker/docker',
    'docker.io/library/debian',
    'docker.io/debian',
    'index.docker.io/docker/docker',
    'index.docker.io/library/debian',
    'index.docker.io/debian',
    '127.0.0.1:5000/docker/docker',
    '127.0.0.1:5000/library/debian',
    '127.0.0.1:5000/debian',
    '192.168.0.1',
    '192.168.0.1:80',
    '192.168.0.1:8/debian',
    '192.168.0.2:25000/debian',
    'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
    '[fc00::1]:5000/docker',
    '[fc00::1]:5000/docker/docker',
    '[fc00:1:2:3:4:5:6:7]:5000/library/debian',
    `docker.io/${HEX64}`,
    'Docker/docker',
    'DOCKER/docker',
  ];
  const invalid = [
    'https://github.com/docker/docker',
    'docker/Docker',
    '-docker',
    '-docker/docker',
    '-docker.io/docker/docker',
    'docker///docker',
    'docker.io/docker/Docker',
    'docker.io/docker///docker',
    '[fc00::1]',
    '[fc00::1]:5000',
    'fc00::1:5000/debian',
    '[fe80::1%eth0]:5000/debian',
    '[2001:db8:3:4::192.0.2.33]:5000/debian',
    HEX64,
  ];
  for (const s of valid)
    it(`valid: ${s}`, () => {
      parseNormalizedReference(s);
    });
  for (const s of invalid)
    it(`invalid: ${s}`, () => {
      assertInvalid(() => parseNormalizedReference(s));
    });
});

describe('parseNormalizedReference: TestValidateRemoteName vectors', () => {
  const valid = [
    'docker/docker',
    'thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev',
    'docker-rules/docker',
    'docker---rules/docker',
    'doc/docker',
    'd/docker',
    'jess/t',
    'dock__er/docker',
  ];
  const invalid = [
    'docker/Docker',
    'docker///docker',
    HEX64,
    '-docker/docker',
    'docker-/docker',
    '-docker-/docker',
    '____/____',
    '_docker/_docker',
    'dock..er/docker',
    'dock_.er/docker',
    'dock-.er/docker',
    'docker/',
    `${'this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_'.repeat(4)}x/docker`,
  ];
  for (const s of valid)
    it(`valid: ${s}`, () => {
      parseNormalizedReference(s);
    });
  for (const s of invalid)
    it(`invalid: ${s.slice(0, 60)}`, () => {
      assertInvalid(() => parseNormalizedReference(s));
    });
});

describe('parseNormalizedReference: TestParseRepositoryInfo vectors', () => {
  const cases: { remote: string; familiar: string; full: string; ambiguous?: string; domain: string }[] = [
    {
      remote: 'fooo/bar',
      familiar: 'fooo/bar',
      full: 'docker.io/fooo/bar',
      ambiguous: 'index.docker.io/fooo/bar',
      domain: 'docker.io',
    },
    {
      remote: 'library/ubuntu',
      familiar: 'ubuntu',
      full: 'docker.io/library/ubuntu',
      ambiguous: 'library/ubuntu',
      domain: 'docker.io',
    },
    {
      remote: 'nonlibrary/ubuntu',
      familiar: 'nonlibrary/ubuntu',
      full: 'docker.io/nonlibrary/ubuntu',
      domain: 'docker.io',
    },
    {
      remote: 'other/library',
      familiar: 'other/library',
      full: 'docker.io/other/library',
      domain: 'docker.io',
    },
    {
      remote: 'private/moonbase',
      familiar: '127.0.0.1:8000/private/moonbase',
      full: '127.0.0.1:8000/private/moonbase',
      domain: '127.0.0.1:8000',
    },
    {
      remote: 'privatebase',
      familiar: '127.0.0.1:8000/privatebase',
      full: '127.0.0.1:8000/privatebase',
      domain: '127.0.0.1:8000',
    },
    {
      remote: 'private/moonbase',
      familiar: 'example.com/private/moonbase',
      full: 'example.com/private/moonbase',
      domain: 'example.com',
    },
    {
      remote: 'privatebase',
      familiar: 'example.com/privatebase',
      full: 'example.com/privatebase',
      domain: 'example.com',
    },
    {
      remote: 'private/moonbase',
      familiar: 'example.com:8000/private/moonbase',
      full: 'example.com:8000/private/moonbase',
      domain: 'example.com:8000',
    },
    {
      remote: 'privatebasee',
      familiar: 'example.com:8000/privatebasee',
      full: 'example.com:8000/privatebasee',
      domain: 'example.com:8000',
    },
    {
      remote: 'library/ubuntu-12.04-base',
      familiar: 'ubuntu-12.04-base',
      full: 'docker.io/library/ubuntu-12.04-base',
      ambiguous: 'index.docker.io/library/ubuntu-12.04-base',
      domain: 'docker.io',
    },
    {
      remote: 'library/foo',
      familiar: 'foo',
      full: 'docker.io/library/foo',
      ambiguous: 'docker.io/foo',
      domain: 'docker.io',
    },
    {
      remote: 'library/foo/bar',
      familiar: 'library/foo/bar',
      full: 'docker.io/library/foo/bar',
      domain: 'docker.io',
    },
    {
      remote: 'store/foo/bar',
      familiar: 'store/foo/bar',
      full: 'docker.io/store/foo/bar',
      domain: 'docker.io',
    },
    { remote: 'bar', familiar: 'Foo/bar', full: 'Foo/bar', domain: 'Foo' },
    { remote: 'bar', familiar: 'FOO/bar', full: 'FOO/bar', domain: 'FOO' },
  ];
  for (const c of cases) {
    for (const input of [c.familiar, c.full, ...(c.ambiguous ? [c.ambiguous] : [])]) {
      it(input, () => {
        const r = parseNormalizedReference(input);
        assert.equal(familiarName(r), c.familiar);
        assert.equal(familiarString(r), c.familiar);
        assert.equal(formatReference(r), c.full);
        assert.equal(repositoryName(r), c.full);
        assert.equal(r.domain, c.domain);
        assert.equal(r.path, c.remote);
      });
    }
  }
});

describe('parseNormalizedReference: other upstream vectors', () => {
  it('TestParseReferenceWithTagAndDigest', () => {
    const short = 'busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa';
    const r = parseNormalizedReference(short);
    assert.equal(formatReference(r), `docker.io/library/${short}`);
    assert.equal(r.tag, 'latest');
    assert.equal(r.digest, 'sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa');
    assert.equal(familiarString(r), short);
  });

  it('TestInvalidReferenceComponents', () => {
    assertInvalid(() => parseNormalizedReference('-foo'));
    const r = parseNormalizedReference('busybox');
    assertInvalid(() => withTag(r, '-foo'));
    assertInvalid(() => withDigest(r, 'foo'));
  });

  const split: [string, string, string][] = [
    ['test.com/foo', 'test.com', 'foo'],
    ['test_com/foo', 'docker.io', 'test_com/foo'],
    ['docker/migrator', 'docker.io', 'docker/migrator'],
    ['test.com:8080/foo', 'test.com:8080', 'foo'],
    ['test-com:8080/foo', 'test-com:8080', 'foo'],
    ['foo', 'docker.io', 'library/foo'],
    ['xn--n3h.com/foo', 'xn--n3h.com', 'foo'],
    ['xn--n3h.com:18080/foo', 'xn--n3h.com:18080', 'foo'],
    ['docker.io/foo', 'docker.io', 'library/foo'],
    ['docker.io/library/foo', 'docker.io', 'library/foo'],
    ['docker.io/library/foo/bar', 'docker.io', 'library/foo/bar'],
  ];
  for (const [input, domain, path] of split) {
    it(`TestNormalizedSplitHostname ${input}`, () => {
      const r = parseNormalizedReference(input);
      assert.equal(r.domain, domain);
      assert.equal(r.path, path);
    });
  }

  const DBCC = 'sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c';
  const any: [string, string][] = [
    ['redis', 'docker.io/library/redis'],
    ['redis:latest', 'docker.io/library/redis:latest'],
    ['docker.io/library/redis:latest', 'docker.io/library/redis:latest'],
    [`redis@${DBCC}`, `docker.io/library/redis@${DBCC}`],
    [`docker.io/library/redis@${DBCC}`, `docker.io/library/redis@${DBCC}`],
    ['dmcgowan/myapp', 'docker.io/dmcgowan/myapp'],
    ['dmcgowan/myapp:latest', 'docker.io/dmcgowan/myapp:latest'],
    ['docker.io/mcgowan/myapp:latest', 'docker.io/mcgowan/myapp:latest'],
    [`dmcgowan/myapp@${DBCC}`, `docker.io/dmcgowan/myapp@${DBCC}`],
    [`docker.io/dmcgowan/myapp@${DBCC}`, `docker.io/dmcgowan/myapp@${DBCC}`],
    [
      'dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9',
      'docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9',
    ],
    ['dbcc1', 'docker.io/library/dbcc1'],
  ];
  for (const [input, full] of any) {
    it(`TestParseAnyReference ${input}`, () => {
      const r = parseNormalizedReference(input);
      assert.equal(formatReference(r), full);
      assert.ok(sameReference(parseReference(full), r));
    });
  }

  // TestParseNamed: canonical iff normalising changes nothing
  const canonical: [string, boolean][] = [
    ['test.com/foo', true],
    ['test:8080/foo', true],
    ['test_com/foo', false],
    ['test.com', false],
    ['foo', false],
    ['library/foo', false],
    ['docker.io/library/foo', true],
    ['docker.io/foo', false],
  ];
  for (const [input, isCanonical] of canonical) {
    it(`TestParseNamed ${input} canonical=${isCanonical}`, () => {
      assert.equal(formatReference(parseNormalizedReference(input)) === input, isCanonical);
    });
  }

  it('TestIdentifierRegexp: only a bare 64-hex string is refused as an image ID', () => {
    assertInvalid(
      () => parseNormalizedReference('da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf9821'),
      'is an image ID, not a repository name',
    );
    assertInvalid(
      () => parseNormalizedReference('7EC43B381E5AEFE6E04EFB0B3F0693FF2A4A50652D64AEC573905F2DB5889A1C'),
      'must be lowercase',
    );
    parseNormalizedReference('da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf');
    parseNormalizedReference('da304e823d8ca2b9d863a3c897baeb852ba21ea9a9f1414736394ae7fcaf98218482');
    // the strict parser has no such rule: it adds no defaults, so a hex path is just a path
    assert.equal(parseReference(HEX64).path, HEX64);
  });
});

// --- TestWithTag / TestWithDigest (with full-length digests: short ones are refused) ----

describe('withTag / withDigest', () => {
  const D = `sha256:${'1234567890'.repeat(6)}1234`;
  const cases: [string, string | undefined, string | undefined, string][] = [
    ['test.com/foo', 'tag', undefined, 'test.com/foo:tag'],
    ['foo', 'tag2', undefined, 'foo:tag2'],
    ['test.com:8000/foo', 'tag4', undefined, 'test.com:8000/foo:tag4'],
    ['test.com:8000/foo', 'TAG5', undefined, 'test.com:8000/foo:TAG5'],
    ['test.com:8000/foo', 'TAG5', D, `test.com:8000/foo:TAG5@${D}`],
    ['test.com/foo', undefined, D, `test.com/foo@${D}`],
    ['foo', undefined, D, `foo@${D}`],
    ['test.com:8000/foo', 'latest', D, `test.com:8000/foo:latest@${D}`],
  ];
  for (const [name, tag, digest, combined] of cases) {
    it(combined, () => {
      let r = parseRepositoryName(name);
      if (digest) r = withDigest(r, digest);
      if (tag) r = withTag(r, tag);
      assert.equal(formatReference(r), combined);
      // the other order gives the same
      let r2 = parseRepositoryName(name);
      if (tag) r2 = withTag(r2, tag);
      if (digest) r2 = withDigest(r2, digest);
      assert.ok(sameReference(r, r2));
    });
  }
  it('refuses a short sha256 digest (upstream accepts any 32+ hex)', () => {
    const e = assertInvalid(() =>
      withDigest(parseRepositoryName('foo'), 'sha256:1234567890098765432112345667890098765'),
    );
    assert.equal((e.cause as StratumError).code, 'ERR_INVALID_DIGEST');
  });
  it('withoutTagOrDigest drops both', () => {
    const r = withoutTagOrDigest(parseReference(`a.io/b:c@${SHA256_F}`));
    assert.equal(formatReference(r), 'a.io/b');
    assert.ok(!('tag' in r) && !('digest' in r));
  });
});

// --- our own: messages, helpers, hostile input -------------------------------------------

describe('error messages name the part that is wrong', () => {
  it('uppercase path', () => {
    const e = assertInvalid(() => parseReference('a/B'));
    assert.equal(e.message, 'invalid reference "a/B": repository name must be lowercase');
  });
  const cases: [string, string][] = [
    ['alpine:', 'tag is empty'],
    ['alpine:-x', 'tag "-x" is invalid'],
    [`alpine:${'a'.repeat(129)}`, 'tag is longer than 128 characters'],
    ['alpine@', 'digest is empty'],
    ['alpine@sha256:abc', 'is not of the form algorithm:hex'],
    [`alpine@sha256:${'f'.repeat(63)}`, 'want 64 lowercase hex characters'],
    [`alpine@sha256:${'F'.repeat(64)}`, 'want 64 lowercase hex characters'],
    [`alpine@md5:${'f'.repeat(32)}`, 'unsupported digest algorithm "md5"'],
    ['localhost:99999/x', 'registry port 99999 is out of range'],
    ['localhost:/x', 'registry port "" is not a number'],
    ['bad_host.com/x', 'registry host "bad_host.com" is not a valid host name'],
    ['[::1/x', "unclosed '['"],
    ['[::1]x/y', "expected ':port' after the IPv6 address"],
    ['a b', 'whitespace or control characters'],
    ['https://example.com/a:b', 'looks like a URL'],
    ['a\u0000b', 'whitespace or control characters'],
    ['alpine\n', 'whitespace or control characters'],
    ['/alpine', 'empty path component'],
    ['alpine/', 'empty path component'],
    ['localhost/', 'repository name must have at least one component'],
    [`a/${'b'.repeat(2000)}`, 'longer than 1024 characters'],
    [`x.io/${'a'.repeat(251)}`, 'must not be more than 255 characters'],
  ];
  for (const [input, msg] of cases) {
    it(`${JSON.stringify(input.slice(0, 40))} → ${msg}`, () => {
      const e = assertInvalid(() => parseReference(input), msg);
      assert.ok(e.message.startsWith('invalid reference "'), e.message);
    });
  }
  it('keeps the digest error as the cause, with its own code', () => {
    const e = assertInvalid(() => parseReference(`a@md5:${'f'.repeat(32)}`));
    assert.equal((e.cause as StratumError).code, 'ERR_UNSUPPORTED_ALGORITHM');
  });
  it('refuses non-strings', () => {
    for (const v of [undefined, null, 42, {}, ['alpine']]) {
      assertInvalid(() => parseReference(v as unknown as string), 'expected a string');
      assertInvalid(() => parseNormalizedReference(v as unknown as string), 'expected a string');
    }
  });
  it('truncates very long input in the message', () => {
    const e = assertInvalid(() => parseReference(`${'A'.repeat(900)}`));
    assert.ok(e.message.length < 500, `message is ${e.message.length} characters`);
  });
  it('normalisation length counts the added docker.io/library/', () => {
    const name = 'a'.repeat(240); // 240 + "docker.io/library/" = 258
    assert.equal(parseReference(name).path, name);
    assertInvalid(() => parseNormalizedReference(name), 'must not be more than 255 characters');
  });
});

describe('hostile input', () => {
  it('pathological separators do not backtrack for long (finishes at all)', () => {
    const evil = [
      `a/${'a-'.repeat(500)}!`,
      `${'a.'.repeat(400)}/x`,
      `x.io/${'a_'.repeat(120)}_`,
      `${'a-'.repeat(500)}`,
    ];
    for (const s of evil) assertInvalid(() => parseReference(s));
  });
  it('refuses path traversal shapes', () => {
    for (const s of ['../etc/passwd', 'a/../b', 'a/./b', 'x.io/..', 'x.io/%2e%2e/b', 'a\\b']) {
      assertInvalid(() => parseReference(s));
      assertInvalid(() => parseNormalizedReference(s));
    }
  });
  it('refuses unicode look-alikes', () => {
    for (const s of ['alpіne', 'ａlpine', 'alpine:lаtest', 'ex\u00e4mple.com/x'])
      assertInvalid(() => parseReference(s));
  });
  it('refuses two @ signs and URLs', () => {
    assertInvalid(() => parseReference(`a@${SHA256_F}@${SHA256_F}`));
    assertInvalid(() => parseReference('https://example.com/a'));
    assertInvalid(() => parseReference('user:pass@example.com/a'));
  });
});

describe('helpers', () => {
  it('withDefaultTag adds latest only when there is neither tag nor digest', () => {
    assert.equal(
      formatReference(withDefaultTag(parseNormalizedReference('alpine'))),
      'docker.io/library/alpine:latest',
    );
    const tagged = parseNormalizedReference('alpine:3');
    assert.equal(withDefaultTag(tagged), tagged);
    const digested = parseNormalizedReference(`alpine@${SHA256_F}`);
    assert.equal(withDefaultTag(digested), digested);
    assert.equal(withDefaultTag(digested).tag, undefined);
  });

  it('familiarString', () => {
    const cases: [string, string][] = [
      ['alpine', 'alpine'],
      ['alpine:latest', 'alpine:latest'],
      ['docker.io/library/alpine:3.19', 'alpine:3.19'],
      ['index.docker.io/user/app', 'user/app'],
      ['user/app:1', 'user/app:1'],
      ['localhost:5000/x', 'localhost:5000/x'],
      ['localhost/x:y', 'localhost/x:y'],
      ['docker.io/library/foo/bar', 'library/foo/bar'],
      [`alpine@${SHA256_F}`, `alpine@${SHA256_F}`],
      ['quay.io/library/alpine', 'quay.io/library/alpine'],
    ];
    for (const [input, familiar] of cases)
      assert.equal(familiarString(parseNormalizedReference(input)), familiar, input);
    assert.equal(familiarString(withDefaultTag(parseNormalizedReference('alpine'))), 'alpine:latest');
    // strict references without domain stay as written
    assert.equal(familiarString(parseReference('user/app:1')), 'user/app:1');
  });

  it('referenceOf: digest wins over tag, then tag, then latest', () => {
    assert.equal(referenceOf(parseReference(`a.io/b:c@${SHA256_F}`)), SHA256_F);
    assert.equal(referenceOf(parseReference('a.io/b:c')), 'c');
    assert.equal(referenceOf(parseReference('a.io/b')), 'latest');
  });

  it('registryHost', () => {
    assert.equal(registryHost('docker.io'), 'registry-1.docker.io');
    assert.equal(registryHost('index.docker.io'), 'registry-1.docker.io');
    assert.equal(registryHost('localhost:5000'), 'localhost:5000');
    assert.equal(registryHost('[::1]:5000'), '[::1]:5000');
    assert.equal(registryHost(parseNormalizedReference('alpine').domain), 'registry-1.docker.io');
    assertInvalid(() => registryHost(''), 'no registry domain');
  });

  it('strict parse adds nothing', () => {
    const r = parseReference('alpine');
    assert.equal(r.domain, '');
    assert.equal(r.path, 'alpine');
    assert.equal(r.tag, undefined);
    assert.equal(repositoryName(r), 'alpine');
    assert.equal(parseReference('localhost/x').domain, 'localhost');
    assert.equal(parseReference('localhost').domain, '');
  });
});
