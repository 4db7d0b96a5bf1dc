// Errors the server answers with: an HTTP status and one of the distribution spec's error
// codes, sent in the spec's JSON envelope `{"errors":[{"code","message","detail"}]}`; and
// the mapping from the library's StratumError codes to them.

import type { ServerResponse } from 'node:http';
import { type ErrorCode, StratumError } from '../errors/errors.js';

/** The distribution spec's error codes (plus UNKNOWN for a server fault, which distribution also sends). */
export const RegistryErrorCodes = [
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
  'UNKNOWN',
] as const;
export type RegistryErrorCode = (typeof RegistryErrorCodes)[number];

const STRATUM_CODE: Readonly<Record<RegistryErrorCode, ErrorCode>> = {
  BLOB_UNKNOWN: 'ERR_NOT_FOUND',
  BLOB_UPLOAD_INVALID: 'ERR_INVALID_ARGUMENT',
  BLOB_UPLOAD_UNKNOWN: 'ERR_NOT_FOUND',
  DIGEST_INVALID: 'ERR_INVALID_DIGEST',
  MANIFEST_BLOB_UNKNOWN: 'ERR_NOT_FOUND',
  MANIFEST_INVALID: 'ERR_INVALID_DOCUMENT',
  MANIFEST_UNKNOWN: 'ERR_NOT_FOUND',
  NAME_INVALID: 'ERR_INVALID_REFERENCE',
  NAME_UNKNOWN: 'ERR_NOT_FOUND',
  SIZE_INVALID: 'ERR_SIZE_MISMATCH',
  UNAUTHORIZED: 'ERR_UNAUTHORIZED',
  DENIED: 'ERR_DENIED',
  UNSUPPORTED: 'ERR_UNSUPPORTED',
  TOOMANYREQUESTS: 'ERR_REGISTRY',
  UNKNOWN: 'ERR_REGISTRY',
};

export interface RegistryErrorEntry {
  readonly code: RegistryErrorCode;
  readonly message: string;
  readonly detail?: unknown;
}

/** An error the server sends back as it is: status, spec code(s), message, extra headers. */
export class RegistryHttpError extends StratumError {
  readonly status: number;
  readonly errors: readonly RegistryErrorEntry[];
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    status: number,
    code: RegistryErrorCode,
    message: string,
    detail?: unknown,
    opts: {
      readonly headers?: Record<string, string>;
      readonly more?: readonly RegistryErrorEntry[];
      readonly cause?: unknown;
    } = {},
  ) {
    super(STRATUM_CODE[code], message, { cause: opts.cause });
    this.name = 'RegistryHttpError';
    this.status = status;
    this.errors = [{ code, message, ...(detail === undefined ? {} : { detail }) }, ...(opts.more ?? [])];
    this.headers = opts.headers ?? {};
  }

  get registryCode(): RegistryErrorCode {
    return this.errors[0]!.code;
  }
}

/**
 * The answer for an error thrown while serving: a RegistryHttpError as it is, a
 * StratumError by its code (`what` names the kind of content for NOT_FOUND), anything else
 * a 500 whose message does not leak internals.
 */
export function toHttpError(
  e: unknown,
  what: 'blob' | 'manifest' | 'upload' | 'repository' = 'blob',
): RegistryHttpError {
  if (e instanceof RegistryHttpError) return e;
  if (e instanceof StratumError) {
    const m = e.message;
    switch (e.code) {
      case 'ERR_NOT_FOUND':
        return what === 'manifest'
          ? new RegistryHttpError(404, 'MANIFEST_UNKNOWN', m, undefined, { cause: e })
          : what === 'upload'
            ? new RegistryHttpError(404, 'BLOB_UPLOAD_UNKNOWN', m, undefined, { cause: e })
            : what === 'repository'
              ? new RegistryHttpError(404, 'NAME_UNKNOWN', m, undefined, { cause: e })
              : new RegistryHttpError(404, 'BLOB_UNKNOWN', m, undefined, { cause: e });
      case 'ERR_DIGEST_MISMATCH':
      case 'ERR_INVALID_DIGEST':
      case 'ERR_UNSUPPORTED_ALGORITHM':
        return new RegistryHttpError(400, 'DIGEST_INVALID', m, undefined, { cause: e });
      case 'ERR_SIZE_MISMATCH':
        return new RegistryHttpError(400, 'SIZE_INVALID', m, undefined, { cause: e });
      case 'ERR_TOO_LARGE':
        return new RegistryHttpError(413, 'SIZE_INVALID', m, undefined, { cause: e });
      case 'ERR_INVALID_DOCUMENT':
      case 'ERR_MEDIA_TYPE_MISMATCH':
      case 'ERR_SCHEMA1_UNSUPPORTED':
      case 'ERR_UNSUPPORTED_MEDIA_TYPE':
        return new RegistryHttpError(400, 'MANIFEST_INVALID', m, undefined, { cause: e });
      case 'ERR_INVALID_REFERENCE':
        return new RegistryHttpError(400, 'NAME_INVALID', m, undefined, { cause: e });
      case 'ERR_READ_ONLY':
        return new RegistryHttpError(405, 'UNSUPPORTED', m, undefined, { cause: e });
      case 'ERR_LOCK_TIMEOUT':
        return new RegistryHttpError(503, 'TOOMANYREQUESTS', m, undefined, {
          cause: e,
          headers: { 'retry-after': '5' },
        });
      default:
        break;
    }
  }
  return new RegistryHttpError(500, 'UNKNOWN', 'internal server error; see the server log', undefined, {
    cause: e,
  });
}

/** Send an error envelope (no body for HEAD). */
export function sendError(res: ServerResponse, err: RegistryHttpError, head: boolean): void {
  const body = Buffer.from(JSON.stringify({ errors: err.errors }));
  res.statusCode = err.status;
  for (const [k, v] of Object.entries(err.headers)) res.setHeader(k, v);
  res.setHeader('content-type', 'application/json');
  res.setHeader('content-length', String(body.byteLength));
  res.end(head ? undefined : body);
}
