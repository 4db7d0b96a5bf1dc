// Test helper: `stratum serve` in-process — a fresh store in a tmpfs temp dir (or the one
// given), a registry server on 127.0.0.1 with a free port, access log lines kept in memory.
// stop() closes the server (waiting for its cleanup) and removes the temp dir.

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openStore, type Store } from '../layout/store.js';
import type { AccessLogEntry } from '../server/metrics.js';
import { closeRegistryServer, createRegistryServer, type RegistryServerOptions } from '../server/server.js';
import { makeTempDir } from './tmp.js';

export interface TestServer {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** `http://127.0.0.1:PORT` (https with tls) */
  readonly url: string;
  readonly server: Server;
  readonly store: Store;
  readonly root: string;
  /** Access log entries so far. */
  readonly log: AccessLogEntry[];
  /** Errors the server reported (500s). */
  readonly errors: unknown[];
  stop(): Promise<void>;
}

export async function startServer(
  opts: Omit<RegistryServerOptions, 'store'> & { readonly store?: Store; readonly root?: string } = {},
): Promise<TestServer> {
  const tmp = opts.store || opts.root ? undefined : await makeTempDir('stratum-serve-');
  const store = opts.store ?? (await openStore({ root: opts.root ?? `${tmp?.path}/store` }));
  const log: AccessLogEntry[] = [];
  const errors: unknown[] = [];
  const server = createRegistryServer({
    logger: (_line, e) => {
      log.push(e);
    },
    onError: (e) => {
      errors.push(e);
    },
    ...opts,
    store,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  return {
    host,
    url: `${opts.tls ? 'https' : 'http'}://${host}`,
    server,
    store,
    root: store.root,
    log,
    errors,
    async stop() {
      await closeRegistryServer(server, { graceMs: 1000 });
      if (!opts.store) await store.close();
      await tmp?.cleanup();
    },
  };
}

export interface RawResponse {
  readonly status: number;
  readonly headers: import('node:http').IncomingHttpHeaders;
  readonly body: Buffer;
  /** The error envelope's codes, if the body is one. */
  readonly codes: string[];
  json(): unknown;
}

/**
 * One HTTP request sent exactly as given (the path is not normalised: `..` and `%2e` reach
 * the server as written). A Buffer body gets a Content-Length unless `chunked`.
 */
export async function rawRequest(
  base: string,
  method: string,
  path: string,
  opts: {
    readonly headers?: Record<string, string>;
    readonly body?: Buffer | AsyncIterable<Uint8Array>;
    readonly chunked?: boolean;
    readonly ca?: string | Buffer;
  } = {},
): Promise<RawResponse> {
  const { request: httpRequest } = await import('node:http');
  const { request: httpsRequest } = await import('node:https');
  const u = new URL(base);
  const headers: Record<string, string> = { ...opts.headers };
  if (Buffer.isBuffer(opts.body) && !opts.chunked) headers['content-length'] ??= String(opts.body.byteLength);
  const request = u.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        method,
        path,
        headers,
        agent: false,
        ...(opts.ca ? { ca: opts.ca } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          let codes: string[] = [];
          try {
            const doc = JSON.parse(body.toString('utf8')) as { errors?: { code: string }[] };
            codes = doc.errors?.map((e) => e.code) ?? [];
          } catch {}
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            codes,
            json: () => JSON.parse(body.toString('utf8')),
          });
        });
      },
    );
    req.on('error', reject);
    const body = opts.body;
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else {
      (async () => {
        for await (const c of body) req.write(c);
        req.end();
      })().catch((e: unknown) => req.destroy(e as Error));
    }
  });
}
