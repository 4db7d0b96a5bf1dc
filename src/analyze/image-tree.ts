// An image's final filesystem as a UnionTree, read from its layer streams (nothing extracted),
// optionally with each file's sha256 computed as its body streams past. A sparse file is hashed
// as its bytes (holes count as zeros) — unless its holes add up to more than HASH_HOLES_LIMIT:
// hashing terabytes of zeros a hostile (or a `useradd`-made /var/log/lastlog) header claims
// would never end, so such a file gets `sparse-sha256:` over its size, its map and its data
// instead (equal for equal sparse files; a dense copy of it compares as different).

import { createHash, type Hash } from 'node:crypto';
import type { Digest } from '../digest/digest.js';
import type { TarHeader, TarSink } from '../layer/tar-reader.js';
import type { Descriptor } from '../spec/types.js';
import {
  type ImageSource,
  type ImageSourceOptions,
  layerName,
  type OpenedImage,
  openImage,
  SparseExpander,
  streamLayer,
} from './layer-stream.js';
import { type Inode, UnionTree, type UnionTreeOptions } from './union.js';

/** Sparse files with more bytes of holes than this are not hashed as their full bytes. */
export const HASH_HOLES_LIMIT = 1024 ** 3;

export interface ImageTreeOptions extends ImageSourceOptions {
  /** Compute each file's sha256 into `inode.digest` (default false). */
  readonly hash?: boolean;
  /** Passed to the tree (a `drop` hook, change lists). */
  readonly tree?: UnionTreeOptions;
  /** Called before each layer is read. */
  readonly onLayer?: (index: number, layer: Descriptor) => void;
}

export interface ImageTree extends OpenedImage {
  readonly tree: UnionTree;
}

/** Read every layer of an image into one UnionTree. */
export async function readImageTree(source: ImageSource, opts: ImageTreeOptions = {}): Promise<ImageTree> {
  const opened = await openImage(source, opts);
  const tree = new UnionTree(opts.tree);
  let cur: { inode: Inode; hash: Hash; body: SparseExpander; prefix: string } | undefined;
  const sink: TarSink = opts.hash
    ? {
        entry: (h: TarHeader) => {
          const inode = tree.entry(h);
          if (inode === undefined) {
            cur = undefined;
            return;
          }
          const hash = createHash('sha256');
          if (h.sparse !== undefined && h.realSize - h.size > HASH_HOLES_LIMIT) {
            hash.update(`sparse ${h.realSize}\n${h.sparse.map((s) => `${s.offset} ${s.length}\n`).join('')}`);
            cur = { inode, hash, body: new SparseExpander(undefined, h.size), prefix: 'sparse-sha256' };
            return;
          }
          cur = { inode, hash, body: new SparseExpander(h.sparse, h.realSize), prefix: 'sha256' };
        },
        data: (chunk: Buffer) => {
          if (cur === undefined) return;
          for (const b of cur.body.expand(chunk)) cur.hash.update(b);
        },
        entryEnd: () => {
          if (cur === undefined) return;
          for (const b of cur.body.finish()) cur.hash.update(b);
          cur.inode.digest = `${cur.prefix}:${cur.hash.digest('hex')}`;
          cur = undefined;
        },
      }
    : {
        entry: (h: TarHeader) => {
          tree.entry(h);
        },
        data: () => {},
        entryEnd: () => {},
      };
  for (const [index, layer] of opened.manifest.layers.entries()) {
    opts.onLayer?.(index, layer);
    tree.beginLayer(index);
    await streamLayer(opened.image.fetcher, layer, sink, {
      diffId: opened.diffIds[index] as Digest,
      what: layerName(index, layer),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    tree.endLayer();
  }
  return { ...opened, tree };
}
