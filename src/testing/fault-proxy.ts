// Test helper: an HTTP proxy on 127.0.0.1 in front of a test server (the registry) that
// misbehaves on purpose, following a plan of rules. A rule matches requests by method and
// path, lets the first `skip` matches through, then applies its fault `times` times:
//   status    answer a status (500, 429 with Retry-After, ...) without asking upstream
//   reset     close the connection without an answer
//   drop      forward the headers and the first N body bytes, then cut the connection
//   truncate  send only the first N body bytes, with a Content-Length that says so
//   corrupt   flip one byte of the body
//   redirect  answer a redirect to another URL
//   headers   forward, but rewrite response headers (or drop request headers)
// The Host header is passed through, so Location URLs the registry builds point back at
// the proxy. Every request is recorded (method, url, headers).

import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

export type FaultAction =
  | {
      readonly kind: 'status';
      readonly status: number;
      readonly retryAfter?: string;
      readonly body?: string;
      readonly headers?: Readonly<Record<string, string>>;
    }
  | { readonly kind: 'reset' }
  | { readonly kind: 'drop'; readonly afterBytes: number }
  /** Forward the first N body bytes, then send nothing more and keep the connection open. */
  | { readonly kind: 'stall'; readonly afterBytes: number }
  | { readonly kind: 'truncate'; readonly bytes: number }
  | { readonly kind: 'corrupt'; readonly at?: number }
  | {
      readonly kind: 'redirect';
      readonly location: string | ((path: string) => string);
      readonly status?: number;
    }
  | {
      readonly kind: 'headers';
      /** Response headers to set or remove. */
      readonly set?: Readonly<Record<string, string>>;
      readonly remove?: readonly string[];
      /** Request headers not passed upstream (e.g. `range`, to play a registry that ignores it). */
      readonly removeRequest?: readonly string[];
    };

export interface FaultRule {
  readonly method?: string;
  readonly path?: RegExp;
  /** Matching requests let through before the fault starts (default 0). */
  readonly skip?: number;
  /** How many matching requests get the fault (default: all). */
  readonly times?: number;
  readonly action: FaultAction;
}

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  /** The fault applied, if any. */
  readonly fault: FaultAction['kind'] | undefined;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Replace the plan (counters start again). */
  setPlan(plan: readonly FaultRule[]): void;
  stop(): Promise<void>;
}

interface LiveRule {
  readonly rule: FaultRule;
  seen: number;
  applied: number;
}

/** Start a fault proxy in front of `upstream` (`http://127.0.0.1:PORT`). */
export async function startFaultProxy(
  upstream: string,
  plan: readonly FaultRule[] = [],
): Promise<FaultProxy> {
  const up = new URL(upstream);
  let rules: LiveRule[] = plan.map((rule) => ({ rule, seen: 0, applied: 0 }));
  const requests: RecordedRequest[] = [];

  const pick = (req: IncomingMessage): FaultAction | undefined => {
    const path = req.url ?? '/';
    for (const r of rules) {
      if (r.rule.method !== undefined && r.rule.method !== req.method) continue;
      if (r.rule.path !== undefined && !r.rule.path.test(path)) continue;
      r.seen++;
      if (r.seen <= (r.rule.skip ?? 0)) continue;
      if (r.applied >= (r.rule.times ?? Number.POSITIVE_INFINITY)) continue;
      r.applied++;
      return r.rule.action;
    }
    return undefined;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, action: FaultAction | undefined) => {
    const reqHeaders = { ...req.headers };
    if (action?.kind === 'headers')
      for (const k of action.removeRequest ?? []) delete reqHeaders[k.toLowerCase()];
    const upReq = request(
      {
        host: up.hostname,
        port: up.port,
        method: req.method,
        path: req.url,
        headers: reqHeaders,
      },
      (upRes) => {
        const headers: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined) headers[k] = v;
        const status = upRes.statusCode ?? 502;
        if (action?.kind === 'headers') {
          for (const k of action.remove ?? []) delete headers[k.toLowerCase()];
          for (const [k, v] of Object.entries(action.set ?? {})) headers[k.toLowerCase()] = v;
        }
        if (action?.kind === 'truncate') {
          headers['content-length'] = String(action.bytes);
          delete headers['transfer-encoding'];
        }
        res.writeHead(status, headers);
        if (req.method === 'HEAD') {
          upRes.resume();
          res.end();
          return;
        }
        let offset = 0;
        upRes.on('data', (chunk: Buffer) => {
          let c = chunk;
          const start = offset;
          offset += c.byteLength;
          if (action?.kind === 'stall') {
            if (start >= action.afterBytes) return;
            if (offset >= action.afterBytes) {
              upRes.destroy();
              res.write(c.subarray(0, action.afterBytes - start));
              return;
            }
          } else if (action?.kind === 'drop') {
            if (start >= action.afterBytes) return;
            if (offset >= action.afterBytes) {
              c = c.subarray(0, action.afterBytes - start);
              upRes.destroy();
              res.write(c, () => res.socket?.destroy());
              return;
            }
          } else if (action?.kind === 'truncate') {
            if (start >= action.bytes) return;
            if (offset >= action.bytes) {
              c = c.subarray(0, action.bytes - start);
              upRes.destroy();
              res.end(c);
              return;
            }
          } else if (action?.kind === 'corrupt') {
            const at = action.at ?? 0;
            if (at >= start && at < offset) {
              c = Buffer.from(c);
              c[at - start] = (c[at - start] as number) ^ 0xff;
            }
          }
          res.write(c);
        });
        upRes.on('end', () => {
          if (!res.writableEnded) res.end();
        });
        upRes.on('error', () => res.socket?.destroy());
      },
    );
    upReq.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502);
        res.end();
      } else res.socket?.destroy();
    });
    req.pipe(upReq);
  };

  const server = createServer((req, res) => {
    const action = pick(req);
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      fault: action?.kind,
    });
    if (action?.kind === 'status') {
      req.resume();
      const headers: Record<string, string> = { 'content-type': 'application/json', ...action.headers };
      if (action.retryAfter !== undefined) headers['retry-after'] = action.retryAfter;
      const body =
        action.body ??
        JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected fault: HTTP ${action.status}` }] });
      res.writeHead(action.status, { ...headers, 'content-length': String(Buffer.byteLength(body)) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (action?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (action?.kind === 'redirect') {
      req.resume();
      const loc = typeof action.location === 'function' ? action.location(req.url ?? '/') : action.location;
      res.writeHead(action.status ?? 307, { location: loc, 'content-length': '0' });
      res.end();
      return;
    }
    forward(req, res, action);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    url: `http://127.0.0.1:${port}`,
    requests,
    setPlan(p) {
      rules = p.map((rule) => ({ rule, seen: 0, applied: 0 }));
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
