// Writing a new image whose layers are already pushed: the config and the OCI manifest are
// serialised once, pushed (config first: a registry refuses a manifest whose blobs it lacks)
// and the manifest tagged. import, flatten and later build and commit all end here.

import type { Pusher, PushOptions, Tagger } from '../content/types.js';
import { digestBytes } from '../digest/digest.js';
import { MediaType } from '../spec/media-types.js';
import type { Descriptor } from '../spec/types.js';

export interface WrittenImage {
  readonly manifest: Descriptor;
  readonly config: Descriptor;
}

function describe(mediaType: string, bytes: Buffer): Descriptor {
  return { mediaType, digest: digestBytes(bytes), size: bytes.length };
}

/** Push `config` and a manifest over `layers` to `target`, and tag it `ref` when given. */
export async function writeImage(
  target: Pusher & Tagger,
  config: object,
  layers: readonly Descriptor[],
  ref: string | undefined,
  opts: PushOptions = {},
): Promise<WrittenImage> {
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDesc = describe(MediaType.OciConfig, configBytes);
  await target.push(configDesc, configBytes, opts);
  const manifestBytes = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers }),
  );
  const manifest = describe(MediaType.OciManifest, manifestBytes);
  await target.push(manifest, manifestBytes, opts);
  if (ref !== undefined) await target.tag(manifest, ref, opts.signal ? { signal: opts.signal } : {});
  return { manifest, config: configDesc };
}
