// The monitor of a detached container: started by Containers.startDetached as
// `node monitor.js <store> <id>` in its own session, it runs the container with stdio on the
// container's log file, says `started` (or `error: ...`) on its stdout — which the starting
// process reads and then lets go of — and stays to record the exit code, unmount and clean
// up, as a foreground `run` does.

import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Containers } from './containers.js';

/** Run the monitor for container `id` of the store at `storeRoot`. */
export async function runMonitor(storeRoot: string, id: string): Promise<void> {
  const say = (line: string) => {
    try {
      process.stdout.write(`${line.replace(/\n/g, ' ')}\n`);
    } catch {
      // the starting process is gone: nobody listens any more
    }
  };
  process.stdout.on('error', () => {});
  // a signal meant for the container's starter must not stop the monitor
  for (const s of ['SIGINT', 'SIGHUP', 'SIGPIPE'] as const) process.on(s, () => {});
  try {
    const containers = await Containers.open(storeRoot);
    await containers.monitor(
      id,
      () => say('started'),
      (message) => say(`error: ${message}`),
    );
  } catch (e) {
    say(`error: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function invokedDirectly(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  const [storeRoot, id] = process.argv.slice(2);
  if (storeRoot === undefined || id === undefined) {
    process.stderr.write('usage: monitor.js STORE_ROOT CONTAINER_ID\n');
    process.exitCode = 2;
  } else {
    void runMonitor(storeRoot, id).finally(() => {
      process.exit(0);
    });
  }
}
