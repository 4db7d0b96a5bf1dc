// Names that go into registry URLs, validated before they touch one: the registry host,
// the repository path, tags, and manifest references (a tag or a digest).

import { type Digest, parseDigest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { isValidDomain } from '../reference/reference.js';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^\w[\w.-]{0,127}$/;

/** Docker Hub's API host for its reference names; other hosts unchanged. */
export function apiHostFor(registry: string): string {
  return registry === 'docker.io' || registry === 'index.docker.io' ? 'registry-1.docker.io' : registry;
}

export function checkRegistryHost(registry: string): string {
  if (typeof registry !== 'string' || !isValidDomain(registry)) {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid registry host ${JSON.stringify(String(registry).slice(0, 200))}: want host[:port]`,
    );
  }
  return registry;
}

export function checkRepository(repository: string): string {
  const bad = (why: string) =>
    new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid repository name ${JSON.stringify(String(repository).slice(0, 300))}: ${why}`,
    );
  if (typeof repository !== 'string' || repository === '') throw bad('it is empty');
  if (repository.length > 255) throw bad('it is longer than 255 characters');
  for (const c of repository.split('/')) {
    if (!PATH_COMPONENT.test(c)) {
      throw bad(
        "each '/'-separated part must be lowercase letters and digits, separated by '.', '_', '__' or '-'s",
      );
    }
  }
  return repository;
}

export function isValidTag(tag: string): boolean {
  return typeof tag === 'string' && TAG.test(tag);
}

export function checkTag(tag: string): string {
  if (!isValidTag(tag)) {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid tag ${JSON.stringify(String(tag).slice(0, 200))}: use up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'`,
    );
  }
  return tag;
}

/** A manifest reference: a digest (validated with parseDigest) or a tag. */
export function parseManifestRef(ref: string): { readonly tag: string } | { readonly digest: Digest } {
  if (typeof ref === 'string' && ref.includes(':')) return { digest: parseDigest(ref) };
  return { tag: checkTag(ref) };
}
