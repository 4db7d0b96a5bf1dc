// The storage contract every backend implements: one-verb interfaces (Fetcher, Pusher,
// Resolver, Tagger) composed into Target, plus optional capabilities discovered with type
// guards (Deleter, Mounter, TagLister, ReferrerLister, Finalizer).
//
// Contracts (every implementation must keep them; the shared conformance suite checks):
// - fetch(desc) returns a stream whose bytes are checked against desc.size and desc.digest
//   as they flow; a mismatch makes the stream error before it ends. The caller consumes or
//   destroys the stream.
// - push(desc, content) is idempotent and atomic: pushing what exists is a no-op, and no
//   reader ever sees a partial blob. Content is verified against desc before it becomes
//   visible; on mismatch nothing is stored. Manifests and indexes (by media type) are pushed
//   the same way; a backend routes them to its manifest store.
// - exists(desc) answers whether the content is present (never fetches it).
// - resolve(ref) maps a tag (or digest) to the descriptor of a manifest or index.
// - tag(desc, ref) points ref at content already pushed.
// - A Target that writes a file as a whole (archives) implements Finalizer: nothing is
//   visible until finalize(); close() without finalize() discards everything.

import type { Readable } from 'node:stream';
import type { Digest } from '../digest/digest.js';
import type { Descriptor } from '../spec/types.js';

export interface FetchOptions {
  readonly signal?: AbortSignal;
  /** Called with the number of new bytes each time some arrive. */
  readonly onProgress?: (bytes: number) => void;
}

export interface PushOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (bytes: number) => void;
  /**
   * The caller asked `exists()` just before and was told no: a target that would check
   * again before uploading may skip it (a registry saves a HEAD round trip per blob). Push
   * stays idempotent either way.
   */
  readonly absent?: boolean;
}

export type Content = Readable | Uint8Array;

export interface Fetcher {
  fetch(desc: Descriptor, opts?: FetchOptions): Promise<Readable>;
}

export interface Pusher {
  push(desc: Descriptor, content: Content, opts?: PushOptions): Promise<void>;
}

export interface Storage extends Fetcher, Pusher {
  exists(desc: Descriptor, opts?: { readonly signal?: AbortSignal }): Promise<boolean>;
}

export interface Resolver {
  /** Resolve a tag (or digest string) to a manifest/index descriptor; ERR_NOT_FOUND if absent. */
  resolve(ref: string, opts?: { readonly signal?: AbortSignal }): Promise<Descriptor>;
}

export interface Tagger {
  tag(desc: Descriptor, ref: string, opts?: { readonly signal?: AbortSignal }): Promise<void>;
}

export interface Target extends Storage, Resolver, Tagger {
  /** A human-readable name for messages: `docker://host/repo`, `oci:/dir`, ... */
  readonly description: string;
  /** Release resources (connections, file handles, temp files). */
  close(): Promise<void>;
}

// ---- optional capabilities ----

export interface Deleter {
  delete(desc: Descriptor, opts?: { readonly signal?: AbortSignal }): Promise<void>;
}

export interface Mounter {
  /**
   * If this target can mount `desc` from `source` without moving bytes (same registry), the
   * name of the repository to mount from; otherwise undefined.
   */
  mountSourceFor(source: Target): string | undefined;
  /** Try a cross-repository mount; true if the blob is now present, false if the registry declined. */
  mount(desc: Descriptor, fromRepository: string, opts?: { readonly signal?: AbortSignal }): Promise<boolean>;
}

export interface TagLister {
  tags(opts?: {
    readonly signal?: AbortSignal;
    readonly last?: string;
    readonly n?: number;
  }): AsyncIterable<string>;
}

export interface ReferrerLister {
  referrers(
    subject: Descriptor,
    opts?: { readonly signal?: AbortSignal; readonly artifactType?: string },
  ): Promise<readonly Descriptor[]>;
}

/** Push a manifest and tag it in one step (a registry's PUT /manifests/<tag>). */
export interface ReferencePusher {
  pushReference(desc: Descriptor, content: Content, ref: string, opts?: PushOptions): Promise<void>;
}

/** Targets written as a whole (archives): nothing is visible until finalize(). */
export interface Finalizer {
  finalize(opts?: { readonly signal?: AbortSignal }): Promise<void>;
}

/** Targets that can list every tagged root (layouts, archives, the local store). */
export interface RootLister {
  /** Every (ref name, descriptor) pair the target's index holds; ref undefined if untagged. */
  roots(): Promise<readonly { readonly ref: string | undefined; readonly descriptor: Descriptor }[]>;
}

function hasMethod(o: unknown, name: string): boolean {
  return typeof o === 'object' && o !== null && typeof (o as Record<string, unknown>)[name] === 'function';
}

export const isDeleter = (t: unknown): t is Deleter => hasMethod(t, 'delete');
export const isMounter = (t: unknown): t is Mounter =>
  hasMethod(t, 'mount') && hasMethod(t, 'mountSourceFor');
export const isTagLister = (t: unknown): t is TagLister => hasMethod(t, 'tags');
export const isReferrerLister = (t: unknown): t is ReferrerLister => hasMethod(t, 'referrers');
export const isReferencePusher = (t: unknown): t is ReferencePusher => hasMethod(t, 'pushReference');
export const isFinalizer = (t: unknown): t is Finalizer => hasMethod(t, 'finalize');
export const isRootLister = (t: unknown): t is RootLister => hasMethod(t, 'roots');

export type { Digest };
