// Whiteouts: how a layer says "this path from a lower layer is gone", in the two on-disk forms.
//
// In a layer tar (OCI image spec, layer.md) a whiteout is an empty entry named `.wh.NAME`
// beside the removed NAME, and the opaque marker `.wh..wh..opq` inside a directory removes
// everything the lower layers had in it. Other names that start with `.wh..wh.` are aufs
// metadata (`.wh..wh.plnk`, `.wh..wh.aufs`) and are skipped, as docker and containerd do.
//
// In an overlayfs upper directory (the second on-disk form) a whiteout is a character device
// with device number 0/0 named NAME, and an opaque directory carries the xattr
// `trusted.overlay.opaque=y`.

import { UnsafePathError } from '../errors/errors.js';

/** Prefix of a whiteout entry's basename. */
export const WHITEOUT_PREFIX = '.wh.';
/** Prefix of whiteout metadata names (the opaque marker and aufs bookkeeping). */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
/** Basename of the opaque-directory marker. */
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

/** The xattr that makes an overlayfs upper directory opaque, and its value. */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
export const OVERLAY_OPAQUE_VALUE = 'y';
/** An overlayfs whiteout is a character device with this major and minor number (rdev 0). */
export const OVERLAY_WHITEOUT_MAJOR = 0;
export const OVERLAY_WHITEOUT_MINOR = 0;
/** Mode bits of an overlayfs whiteout device as overlayfs itself creates it (c---------). */
export const OVERLAY_WHITEOUT_MODE = 0;

/** What a basename means as far as whiteouts go. */
export type WhiteoutKind =
  | { readonly kind: 'none' } // an ordinary name
  | { readonly kind: 'whiteout'; readonly target: string } // `.wh.NAME` removes NAME
  | { readonly kind: 'opaque' } // `.wh..wh..opq`
  | { readonly kind: 'meta' }; // other `.wh..wh.*` (aufs metadata): ignored

function basenameOf(path: string): string {
  const trimmed = path.endsWith('/') ? path.slice(0, -1) : path;
  const slash = trimmed.lastIndexOf('/');
  return slash === -1 ? trimmed : trimmed.slice(slash + 1);
}

function dirnameOf(path: string): string {
  const trimmed = path.endsWith('/') ? path.slice(0, -1) : path;
  const slash = trimmed.lastIndexOf('/');
  return slash === -1 ? '' : trimmed.slice(0, slash);
}

/**
 * Classify a basename (or a path: its last component is used). A whiteout whose target is
 * empty, `.` or `..` (`.wh.`, `.wh..`, `.wh...`) could only climb out or hit the directory
 * itself: that is ERR_UNSAFE_PATH.
 */
export function classifyWhiteout(name: string): WhiteoutKind {
  const base = basenameOf(name);
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  if (base === WHITEOUT_OPAQUE) return { kind: 'opaque' };
  if (base.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta' };
  const target = base.slice(WHITEOUT_PREFIX.length);
  if (target === '' || target === '.' || target === '..') {
    throw new UnsafePathError(name, `the whiteout ${JSON.stringify(base)} names no entry it could remove`);
  }
  return { kind: 'whiteout', target };
}

/** Whether the last component of `name` is a whiteout of any kind (`.wh.` prefix). */
export function isWhiteout(name: string): boolean {
  return basenameOf(name).startsWith(WHITEOUT_PREFIX);
}

/** Whether the last component of `name` is the opaque marker `.wh..wh..opq`. */
export function isOpaqueMarker(name: string): boolean {
  return basenameOf(name) === WHITEOUT_OPAQUE;
}

/**
 * The path a whiteout removes: `a/b/.wh.c` → `a/b/c`. undefined when `name` is not a plain
 * whiteout (an ordinary name, the opaque marker or aufs metadata). Throws ERR_UNSAFE_PATH for
 * `.wh.`, `.wh..` and `.wh...`.
 */
export function whiteoutTarget(name: string): string | undefined {
  const k = classifyWhiteout(name);
  if (k.kind !== 'whiteout') return undefined;
  const dir = dirnameOf(name);
  return dir === '' ? k.target : `${dir}/${k.target}`;
}

/** The whiteout entry name for a removed path: `a/b/c` → `a/b/.wh.c`. */
export function whiteoutName(path: string): string {
  const dir = dirnameOf(path);
  const base = basenameOf(path);
  return dir === '' ? `${WHITEOUT_PREFIX}${base}` : `${dir}/${WHITEOUT_PREFIX}${base}`;
}

/** The opaque-marker entry name for a directory: `a/b` → `a/b/.wh..wh..opq` ('' is the root). */
export function opaqueMarkerName(dir: string): string {
  const d = dir.endsWith('/') ? dir.slice(0, -1) : dir;
  return d === '' ? WHITEOUT_OPAQUE : `${d}/${WHITEOUT_OPAQUE}`;
}

/** Whether an lstat result is an overlayfs whiteout: a character device with rdev 0 (0/0). */
export function isOverlayWhiteout(st: {
  isCharacterDevice(): boolean;
  readonly rdev: number | bigint;
}): boolean {
  return st.isCharacterDevice() && Number(st.rdev) === 0;
}

/** Whether an xattr value marks an overlayfs directory opaque (`y`, as overlayfs writes it). */
export function isOverlayOpaqueValue(value: Uint8Array | string | undefined): boolean {
  if (value === undefined) return false;
  const s = typeof value === 'string' ? value : Buffer.from(value).toString('latin1');
  return s === OVERLAY_OPAQUE_VALUE;
}
