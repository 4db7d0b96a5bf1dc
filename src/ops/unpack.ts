// unpack: an image at any location (store name, oci:, docker://, archives) into an OCI
// runtime bundle — the location is opened through a Session, the rest is bundle/unpack.ts.

import { type UnpackOptions, type UnpackResult, unpackImage } from '../bundle/unpack.js';
import type { Location } from '../transport/location.js';
import { type Session, type SessionOptions, withResolvedSource } from './session.js';

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
  return withResolvedSource(location, opts, ({ target, root }) =>
    unpackImage({ fetcher: target, descriptor: root }, bundleDir, opts),
  );
}
