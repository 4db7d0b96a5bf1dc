// copyImage / pull / push: the user-level copy between any two locations, as
// `skopeo copy` and `docker pull/push` do it.

import { type CopyOptions, type CopyResult, copy } from '../copy/copy.js';
import { CopyError, type CopySide, StratumError } from '../errors/errors.js';
import { type Location, parseLocation } from '../transport/location.js';
import type { Opened } from '../transport/open.js';
import { Session, type SessionOptions } from './session.js';

export interface CopyImageOptions extends CopyOptions, SessionOptions {
  /** Reuse a session (its store, client and credentials); closed by the caller. */
  readonly session?: Session;
}

export interface CopyImageResult extends CopyResult {
  readonly from: Location;
  readonly to: Location;
  /** The ref tagged at the destination, if any. */
  readonly ref: string | undefined;
}

async function opening(side: CopySide, what: string, fn: () => Promise<Opened>): Promise<Opened> {
  try {
    return await fn();
  } catch (e) {
    throw e instanceof CopyError ? e : new CopyError(side, what, e);
  }
}

async function withSession<T>(opts: CopyImageOptions, fn: (s: Session) => Promise<T>): Promise<T> {
  const session = opts.session ?? new Session(opts);
  try {
    return await fn(session);
  } finally {
    if (!opts.session) await session.close();
  }
}

/** Copy an image between two locations (see transport/location.ts for their forms). */
export async function copyImage(
  src: string | Location,
  dst: string | Location,
  opts: CopyImageOptions = {},
): Promise<CopyImageResult> {
  const from = typeof src === 'string' ? parseLocation(src) : src;
  const to = typeof dst === 'string' ? parseLocation(dst) : dst;
  return withSession(opts, async (session) => {
    const source = await opening('source', 'open', () => session.openSource(from));
    try {
      const dest = await opening('destination', 'open', () => session.openDestination(to, from));
      try {
        const result = await copy(source.target, source.ref ?? '', dest.target, dest.ref, {
          ...opts,
          tmpDir: opts.tmpDir ?? session.tmpDir,
        });
        return { ...result, from, to, ref: dest.ref };
      } finally {
        await dest.release();
      }
    } finally {
      await source.release();
    }
  });
}

/** Pull an image into the local store: `pull alpine`, `pull docker://host/app:1`, `pull oci:dir:tag`. */
export function pull(ref: string, opts: CopyImageOptions = {}): Promise<CopyImageResult> {
  const from = parseLocation(ref, { defaultTransport: 'docker' });
  const to: Location =
    from.transport === 'docker' ? { transport: 'store', reference: from.reference } : parseLocation(ref);
  if (to.transport !== 'store') {
    // oci:, archives: the store name is the archive's tag if it names one
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `pull takes a registry reference; to load from ${from.transport}, use: stratum copy ${ref} NAME[:TAG]`,
    );
  }
  return copyImage(from, to, opts);
}

/** Push a store image to a registry (`push app:1 docker://host/app:1`, or `push host/app:1`). */
export function push(storeRef: string, dst?: string, opts: CopyImageOptions = {}): Promise<CopyImageResult> {
  const from = parseLocation(storeRef, { defaultTransport: 'store' });
  if (from.transport !== 'store') {
    return copyImage(from, dst ?? storeRef, opts);
  }
  const to: Location =
    dst === undefined
      ? { transport: 'docker', reference: from.reference }
      : parseLocation(dst, { defaultTransport: 'docker' });
  return copyImage(from, to, opts);
}
