// Errors with a stable `code` callers can branch on; the message is for people.
// Subclasses carry structured fields (expected/actual digest, HTTP status, side of a copy).
// The original error, if any, is kept in `cause`.

export const ErrorCodes = [
  'ERR_USAGE', // bad command-line usage (exit code 2)
  'ERR_INVALID_ARGUMENT', // a library call got an argument it cannot use
  'ERR_INVALID_DIGEST', // not a well-formed digest
  'ERR_UNSUPPORTED_ALGORITHM', // digest algorithm we do not implement
  'ERR_DIGEST_MISMATCH', // bytes do not hash to the expected digest
  'ERR_SIZE_MISMATCH', // byte count differs from the descriptor's size
  'ERR_TOO_LARGE', // a body exceeds its limit (manifest, config, token, ...)
  'ERR_INVALID_REFERENCE', // an image reference does not parse
  'ERR_INVALID_TRANSPORT', // `xyz:...` names no transport we know
  'ERR_INVALID_DOCUMENT', // a manifest/index/config/descriptor fails validation
  'ERR_MEDIA_TYPE_MISMATCH', // declared mediaType disagrees with descriptor / Content-Type
  'ERR_UNSUPPORTED_MEDIA_TYPE', // a media type we cannot handle
  'ERR_SCHEMA1_UNSUPPORTED', // Docker schema-1 manifest
  'ERR_NOT_FOUND', // a tag, image, blob or manifest does not exist
  'ERR_PLATFORM_NOT_FOUND', // index has no manifest for the wanted platform
  'ERR_UNAUTHORIZED', // credentials missing or rejected
  'ERR_DENIED', // authenticated but not allowed
  'ERR_REGISTRY', // registry answered with an error we do not map more precisely
  'ERR_NETWORK', // connection failed, reset, timed out
  'ERR_TLS', // certificate / TLS failure
  'ERR_UNSAFE_REDIRECT', // a redirect we refuse to follow
  'ERR_CREDENTIALS', // reading credentials (config, helper) failed
  'ERR_INVALID_ARCHIVE', // a docker/oci archive is malformed
  'ERR_INVALID_LAYOUT', // an OCI layout directory is malformed
  'ERR_UNSAFE_PATH', // a name from outside would escape its root
  'ERR_COMPRESSION', // corrupt compressed data or a codec failure
  'ERR_ZSTD_UNAVAILABLE', // no zstd codec on this machine
  'ERR_LOCK_TIMEOUT', // could not take a store lock in time
  'ERR_ABORTED', // cancelled by the caller (Ctrl-C, AbortSignal)
  'ERR_READ_ONLY', // a target that cannot be written to
  'ERR_UNSUPPORTED', // an operation this target or transport does not offer
  'ERR_COPY', // wraps a failure during copy, names the side
  'ERR_IO', // a file-system call failed (permission denied, no space, ...)
  'ERR_BUILD_SYNTAX', // a Dockerfile does not parse (names the file and line)
  'ERR_BUILD_STEP_FAILED', // a build step (RUN) failed: its exit code and output
  'ERR_RUNTIME_MISSING', // no OCI runtime (runc) on this machine
  'ERR_RUNTIME', // the OCI runtime failed to create, start or manage a container
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

export interface StratumErrorOptions {
  readonly cause?: unknown;
}

/** Base class of every error stratum throws on purpose. */
export class StratumError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options: StratumErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = 'StratumError';
  }
}

export class DigestMismatchError extends StratumError {
  readonly expected: string;
  readonly actual: string;
  constructor(expected: string, actual: string, what = 'content') {
    super('ERR_DIGEST_MISMATCH', `${what}: digest mismatch: expected ${expected}, got ${actual}`);
    this.name = 'DigestMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

export class SizeMismatchError extends StratumError {
  readonly expected: number;
  readonly actual: number;
  constructor(expected: number, actual: number, what = 'content') {
    super(
      'ERR_SIZE_MISMATCH',
      `${what}: size mismatch: expected ${expected} bytes, got ${actual > expected ? `more than ${expected}` : actual}`,
    );
    this.name = 'SizeMismatchError';
    this.expected = expected;
    this.actual = actual;
  }
}

export class TooLargeError extends StratumError {
  readonly limit: number;
  constructor(what: string, limit: number) {
    super('ERR_TOO_LARGE', `${what} is larger than the limit of ${limit} bytes`);
    this.name = 'TooLargeError';
    this.limit = limit;
  }
}

/** An HTTP error from a registry: status, the registry's own error codes, whether a retry may help. */
export class RegistryError extends StratumError {
  readonly status: number;
  readonly errors: readonly { readonly code: string; readonly message?: string; readonly detail?: unknown }[];
  readonly url: string;
  readonly retryable: boolean;
  constructor(
    code: ErrorCode,
    message: string,
    init: {
      status: number;
      url: string;
      errors?: readonly { code: string; message?: string; detail?: unknown }[];
      retryable?: boolean;
      cause?: unknown;
    },
  ) {
    super(code, message, { cause: init.cause });
    this.name = 'RegistryError';
    this.status = init.status;
    this.url = init.url;
    this.errors = init.errors ?? [];
    this.retryable = init.retryable ?? false;
  }
}

export type CopySide = 'source' | 'destination';

/** A failure during copy, naming the side that failed. The underlying error is `cause`. */
export class CopyError extends StratumError {
  readonly side: CopySide;
  readonly inner: StratumError | undefined;
  constructor(side: CopySide, what: string, cause: unknown) {
    const inner = cause instanceof StratumError ? cause : undefined;
    const why = cause instanceof Error ? cause.message : String(cause);
    super(inner?.code ?? 'ERR_COPY', `${side}: ${what}: ${why}`, { cause });
    this.name = 'CopyError';
    this.side = side;
    this.inner = inner;
  }
}

export class UnsafePathError extends StratumError {
  readonly path: string;
  constructor(path: string, why: string) {
    super('ERR_UNSAFE_PATH', `unsafe path ${JSON.stringify(path)}: ${why}`);
    this.name = 'UnsafePathError';
    this.path = path;
  }
}

export function isStratumError(e: unknown): e is StratumError {
  return e instanceof StratumError;
}

/** A StratumError for a Node system error (EACCES, ENOSPC, ...), or undefined if `e` is not one. */
export function fromSystemError(e: unknown): StratumError | undefined {
  if (!(e instanceof Error)) return undefined;
  const errno = (e as NodeJS.ErrnoException).code;
  if (typeof errno !== 'string' || !/^E[A-Z]+$/.test(errno)) return undefined;
  const path = (e as NodeJS.ErrnoException).path;
  const why: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOSPC: 'no space left on device',
    ENOENT: 'no such file or directory',
    EROFS: 'read-only file system',
    EEXIST: 'already exists',
    ENOTDIR: 'not a directory',
    EISDIR: 'is a directory',
  };
  const what = why[errno] ?? e.message;
  return new StratumError('ERR_IO', path ? `${path}: ${what} (${errno})` : `${what} (${errno})`, {
    cause: e,
  });
}

/** Convert an AbortSignal's reason into an ERR_ABORTED error. */
export function abortError(signal?: AbortSignal): StratumError {
  const reason: unknown = signal?.reason;
  if (reason instanceof StratumError) return reason;
  return new StratumError('ERR_ABORTED', 'operation cancelled', { cause: reason });
}
