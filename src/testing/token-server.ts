// Test helper: a token server for the registry's `auth: token` mode (the Docker token
// protocol). It makes an EC P-256 key and a self-signed certificate with the openssl CLI
// (the registry's `rootcertbundle`), and answers GET /token?service=&scope= (Basic auth
// optional) and POST /token (OAuth2 refresh_token grant) with ES256 JWTs whose header
// carries the certificate in `x5c`, which distribution 2.8 verifies against the bundle.
// Every request is recorded, so tests can count how often a client asked for a token.

import { execFile } from 'node:child_process';
import { createPrivateKey, type KeyObject, randomBytes, sign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { RegistryTokenAuth } from './registry.js';
import { makeTempDir } from './tmp.js';

const run = promisify(execFile);

export interface TokenRequestRecord {
  readonly method: string;
  /** The authenticated account, if any. */
  readonly account: string | undefined;
  readonly scopes: readonly string[];
  /** Whether a token was issued. */
  readonly issued: boolean;
}

export interface TokenServerOptions {
  /** Accounts (username → password). Wrong credentials get 401. */
  readonly users?: Readonly<Record<string, string>>;
  /** Refresh tokens (docker's identity tokens) → account, for the POST grant. */
  readonly refreshTokens?: Readonly<Record<string, string>>;
  /** Whether requests without credentials get tokens (default: true when no users are given). */
  readonly allowAnonymous?: boolean;
  /** Which actions to grant for a scope; default: what was asked, or only `pull` for anonymous users. */
  readonly grant?: (req: {
    readonly account: string | undefined;
    readonly type: string;
    readonly name: string;
    readonly actions: readonly string[];
  }) => readonly string[];
  /** Token lifetime in seconds (default 300). */
  readonly expiresIn?: number;
}

export interface TokenServer {
  /** Settings for the registry's `auth.token` section. */
  readonly registryAuth: RegistryTokenAuth;
  readonly url: string;
  readonly requests: TokenRequestRecord[];
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

function parseBasic(h: string | undefined): { user: string; password: string } | undefined {
  if (!h?.startsWith('Basic ')) return undefined;
  const s = Buffer.from(h.slice(6), 'base64').toString('utf8');
  const i = s.indexOf(':');
  return i < 0 ? undefined : { user: s.slice(0, i), password: s.slice(i + 1) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).byteLength;
    if (n > 64 * 1024) break;
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts).toString('utf8');
}

export async function startTokenServer(opts: TokenServerOptions = {}): Promise<TokenServer> {
  const tmp = await makeTempDir('stratum-token-');
  const keyPath = join(tmp.path, 'key.pem');
  const certPath = join(tmp.path, 'cert.pem');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    keyPath,
    '-out',
    certPath,
    '-days',
    '2',
    '-subj',
    '/CN=stratum-test-token-issuer',
  ]);
  const key: KeyObject = createPrivateKey(await readFile(keyPath));
  const certDer = new X509Certificate(await readFile(certPath)).raw.toString('base64');
  const service = 'stratum-test-registry';
  const issuer = 'stratum-test-issuer';
  const users = opts.users ?? {};
  const allowAnonymous = opts.allowAnonymous ?? Object.keys(users).length === 0;
  const expiresIn = opts.expiresIn ?? 300;
  const requests: TokenRequestRecord[] = [];

  const issue = (account: string | undefined, scopes: readonly string[]): string => {
    const access = scopes.flatMap((s) => {
      const first = s.indexOf(':');
      const last = s.lastIndexOf(':');
      if (first <= 0 || last === first) return [];
      const type = s.slice(0, first);
      const name = s.slice(first + 1, last);
      const actions = s
        .slice(last + 1)
        .split(',')
        .filter(Boolean);
      const granted = opts.grant
        ? opts.grant({ account, type, name, actions })
        : account === undefined
          ? actions.filter((a) => a === 'pull')
          : actions;
      return [{ type, name, actions: [...granted] }];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer] };
    const claims = {
      iss: issuer,
      sub: account ?? '',
      aud: service,
      exp: now + expiresIn,
      nbf: now - 1,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    return `${input}.${b64url(sig)}`;
  };

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://token.invalid');
      const reply = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (url.pathname !== '/token') return reply(404, { errors: [{ code: 'NOT_FOUND' }] });
      let account: string | undefined;
      let scopes: string[];
      let svc: string | null;
      if (req.method === 'POST') {
        const form = new URLSearchParams(await readBody(req));
        svc = form.get('service');
        scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
        const rt = form.get('refresh_token') ?? '';
        account = form.get('grant_type') === 'refresh_token' ? opts.refreshTokens?.[rt] : undefined;
        if (account === undefined) {
          requests.push({ method: 'POST', account: undefined, scopes, issued: false });
          return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid refresh token' }] });
        }
      } else {
        svc = url.searchParams.get('service');
        scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ').filter(Boolean));
        const basic = parseBasic(req.headers.authorization);
        if (basic) {
          if (users[basic.user] === undefined || users[basic.user] !== basic.password) {
            requests.push({ method: 'GET', account: basic.user, scopes, issued: false });
            return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'wrong username or password' }] });
          }
          account = basic.user;
        } else if (!allowAnonymous) {
          requests.push({ method: 'GET', account: undefined, scopes, issued: false });
          return reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
        }
      }
      if (svc !== service) {
        requests.push({ method: req.method ?? 'GET', account, scopes, issued: false });
        return reply(400, { errors: [{ code: 'INVALID_SERVICE', message: `unknown service ${svc}` }] });
      }
      requests.push({ method: req.method ?? 'GET', account, scopes, issued: true });
      const token = issue(account, scopes);
      reply(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() });
    })().catch((e: unknown) => {
      res.writeHead(500);
      res.end(String(e));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  return {
    registryAuth: { realm: `${url}/token`, service, issuer, rootcertbundle: certPath },
    url,
    requests,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await tmp.cleanup();
    },
  };
}
