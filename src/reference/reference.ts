// Image references: `[domain/]path[:tag][@digest]`, the grammar docker and the distribution
// project use (github.com/distribution/reference), parsed by hand so every failure says which
// part is wrong. Two entry points: parseReference is strict (no defaults added), and
// parseNormalizedReference applies Docker Hub's conventions (`alpine` → docker.io/library/alpine).
//
// Parsing order: split off `@digest` (first '@'), then `:tag` (a ':' after the last '/'),
// then the domain (the first '/'-separated part, if it looks like a host: it contains '.' or
// ':', is `localhost`, or has uppercase letters — repository paths are always lowercase).

import { isIPv6 } from 'node:net';
import { type Digest, parseDigest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';

/** A parsed image reference. `domain` is '' only for strict references written without one. */
export interface Reference {
  readonly domain: string;
  readonly path: string;
  readonly tag?: string;
  readonly digest?: Digest;
}

/** Longest repository name (`domain/path`) we accept, as docker does. */
export const NAME_TOTAL_LENGTH_MAX = 255;
/** Longest tag: one word character and up to 127 more. */
export const TAG_LENGTH_MAX = 128;
/** Docker Hub's canonical domain in references. */
export const DOCKER_HUB_DOMAIN = 'docker.io';
/** Docker Hub's legacy domain, normalised to {@link DOCKER_HUB_DOMAIN}. */
export const DOCKER_HUB_LEGACY_DOMAIN = 'index.docker.io';
/** The host that serves Docker Hub's registry API. */
export const DOCKER_HUB_REGISTRY_HOST = 'registry-1.docker.io';
/** Namespace of Docker Hub's official images. */
export const OFFICIAL_REPO_PREFIX = 'library/';
export const DEFAULT_TAG = 'latest';

// Input longer than this cannot be a valid reference (name 255 + tag 128 + a long digest);
// refusing it early keeps every later step cheap on hostile input.
const INPUT_LENGTH_MAX = 1024;

const TAG = /^\w[\w.-]{0,127}$/;
// alphanumeric (separator alphanumeric)*, separator = one '.', one or two '_', or any '-'s
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const IPV6_BRACKETED = /^\[[a-fA-F0-9:]+\]$/;
// the distribution grammar for a digest; parseDigest then checks the algorithm and length
const DIGEST_SHAPE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const IDENTIFIER = /^[a-f0-9]{64}$/;

function quote(s: string): string {
  return JSON.stringify(s.length > 300 ? `${s.slice(0, 300)}…` : s);
}

function invalid(input: string, why: string, cause?: unknown): StratumError {
  return new StratumError(
    'ERR_INVALID_REFERENCE',
    `invalid reference ${quote(input)}: ${why}`,
    cause === undefined ? {} : { cause },
  );
}

/** Whether the first part of a name is a registry host rather than a path component. */
function looksLikeDomain(first: string): boolean {
  return first === 'localhost' || first.includes('.') || first.includes(':') || first !== first.toLowerCase();
}

/** Validate `host[:port]`; returns a reason if it is not one, else undefined. */
function domainProblem(domain: string): string | undefined {
  let host = domain;
  let port: string | undefined;
  if (domain.startsWith('[')) {
    const close = domain.indexOf(']');
    if (close < 0) return `registry host ${quote(domain)} has an unclosed '['`;
    host = domain.slice(0, close + 1);
    const rest = domain.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':'))
        return `registry host ${quote(domain)}: expected ':port' after the IPv6 address`;
      port = rest.slice(1);
    }
    if (!IPV6_BRACKETED.test(host) || !isIPv6(host.slice(1, -1))) {
      return `registry host ${quote(host)} is not a valid IPv6 address (zones and IPv4-mapped forms are not allowed)`;
    }
  } else {
    const colon = domain.indexOf(':');
    if (colon >= 0) {
      host = domain.slice(0, colon);
      port = domain.slice(colon + 1);
    }
    if (host === '') return `registry host is empty in ${quote(domain)}`;
    for (const part of host.split('.')) {
      if (!DOMAIN_COMPONENT.test(part)) {
        return `registry host ${quote(host)} is not a valid host name (each dot-separated part must be letters, digits and inner hyphens)`;
      }
    }
  }
  if (port !== undefined) {
    if (!/^[0-9]+$/.test(port)) return `registry port ${quote(port)} is not a number`;
    const n = Number(port);
    if (n < 1 || n > 65535) return `registry port ${port} is out of range (1-65535)`;
  }
  return undefined;
}

/** Whether `s` is a valid registry `host[:port]` (name, IPv4 or bracketed IPv6; port 1-65535). */
export function isValidDomain(s: string): boolean {
  return (
    typeof s === 'string' && s !== '' && s.length <= NAME_TOTAL_LENGTH_MAX && domainProblem(s) === undefined
  );
}

/** Validate a repository path; returns a reason if it is invalid, else undefined. */
function pathProblem(path: string): string | undefined {
  if (path === '') return 'repository name must have at least one component';
  for (const c of path.split('/')) {
    if (c === '') return 'repository name has an empty path component (a leading, trailing or doubled "/")';
    if (!PATH_COMPONENT.test(c)) {
      if (PATH_COMPONENT.test(c.toLowerCase())) return 'repository name must be lowercase';
      return `repository path component ${quote(c)} is invalid: use lowercase letters and digits, separated by one '.', one or two '_', or '-'s, starting and ending with a letter or digit`;
    }
  }
  return undefined;
}

function tagProblem(tag: string): string | undefined {
  if (tag === '') return 'tag is empty after ":"';
  if (tag.length > TAG_LENGTH_MAX) return `tag is longer than ${TAG_LENGTH_MAX} characters`;
  if (!TAG.test(tag)) {
    return `tag ${quote(tag)} is invalid: use letters, digits, '_', '.' and '-', not starting with '.' or '-'`;
  }
  return undefined;
}

function parseDigestPart(input: string, s: string): Digest {
  if (s === '') throw invalid(input, 'digest is empty after "@"');
  if (!DIGEST_SHAPE.test(s)) throw invalid(input, `digest ${quote(s)} is not of the form algorithm:hex`);
  try {
    return parseDigest(s);
  } catch (e) {
    throw invalid(input, e instanceof Error ? e.message : String(e), e);
  }
}

interface Parts {
  domain: string;
  path: string;
  tag: string | undefined;
  digest: Digest | undefined;
}

function split(input: unknown): Parts {
  if (typeof input !== 'string') {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid reference: expected a string, got ${typeof input}`,
    );
  }
  if (input === '') throw invalid(input, 'reference is empty');
  if (input.length > INPUT_LENGTH_MAX)
    throw invalid(input, `reference is longer than ${INPUT_LENGTH_MAX} characters`);
  // control characters and spaces are never valid; say so plainly rather than via the grammar
  if (/[\s\x00-\x1f\x7f]/.test(input))
    throw invalid(input, 'reference contains whitespace or control characters');

  if (input.includes('://')) {
    throw invalid(input, 'looks like a URL; write it without the scheme, as host/repository:tag');
  }

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = parseDigestPart(input, rest.slice(at + 1));
    rest = rest.slice(0, at);
  }

  if (rest.startsWith('[') && !rest.includes('/')) {
    throw invalid(input, 'an IPv6 registry host must be followed by "/" and a repository path');
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    const why = tagProblem(tag);
    if (why !== undefined) throw invalid(input, why);
  }

  if (rest === '') {
    throw invalid(input, at === 0 || colon === 0 ? 'repository name is missing' : 'repository name is empty');
  }

  let domain = '';
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0 && looksLikeDomain(rest.slice(0, slash))) {
    domain = rest.slice(0, slash);
    path = rest.slice(slash + 1);
    const why = domainProblem(domain);
    if (why !== undefined) throw invalid(input, why);
  }
  const why = pathProblem(path);
  if (why !== undefined) throw invalid(input, why);
  return { domain, path, tag, digest };
}

function build(domain: string, path: string, tag: string | undefined, digest: Digest | undefined): Reference {
  return Object.freeze({
    domain,
    path,
    ...(tag === undefined ? {} : { tag }),
    ...(digest === undefined ? {} : { digest }),
  });
}

function checkLength(input: string, domain: string, path: string): void {
  const name = domain === '' ? path : `${domain}/${path}`;
  if (name.length > NAME_TOTAL_LENGTH_MAX) {
    throw invalid(input, `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`);
  }
}

/**
 * Parse a reference as written, adding nothing: `alpine` has domain '' and path `alpine`.
 * Throws ERR_INVALID_REFERENCE naming the part that is wrong.
 */
export function parseReference(s: string): Reference {
  const p = split(s);
  checkLength(s, p.domain, p.path);
  return build(p.domain, p.path, p.tag, p.digest);
}

/**
 * Parse a reference the way `docker pull` reads it: no domain means Docker Hub
 * (`docker.io`), a single-component Hub path gets the `library/` namespace, and
 * `index.docker.io` becomes `docker.io`. No tag is added (see {@link withDefaultTag}).
 * A bare 64-hex string is refused: it is an image ID, not a name.
 */
export function parseNormalizedReference(s: string): Reference {
  if (typeof s === 'string' && IDENTIFIER.test(s)) {
    throw invalid(s, 'a 64-character hexadecimal string is an image ID, not a repository name');
  }
  const p = split(s);
  let domain = p.domain;
  let path = p.path;
  if (domain === '' || domain === DOCKER_HUB_LEGACY_DOMAIN) domain = DOCKER_HUB_DOMAIN;
  if (domain === DOCKER_HUB_DOMAIN && !path.includes('/')) path = OFFICIAL_REPO_PREFIX + path;
  checkLength(s, domain, path);
  return build(domain, path, p.tag, p.digest);
}

/**
 * Parse a bare repository name (`[domain/]path`, strict, nothing added); a tag or digest is
 * an error. For names that come from a registry API path or a catalog.
 */
export function parseRepositoryName(s: string): Reference {
  const p = split(s);
  if (p.tag !== undefined || p.digest !== undefined) {
    throw invalid(s, 'expected a repository name without a tag or digest');
  }
  checkLength(s, p.domain, p.path);
  return build(p.domain, p.path, undefined, undefined);
}

/** `r` with tag `latest` if it has neither a tag nor a digest; otherwise `r` itself. */
export function withDefaultTag(r: Reference): Reference {
  if (r.tag !== undefined || r.digest !== undefined) return r;
  return build(r.domain, r.path, DEFAULT_TAG, undefined);
}

/** `r` with its tag replaced by `tag` (validated); a digest is kept. */
export function withTag(r: Reference, tag: string): Reference {
  const why = tagProblem(tag);
  if (why !== undefined) throw invalid(`${repositoryName(r)}:${tag}`, why);
  return build(r.domain, r.path, tag, r.digest);
}

/** `r` with its digest replaced by `digest` (validated); a tag is kept. */
export function withDigest(r: Reference, digest: string): Reference {
  return build(r.domain, r.path, r.tag, parseDigestPart(`${repositoryName(r)}@${digest}`, digest));
}

/** `r` without tag or digest. */
export function withoutTagOrDigest(r: Reference): Reference {
  return build(r.domain, r.path, undefined, undefined);
}

/** `domain/path` (or just `path` when there is no domain). */
export function repositoryName(r: Reference): string {
  return r.domain === '' ? r.path : `${r.domain}/${r.path}`;
}

function suffix(r: Reference): string {
  return `${r.tag === undefined ? '' : `:${r.tag}`}${r.digest === undefined ? '' : `@${r.digest}`}`;
}

/** The full reference string: `domain/path[:tag][@digest]`. */
export function formatReference(r: Reference): string {
  return repositoryName(r) + suffix(r);
}

/**
 * Docker's short form: Docker Hub's domain is dropped, and so is `library/` when what
 * follows it is a single component (`alpine:latest`, `user/app`, `localhost:5000/x`).
 */
export function familiarString(r: Reference): string {
  return familiarName(r) + suffix(r);
}

/** The familiar repository name (without tag or digest). */
export function familiarName(r: Reference): string {
  if (r.domain !== DOCKER_HUB_DOMAIN) return repositoryName(r);
  if (r.path.startsWith(OFFICIAL_REPO_PREFIX)) {
    const rest = r.path.slice(OFFICIAL_REPO_PREFIX.length);
    if (!rest.includes('/')) return rest;
  }
  return r.path;
}

/**
 * What to ask a registry for under /manifests/: the digest when there is one (it wins over
 * a tag), else the tag, else `latest`.
 */
export function referenceOf(r: Reference): string {
  return r.digest ?? r.tag ?? DEFAULT_TAG;
}

/** The host (and port) to send registry API calls to for a reference domain. */
export function registryHost(domain: string): string {
  if (domain === '') {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      'reference has no registry domain; use a normalised reference (parseNormalizedReference)',
    );
  }
  if (domain === DOCKER_HUB_DOMAIN || domain === DOCKER_HUB_LEGACY_DOMAIN) return DOCKER_HUB_REGISTRY_HOST;
  return domain;
}

/** Whether two references name the same thing (same domain, path, tag and digest). */
export function sameReference(a: Reference, b: Reference): boolean {
  return a.domain === b.domain && a.path === b.path && a.tag === b.tag && a.digest === b.digest;
}
