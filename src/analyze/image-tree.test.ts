// The union model against real unpackers: for fixture images, the tree read from the layer
// streams (nothing extracted) lists the same paths, types, modes, owners, sizes, contents,
// link targets, devices, xattrs and hard-link groups as the rootfs `umoci unpack` leaves.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { openLayout } from '../layout/layout.js';
import { type FixtureSet, fixturesSkipReason, getFixtures, umociBundle } from '../testing/fixtures.js';
import { compareTrees, describeTree } from '../testing/tree.js';
import { readImageTree } from './image-tree.js';
import { describeUnion } from './support.test.js';

const skip = fixturesSkipReason();
let set: FixtureSet;

describe('readImageTree: the union of the layer streams is what umoci unpacks', { skip }, () => {
  before(async () => {
    set = await getFixtures();
  });

  for (const name of ['layers', 'layers-zstd', 'busybox']) {
    it(name, async () => {
      const fx = set.image(name);
      const layout = await openLayout(fx.layout, { readOnly: true });
      try {
        const desc = await layout.resolve(fx.location.slice(fx.location.lastIndexOf(':') + 1));
        const { tree } = await readImageTree({ fetcher: layout, descriptor: desc }, { hash: true });
        const rootfs = join(await umociBundle(fx), 'rootfs');
        const theirs = await describeTree(rootfs, { mtimes: true });
        const ours = describeUnion(tree, { mtimes: true });
        assert.deepEqual(compareTrees(ours, theirs, ['model', 'umoci']), []);
      } finally {
        await layout.close();
      }
    });
  }
});
