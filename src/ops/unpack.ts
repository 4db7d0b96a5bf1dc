// unpack: an image at any location (store name, oci:, docker://, archives) into an OCI
// runtime bundle — the location is opened through a Session, the rest is bundle/unpack.ts.

import { type UnpackOptions, type UnpackResult, unpackImage } from '../bundle/unpack.js';
import { type Location, parseLocation } from '../transport/location.js';
import { Session, type SessionOptions } from './session.js';

export interface UnpackImageOptions extends SessionOptions, UnpackOptions {
  /** A session to reuse (it is not closed); default a new one for this call. */
  readonly session?: Session;
}

/** Unpack the image at `location` into a runtime bundle at `bundleDir`. */
export async function unpack(
  location: string | Location,
  bundleDir: string,
  opts: UnpackImageOptions = {},
): Promise<UnpackResult> {
  const loc = typeof location === 'string' ? parseLocation(location) : location;
  const session = opts.session ?? new Session(opts);
  try {
    const { target, ref } = await session.openSource(loc);
    try {
      const descriptor = await target.resolve(ref ?? '', opts.signal ? { signal: opts.signal } : {});
      return await unpackImage({ fetcher: target, descriptor }, bundleDir, opts);
    } finally {
      // the store belongs to the session (it is closed with it)
      if (loc.transport !== 'store') await target.close();
    }
  } finally {
    if (!opts.session) await session.close();
  }
}
