// Image locations as users write them, skopeo-style, and parsed into a typed value:
//   docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry
//   oci:DIR[:TAG]                             an OCI image layout directory
//   docker-archive:FILE[:NAME:TAG|:@N]        a docker save archive
//   oci-archive:FILE[:TAG]                    a tar of an OCI layout
//   NAME[:TAG|@DIGEST]                        the local store (normalised as docker does)
// Paths cannot contain ':' (as in skopeo): the first ':' after the path starts the tag.

import { StratumError } from '../errors/errors.js';
import {
  familiarString,
  formatReference,
  parseNormalizedReference,
  type Reference,
  withDefaultTag,
} from '../reference/reference.js';
import { checkRefName } from '../spec/ref-name.js';

export type Location =
  | { readonly transport: 'docker'; readonly reference: Reference }
  | { readonly transport: 'store'; readonly reference: Reference }
  | { readonly transport: 'oci'; readonly path: string; readonly ref: string | undefined }
  | { readonly transport: 'docker-archive'; readonly path: string; readonly ref: string | undefined }
  | { readonly transport: 'oci-archive'; readonly path: string; readonly ref: string | undefined };

export type TransportName = Location['transport'];

const PATH_TRANSPORTS = ['oci', 'docker-archive', 'oci-archive'] as const;
const UNSUPPORTED = ['dir', 'containers-storage', 'docker-daemon', 'ostree', 'sif', 'tarball'];

function splitPath(transport: string, rest: string): { path: string; ref: string | undefined } {
  const colon = rest.indexOf(':');
  const path = colon === -1 ? rest : rest.slice(0, colon);
  const ref = colon === -1 ? undefined : rest.slice(colon + 1);
  if (path === '') {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid ${transport} location: no path given (want ${transport}:PATH[:TAG])`,
    );
  }
  if (ref === '') {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid ${transport} location "${transport}:${rest}": empty tag after ':'`,
    );
  }
  return { path, ref };
}

/**
 * Parse a location. Plain names (no transport) are the local store, normalised with the
 * default tag `latest` (use `defaultTransport: 'docker'` to read them as registry references,
 * as `pull NAME` does).
 */
export function parseLocation(s: string, opts: { defaultTransport?: 'store' | 'docker' } = {}): Location {
  if (s.startsWith('docker://')) {
    return {
      transport: 'docker',
      reference: withDefaultTag(parseNormalizedReference(s.slice('docker://'.length))),
    };
  }
  for (const t of PATH_TRANSPORTS) {
    if (s.startsWith(`${t}:`)) {
      const { path, ref } = splitPath(t, s.slice(t.length + 1));
      if (t === 'docker-archive') {
        if (ref === undefined || /^@\d+$/.test(ref)) return { transport: t, path, ref };
        return { transport: t, path, ref: familiarString(withDefaultTag(parseNormalizedReference(ref))) };
      }
      return { transport: t, path, ref: ref === undefined ? undefined : checkRefName(ref, `${t} tag`) };
    }
  }
  const scheme = /^([a-z][a-z0-9+.-]*):(?:\/\/)?/.exec(s);
  if (scheme && (s.includes('://') || UNSUPPORTED.includes(scheme[1]!))) {
    throw new StratumError(
      'ERR_INVALID_TRANSPORT',
      `unsupported transport "${scheme[1]}" in ${JSON.stringify(s)}: use docker://, oci:, docker-archive:, oci-archive:, or a plain NAME[:TAG] for the local store`,
    );
  }
  const reference = withDefaultTag(parseNormalizedReference(s));
  return { transport: opts.defaultTransport ?? 'store', reference };
}

export function formatLocation(loc: Location): string {
  switch (loc.transport) {
    case 'docker':
      return `docker://${formatReference(loc.reference)}`;
    case 'store':
      return familiarString(loc.reference);
    default:
      return `${loc.transport}:${loc.path}${loc.ref === undefined ? '' : `:${loc.ref}`}`;
  }
}

/** The full normalised reference a location names, if it names one (registry or store). */
export function referenceOfLocation(loc: Location): Reference | undefined {
  return loc.transport === 'docker' || loc.transport === 'store' ? loc.reference : undefined;
}
