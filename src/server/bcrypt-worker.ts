// A worker thread that checks passwords against bcrypt hashes (bcryptjs is pure JavaScript
// and would otherwise hold the server's event loop for the whole comparison). One job at a
// time: `{ id, password, hash }` in, `{ id, ok }` out.

import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

parentPort?.on('message', (job: { id: number; password: string; hash: string }) => {
  let ok = false;
  try {
    ok = bcrypt.compareSync(job.password, job.hash);
  } catch {
    ok = false;
  }
  parentPort?.postMessage({ id: job.id, ok });
});
