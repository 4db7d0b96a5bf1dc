// The shared Target conformance suite, run against an OCI layout directory and against the
// local store (a layout whose pushes are leased).

import { join } from 'node:path';
import { describeTargetConformance } from '../content/conformance.js';
import { makeTempDir } from '../testing/tmp.js';
import { openLayout } from './layout.js';
import { openStore } from './store.js';

describeTargetConformance('OCI layout', async () => {
  const { path, cleanup } = await makeTempDir('stratum-layout-conf-');
  return { target: await openLayout(path, { create: true }), cleanup };
});

describeTargetConformance('local store', async () => {
  const { path, cleanup } = await makeTempDir('stratum-store-conf-');
  return { target: await openStore({ root: join(path, 'store') }), cleanup };
});
