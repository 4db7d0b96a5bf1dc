// Repository names of the registry API and the ref names of the store they map onto.
//
// The store names images by full normalised reference (`docker.io/library/alpine:latest`,
// `ghcr.io/org/app:1`). The server reads a repository name the way `docker pull` reads an
// image name, so a repository is the same image the stratum CLI means by that name:
//   library/alpine, alpine, docker.io/library/alpine -> docker.io/library/alpine
//   team/app                                          -> docker.io/team/app
//   ghcr.io/org/app                                   -> ghcr.io/org/app
// A push to `127.0.0.1:5000/team/app:1` is stored as `docker.io/team/app:1`, which
// `stratum images` lists as `team/app 1` — exactly as a Docker Hub mirror would. Store names
// whose registry has a port (`localhost:5000/x`) cannot be written as a repository name in
// a URL, so they are not served by name (their content stays reachable by digest).
//
// Everything here validates before anything is built from the name: the distribution
// spec's name grammar first, then the reference parser (lengths, domain syntax).

import {
  NAME_TOTAL_LENGTH_MAX,
  parseNormalizedReference,
  parseReference,
  TAG_LENGTH_MAX,
} from '../reference/reference.js';
import { RegistryHttpError } from './http-error.js';

// the distribution spec's <name> grammar
const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** A repository as requested, and the store key (`domain/path`) it maps to. */
export interface Repository {
  /** The name as it appeared in the URL (echoed back in answers and Location headers). */
  readonly name: string;
  /** `domain/path` of the normalised reference: the prefix of the store's ref names. */
  readonly key: string;
}

function quote(s: string): string {
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
}

/** Validate a repository name from a URL; throws NAME_INVALID (400) saying why. */
export function parseRepository(name: string): Repository {
  if (name.length > NAME_TOTAL_LENGTH_MAX) {
    throw new RegistryHttpError(
      400,
      'NAME_INVALID',
      `invalid repository name: longer than ${NAME_TOTAL_LENGTH_MAX} characters`,
    );
  }
  if (!NAME_RE.test(name)) {
    throw new RegistryHttpError(
      400,
      'NAME_INVALID',
      `invalid repository name ${quote(name)}: use lowercase letters and digits separated by '.', '_', '__' or '-', and '/' between components`,
      { name },
    );
  }
  try {
    const r = parseNormalizedReference(name);
    return { name, key: `${r.domain}/${r.path}` };
  } catch (e) {
    throw new RegistryHttpError(
      400,
      'NAME_INVALID',
      `invalid repository name ${quote(name)}: ${(e as Error).message}`,
      {
        name,
      },
    );
  }
}

export function isValidTag(s: string): boolean {
  return s.length <= TAG_LENGTH_MAX && TAG_RE.test(s);
}

/** The store's ref name for a tag in a repository. */
export function tagRefName(repo: Repository, tag: string): string {
  return `${repo.key}:${tag}`;
}

/** A store ref name split into repository key and tag (or digest); undefined if it is not a full reference. */
export function splitStoreRef(
  ref: string,
): { readonly key: string; readonly tag?: string; readonly digest?: string } | undefined {
  let r: ReturnType<typeof parseReference>;
  try {
    r = parseReference(ref);
  } catch {
    return undefined;
  }
  if (r.domain === '') return undefined;
  return {
    key: `${r.domain}/${r.path}`,
    ...(r.tag === undefined ? {} : { tag: r.tag }),
    ...(r.digest === undefined ? {} : { digest: r.digest }),
  };
}

/**
 * The repository name under which a store key is served (`library/alpine` for
 * docker.io/library/alpine, `ghcr.io/org/app` for ghcr.io/org/app), or undefined when it
 * cannot be written as a repository name (a registry with a port, uppercase letters).
 */
export function servedName(key: string): string | undefined {
  const slash = key.indexOf('/');
  const domain = key.slice(0, slash);
  const path = key.slice(slash + 1);
  const name = domain === 'docker.io' ? path : key;
  if (!NAME_RE.test(name)) return undefined;
  // it must map back to the same key (a Hub path whose first component looks like a host does not)
  try {
    const r = parseNormalizedReference(name);
    return `${r.domain}/${r.path}` === key ? name : undefined;
  } catch {
    return undefined;
  }
}
