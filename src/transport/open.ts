// Locations -> Targets: opens the backend a location names, for reading (a source) or for
// writing (a destination), and says which ref to resolve or tag there.

import { openDockerArchive } from '../archive/docker-archive-reader.js';
import { createDockerArchive } from '../archive/docker-archive-writer.js';
import { openOciArchive } from '../archive/oci-archive-reader.js';
import { createOciArchive } from '../archive/oci-archive-writer.js';
import type { Target } from '../content/types.js';
import { openLayout } from '../layout/layout.js';
import { familiarString, formatReference, type Reference, referenceOf } from '../reference/reference.js';
import type { RegistryClient } from '../registry/client.js';
import { RegistryTarget } from '../registry/target.js';
import { type Location, referenceOfLocation } from './location.js';

export interface OpenContext {
  /** The registry client (shared connections, tokens, credentials). */
  readonly client: RegistryClient;
  /** Opens the local store. */
  readonly store: () => Promise<Target>;
  /** Temporary files of archive writers and compressed archive readers. */
  readonly tmpDir?: string;
}

export interface Opened {
  readonly target: Target;
  /** The ref to resolve (source) or to tag (destination); undefined: none. */
  readonly ref: string | undefined;
}

/** The name a store image is tagged with: the full normalised reference. */
export function storeRefName(r: Reference): string {
  return formatReference(r);
}

function registryTarget(ctx: OpenContext, r: Reference): RegistryTarget {
  return new RegistryTarget(ctx.client, r.domain, r.path);
}

/** Open a location to read an image from. */
export async function openSource(loc: Location, ctx: OpenContext): Promise<Opened> {
  const tmp = ctx.tmpDir ? { tmpDir: ctx.tmpDir } : {};
  switch (loc.transport) {
    case 'docker':
      return { target: registryTarget(ctx, loc.reference), ref: referenceOf(loc.reference) };
    case 'store':
      return { target: await ctx.store(), ref: storeRefName(loc.reference) };
    case 'oci':
      return { target: await openLayout(loc.path, { readOnly: true }), ref: loc.ref ?? '' };
    case 'docker-archive':
      return { target: await openDockerArchive(loc.path, tmp), ref: loc.ref ?? '' };
    case 'oci-archive':
      return { target: await openOciArchive(loc.path, tmp), ref: loc.ref ?? '' };
  }
}

/**
 * Open a location to write an image to. When the destination names no tag, one is derived
 * from the source: an `oci:` layout gets the source's tag (or `latest`), a docker archive
 * gets the source's name as docker save would write it (or stays untagged).
 */
export async function openDestination(loc: Location, ctx: OpenContext, source?: Location): Promise<Opened> {
  const tmp = ctx.tmpDir ? { tmpDir: ctx.tmpDir } : {};
  const srcRef = source ? referenceOfLocation(source) : undefined;
  switch (loc.transport) {
    case 'docker':
      return { target: registryTarget(ctx, loc.reference), ref: loc.reference.tag };
    case 'store':
      return { target: await ctx.store(), ref: storeRefName(loc.reference) };
    case 'oci':
      return {
        target: await openLayout(loc.path, { create: true }),
        ref: loc.ref ?? srcRef?.tag ?? (source?.transport === 'oci' ? source.ref : undefined) ?? 'latest',
      };
    case 'docker-archive':
      return {
        target: await createDockerArchive(loc.path, tmp),
        ref:
          loc.ref ??
          (srcRef?.tag
            ? familiarString(srcRef)
            : source?.transport === 'docker-archive'
              ? source.ref
              : undefined),
      };
    case 'oci-archive':
      return {
        target: await createOciArchive(loc.path, tmp),
        ref:
          loc.ref ??
          srcRef?.tag ??
          (source?.transport === 'oci-archive' ? source.ref : undefined) ??
          'latest',
      };
  }
}
