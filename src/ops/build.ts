// buildImage: `stratum build` as a library call — a Dockerfile and its context into the local
// store (src/build), base images pulled from their registry when the store lacks them, the
// image tagged with store names, and optionally copied to a destination (`--push`).

import { type BuildOptions, type BuildResult, build } from '../build/build.js';
import { type CopyEvent, type CopyResult, copy } from '../copy/copy.js';
import { StratumError } from '../errors/errors.js';
import { parseLocation } from '../transport/location.js';
import { storeRefName } from '../transport/open.js';
import { pull } from './copy-image.js';
import { Session, type SessionOptions } from './session.js';

export interface BuildImageOptions
  extends SessionOptions,
    Omit<BuildOptions, 'store' | 'context' | 'tags' | 'pull'> {
  /** Reuse a session (its store, client and credentials); closed by the caller. */
  readonly session?: Session;
  /** Names for the image in the store, as users write them (`app`, `app:1`, `host/app:1`). */
  readonly tags?: readonly string[];
  /** Pull base images missing from the store from their registry (default true). */
  readonly pull?: boolean;
  /** Copy the built image here too (any location: `docker://host/app:1`, `oci:dir:tag`, ...). */
  readonly push?: string;
  readonly onCopyEvent?: (e: CopyEvent) => void;
}

export interface BuildImageResult extends BuildResult {
  /** The copy made for `push`. */
  readonly pushed?: CopyResult;
}

/** Store ref names of user-written image names; ERR_INVALID_ARGUMENT for other transports. */
export function storeTagNames(tags: readonly string[]): string[] {
  return tags.map((t) => {
    const loc = parseLocation(t);
    if (loc.transport !== 'store') {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `build tags name images in the local store (NAME[:TAG]), not ${t}; use --push to copy the image elsewhere`,
      );
    }
    if (loc.reference.digest !== undefined) {
      throw new StratumError('ERR_INVALID_ARGUMENT', `a build tag cannot name a digest: ${t}`);
    }
    return storeRefName(loc.reference);
  });
}

/** Build the Dockerfile in `context` into the local store. */
export async function buildImage(context: string, opts: BuildImageOptions = {}): Promise<BuildImageResult> {
  const tags = storeTagNames(opts.tags ?? []);
  const session = opts.session ?? new Session(opts);
  try {
    const store = await session.store();
    const { session: _s, tags: _t, pull: allowPull, push: pushTo, onCopyEvent, ...rest } = opts;
    const result = await build({
      ...rest,
      store,
      context,
      tags,
      ...(allowPull === false
        ? {}
        : {
            pull: async (ref: string, signal?: AbortSignal) => {
              await pull(ref, { session, ...(signal ? { signal } : {}) });
            },
          }),
    });
    if (pushTo === undefined) return result;
    const dest = parseLocation(pushTo, { defaultTransport: 'docker' });
    const opened = await session.openDestination(dest);
    try {
      const pushed = await copy(store, result.manifest.digest, opened.target, opened.ref, {
        tmpDir: session.tmpDir,
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(onCopyEvent ? { onEvent: onCopyEvent } : {}),
      });
      return { ...result, pushed };
    } finally {
      await opened.release();
    }
  } finally {
    if (!opts.session) await session.close();
  }
}
