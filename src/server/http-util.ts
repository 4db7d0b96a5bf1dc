// HTTP details of the registry API: Range and Content-Range headers as the spec and RFC
// 9110 write them, Content-Length, reading a bounded body, and query parameters.

import type { IncomingMessage } from 'node:http';
import { TooLargeError } from '../errors/errors.js';
import { RegistryHttpError } from './http-error.js';

/** A byte range, both ends inclusive. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/**
 * `Range: bytes=a-b | a- | -n` against a blob of `size` bytes: the range to send,
 * 'unsatisfiable' (416), or undefined to send everything (absent, multiple ranges, or a
 * unit we do not know — RFC 9110 lets a server ignore those).
 */
export function parseRange(
  header: string | undefined,
  size: number,
): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return undefined;
  if (a.length > 15 || b.length > 15) return 'unsatisfiable';
  if (a === '') {
    const n = Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (start >= size || (b !== '' && Number(b) < start)) return 'unsatisfiable';
  return { start, end };
}

/**
 * A chunk's `Content-Range`: `start-end` (the spec's form), also `bytes start-end/total`
 * and `bytes=start-end` as some clients send. Throws BLOB_UPLOAD_INVALID (416) if malformed.
 */
export function parseContentRange(header: string): ByteRange {
  const m = /^\s*(?:bytes[ =])?\s*(\d{1,15})-(\d{1,15})(?:\/(?:\d{1,15}|\*))?\s*$/i.exec(header);
  if (!m) {
    throw new RegistryHttpError(
      416,
      'BLOB_UPLOAD_INVALID',
      `Content-Range ${JSON.stringify(header.slice(0, 100))} is not of the form <start>-<end>`,
    );
  }
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) {
    throw new RegistryHttpError(416, 'BLOB_UPLOAD_INVALID', `Content-Range ${header} ends before it starts`);
  }
  return { start, end };
}

/** The request's Content-Length, or undefined if it has none (chunked). 400 if malformed. */
export function contentLength(req: IncomingMessage): number | undefined {
  const v = req.headers['content-length'];
  if (v === undefined) return undefined;
  if (!/^\d{1,15}$/.test(v)) {
    throw new RegistryHttpError(
      400,
      'SIZE_INVALID',
      `Content-Length ${JSON.stringify(v.slice(0, 40))} is not a number`,
    );
  }
  return Number(v);
}

/** Whether the request carries a body (a length above zero, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const n = req.headers['content-length'];
  if (n !== undefined) return n !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

/** Read the whole body, at most `limit` bytes (413 SIZE_INVALID past it, before reading if the length says so). */
export async function readBody(
  req: IncomingMessage,
  limit: number,
  what: string,
  onBytes: (n: number) => void,
): Promise<Buffer> {
  const declared = contentLength(req);
  if (declared !== undefined && declared > limit) {
    throw new RegistryHttpError(
      413,
      'SIZE_INVALID',
      `${what} is ${declared} bytes, over the limit of ${limit}`,
    );
  }
  const chunks: Buffer[] = [];
  let total = 0;
  // not destroyed on error: the answer (413) still goes out on this connection
  for await (const c of req.iterator({ destroyOnReturn: false })) {
    const chunk = c as Buffer;
    total += chunk.byteLength;
    onBytes(chunk.byteLength);
    if (total > limit) {
      const e = new TooLargeError(what, limit);
      throw new RegistryHttpError(413, 'SIZE_INVALID', e.message, undefined, { cause: e });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** A single-valued query parameter; repeated values are refused (400 with `code`). */
export function queryParam(
  q: URLSearchParams,
  name: string,
  code: 'DIGEST_INVALID' | 'NAME_INVALID' | 'UNSUPPORTED',
): string | undefined {
  const all = q.getAll(name);
  if (all.length > 1) {
    throw new RegistryHttpError(400, code, `query parameter ${name} is given ${all.length} times`);
  }
  return all[0];
}

/** `?n=` of a paginated list: a whole number, capped at `max`. */
export function pageSize(q: URLSearchParams, max: number): number | undefined {
  const v = queryParam(q, 'n', 'UNSUPPORTED');
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,9}$/.test(v)) {
    throw new RegistryHttpError(
      400,
      'UNSUPPORTED',
      `pagination: n=${JSON.stringify(v.slice(0, 40))} is not a whole number`,
    );
  }
  return Math.min(Number(v), max);
}
