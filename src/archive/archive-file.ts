// Opening an archive file for reading, and what the two archive readers share: a plain tar is
// indexed in place; a gzip- or zstd-compressed one (`docker save | gzip`) is first
// decompressed into a private temp file, which is removed on close. Members are served as
// streams verified against the descriptor the caller asked for.

import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressStream, detectCompression } from '../compression/compression.js';
import type { FetchOptions } from '../content/types.js';
import { VerifyingStream } from '../digest/digest.js';
import { abortError, StratumError } from '../errors/errors.js';
import type { Descriptor } from '../spec/types.js';
import { TarIndex, type TarMember } from './tar-index.js';

export interface ArchiveOpenOptions {
  readonly signal?: AbortSignal;
  /** Where a compressed archive is decompressed to (default: os.tmpdir(), i.e. TMPDIR). */
  readonly tmpDir?: string;
}

export interface OpenedArchive {
  readonly index: TarIndex;
  /** 'none' for a plain tar, else the compression the file was wrapped in. */
  readonly compression: 'none' | 'gzip' | 'zstd';
  close(): Promise<void>;
}

/** Index the tar at `file` (decompressing it first if it is gzip or zstd). */
export async function openArchiveFile(file: string, opts: ArchiveOpenOptions = {}): Promise<OpenedArchive> {
  let head: Buffer;
  try {
    const fh = await open(file, 'r');
    try {
      head = Buffer.alloc(8);
      const { bytesRead } = await fh.read(head, 0, 8, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new StratumError('ERR_NOT_FOUND', `archive ${file} does not exist`, { cause: e });
    if (code === 'EISDIR') {
      throw new StratumError('ERR_INVALID_ARCHIVE', `archive ${file} is a directory, not a tar file`, {
        cause: e,
      });
    }
    throw e;
  }
  const kind = detectCompression(head);
  if (kind === 'none') {
    const index = await TarIndex.open(file, { label: file, ...(opts.signal ? { signal: opts.signal } : {}) });
    return { index, compression: 'none', close: () => index.close() };
  }
  const dir = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'stratum-archive-read-'));
  const plain = join(dir, 'archive.tar');
  try {
    try {
      await pipeline(
        createReadStream(file),
        decompressStream(kind),
        createWriteStream(plain, { flags: 'wx', mode: 0o600 }),
        opts.signal ? { signal: opts.signal } : {},
      );
    } catch (e) {
      if (opts.signal?.aborted) throw abortError(opts.signal);
      const why = e instanceof Error ? e.message : String(e);
      throw new StratumError(
        'ERR_INVALID_ARCHIVE',
        `invalid archive ${file}: cannot decompress (${kind}): ${why}`,
        {
          cause: e,
        },
      );
    }
    const index = await TarIndex.open(plain, {
      label: file,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return {
      index,
      compression: kind,
      close: async () => {
        await index.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** A member's bytes as a stream checked against `desc` (size, digest) as they flow. */
export function verifiedMemberStream(
  index: TarIndex,
  member: TarMember,
  desc: Descriptor,
  opts: FetchOptions = {},
): Readable {
  if (opts.signal?.aborted) throw abortError(opts.signal);
  const verify = new VerifyingStream({
    digest: desc.digest,
    size: desc.size,
    what: `blob ${desc.digest}`,
    onProgress: opts.onProgress,
  });
  const src = index.stream(member);
  src.on('error', (e) => verify.destroy(e));
  if (opts.signal) {
    const signal = opts.signal;
    const onAbort = () => verify.destroy(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    verify.once('close', () => signal.removeEventListener('abort', onAbort));
  }
  verify.once('close', () => src.destroy());
  return src.pipe(verify);
}

/** In-memory bytes as a stream checked against `desc`. */
export function verifiedBytesStream(bytes: Uint8Array, desc: Descriptor): Readable {
  const verify = new VerifyingStream({ digest: desc.digest, size: desc.size, what: `blob ${desc.digest}` });
  verify.end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  return verify;
}
