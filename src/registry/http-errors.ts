// Registry answers and transport failures -> RegistryError. The error body is the spec's
// envelope `{"errors":[{"code","message","detail"}]}`, read with a bound; statuses map to
// stable codes (401 ERR_UNAUTHORIZED, 403 ERR_DENIED, 404 ERR_NOT_FOUND, else ERR_REGISTRY);
// connection failures are ERR_NETWORK and certificate failures ERR_TLS.

import type { Readable } from 'node:stream';
import { type ErrorCode, RegistryError, StratumError } from '../errors/errors.js';
import { Limits } from '../spec/types.js';

export interface RegistryErrorDetail {
  readonly code: string;
  readonly message?: string;
  readonly detail?: unknown;
}

const noop = () => {};

/**
 * Throw a body away without an unhandled 'error' (undici's bodies emit one when destroyed
 * early). Small remainders are read so the connection can be reused.
 */
export function discardBody(body: Readable): void {
  body.on('error', noop);
  const dump = (body as { dump?: (o: { limit: number }) => Promise<void> }).dump;
  if (typeof dump === 'function' && !body.destroyed) {
    dump.call(body, { limit: 64 * 1024 }).catch(noop);
  } else {
    body.destroy();
  }
}

/** Read at most `limit` bytes of a body, then drop the rest (never throws). */
export async function readSome(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const c of body) {
      const b = c as Buffer;
      const take = Math.min(b.byteLength, limit - total);
      if (take > 0) chunks.push(b.subarray(0, take));
      total += take;
      if (total >= limit) break;
    }
  } catch {
    // a broken error body still yields what arrived
  } finally {
    discardBody(body);
  }
  return Buffer.concat(chunks);
}

/** Parse the spec's error envelope; [] if the body is something else. */
export function parseErrorEnvelope(bytes: Uint8Array): RegistryErrorDetail[] {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return [];
  }
  if (typeof doc !== 'object' || doc === null) return [];
  const errors = (doc as { errors?: unknown }).errors;
  if (!Array.isArray(errors)) return [];
  const out: RegistryErrorDetail[] = [];
  for (const e of errors.slice(0, 20)) {
    if (typeof e !== 'object' || e === null) continue;
    const { code, message, detail } = e as Record<string, unknown>;
    if (typeof code !== 'string') continue;
    out.push({
      code: code.slice(0, 100),
      ...(typeof message === 'string' ? { message: message.slice(0, 500) } : {}),
      ...(detail === undefined ? {} : { detail }),
    });
  }
  return out;
}

export function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 401:
      return 'ERR_UNAUTHORIZED';
    case 403:
      return 'ERR_DENIED';
    case 404:
      return 'ERR_NOT_FOUND';
    default:
      return 'ERR_REGISTRY';
  }
}

const STATUS_WORDS: Readonly<Record<number, string>> = {
  400: 'bad request',
  401: 'unauthorized',
  403: 'denied',
  404: 'not found',
  405: 'method not allowed (the registry may not allow this operation, e.g. deletes)',
  409: 'conflict',
  413: 'too large for the registry',
  416: 'range not satisfiable',
  429: 'too many requests',
  500: 'internal server error',
  502: 'bad gateway',
  503: 'service unavailable',
  504: 'gateway timeout',
};

function printable(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
}

/** Why a registry refused, in words: its own error codes and messages, else the status. */
export function describeFailure(status: number, errors: readonly RegistryErrorDetail[], text = ''): string {
  if (errors.length > 0) {
    return errors
      .map((e) => {
        const code = e.code.toLowerCase().replace(/_/g, ' ');
        const msg = e.message ? printable(e.message) : '';
        return msg && msg.toLowerCase() !== code ? `${code}: ${msg}` : code;
      })
      .join('; ');
  }
  const word = STATUS_WORDS[status] ?? 'unexpected answer';
  const snippet = printable(text).slice(0, 200);
  return `${word} (HTTP ${status})${snippet && !snippet.startsWith('<') ? `: ${snippet}` : ''}`;
}

/** Build the error for an unexpected HTTP status, reading (a bounded part of) the body. */
export async function responseError(
  what: string,
  status: number,
  url: string,
  body: Readable | undefined,
): Promise<RegistryError> {
  const bytes = body ? await readSome(body, Limits.errorBody) : Buffer.alloc(0);
  return errorFromBytes(what, status, url, bytes);
}

/** Build the error for an unexpected HTTP status from an already read (bounded) body. */
export function errorFromBytes(what: string, status: number, url: string, bytes: Uint8Array): RegistryError {
  const errors = parseErrorEnvelope(bytes);
  const text = errors.length === 0 ? Buffer.from(bytes).toString('utf8') : '';
  return new RegistryError(codeForStatus(status), `${what}: ${describeFailure(status, errors, text)}`, {
    status,
    url,
    errors,
    retryable: status === 429 || status >= 500,
  });
}

const TLS_CODE = /CERT|SSL|TLS|ERR_OSSL|HANDSHAKE/i;

function errCode(e: unknown): string {
  if (typeof e !== 'object' || e === null) return '';
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : '';
}

/** Whether an error (or its cause) is a certificate / TLS failure. */
export function isTlsError(e: unknown): boolean {
  for (let cur = e, depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    if (TLS_CODE.test(errCode(cur))) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

/** Whether a TLS handshake failed because the server speaks plain HTTP. */
export function isPlainHttpAnswer(e: unknown): boolean {
  for (let cur = e, depth = 0; cur !== undefined && cur !== null && depth < 5; depth++) {
    const msg = cur instanceof Error ? cur.message : '';
    if (/wrong version number|packet length too long|http request/i.test(msg)) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

/** A transport failure (no HTTP answer, or a body cut off) as ERR_NETWORK or ERR_TLS. */
export function transportError(what: string, url: string, e: unknown): StratumError {
  if (e instanceof StratumError) return e;
  const why = e instanceof Error ? e.message : String(e);
  const code = errCode(e) || errCode((e as { cause?: unknown })?.cause);
  if (isTlsError(e)) {
    return new RegistryError(
      'ERR_TLS',
      `${what}: TLS failure talking to ${new URL(url).host}: ${why}${code ? ` (${code})` : ''}`,
      {
        status: 0,
        url,
        retryable: false,
        cause: e,
      },
    );
  }
  return new RegistryError(
    'ERR_NETWORK',
    `${what}: network failure talking to ${new URL(url).host}: ${why}${code && !why.includes(code) ? ` (${code})` : ''}`,
    { status: 0, url, retryable: true, cause: e },
  );
}
