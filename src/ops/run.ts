// run / containers / commit as library calls over a Session: the image is found in the
// local store (pulled from its registry first when missing, as `docker run` does), then
// src/runtime does the rest.

import { StratumError } from '../errors/errors.js';
import { Image, Index } from '../image/image.js';
import { hostPlatform } from '../image/platform.js';
import type { Store } from '../layout/store.js';
import { familiarString } from '../reference/reference.js';
import type { CommitOptions, CommitResult } from '../runtime/commit.js';
import {
  type AttachOptions,
  Containers,
  type CreateOptions,
  type ExitResult,
} from '../runtime/containers.js';
import type { ContainerRecord } from '../runtime/state.js';
import { isIndexMediaType } from '../spec/media-types.js';
import type { Platform } from '../spec/types.js';
import { parseLocation } from '../transport/location.js';
import { storeRefName } from '../transport/open.js';
import { Session, type SessionOptions } from './session.js';

export interface ContainerOpOptions extends SessionOptions {
  /** Reuse a session (closed by the caller). */
  readonly session?: Session;
  /** The OCI runtime for new containers: a path, or a name looked up in PATH (default runc). */
  readonly runtime?: string;
}

export interface RunImageOptions
  extends ContainerOpOptions,
    Omit<CreateOptions, 'image' | 'imageName'>,
    AttachOptions {
  /** Start in the background (a monitor process waits for it); resolves once it started. */
  readonly detach?: boolean;
  /** Pull when the image is not in the store (default), or never. */
  readonly pull?: 'missing' | 'never';
  /** The platform to pick from an index (default this machine's). */
  readonly platform?: Platform;
  /** Told before a pull starts. */
  readonly onPull?: (image: string) => void;
  /** Told once the container exists, right before it starts. */
  readonly onCreated?: (container: ContainerRecord) => void;
}

export interface RunImageResult extends Partial<ExitResult> {
  readonly id: string;
  readonly container: ContainerRecord;
}

async function withSession<T>(opts: ContainerOpOptions, fn: (s: Session) => Promise<T>): Promise<T> {
  const session = opts.session ?? new Session(opts);
  try {
    return await fn(session);
  } finally {
    if (!opts.session) await session.close();
  }
}

/** The containers of the session's store. */
export async function openContainers(session: Session, opts: { runtime?: string } = {}): Promise<Containers> {
  await session.store();
  return Containers.open(session.root, opts.runtime ? { runtime: opts.runtime } : {});
}

/**
 * An image of the local store by name (`busybox`, `app:1`, `host/repo@sha256:...`), pulled from
 * its registry first when missing (unless `pull: 'never'`). An index gives the platform's image.
 */
export async function storeImage(
  session: Session,
  name: string,
  opts: Pick<RunImageOptions, 'pull' | 'platform' | 'onPull' | 'signal'> = {},
): Promise<{ image: Image; name: string }> {
  const loc = parseLocation(name, { defaultTransport: 'store' });
  if (loc.transport !== 'store' && loc.transport !== 'docker') {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `containers run images of the local store; copy it there first: stratum copy ${name} NAME[:TAG]`,
    );
  }
  const store: Store = await session.store();
  const refName = storeRefName(loc.reference);
  const shown = familiarString(loc.reference);
  let desc = await store.resolve(refName).catch((e: unknown) => {
    if (e instanceof StratumError && e.code === 'ERR_NOT_FOUND') return undefined;
    throw e;
  });
  if (!desc) {
    if (opts.pull === 'never') {
      throw new StratumError(
        'ERR_NOT_FOUND',
        `image ${shown} is not in the local store (and pulling is off)`,
      );
    }
    opts.onPull?.(shown);
    // the copy engine loads only when a pull is needed: a warm `run` starts sooner
    const { pull } = await import('./copy-image.js');
    await pull(refName, { session, ...(opts.signal ? { signal: opts.signal } : {}) });
    desc = await store.resolve(refName);
  }
  if (isIndexMediaType(desc.mediaType)) {
    return { image: await new Index(store, desc).image(opts.platform ?? hostPlatform()), name: shown };
  }
  return { image: new Image(store, desc), name: shown };
}

/** `run`: create a container from an image and start it (attached, or detached). */
export async function runImage(image: string, opts: RunImageOptions = {}): Promise<RunImageResult> {
  return withSession(opts, async (session) => {
    const found = await storeImage(session, image, opts);
    const containers = await openContainers(session, opts);
    const container = await containers.create({ ...opts, image: found.image, imageName: found.name });
    opts.onCreated?.(container);
    if (opts.detach) {
      try {
        return { id: container.id, container: await containers.startDetached(container.id) };
      } catch (e) {
        if (container.autoRemove) await containers.remove(container.id, { force: true }).catch(() => {});
        throw e;
      }
    }
    try {
      const r = await containers.start(container.id, opts);
      return { id: container.id, container, ...r };
    } catch (e) {
      if (container.autoRemove) await containers.remove(container.id, { force: true }).catch(() => {});
      throw e;
    }
  });
}

/** `create`: a container from an image (pulled when missing), not started. */
export async function createContainer(image: string, opts: RunImageOptions = {}): Promise<ContainerRecord> {
  return withSession(opts, async (session) => {
    const found = await storeImage(session, image, opts);
    const containers = await openContainers(session, opts);
    return containers.create({ ...opts, image: found.image, imageName: found.name });
  });
}

/**
 * `start`: start a created container — attached (resolves with its exit once it is gone) or
 * in the background (resolves once it runs; a monitor process records its exit).
 */
export async function startContainer(
  ref: string,
  opts: ContainerOpOptions & AttachOptions & { readonly attach?: boolean } = {},
): Promise<RunImageResult> {
  return withContainers(opts, async (containers) => {
    const record = await containers.records.find(ref);
    if (!opts.attach) return { id: record.id, container: await containers.startDetached(record.id) };
    return { id: record.id, container: record, ...(await containers.start(record.id, opts)) };
  });
}

/** `commit`: a container's changes as a new store image named `name` (e.g. `app:2`). */
export async function commit(
  container: string,
  name: string | undefined,
  opts: ContainerOpOptions & CommitOptions = {},
): Promise<CommitResult & { ref: string | undefined }> {
  return withSession(opts, async (session) => {
    let ref: string | undefined;
    if (name !== undefined) {
      const loc = parseLocation(name, { defaultTransport: 'store' });
      if (loc.transport !== 'store') {
        throw new StratumError(
          'ERR_INVALID_ARGUMENT',
          `commit writes to the local store: give NAME[:TAG], not ${name}`,
        );
      }
      ref = storeRefName(loc.reference);
    }
    const store = await session.store();
    const containers = await openContainers(session, opts);
    const { commitContainer } = await import('../runtime/commit.js');
    const r = await commitContainer(containers, store, container, ref, opts);
    return { ...r, ref };
  });
}

/** Run `fn` with the containers of the store (the CLI's ps, stop, rm, ... go through here). */
export async function withContainers<T>(
  opts: ContainerOpOptions,
  fn: (containers: Containers) => Promise<T>,
): Promise<T> {
  return withSession(opts, async (session) => fn(await openContainers(session, opts)));
}
