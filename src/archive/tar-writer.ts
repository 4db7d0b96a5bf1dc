// Writing an archive file atomically: a tar (tar-stream's pack) is streamed into a temp file
// in the destination's directory, fsynced, and renamed over the destination; the directory is
// fsynced after. Until the rename nothing is visible; on failure or abort the temp file is
// removed. Entries are deterministic: mtime 0, uid/gid 0, fixed modes.

import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Pack, pack } from 'tar-stream';
import { abortError } from '../errors/errors.js';
import { fsyncPath, tempName } from '../internal/fs.js';

const EPOCH = new Date(0);

/** Adds entries to the tar being written. */
export class TarWriter {
  readonly #pack: Pack;
  readonly #signal: AbortSignal | undefined;

  constructor(p: Pack, signal: AbortSignal | undefined) {
    this.#pack = p;
    this.#signal = signal;
  }

  #check(): void {
    if (this.#signal?.aborted) throw abortError(this.#signal);
  }

  async directory(name: string): Promise<void> {
    this.#check();
    await new Promise<void>((res, rej) => {
      this.#pack.entry(
        {
          name: name.endsWith('/') ? name : `${name}/`,
          type: 'directory',
          mode: 0o755,
          mtime: EPOCH,
          uid: 0,
          gid: 0,
        },
        (err) => (err ? rej(err) : res()),
      );
    });
  }

  async bytes(name: string, data: Uint8Array): Promise<void> {
    this.#check();
    await new Promise<void>((res, rej) => {
      this.#pack.entry(
        { name, type: 'file', mode: 0o644, size: data.byteLength, mtime: EPOCH, uid: 0, gid: 0 },
        Buffer.from(data.buffer, data.byteOffset, data.byteLength),
        (err) => (err ? rej(err) : res()),
      );
    });
  }

  /** A file entry of `size` bytes whose content is `source` (it must yield exactly that many). */
  async stream(name: string, size: number, source: Readable): Promise<void> {
    this.#check();
    let settle!: { res: () => void; rej: (e: unknown) => void };
    // tar-stream calls back once the entry is complete, or with the error that ended it
    const done = new Promise<void>((res, rej) => {
      settle = { res, rej };
    });
    done.catch(() => {});
    const w = this.#pack.entry(
      { name, type: 'file', mode: 0o644, size, mtime: EPOCH, uid: 0, gid: 0 },
      (err) => (err ? settle.rej(err) : settle.res()),
    );
    w.on('error', () => {}); // streamx would throw an unobserved 'error'; the callback reports it
    try {
      for await (const chunk of source) {
        this.#check();
        if (!w.write(chunk as Buffer)) {
          await Promise.race([new Promise<void>((res) => w.once('drain', res)), done]);
        }
      }
      w.end(null);
      await done;
    } catch (e) {
      source.destroy();
      w.destroy(e as Error);
      throw e;
    }
  }

  /** A file entry copied from a file on disk. */
  async file(name: string, size: number, path: string): Promise<void> {
    await this.stream(name, size, createReadStream(path));
  }
}

/**
 * Write a tar to `dest` atomically; `fill` adds the entries. On error or abort the temp file
 * is removed and nothing at `dest` changes.
 */
export async function writeTarAtomic(
  dest: string,
  fill: (w: TarWriter) => Promise<void>,
  opts: { signal?: AbortSignal } = {},
): Promise<void> {
  const target = resolve(dest);
  const dir = dirname(target);
  await mkdir(dir, { recursive: true });
  const tmp = tempName(dir, '.stratum-archive-');
  const p = pack();
  p.on('error', () => {}); // observed through the pipeline below
  const out = createWriteStream(tmp, { flags: 'wx', mode: 0o644 });
  const piping = pipeline(Readable.from(chunks(p)), out);
  piping.catch(() => {}); // observed below
  try {
    await fill(new TarWriter(p, opts.signal));
    if (opts.signal?.aborted) throw abortError(opts.signal);
    p.finalize();
    await piping;
    if (opts.signal?.aborted) throw abortError(opts.signal);
    await fsyncPath(tmp);
    await rename(tmp, target);
  } catch (e) {
    p.destroy();
    out.destroy();
    await piping.catch(() => {});
    await rm(tmp, { force: true });
    if (opts.signal?.aborted) throw abortError(opts.signal);
    throw e;
  }
  await fsyncPath(dir, true).catch(() => {});
}

/** tar-stream's pack is a streamx stream; hand Node's pipeline a plain async iterable of it. */
async function* chunks(p: Pack): AsyncGenerator<Buffer> {
  for await (const c of p) yield c as Buffer;
}
