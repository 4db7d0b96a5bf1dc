// createRegistryServer: an OCI distribution registry (spec v1.1) over the local store (or
// any OCI layout), as a Node http.Server (https.Server when given a certificate) that a
// program can listen() on and embed. This file owns the request life cycle: route, auth
// (Basic, htpasswd or a callback), read-only refusal, error envelopes, the access log and
// /metrics, timers (upload expiry, lease rotation) and cleanup when the server closes.
// The API itself is in handlers.ts; repository names in names.ts.

import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import { StratumError } from '../errors/errors.js';
import type { LayoutTarget } from '../layout/layout.js';
import type { Store } from '../layout/store.js';
import { Limits } from '../spec/types.js';
import { TooManyAuthRequests } from './bcrypt-pool.js';
import { RegistryHandlers } from './handlers.js';
import { Htpasswd, parseBasicAuth } from './htpasswd.js';
import { RegistryHttpError, sendError, toHttpError } from './http-error.js';
import { type AccessLogEntry, formatAccessLine, ServerMetrics } from './metrics.js';
import { matchRoute, ROUTE_METHODS, type Route, WRITE_METHODS } from './routes.js';
import { StoreView } from './store-view.js';
import { UploadManager } from './uploads.js';

/** Where upload sessions spool their bytes, under the store root by default. */
export const UPLOADS_DIR = '.stratum-uploads';

export interface RegistryServerOptions {
  /** The local store (pushes are leased against a concurrent gc) or an OCI layout. */
  readonly store: Store | LayoutTarget;
  /** Refuse every write (405 UNSUPPORTED). Also implied by a store opened read-only. */
  readonly readOnly?: boolean;
  /** An htpasswd file (bcrypt entries; re-read when it changes) or loaded entries. */
  readonly htpasswd?: string | Htpasswd;
  /** Or check credentials yourself. With both, either may accept. */
  readonly auth?: (username: string, password: string) => boolean | Promise<boolean>;
  /** The realm of the Basic challenge (default "stratum"). */
  readonly realm?: string;
  /** Serve HTTPS with this certificate and key (PEM). */
  readonly tls?: { readonly cert: string | Buffer; readonly key: string | Buffer };
  /**
   * Access log: called once per request with a formatted line and its fields. Default:
   * lines to stderr. false: no access log.
   */
  readonly logger?: ((line: string, entry: AccessLogEntry) => void) | false;
  /** Unexpected failures (500s, cleanup errors). Default: stderr. */
  readonly onError?: (error: unknown) => void;
  /** Largest manifest accepted (default and most 4 MiB; 413 past it). */
  readonly maxManifestBytes?: number;
  /** Largest blob accepted (default 64 GiB; 413 past it). */
  readonly maxBlobBytes?: number;
  /** Upload sessions in progress at once (default 1000; 429 TOOMANYREQUESTS past it). */
  readonly maxUploads?: number;
  /** Where upload sessions spool (default `<store>/.stratum-uploads`; best on the store's filesystem). */
  readonly uploadDir?: string;
  /** An upload idle this long is removed (default 1 hour). Blobs pushed are kept from gc at least this long. */
  readonly uploadTtlMs?: number;
  /** Close a connection idle (no bytes either way) this long (default 5 minutes). */
  readonly idleTimeoutMs?: number;
}

/** What a running registry server holds, for callers that want to look or close it fully. */
export interface RegistryServerState {
  readonly metrics: ServerMetrics;
  readonly readOnly: boolean;
  readonly uploadDir: string;
  /** Releases leases, removes upload files, stops timers (also run when the server closes). */
  dispose(): Promise<void>;
}

const states = new WeakMap<Server, RegistryServerState>();

/** The state of a server made by {@link createRegistryServer}. */
export function registryServerState(server: Server): RegistryServerState | undefined {
  return states.get(server);
}

/** Stop accepting connections, close idle ones, wait for requests in flight, then clean up. */
export async function closeRegistryServer(
  server: Server,
  opts: { readonly graceMs?: number } = {},
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), opts.graceMs ?? 10_000);
  timer.unref();
  await closed;
  clearTimeout(timer);
  await states.get(server)?.dispose();
}

function routeLabel(route: Route): string {
  return route.kind;
}

function errorWhat(route: Route): 'blob' | 'manifest' | 'upload' | 'repository' {
  switch (route.kind) {
    case 'manifest':
      return 'manifest';
    case 'upload':
    case 'uploads':
      return 'upload';
    case 'tags':
      return 'repository';
    default:
      return 'blob';
  }
}

function defaultLogger(line: string): void {
  process.stderr.write(`${line}\n`);
}

function defaultOnError(e: unknown): void {
  process.stderr.write(`stratum serve: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
}

/** Make a registry server over a store. Call listen() on it; close it with {@link closeRegistryServer}. */
export function createRegistryServer(opts: RegistryServerOptions): Server {
  const backing = opts.store;
  const layout = 'lease' in backing ? backing.layout : backing;
  const readOnly = opts.readOnly === true || layout.readOnly;
  const maxManifestBytes = opts.maxManifestBytes ?? Limits.manifest;
  if (!Number.isSafeInteger(maxManifestBytes) || maxManifestBytes < 1 || maxManifestBytes > Limits.manifest) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `maxManifestBytes must be between 1 and ${Limits.manifest}`,
    );
  }
  const maxBlobBytes = opts.maxBlobBytes ?? 64 * 1024 ** 3;
  if (!Number.isSafeInteger(maxBlobBytes) || maxBlobBytes < 0) {
    throw new StratumError('ERR_INVALID_ARGUMENT', 'maxBlobBytes must be a non-negative whole number');
  }
  const uploadTtlMs = opts.uploadTtlMs ?? 60 * 60 * 1000;
  if (!(uploadTtlMs > 0)) throw new StratumError('ERR_INVALID_ARGUMENT', 'uploadTtlMs must be positive');
  const realm = (opts.realm ?? 'stratum').replace(/["\\\r\n]/g, '');
  const logger = opts.logger === false ? undefined : (opts.logger ?? defaultLogger);
  const onError = opts.onError ?? defaultOnError;
  const htpasswd =
    typeof opts.htpasswd === 'string'
      ? Htpasswd.load(opts.htpasswd)
      : opts.htpasswd
        ? Promise.resolve(opts.htpasswd)
        : undefined;
  htpasswd?.catch(() => {}); // reported on the first request that needs it
  const authRequired = htpasswd !== undefined || opts.auth !== undefined;

  const view = new StoreView(backing, { leasePeriodMs: uploadTtlMs, readOnly });
  const uploadDir = opts.uploadDir ?? join(layout.dir, UPLOADS_DIR);
  const uploads = new UploadManager({
    dir: uploadDir,
    ttlMs: uploadTtlMs,
    maxUploads: opts.maxUploads ?? 1000,
    maxBytes: maxBlobBytes,
  });
  if (!readOnly) uploads.ready().catch(onError);
  const handlers = new RegistryHandlers(view, uploads, { maxManifestBytes, maxBlobBytes });
  const metrics = new ServerMetrics();
  metrics.gauge('stratum_registry_uploads_in_progress', () => uploads.count);

  const sweeper = setInterval(
    () => void uploads.sweep().catch(onError),
    Math.max(1000, Math.min(60_000, uploadTtlMs / 4)),
  );
  sweeper.unref();

  async function authenticate(req: IncomingMessage): Promise<string | undefined> {
    const cred = parseBasicAuth(req.headers.authorization);
    const challenge = { 'www-authenticate': `Basic realm="${realm}", charset="UTF-8"` };
    if (cred === undefined) {
      throw new RegistryHttpError(401, 'UNAUTHORIZED', 'authentication required', undefined, {
        headers: challenge,
      });
    }
    let ok = false;
    try {
      if (opts.auth) ok = await opts.auth(cred.user, cred.password);
      if (!ok && htpasswd) ok = await (await htpasswd).verify(cred.user, cred.password);
    } catch (e) {
      if (e instanceof TooManyAuthRequests) {
        throw new RegistryHttpError(429, 'TOOMANYREQUESTS', e.message, undefined, {
          headers: { 'retry-after': '1' },
        });
      }
      throw e;
    }
    if (!ok) {
      throw new RegistryHttpError(401, 'UNAUTHORIZED', 'the user name or password is wrong', undefined, {
        headers: challenge,
      });
    }
    return cred.user;
  }

  async function serve(
    req: IncomingMessage,
    res: ServerResponse,
    entry: { route: string; user: string | undefined; bytesIn: number; bytesOut: number },
  ): Promise<void> {
    res.setHeader('docker-distribution-api-version', 'registry/2.0');
    const method = req.method ?? 'GET';
    const head = method === 'HEAD';
    let route: Route = { kind: 'unknown' };
    try {
      const target = req.url ?? '/';
      if (!target.startsWith('/'))
        throw new RegistryHttpError(400, 'UNSUPPORTED', 'the request target must be a path');
      const q = target.indexOf('?');
      const pathname = q < 0 ? target : target.slice(0, q);
      const query = new URLSearchParams(q < 0 ? '' : target.slice(q + 1));
      route = matchRoute(pathname);
      entry.route = routeLabel(route);
      if (authRequired) entry.user = await authenticate(req);
      if (route.kind === 'unknown')
        throw new RegistryHttpError(404, 'UNSUPPORTED', `no such endpoint: ${pathname.slice(0, 200)}`);
      const allowed = ROUTE_METHODS[route.kind];
      if (!allowed.includes(method)) {
        throw new RegistryHttpError(405, 'UNSUPPORTED', `${method} is not allowed here`, undefined, {
          headers: { allow: allowed.join(', ') },
        });
      }
      if (readOnly && WRITE_METHODS.has(method)) {
        throw new RegistryHttpError(
          405,
          'UNSUPPORTED',
          'this registry is read-only: pushes and deletes are refused',
        );
      }
      if (route.kind === 'metrics') {
        const body = Buffer.from(metrics.render());
        res.setHeader('content-type', 'text/plain; version=0.0.4; charset=utf-8');
        res.setHeader('content-length', String(body.byteLength));
        res.end(body);
        return;
      }
      await handlers.handle(route, {
        req,
        res,
        method,
        query,
        received: (n) => {
          entry.bytesIn += n;
        },
        sent: (n) => {
          entry.bytesOut += n;
        },
      });
    } catch (e) {
      const err = toHttpError(e, errorWhat(route));
      if (err.status >= 500) onError(e);
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // a body we did not read: answer, then close the connection rather than read it all
      if (!req.complete) res.setHeader('connection', 'close');
      sendError(res, err, head);
    }
  }

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const started = process.hrtime.bigint();
    const entry = { route: 'unknown', user: undefined as string | undefined, bytesIn: 0, bytesOut: 0 };
    // count body bytes as they are written
    const write = res.write.bind(res) as (...a: unknown[]) => boolean;
    const end = res.end.bind(res) as (...a: unknown[]) => ServerResponse;
    const size = (chunk: unknown) =>
      typeof chunk === 'string'
        ? Buffer.byteLength(chunk)
        : chunk instanceof Uint8Array
          ? chunk.byteLength
          : 0;
    res.write = ((...a: unknown[]) => {
      entry.bytesOut += size(a[0]);
      return write(...a);
    }) as typeof res.write;
    res.end = ((...a: unknown[]) => {
      if (typeof a[0] !== 'function') entry.bytesOut += size(a[0]);
      return end(...a);
    }) as typeof res.end;
    metrics.started();
    let logged = false;
    const done = () => {
      if (logged) return;
      logged = true;
      const e: AccessLogEntry = {
        time: new Date(),
        remote: req.socket.remoteAddress ?? '-',
        user: entry.user,
        method: req.method ?? '-',
        path: req.url ?? '-',
        route: entry.route,
        status: res.statusCode,
        bytesIn: entry.bytesIn,
        bytesOut: req.method === 'HEAD' ? 0 : entry.bytesOut,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
        aborted: !res.writableFinished,
      };
      metrics.observe(e);
      if (logger) {
        try {
          logger(formatAccessLine(e), e);
        } catch (err) {
          onError(err);
        }
      }
    };
    res.once('finish', done);
    res.once('close', done);
    serve(req, res, entry).catch((e: unknown) => {
      onError(e);
      res.destroy();
    });
  };

  const server = opts.tls
    ? (createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, handler) as unknown as Server)
    : createHttpServer(handler);
  // uploads may take long: no overall request timeout, but idle connections are closed
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 30_000;
  server.setTimeout(opts.idleTimeoutMs ?? 5 * 60_000, (socket) => socket.destroy());

  let disposed: Promise<void> | undefined;
  const dispose = (): Promise<void> => {
    disposed ??= (async () => {
      clearInterval(sweeper);
      await uploads.close().catch(onError);
      await view.close().catch(onError);
    })();
    return disposed;
  };
  server.once('close', () => void dispose());
  states.set(server, { metrics, readOnly, uploadDir, dispose });
  return server;
}
