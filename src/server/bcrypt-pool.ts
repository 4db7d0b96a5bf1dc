// bcrypt comparisons off the event loop: a small pool of worker threads (bcrypt-worker.ts),
// started on first use and not keeping the process alive when idle, with a bounded queue —
// past it, callers get TooManyAuthRequests (the server answers 429), so a flood of password
// guesses costs bounded CPU and never stalls the transfers the server is serving.

import { Worker } from 'node:worker_threads';
import { StratumError } from '../errors/errors.js';

/** Thrown when too many password checks are waiting. */
export class TooManyAuthRequests extends StratumError {
  constructor() {
    super('ERR_REGISTRY', 'too many password checks in progress; try again shortly');
    this.name = 'TooManyAuthRequests';
  }
}

interface Job {
  readonly id: number;
  readonly password: string;
  readonly hash: string;
  readonly resolve: (ok: boolean) => void;
  readonly reject: (e: unknown) => void;
}

interface Slot {
  readonly worker: Worker;
  job: Job | undefined;
}

export class BcryptPool {
  readonly #size: number;
  readonly #maxWaiting: number;
  readonly #slots: Slot[] = [];
  readonly #queue: Job[] = [];
  #next = 0;

  constructor(opts: { readonly workers?: number; readonly maxWaiting?: number } = {}) {
    this.#size = Math.max(1, opts.workers ?? 2);
    this.#maxWaiting = opts.maxWaiting ?? 64;
  }

  compare(password: string, hash: string): Promise<boolean> {
    if (this.#queue.length >= this.#maxWaiting) return Promise.reject(new TooManyAuthRequests());
    return new Promise<boolean>((resolve, reject) => {
      this.#queue.push({ id: ++this.#next, password, hash, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    for (;;) {
      let slot = this.#slots.find((s) => s.job === undefined);
      if (!slot && this.#slots.length < this.#size) slot = this.#spawn();
      const job = slot ? this.#queue.shift() : undefined;
      if (!slot || !job) return;
      slot.job = job;
      slot.worker.ref();
      slot.worker.postMessage({ id: job.id, password: job.password, hash: job.hash });
    }
  }

  #spawn(): Slot {
    const worker = new Worker(new URL('./bcrypt-worker.js', import.meta.url));
    const slot: Slot = { worker, job: undefined };
    worker.on('message', (m: { id: number; ok: boolean }) => {
      const job = slot.job;
      if (job?.id !== m.id) return;
      slot.job = undefined;
      worker.unref();
      job.resolve(m.ok === true);
      this.#pump();
    });
    const fail = (e: unknown) => {
      const i = this.#slots.indexOf(slot);
      if (i >= 0) this.#slots.splice(i, 1);
      const err = new StratumError(
        'ERR_UNSUPPORTED',
        `password checks failed: ${(e as Error)?.message ?? String(e)} (is bcryptjs installed?)`,
        {
          cause: e,
        },
      );
      slot.job?.reject(err);
      slot.job = undefined;
      // without a working worker, nobody waiting can be served either
      if (this.#slots.length === 0) for (const j of this.#queue.splice(0)) j.reject(err);
      else this.#pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (this.#slots.includes(slot)) fail(new Error(`worker exited with code ${code}`));
    });
    // after the listeners: adding a 'message' listener refs the worker's port again
    worker.unref();
    this.#slots.push(slot);
    return slot;
  }

  /** Stop the workers (jobs in flight are refused). */
  async close(): Promise<void> {
    const slots = this.#slots.splice(0);
    for (const j of this.#queue.splice(0))
      j.reject(new StratumError('ERR_ABORTED', 'password check cancelled'));
    await Promise.all(slots.map((s) => s.worker.terminate()));
    for (const s of slots) s.job?.reject(new StratumError('ERR_ABORTED', 'password check cancelled'));
  }
}

let shared: BcryptPool | undefined;

/** The process-wide pool (workers are started on first use and idle without holding the process). */
export function sharedBcryptPool(): BcryptPool {
  shared ??= new BcryptPool();
  return shared;
}
