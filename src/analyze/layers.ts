// analyzeLayers: what each layer of an image holds and how much of it is wasted — as dive
// reports it, computed by streaming each layer through the tar reader into the union model
// (union.ts), one layer after the other, without extracting anything.
//
// Per layer: its sizes (compressed, as the manifest says; uncompressed, the tar), the history
// entry that made it (config history without its empty_layer entries lines up with the
// layers), and the paths it added, changed and deleted. Wasted bytes are file data a layer
// stores that the image's filesystem does not show: a file a later entry shadowed (wrote over,
// or replaced with a directory) or a whiteout deleted, counted against the layer that stored
// it, as dive does. A hard-linked file is wasted only when its last name goes. Sizes are the
// bytes stored in the layer (a sparse file counts its data, not its holes).
//
// Efficiency is 1 − wasted / total, where total is the file data stored over all layers
// (1 for an image with no file data). dive's score (filetree/efficiency.go) divides the sum of
// each path's smallest version by the sum of all its versions; where a later version is the
// smaller one, dive counts the difference as wasted too, where we count the version that is
// actually gone.

import type { Digest } from '../digest/digest.js';
import type { TarHeader, TarSink } from '../layer/tar-reader.js';
import type { Descriptor, HistoryEntry } from '../spec/types.js';
import {
  type ImageSource,
  type ImageSourceOptions,
  layerName,
  openImage,
  streamLayer,
} from './layer-stream.js';
import { type LayerPathChange, UnionTree } from './union.js';

export interface AnalyzeLayersOptions extends ImageSourceOptions {
  /** List each layer's added / changed / deleted paths in `paths`. */
  readonly paths?: boolean;
  /** Called before and after each layer is read (for progress). */
  readonly onProgress?: (e: LayerProgress) => void;
}

export interface LayerProgress {
  readonly type: 'layer-start' | 'layer-done';
  /** 0-based. */
  readonly index: number;
  readonly count: number;
  readonly layer: Descriptor;
}

export interface LayerAnalysis {
  /** 0-based. */
  readonly index: number;
  readonly digest: Digest;
  readonly mediaType: string;
  readonly diffId: Digest;
  /** Bytes of the blob (compressed). */
  readonly compressedSize: number;
  /** Bytes of the uncompressed tar. */
  readonly size: number;
  /** The history entry's `created_by` (the instruction that made the layer), if any. */
  readonly instruction: string | undefined;
  readonly created: string | undefined;
  readonly comment: string | undefined;
  /** Tar entries. */
  readonly entries: number;
  /** Bytes of file data stored in this layer. */
  readonly fileBytes: number;
  /** Paths new in this layer. */
  readonly added: number;
  /** Paths this layer wrote over something a lower layer had. */
  readonly changed: number;
  /** Paths this layer's whiteouts and opaque markers removed. */
  readonly deleted: number;
  /** Bytes of this layer's files that later entries shadow or delete. */
  readonly wastedBytes: number;
  /** Of wastedBytes: shadowed (written over) and deleted (whited out). */
  readonly shadowedBytes: number;
  readonly deletedBytes: number;
  /** With `paths`: what changed, in archive order; paths start with `/`. */
  readonly paths?: readonly LayerPathChange[];
}

/** A path whose data is wasted, as dive lists its "inefficient" files. */
export interface WastedPath {
  /** Starts with `/`. */
  readonly path: string;
  readonly bytes: number;
  /** The layers (0-based) whose copies of it are wasted. */
  readonly layers: readonly number[];
}

export interface LayerReport {
  /** The image manifest analysed. */
  readonly manifest: Descriptor;
  readonly layers: readonly LayerAnalysis[];
  /** Sum of the layers' compressed sizes. */
  readonly compressedSize: number;
  /** Sum of the layers' uncompressed tar sizes. */
  readonly size: number;
  /** File data stored over all layers. */
  readonly totalBytes: number;
  readonly wastedBytes: number;
  /** 1 − wastedBytes / totalBytes (1 when there is no file data). */
  readonly efficiency: number;
  /** Wasted paths, most bytes first. */
  readonly wasted: readonly WastedPath[];
}

/** History entries that made layers, in order (empty_layer entries skipped). */
export function layerHistory(history: readonly HistoryEntry[] | undefined): HistoryEntry[] {
  return (history ?? []).filter((h) => h.empty_layer !== true);
}

/** Analyse every layer of an image (see the top of this file). */
export async function analyzeLayers(
  source: ImageSource,
  opts: AnalyzeLayersOptions = {},
): Promise<LayerReport> {
  const { image, manifest, config, diffIds } = await openImage(source, opts);
  const history = layerHistory(config.history);
  const wasted = new Map<string, { bytes: number; layers: Set<number> }>();
  const charged = manifest.layers.map(() => ({ shadowed: 0, deleted: 0 }));
  const tree = new UnionTree({
    listChanges: opts.paths === true,
    drop: (inode, why) => {
      if (inode.stored === 0) return;
      const c = charged[inode.layer] as { shadowed: number; deleted: number };
      c[why] += inode.stored;
      const w = wasted.get(inode.path) ?? { bytes: 0, layers: new Set<number>() };
      w.bytes += inode.stored;
      w.layers.add(inode.layer);
      wasted.set(inode.path, w);
    },
  });
  const sink: TarSink = {
    entry: (h: TarHeader) => {
      tree.entry(h);
    },
    data: () => {},
    entryEnd: () => {},
  };
  const streamed: { diffId: Digest; size: number; counts: ReturnType<UnionTree['endLayer']> }[] = [];
  for (const [index, layer] of manifest.layers.entries()) {
    opts.onProgress?.({ type: 'layer-start', index, count: manifest.layers.length, layer });
    tree.beginLayer(index);
    const r = await streamLayer(image.fetcher, layer, sink, {
      diffId: diffIds[index] as Digest,
      what: layerName(index, layer),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    streamed.push({ diffId: r.diffId as Digest, size: r.size, counts: tree.endLayer() });
    opts.onProgress?.({ type: 'layer-done', index, count: manifest.layers.length, layer });
  }
  const layers = manifest.layers.map((layer, index) =>
    analysis(index, layer, history[index], streamed[index]!, charged[index]!),
  );
  const totalBytes = layers.reduce((n, l) => n + l.fileBytes, 0);
  const wastedBytes = layers.reduce((n, l) => n + l.wastedBytes, 0);
  return {
    manifest: image.descriptor,
    layers,
    compressedSize: layers.reduce((n, l) => n + l.compressedSize, 0),
    size: layers.reduce((n, l) => n + l.size, 0),
    totalBytes,
    wastedBytes,
    efficiency: totalBytes === 0 ? 1 : 1 - wastedBytes / totalBytes,
    wasted: [...wasted.entries()]
      .map(([path, w]) => ({ path: `/${path}`, bytes: w.bytes, layers: [...w.layers].sort((a, b) => a - b) }))
      .sort((a, b) => b.bytes - a.bytes || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
  };
}

function analysis(
  index: number,
  layer: Descriptor,
  h: HistoryEntry | undefined,
  s: { diffId: Digest; size: number; counts: ReturnType<UnionTree['endLayer']> },
  charged: { shadowed: number; deleted: number },
): LayerAnalysis {
  const c = s.counts;
  return {
    index,
    digest: layer.digest,
    mediaType: layer.mediaType,
    diffId: s.diffId,
    compressedSize: layer.size,
    size: s.size,
    instruction: h?.created_by,
    created: h?.created,
    comment: h?.comment,
    entries: c.entries,
    fileBytes: c.fileBytes,
    added: c.added,
    changed: c.changed,
    deleted: c.deleted,
    wastedBytes: charged.shadowed + charged.deleted,
    shadowedBytes: charged.shadowed,
    deletedBytes: charged.deleted,
    ...(c.paths ? { paths: c.paths.map((p) => ({ ...p, path: `/${p.path}` })) } : {}),
  };
}
