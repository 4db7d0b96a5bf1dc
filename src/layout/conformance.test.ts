// The shared Target conformance suite, run against an OCI layout directory.

import { describeTargetConformance } from '../content/conformance.js';
import { makeTempDir } from '../testing/tmp.js';
import { openLayout } from './layout.js';

describeTargetConformance('OCI layout', async () => {
  const { path, cleanup } = await makeTempDir('stratum-layout-conf-');
  return { target: await openLayout(path, { create: true }), cleanup };
});
