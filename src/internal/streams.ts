// Stream helpers: read a bounded body into memory, turn bytes into a stream, drain.

import { Readable } from 'node:stream';
import { TooLargeError } from '../errors/errors.js';

/** Read a whole stream into one Buffer, failing with ERR_TOO_LARGE past `limit` bytes. */
export async function readAll(
  stream: AsyncIterable<Uint8Array>,
  limit: number,
  what = 'body',
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream) {
      total += chunk.byteLength;
      if (total > limit) throw new TooLargeError(what, limit);
      chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    }
  } catch (e) {
    if (stream instanceof Readable) stream.destroy();
    throw e;
  }
  return Buffer.concat(chunks, total);
}

/** A Readable over in-memory bytes. */
export function bytesStream(data: Uint8Array): Readable {
  return Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)], { objectMode: false });
}

/** Normalise Content (stream or bytes) to a Readable. */
export function toReadable(content: Readable | Uint8Array): Readable {
  return content instanceof Uint8Array ? bytesStream(content) : content;
}
