// Blob upload sessions: the bytes of an upload in progress, spooled to a file in a private
// directory (by default `<store>/.stratum-uploads`, mode 0700), named `<pid>-<uuid>` so
// that whoever cleans up can tell a dead server's leftovers from a live one's. Chunks are
// appended in order; the session's offset is the file's real size after each append (so
// a chunk cut off mid-way leaves a consistent, resumable offset). Nothing here is visible
// in the store: finishing an upload streams the file through the store's verified push,
// and the file is removed whether that succeeds or not. Sessions idle longer than the TTL
// are removed by a sweep, and so are files of processes that no longer run.

import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { finished } from 'node:stream/promises';
import { TooLargeError } from '../errors/errors.js';
import { pidInName, processAlive } from '../layout/liveness.js';
import { RegistryHttpError } from './http-error.js';

const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadSession {
  readonly id: string;
  /** The repository key it was started in; other repositories do not see it. */
  readonly repoKey: string;
  readonly path: string;
  /** Bytes received so far. */
  size: number;
  lastActive: number;
  /** A request is writing to it (or finishing it) right now. */
  busy: boolean;
}

export interface UploadManagerOptions {
  readonly dir: string;
  readonly ttlMs: number;
  readonly maxUploads: number;
  readonly maxBytes: number;
}

/** Counts bytes and fails past a limit. */
export class ByteCounter extends Transform {
  count = 0;
  readonly #limit: number;
  readonly #what: string;
  readonly #onBytes: ((n: number) => void) | undefined;
  constructor(limit: number, what: string, onBytes?: (n: number) => void) {
    super();
    this.#limit = limit;
    this.#what = what;
    this.#onBytes = onBytes;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.count += chunk.byteLength;
    this.#onBytes?.(chunk.byteLength);
    if (this.count > this.#limit) {
      cb(new TooLargeError(this.#what, this.#limit));
      return;
    }
    cb(null, chunk);
  }
}

export class UploadManager {
  readonly dir: string;
  readonly #opts: UploadManagerOptions;
  readonly #sessions = new Map<string, UploadSession>();
  #ready: Promise<void> | undefined;

  constructor(opts: UploadManagerOptions) {
    this.dir = opts.dir;
    this.#opts = opts;
  }

  get count(): number {
    return this.#sessions.size;
  }

  /** Make the directory (0700) and remove files left by dead processes. */
  ready(): Promise<void> {
    this.#ready ??= (async () => {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await chmod(this.dir, 0o700).catch(() => {});
      await this.#removeOrphans();
    })();
    return this.#ready;
  }

  async #removeOrphans(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    for (const name of names) {
      const pid = pidInName(name, '');
      if (pid === undefined || (pid !== process.pid && processAlive(pid))) continue;
      if (pid === process.pid && this.#sessions.has(name.slice(name.indexOf('-') + 1))) continue;
      await rm(join(this.dir, name), { force: true }).catch(() => {});
    }
  }

  async create(repoKey: string): Promise<UploadSession> {
    await this.ready();
    if (this.#sessions.size >= this.#opts.maxUploads) {
      await this.sweep();
      if (this.#sessions.size >= this.#opts.maxUploads) {
        throw new RegistryHttpError(
          429,
          'TOOMANYREQUESTS',
          `too many uploads in progress (${this.#opts.maxUploads}); finish or cancel some, or try again later`,
          undefined,
          { headers: { 'retry-after': '10' } },
        );
      }
    }
    const id = randomUUID();
    const path = join(this.dir, `${process.pid}-${id}`);
    // create it now, so that GET of the upload and an empty PUT find a file
    await (await open(path, 'wx', 0o600)).close();
    const s: UploadSession = { id, repoKey, path, size: 0, lastActive: Date.now(), busy: false };
    this.#sessions.set(id, s);
    return s;
  }

  /** The session, if `id` names one of `repoKey`'s; refreshes its TTL. */
  get(id: string, repoKey: string): UploadSession | undefined {
    if (!ID_RE.test(id)) return undefined;
    const s = this.#sessions.get(id);
    if (s === undefined || s.repoKey !== repoKey) return undefined;
    s.lastActive = Date.now();
    return s;
  }

  /**
   * Append a body to the session. The offset afterwards is the file's real size, whatever
   * happened; errors (a cut-off body, ERR_TOO_LARGE past the size limit) are rethrown. The
   * body is not destroyed on error, so the server can still answer on its connection.
   */
  async append(s: UploadSession, body: Readable, onBytes?: (n: number) => void): Promise<number> {
    const limit = this.#opts.maxBytes - s.size;
    let count = 0;
    const out = createWriteStream(s.path, { flags: 'a', mode: 0o600 });
    const failed = new Promise<never>((_, reject) => out.once('error', reject));
    failed.catch(() => {});
    try {
      for await (const c of body.iterator({ destroyOnReturn: false })) {
        const chunk = c as Buffer;
        count += chunk.byteLength;
        onBytes?.(chunk.byteLength);
        if (count > limit) throw new TooLargeError('the blob upload', this.#opts.maxBytes);
        if (!out.write(chunk)) await Promise.race([once(out, 'drain'), failed]);
      }
      out.end();
      await Promise.race([finished(out), failed]);
    } finally {
      if (!out.writableFinished) {
        out.end();
        await finished(out).catch(() => {});
      }
      const st = await stat(s.path).catch(() => undefined);
      s.size = st?.size ?? s.size;
      s.lastActive = Date.now();
    }
    return count;
  }

  async remove(s: UploadSession): Promise<void> {
    this.#sessions.delete(s.id);
    await rm(s.path, { force: true }).catch(() => {});
  }

  /** Remove sessions idle longer than the TTL (not those a request is using); resolves with how many. */
  async sweep(now = Date.now()): Promise<number> {
    const expired = [...this.#sessions.values()].filter(
      (s) => !s.busy && now - s.lastActive > this.#opts.ttlMs,
    );
    for (const s of expired) this.#sessions.delete(s.id);
    await Promise.all(expired.map((s) => rm(s.path, { force: true }).catch(() => {})));
    return expired.length;
  }

  /** Remove every session of this process. */
  async close(): Promise<void> {
    const all = [...this.#sessions.values()];
    this.#sessions.clear();
    await Promise.all(all.map((s) => rm(s.path, { force: true }).catch(() => {})));
  }
}
