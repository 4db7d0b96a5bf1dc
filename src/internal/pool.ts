// Bounded concurrency: run async tasks with at most `limit` in flight.

export class Semaphore {
  #free: number;
  readonly #waiters: (() => void)[] = [];
  constructor(limit: number) {
    this.#free = Math.max(1, limit);
  }
  async acquire(): Promise<() => void> {
    if (this.#free > 0) {
      this.#free--;
    } else {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      if (next) next();
      else this.#free++;
    };
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** Map with bounded concurrency; rejects with the first error (others are still awaited). */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const sem = new Semaphore(limit);
  const results = await Promise.allSettled(items.map((item, i) => sem.run(() => fn(item, i))));
  const out: R[] = [];
  for (const r of results) {
    if (r.status === 'rejected') throw r.reason;
    out.push(r.value);
  }
  return out;
}
