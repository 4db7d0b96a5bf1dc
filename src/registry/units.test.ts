// Unit tests of the registry client's parsers: challenges, scopes, Link, Retry-After,
// names, error envelopes, docker config keys.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StratumError } from '../errors/errors.js';
import { parseRetryAfter } from './backoff.js';
import { challengeScopes, parseChallenges } from './challenge.js';
import { isLoopbackHost, RegistryClient } from './client.js';
import { configKeyFor, hostnameOfKey, isDockerHub } from './credentials.js';
import { describeFailure, errorFromBytes, parseErrorEnvelope } from './http-errors.js';
import { parseLinkNext } from './link.js';
import { checkRepository, parseManifestRef } from './names.js';
import { coversScopes, mergeScopes, scopeSet } from './scopes.js';
import { referrersTagFor } from './target.js';

const code = (e: unknown) => (e instanceof StratumError ? e.code : String(e));

describe('WWW-Authenticate', () => {
  it('parses a bearer challenge with quoted params', () => {
    const [c] = parseChallenges(
      'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
    );
    assert.equal(c?.scheme, 'bearer');
    assert.equal(c?.params.realm, 'https://auth.example/token');
    assert.equal(c?.params.service, 'registry.example');
    assert.deepEqual(challengeScopes(c!), ['repository:a/b:pull,push']);
  });

  it('parses several challenges in one header, escapes and odd spacing', () => {
    const cs = parseChallenges('Basic realm="x\\"y" , Bearer realm=tok, error="insufficient_scope"');
    assert.equal(cs.length, 2);
    assert.equal(cs[0]?.scheme, 'basic');
    assert.equal(cs[0]?.params.realm, 'x"y');
    assert.equal(cs[1]?.scheme, 'bearer');
    assert.equal(cs[1]?.params.realm, 'tok');
    assert.equal(cs[1]?.params.error, 'insufficient_scope');
  });

  it('survives garbage', () => {
    assert.deepEqual(parseChallenges(undefined), []);
    assert.doesNotThrow(() => parseChallenges(['"""', '=,=,', 'Bearer realm="unterminated']));
    assert.equal(parseChallenges('Bearer realm="unterminated')[0]?.params.realm, 'unterminated');
  });
});

describe('scopes', () => {
  it('merges actions per resource and canonicalises', () => {
    assert.deepEqual(mergeScopes(['repository:a:push', 'repository:a:pull'], ['repository:b:pull']), [
      'repository:a:pull,push',
      'repository:b:pull',
    ]);
  });
  it('a pull,push token covers pull, not the other way round; * covers all', () => {
    const pp = scopeSet(['repository:a:pull,push']);
    const p = scopeSet(['repository:a:pull']);
    assert.equal(coversScopes(pp, p), true);
    assert.equal(coversScopes(p, pp), false);
    assert.equal(coversScopes(scopeSet(['repository:a:*']), pp), true);
    assert.equal(coversScopes(pp, scopeSet(['repository:b:pull'])), false);
    assert.equal(coversScopes(p, scopeSet([])), true);
  });
});

describe('Link', () => {
  it('finds rel=next among several links', () => {
    assert.equal(
      parseLinkNext('</v2/a/tags/list?n=2&last=b>; rel="prev", </v2/a/tags/list?n=2&last=d>; rel="next"'),
      '/v2/a/tags/list?n=2&last=d',
    );
    assert.equal(parseLinkNext(['<https://r/x>; rel=next']), 'https://r/x');
    assert.equal(parseLinkNext('<https://r/x>; rel="first"'), undefined);
    assert.equal(parseLinkNext('garbage'), undefined);
  });
});

describe('Retry-After', () => {
  it('reads seconds and dates', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now), 10_000);
    assert.equal(parseRetryAfter('Thu, 01 Jan 2025 00:00:10 GMT', now), 0);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter('-5'), undefined);
    assert.equal(parseRetryAfter(undefined), undefined);
  });
});

describe('names', () => {
  it('loopback hosts', () => {
    for (const h of ['localhost', 'localhost:5000', '127.0.0.1:5000', '127.3.2.1', '[::1]:5000']) {
      assert.equal(isLoopbackHost(h), true, h);
    }
    for (const h of ['example.com', '10.0.0.1:5000', 'localhost.evil.com', '128.0.0.1']) {
      assert.equal(isLoopbackHost(h), false, h);
    }
  });
  it('scheme per host: loopback and insecure hosts use plain HTTP', async () => {
    const c = new RegistryClient({
      insecureHosts: ['reg.example', 'other.example:5000'],
      httpsHosts: ['127.0.0.1:443'],
    });
    try {
      assert.equal(c.baseUrl('reg.example:5000'), 'http://reg.example:5000');
      assert.equal(c.baseUrl('other.example:5000'), 'http://other.example:5000');
      assert.equal(c.baseUrl('other.example:6000'), 'https://other.example:6000');
      assert.equal(c.baseUrl('localhost:5000'), 'http://localhost:5000');
      assert.equal(c.baseUrl('127.0.0.1:443'), 'https://127.0.0.1:443');
      assert.equal(c.baseUrl('registry-1.docker.io'), 'https://registry-1.docker.io');
    } finally {
      await c.close();
    }
  });
  it('refs: digests are validated, tags checked; path characters never pass', () => {
    assert.deepEqual(parseManifestRef('v1.0'), { tag: 'v1.0' });
    assert.throws(
      () => parseManifestRef('sha256:../../etc/passwd'),
      (e) => code(e) === 'ERR_INVALID_DIGEST',
    );
    assert.throws(
      () => parseManifestRef('../x'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
    assert.throws(
      () => parseManifestRef('a/b'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
    assert.throws(
      () => parseManifestRef('-x'),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
    assert.throws(
      () => parseManifestRef('x'.repeat(129)),
      (e) => code(e) === 'ERR_INVALID_REFERENCE',
    );
  });
  it('repositories', () => {
    assert.equal(checkRepository('a/b-c/d__e.f'), 'a/b-c/d__e.f');
    for (const bad of ['', 'A', 'a//b', '/a', 'a/', 'a/../b', 'a?b', 'a b', 'a%2fb']) {
      assert.throws(
        () => checkRepository(bad),
        (e) => code(e) === 'ERR_INVALID_REFERENCE',
        bad,
      );
    }
  });
  it('referrers tag schema', () => {
    const d = `sha256:${'ab'.repeat(32)}`;
    assert.equal(referrersTagFor(d as never), `sha256-${'ab'.repeat(32)}`);
    const long = `sha512:${'cd'.repeat(64)}`;
    assert.equal(referrersTagFor(long as never).length, 128);
  });
});

describe('error envelopes', () => {
  it('maps statuses and keeps the registry codes', () => {
    const body = Buffer.from(
      JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access is denied' }] }),
    );
    const e = errorFromBytes('pull manifest r/app:1', 403, 'http://r/v2/app/manifests/1', body);
    assert.equal(e.code, 'ERR_DENIED');
    assert.equal(e.status, 403);
    assert.equal(e.errors[0]?.code, 'DENIED');
    assert.equal(e.message, 'pull manifest r/app:1: denied: requested access is denied');
    assert.equal(errorFromBytes('x', 401, 'u', Buffer.alloc(0)).code, 'ERR_UNAUTHORIZED');
    assert.equal(errorFromBytes('x', 404, 'u', Buffer.alloc(0)).code, 'ERR_NOT_FOUND');
    assert.equal(errorFromBytes('x', 500, 'u', Buffer.alloc(0)).retryable, true);
    assert.equal(errorFromBytes('x', 429, 'u', Buffer.alloc(0)).retryable, true);
    assert.equal(errorFromBytes('x', 400, 'u', Buffer.alloc(0)).retryable, false);
  });
  it('ignores hostile bodies', () => {
    assert.deepEqual(parseErrorEnvelope(Buffer.from('<html>')), []);
    assert.deepEqual(parseErrorEnvelope(Buffer.from('{"errors":"x"}')), []);
    assert.deepEqual(parseErrorEnvelope(Buffer.from('{"errors":[1,{"code":5},{"code":"A"}]}')), [
      { code: 'A' },
    ]);
    assert.equal(describeFailure(502, [], '\u0000\u001b[31mred'), 'bad gateway (HTTP 502): [31mred');
  });
});

describe('docker config keys', () => {
  it('Docker Hub names share one key', () => {
    for (const h of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) {
      assert.equal(isDockerHub(h), true);
      assert.equal(configKeyFor(h), 'https://index.docker.io/v1/');
    }
    assert.equal(configKeyFor('127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(hostnameOfKey('https://index.docker.io/v1/'), 'index.docker.io');
    assert.equal(hostnameOfKey('http://r.example:5000/v2/'), 'r.example:5000');
    assert.equal(hostnameOfKey('r.example'), 'r.example');
  });
});
