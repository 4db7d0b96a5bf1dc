// An in-process queue per key: calls with the same key run one after another. Used in
// front of a lock file, so that callers in one process wait in line instead of polling the
// file lock against each other.

const queues = new Map<string, Promise<void>>();

export async function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = queues.get(key) ?? Promise.resolve();
  const run = prev.then(() => fn());
  const tail = run.then(
    () => {},
    () => {},
  );
  queues.set(key, tail);
  try {
    return await run;
  } finally {
    if (queues.get(key) === tail) queues.delete(key);
  }
}
