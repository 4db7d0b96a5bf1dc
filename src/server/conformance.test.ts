// The shared Target conformance suite (src/content/conformance.ts), run with stratum's own
// registry client (RegistryTarget) against `stratum serve` — the same cases the layout
// store and Debian's docker-registry run. No case is skipped.

import { after, before } from 'node:test';
import { describeTargetConformance } from '../content/conformance.js';
import { RegistryClient } from '../registry/client.js';
import { RegistryTarget } from '../registry/target.js';
import { startServer, type TestServer } from '../testing/serve.js';

let srv: TestServer;
let client: RegistryClient;
let n = 0;

before(async () => {
  srv = await startServer();
  // small chunks, so that blobs above 64 KiB go up in chunked PATCHes
  client = new RegistryClient({ chunkSize: 64 * 1024, backoff: { initialMs: 1, maxMs: 5 } });
});
after(async () => {
  await client?.close();
  await srv?.stop();
});

describeTargetConformance('stratum serve (RegistryTarget)', async () => ({
  target: new RegistryTarget(client, srv.host, `conformance/r${++n}`),
  cleanup: async () => {},
}));
