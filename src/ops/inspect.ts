// inspect: what skopeo inspect shows for an image at any location — or its raw manifest or
// config — without fetching any layer.

import type { Target } from '../content/types.js';
import { Image, Index } from '../image/image.js';
import { formatPlatform, hostPlatform } from '../image/platform.js';
import { isIndexMediaType } from '../spec/media-types.js';
import type { Descriptor, Platform } from '../spec/types.js';
import type { Location } from '../transport/location.js';
import { type Session, type SessionOptions, withResolvedSource } from './session.js';

export interface InspectOptions extends SessionOptions {
  readonly session?: Session;
  readonly platform?: Platform;
  readonly signal?: AbortSignal;
}

export interface InspectResult {
  readonly Name: string;
  readonly Digest: string;
  readonly MediaType: string;
  /** Present when the location named an index: its digest and platforms. */
  readonly Index?: { readonly Digest: string; readonly Platforms: readonly string[] };
  readonly Created?: string | undefined;
  readonly Architecture: string;
  readonly Os: string;
  readonly Variant?: string | undefined;
  readonly Labels: Readonly<Record<string, string>>;
  readonly Env: readonly string[];
  readonly Entrypoint: readonly string[] | null;
  readonly Cmd: readonly string[] | null;
  readonly WorkingDir?: string | undefined;
  readonly User?: string | undefined;
  readonly Layers: readonly string[];
  readonly LayersData: readonly {
    readonly MIMEType: string;
    readonly Digest: string;
    readonly Size: number;
  }[];
  readonly Size: number;
}

function withSource<T>(
  location: string | Location,
  opts: InspectOptions,
  fn: (img: { target: Target; root: Descriptor; name: string }) => Promise<T>,
): Promise<T> {
  return withResolvedSource(location, opts, ({ target, root }) =>
    fn({ target, root, name: typeof location === 'string' ? location : target.description }),
  );
}

/** The root manifest (or index) bytes, exactly as stored. */
export function inspectRaw(location: string | Location, opts: InspectOptions = {}): Promise<Buffer> {
  return withSource(location, opts, async ({ target, root }) =>
    isIndexMediaType(root.mediaType)
      ? new Index(target, root).rawIndex()
      : new Image(target, root).rawManifest(),
  );
}

async function pick(target: Target, root: Descriptor, platform?: Platform) {
  if (!isIndexMediaType(root.mediaType)) return { image: new Image(target, root), index: undefined };
  const index = new Index(target, root);
  return { image: await index.image(platform ?? hostPlatform()), index };
}

/** The image config bytes (for an index: of the platform's image). */
export function inspectConfig(location: string | Location, opts: InspectOptions = {}): Promise<Buffer> {
  return withSource(location, opts, async ({ target, root }) =>
    (await pick(target, root, opts.platform)).image.rawConfig(),
  );
}

/** A summary like skopeo inspect's. */
export function inspect(location: string | Location, opts: InspectOptions = {}): Promise<InspectResult> {
  return withSource(location, opts, async ({ target, root, name }) => {
    const { image, index } = await pick(target, root, opts.platform);
    const [manifest, config] = await Promise.all([image.manifest(), image.config()]);
    const c = config.config ?? {};
    const platforms = index
      ? (await index.manifests()).flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : []))
      : undefined;
    return {
      Name: name,
      Digest: image.descriptor.digest,
      MediaType: image.descriptor.mediaType,
      ...(index && platforms ? { Index: { Digest: index.descriptor.digest, Platforms: platforms } } : {}),
      Created: config.created,
      Architecture: config.architecture,
      Os: config.os,
      Variant: config.variant,
      Labels: c.Labels ?? {},
      Env: c.Env ?? [],
      Entrypoint: c.Entrypoint ?? null,
      Cmd: c.Cmd ?? null,
      WorkingDir: c.WorkingDir,
      User: c.User,
      Layers: manifest.layers.map((l) => l.digest),
      LayersData: manifest.layers.map((l) => ({ MIMEType: l.mediaType, Digest: l.digest, Size: l.size })),
      Size: await image.size(),
    };
  });
}
