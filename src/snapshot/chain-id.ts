// OCI image-spec ChainIDs (config.md, "Layer ChainID"): the identity of a stack of layers,
// which names a snapshot. ChainID(L0) = DiffID(L0); ChainID(L0|…|Ln) =
// sha256(ChainID(L0|…|Ln-1) + " " + DiffID(Ln)). Two images that share their bottom layers
// share the snapshots of those layers, whatever their manifests or compressions.

import { type Digest, digestBytes, parseDigest } from '../digest/digest.js';

/** The chain ID of `diffId` stacked on `parent` (undefined: a base layer). */
export function chainIdOf(parent: Digest | undefined, diffId: Digest): Digest {
  const d = parseDigest(diffId);
  return parent === undefined ? d : digestBytes(`${parseDigest(parent)} ${d}`);
}

/** The chain ID of every prefix of `diffIds` (bottom first): element i names layers 0..i. */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  let parent: Digest | undefined;
  for (const diffId of diffIds) {
    parent = chainIdOf(parent, diffId);
    out.push(parent);
  }
  return out;
}
