// Layer inspection at any location (store name, oci:, docker://, archives): the layer report,
// the diff of two images, and flatten — each location opened through a Session; the work is
// in analyze/.

import { type FlattenOptions, type FlattenResult, flattenImage } from '../analyze/flatten.js';
import { type DiffImagesOptions, diffImages, type ImageDiff } from '../analyze/image-diff.js';
import { type AnalyzeLayersOptions, analyzeLayers, type LayerReport } from '../analyze/layers.js';
import { isFinalizer } from '../content/types.js';
import { type Location, parseLocation } from '../transport/location.js';
import { Session, type SessionOptions, withResolvedSource } from './session.js';

export interface LocationOptions extends SessionOptions {
  /** A session to reuse (it is not closed); default a new one for this call. */
  readonly session?: Session;
}

/** The layer report of the image at `location` (see analyze/layers.ts). */
export function imageLayers(
  location: string | Location,
  opts: LocationOptions & AnalyzeLayersOptions = {},
): Promise<LayerReport> {
  return withResolvedSource(location, opts, ({ target, root }) =>
    analyzeLayers({ fetcher: target, descriptor: root }, opts),
  );
}

/** The paths that differ between the images at two locations (see analyze/image-diff.ts). */
export async function imageDiff(
  a: string | Location,
  b: string | Location,
  opts: LocationOptions & DiffImagesOptions = {},
): Promise<ImageDiff> {
  const session = opts.session ?? new Session(opts);
  const shared = { ...opts, session };
  try {
    return await withResolvedSource(a, shared, (sa) =>
      withResolvedSource(b, shared, (sb) =>
        diffImages(
          { fetcher: sa.target, descriptor: sa.root },
          { fetcher: sb.target, descriptor: sb.root },
          opts,
        ),
      ),
    );
  } finally {
    if (!opts.session) await session.close();
  }
}

export interface FlattenImageResult extends FlattenResult {
  readonly from: Location;
  readonly to: Location;
  /** The ref tagged at the destination, if any. */
  readonly ref: string | undefined;
}

/**
 * Squash the image at `source` into one layer and write it to `destination` (a plain
 * NAME[:TAG] is the local store; any location can be written).
 */
export async function flatten(
  source: string | Location,
  destination: string | Location,
  opts: LocationOptions & FlattenOptions = {},
): Promise<FlattenImageResult> {
  const from = typeof source === 'string' ? parseLocation(source) : source;
  const to = typeof destination === 'string' ? parseLocation(destination) : destination;
  const session = opts.session ?? new Session(opts);
  const shared = { ...opts, session };
  try {
    return await withResolvedSource(from, shared, async ({ target, root }) => {
      const dest = await session.openDestination(to, from);
      try {
        const r = await flattenImage({ fetcher: target, descriptor: root }, dest.target, dest.ref, {
          ...opts,
          tmpDir: opts.tmpDir ?? session.tmpDir,
        });
        if (isFinalizer(dest.target)) await dest.target.finalize(opts.signal ? { signal: opts.signal } : {});
        return { ...r, from, to, ref: dest.ref };
      } finally {
        await dest.release();
      }
    });
  } finally {
    if (!opts.session) await session.close();
  }
}
