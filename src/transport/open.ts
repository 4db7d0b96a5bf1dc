// Locations -> Targets: opens the backend a location names, for reading (a source) or for
// writing (a destination), and says which ref to resolve or tag there.

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
  /** The target is shared (the session's store): release() leaves it open. */
  readonly shared: boolean;
  /** Close the target unless it is shared. */
  release(): Promise<void>;
}

function opened(target: Target, ref: string | undefined, shared = false): Opened {
  return { target, ref, shared, release: () => (shared ? Promise.resolve() : target.close()) };
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
      return opened(registryTarget(ctx, loc.reference), referenceOf(loc.reference));
    case 'store':
      return opened(await ctx.store(), storeRefName(loc.reference), true);
    case 'oci':
      return opened(await openLayout(loc.path, { readOnly: true }), loc.ref ?? '');
    case 'docker-archive':
      // archive code loads only when an archive is named: every CLI run pays for what it imports
      return opened(
        await (await import('../archive/docker-archive-reader.js')).openDockerArchive(loc.path, tmp),
        loc.ref ?? '',
      );
    case 'oci-archive':
      return opened(
        await (await import('../archive/oci-archive-reader.js')).openOciArchive(loc.path, tmp),
        loc.ref ?? '',
      );
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
      return opened(registryTarget(ctx, loc.reference), loc.reference.tag);
    case 'store':
      return opened(await ctx.store(), storeRefName(loc.reference), true);
    case 'oci':
      return opened(
        await openLayout(loc.path, { create: true }),
        loc.ref ?? srcRef?.tag ?? (source?.transport === 'oci' ? source.ref : undefined) ?? 'latest',
      );
    case 'docker-archive':
      return opened(
        await (await import('../archive/docker-archive-writer.js')).createDockerArchive(loc.path, tmp),
        loc.ref ??
          (srcRef?.tag
            ? familiarString(srcRef)
            : source?.transport === 'docker-archive'
              ? source.ref
              : undefined),
      );
    case 'oci-archive':
      return opened(
        await (await import('../archive/oci-archive-writer.js')).createOciArchive(loc.path, tmp),
        loc.ref ?? srcRef?.tag ?? (source?.transport === 'oci-archive' ? source.ref : undefined) ?? 'latest',
      );
  }
}
