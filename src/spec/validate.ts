// Validation at the boundary: untrusted JSON bytes -> typed OCI / Docker documents.
// Every document from outside (registry answers, layout files, archive members) passes
// through here. Checks: size limits, JSON shape, digests, sizes, media types, and that a
// document's declared mediaType agrees with the type it came with (descriptor or
// Content-Type) and with its shape — the manifest/index confusion of CVE-2021-41190.

import { parseDigest } from '../digest/digest.js';
import { StratumError } from '../errors/errors.js';
import { isIndexMediaType, isManifestMediaType, isSchema1MediaType, MediaType } from './media-types.js';
import type {
  ContainerConfig,
  Descriptor,
  ImageConfig,
  ImageIndex,
  ImageManifest,
  ManifestDocument,
  Platform,
} from './types.js';
import { Limits } from './types.js';

function invalid(what: string, why: string): StratumError {
  return new StratumError('ERR_INVALID_DOCUMENT', `invalid ${what}: ${why}`);
}

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parse JSON with a size bound. */
export function parseJsonLimited(bytes: Uint8Array, limit: number, what: string): unknown {
  if (bytes.byteLength > limit) {
    throw new StratumError(
      'ERR_TOO_LARGE',
      `${what} is ${bytes.byteLength} bytes, over the limit of ${limit}`,
    );
  }
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (e) {
    throw new StratumError('ERR_INVALID_DOCUMENT', `invalid ${what}: not JSON (${(e as Error).message})`, {
      cause: e,
    });
  }
}

// RFC 6838 type/subtype (no parameters)
const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

/** Strip parameters (`; charset=utf-8`) and whitespace from a Content-Type. */
export function baseMediaType(contentType: string): string {
  const semi = contentType.indexOf(';');
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

function checkMediaType(v: unknown, where: string): string {
  if (typeof v !== 'string' || !MEDIA_TYPE_RE.test(v)) {
    throw invalid(where, `mediaType ${JSON.stringify(v)} is not a valid media type`);
  }
  return v;
}

function checkStringMap(v: unknown, where: string): Readonly<Record<string, string>> {
  if (!isObject(v)) throw invalid(where, 'annotations must be an object of strings');
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw invalid(where, `annotation ${JSON.stringify(k)} is not a string`);
  }
  return v as Record<string, string>;
}

function checkStringArray(v: unknown, where: string, field: string): readonly string[] {
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw invalid(where, `${field} must be an array of strings`);
  }
  return v as string[];
}

function checkPlatform(v: unknown, where: string): Platform {
  if (!isObject(v)) throw invalid(where, 'platform must be an object');
  if (typeof v.os !== 'string' || v.os === '') throw invalid(where, 'platform.os must be a non-empty string');
  if (typeof v.architecture !== 'string' || v.architecture === '') {
    throw invalid(where, 'platform.architecture must be a non-empty string');
  }
  if (v.variant !== undefined && typeof v.variant !== 'string')
    throw invalid(where, 'platform.variant must be a string');
  if (v['os.version'] !== undefined && typeof v['os.version'] !== 'string') {
    throw invalid(where, 'platform.os.version must be a string');
  }
  if (v['os.features'] !== undefined) checkStringArray(v['os.features'], where, 'platform.os.features');
  if (v.features !== undefined) checkStringArray(v.features, where, 'platform.features');
  return v as unknown as Platform;
}

/** Validate a descriptor. `where` names it in messages ("manifest layers[2]"). */
export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(where, 'descriptor must be an object');
  const mediaType = checkMediaType(v.mediaType, where);
  let digest: Descriptor['digest'];
  try {
    digest = parseDigest(v.digest);
  } catch (e) {
    const se = e as StratumError;
    throw new StratumError(se.code, `invalid ${where}: ${se.message}`, { cause: e });
  }
  const size = v.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(where, `size ${JSON.stringify(size)} must be a non-negative integer`);
  }
  if (size > Limits.blob) throw invalid(where, `size ${size} is absurdly large (over ${Limits.blob} bytes)`);
  const out: { -readonly [K in keyof Descriptor]: Descriptor[K] } = { mediaType, digest, size };
  if (v.urls !== undefined) out.urls = checkStringArray(v.urls, where, 'urls');
  if (v.annotations !== undefined) out.annotations = checkStringMap(v.annotations, where);
  if (v.platform !== undefined) out.platform = checkPlatform(v.platform, where);
  if (v.artifactType !== undefined)
    out.artifactType = checkMediaType(v.artifactType, `${where} artifactType`);
  if (v.data !== undefined) {
    if (typeof v.data !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v.data)) {
      throw invalid(where, 'data must be base64');
    }
    const bytes = Buffer.from(v.data, 'base64');
    if (bytes.byteLength !== size)
      throw invalid(where, `embedded data is ${bytes.byteLength} bytes, size says ${size}`);
    out.data = v.data;
  }
  return out;
}

function checkDescriptors(v: unknown, where: string, field: string): Descriptor[] {
  if (!Array.isArray(v)) throw invalid(where, `${field} must be an array`);
  return v.map((d, i) => parseDescriptor(d, `${where} ${field}[${i}]`));
}

export interface ParseManifestOptions {
  /** The media type the document came with: the descriptor's, or the HTTP Content-Type. */
  readonly mediaType?: string;
  /** Names the document in messages. */
  readonly what?: string;
}

/**
 * Validate a manifest or an index. The kind is decided by the declared mediaType, else by the
 * media type it came with, else by its shape; all three must agree.
 */
export function parseManifestDocument(bytes: Uint8Array, opts: ParseManifestOptions = {}): ManifestDocument {
  const what = opts.what ?? 'manifest';
  const outer = opts.mediaType === undefined ? undefined : baseMediaType(opts.mediaType);
  if (outer !== undefined && isSchema1MediaType(outer)) {
    throw new StratumError(
      'ERR_SCHEMA1_UNSUPPORTED',
      `${what}: Docker schema 1 manifests (${outer}) are not supported; re-push the image with a current client to get schema 2 or OCI`,
    );
  }
  const doc = parseJsonLimited(bytes, Limits.manifest, what);
  if (!isObject(doc)) throw invalid(what, 'not a JSON object');
  if (doc.schemaVersion === 1) {
    throw new StratumError(
      'ERR_SCHEMA1_UNSUPPORTED',
      `${what}: Docker schema 1 manifests are not supported; re-push the image with a current client to get schema 2 or OCI`,
    );
  }
  if (doc.schemaVersion !== 2) {
    throw invalid(what, `schemaVersion must be 2, got ${JSON.stringify(doc.schemaVersion)}`);
  }
  const hasManifests = 'manifests' in doc;
  const hasLayers = 'layers' in doc;
  const hasConfig = 'config' in doc;
  if (hasManifests && (hasLayers || hasConfig)) {
    throw new StratumError(
      'ERR_MEDIA_TYPE_MISMATCH',
      `${what}: document has both "manifests" and "${hasLayers ? 'layers' : 'config'}" — it is neither a valid manifest nor a valid index`,
    );
  }
  const declared = doc.mediaType === undefined ? undefined : checkMediaType(doc.mediaType, what);
  if (declared !== undefined && isSchema1MediaType(declared)) {
    throw new StratumError('ERR_SCHEMA1_UNSUPPORTED', `${what}: Docker schema 1 manifests are not supported`);
  }
  if (declared !== undefined && outer !== undefined && declared !== outer) {
    throw new StratumError(
      'ERR_MEDIA_TYPE_MISMATCH',
      `${what}: declares mediaType ${declared} but came as ${outer}`,
    );
  }
  const shape: 'index' | 'manifest' = hasManifests ? 'index' : 'manifest';
  const mediaType = declared ?? outer ?? (shape === 'index' ? MediaType.OciIndex : MediaType.OciManifest);
  if (!isManifestMediaType(mediaType)) {
    throw new StratumError(
      'ERR_UNSUPPORTED_MEDIA_TYPE',
      `${what}: unsupported manifest media type ${mediaType}`,
    );
  }
  const kind = isIndexMediaType(mediaType) ? 'index' : 'manifest';
  if (kind !== shape) {
    throw new StratumError(
      'ERR_MEDIA_TYPE_MISMATCH',
      `${what}: media type ${mediaType} says ${kind} but the document is shaped like ${shape === 'index' ? 'an index' : 'a manifest'}`,
    );
  }
  if (doc.annotations !== undefined) checkStringMap(doc.annotations, what);
  if (doc.artifactType !== undefined) checkMediaType(doc.artifactType, `${what} artifactType`);
  if (doc.subject !== undefined) parseDescriptor(doc.subject, `${what} subject`);
  if (kind === 'index') {
    const manifests = checkDescriptors(doc.manifests, what, 'manifests');
    const index = { ...doc, manifests } as unknown as ImageIndex;
    return { kind, mediaType, index };
  }
  if (!hasConfig) throw invalid(what, 'manifest has no config');
  const config = parseDescriptor(doc.config, `${what} config`);
  if (!hasLayers) throw invalid(what, 'manifest has no layers');
  const layers = checkDescriptors(doc.layers, what, 'layers');
  const manifest = { ...doc, config, layers } as unknown as ImageManifest;
  return { kind, mediaType, manifest };
}

function checkOptionalString(o: Obj, key: string, where: string): void {
  if (o[key] !== undefined && typeof o[key] !== 'string') throw invalid(where, `${key} must be a string`);
}

function checkContainerConfig(v: unknown, where: string): ContainerConfig {
  if (!isObject(v)) throw invalid(where, 'config must be an object');
  for (const k of ['User', 'WorkingDir', 'StopSignal']) checkOptionalString(v, k, where);
  if (v.Env != null) checkStringArray(v.Env, where, 'Env');
  if (v.Entrypoint != null) checkStringArray(v.Entrypoint, where, 'Entrypoint');
  if (v.Cmd != null) checkStringArray(v.Cmd, where, 'Cmd');
  if (v.Shell != null) checkStringArray(v.Shell, where, 'Shell');
  if (v.OnBuild != null) checkStringArray(v.OnBuild, where, 'OnBuild');
  if (v.Labels != null) checkStringMap(v.Labels, `${where} Labels`);
  if (v.ExposedPorts != null && !isObject(v.ExposedPorts))
    throw invalid(where, 'ExposedPorts must be an object');
  if (v.Volumes != null && !isObject(v.Volumes)) throw invalid(where, 'Volumes must be an object');
  return v as ContainerConfig;
}

/** Validate an image config (OCI or Docker). */
export function parseImageConfig(bytes: Uint8Array, what = 'image config'): ImageConfig {
  const doc = parseJsonLimited(bytes, Limits.config, what);
  if (!isObject(doc)) throw invalid(what, 'not a JSON object');
  if (typeof doc.architecture !== 'string' || doc.architecture === '') {
    throw invalid(what, 'architecture must be a non-empty string');
  }
  if (typeof doc.os !== 'string' || doc.os === '') throw invalid(what, 'os must be a non-empty string');
  checkOptionalString(doc, 'created', what);
  checkOptionalString(doc, 'author', what);
  checkOptionalString(doc, 'variant', what);
  const rootfs = doc.rootfs;
  if (!isObject(rootfs)) throw invalid(what, 'rootfs must be an object');
  if (rootfs.type !== 'layers')
    throw invalid(what, `rootfs.type must be "layers", got ${JSON.stringify(rootfs.type)}`);
  if (!Array.isArray(rootfs.diff_ids)) throw invalid(what, 'rootfs.diff_ids must be an array');
  rootfs.diff_ids.forEach((d, i) => {
    try {
      parseDigest(d);
    } catch (e) {
      throw new StratumError(
        (e as StratumError).code,
        `invalid ${what}: rootfs.diff_ids[${i}]: ${(e as Error).message}`,
      );
    }
  });
  if (doc.config != null) checkContainerConfig(doc.config, `${what} config`);
  if (doc.history !== undefined) {
    if (!Array.isArray(doc.history)) throw invalid(what, 'history must be an array');
    doc.history.forEach((h, i) => {
      if (!isObject(h)) throw invalid(what, `history[${i}] must be an object`);
      for (const k of ['created', 'created_by', 'author', 'comment'])
        checkOptionalString(h, k, `${what} history[${i}]`);
      if (h.empty_layer !== undefined && typeof h.empty_layer !== 'boolean') {
        throw invalid(what, `history[${i}].empty_layer must be a boolean`);
      }
    });
  }
  return doc as unknown as ImageConfig;
}
