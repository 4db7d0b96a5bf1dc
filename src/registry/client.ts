// RegistryClient: the HTTP side of the OCI distribution protocol, one per process. It owns
// the connection pools (undici Agent, keep-alive), the per-host knowledge (http or https,
// which auth scheme the registry asked for) and the bearer-token cache, and runs every
// request through the same steps:
//
//   1. pick the scheme: plain HTTP for loopback hosts and `insecureHosts`, else HTTPS (with
//      `tlsVerify: false`, HTTPS without verification, falling back to HTTP once);
//   2. attach credentials: a cached token whose scopes cover the request (fetched ahead
//      when the registry's realm is known), or Basic; never to any other origin;
//   3. send, following redirects by hand (at most 5; only http(s); Authorization only to
//      the registry's own origin);
//   4. on 401, read the challenge (Bearer realm/service/scope, or Basic), get a token for
//      the request's scopes plus the challenge's, and send once more;
//   5. on network errors, 5xx and 429, retry with exponential backoff and jitter (or the
//      Retry-After the registry gave, capped) when the body can be sent again;
//   6. map anything else to RegistryError (see http-errors.ts).

import { Buffer } from 'node:buffer';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import type { Agent, Dispatcher } from 'undici';
import { abortError, RegistryError, StratumError } from '../errors/errors.js';
import { readAll } from '../internal/streams.js';
import { Limits } from '../spec/types.js';
import { parseJsonLimited } from '../spec/validate.js';
import { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF, delay, parseRetryAfter } from './backoff.js';
import { type Challenge, challengeScopes, parseChallenges } from './challenge.js';
import type { Credential, CredentialSource } from './credentials.js';
import {
  discardBody,
  errorFromBytes,
  isPlainHttpAnswer,
  readSome,
  responseError,
  transportError,
} from './http-errors.js';
import { directGet } from './http1.js';
import { coversScopes, mergeScopes, type ScopeSet, scopeSet } from './scopes.js';
import { type UndiciRequest, undici } from './undici.js';

export interface RegistryClientOptions {
  /** Where credentials come from (see credentials.ts). Default: anonymous. */
  readonly credentials?: CredentialSource;
  /** Verify TLS certificates (default true). false also allows falling back to plain HTTP. */
  readonly tlsVerify?: boolean;
  /** Hosts spoken to over plain HTTP (`host:port`, or `host` for any port). Loopback hosts always are. */
  readonly insecureHosts?: readonly string[];
  /** Hosts that must use HTTPS even on loopback (for tests of TLS itself). */
  readonly httpsHosts?: readonly string[];
  /** Extra CA certificates (PEM) to trust besides the system's. */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  readonly userAgent?: string;
  /** Retries after the first attempt for network errors, 5xx and 429 (default 4). */
  readonly retries?: number;
  /**
   * Blobs up to this size are uploaded in one streamed PUT; larger ones in PATCH chunks of
   * it, each held in memory so that it can be sent again. Default: no limit — every blob is
   * streamed in one PUT, as skopeo and crane do (faster, and no chunk in memory); a PUT that
   * fails on the network is not replayed here, the copy engine fetches the blob again.
   */
  readonly chunkSize?: number;
  /** Re-requests (with Range) of a blob download whose connection dropped (default 5). */
  readonly resumeAttempts?: number;
  readonly backoff?: BackoffOptions;
  /** Pooled connections per origin (default 8). */
  readonly connections?: number;
  /**
   * How long to wait for response headers, and between two pieces of a body, before the
   * request counts as a network failure (retried, or resumed for blobs). Default 120 000 ms.
   */
  readonly idleTimeoutMs?: number;
}

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

/**
 * A request body: bytes (sent again on retry), a factory of streams (called once per
 * attempt), or a stream (sent once; a failure after it was used is not retried).
 */
export type RequestBody = Uint8Array | Readable | (() => Readable);

export interface RegistryRequest {
  /** Canonical registry host (`host[:port]`; Docker Hub is `registry-1.docker.io`). */
  readonly registry: string;
  readonly method: HttpMethod;
  /** A path (`/v2/...`, may carry a query) or an absolute URL the registry gave (Location). */
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: RequestBody;
  /** Token scopes the request needs (`repository:app:pull`). */
  readonly scopes: readonly string[];
  /**
   * A GET whose body is bulk data (a blob): sent on a connection of its own whose body can
   * be taken directly, without a Buffer per chunk (http1.ts).
   */
  readonly bulk?: boolean;
  /** What is being done, for messages: `pull manifest 127.0.0.1:5000/app:1`. */
  readonly what: string;
  /** Statuses handed back to the caller; anything else throws. Default: 200-299. */
  readonly ok?: readonly number[];
  /** Retry on network errors / 5xx / 429 (default true). */
  readonly retry?: boolean;
  readonly signal?: AbortSignal | undefined;
}

export interface RegistryResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body; the caller consumes or destroys it. */
  readonly body: Readable;
  /** The URL that answered (after redirects). */
  readonly url: URL;
}

/** An HTTP answer as either transport gives it. */
interface Answer {
  readonly statusCode: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: Readable;
}

/** First value of a response header. */
export function header(res: { headers: RegistryResponse['headers'] }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

type HostAuth =
  | { readonly kind: 'bearer'; readonly realm: string; readonly service: string | undefined }
  | { readonly kind: 'basic' };

interface HostState {
  scheme: 'http' | 'https';
  /** An HTTPS answer was seen: never fall back to HTTP for this host. */
  httpsConfirmed: boolean;
  auth: HostAuth | undefined;
}

interface CachedToken {
  readonly token: string;
  readonly scopes: ScopeSet;
  readonly expiresAt: number;
}

/** Bytes of a response body undici may read ahead of its consumer. */
const BODY_BUFFER = 4 * 1024 * 1024;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const MAX_TOKENS_PER_HOST = 64;
/** Refresh a token this long before the server says it expires. */
const TOKEN_MARGIN_MS = 10_000;

/** `host[:port]` is a loopback name or address. */
export function isLoopbackHost(registry: string): boolean {
  let host = registry;
  if (host.startsWith('[')) host = host.slice(1, host.indexOf(']'));
  else if (host.includes(':')) host = host.slice(0, host.lastIndexOf(':'));
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function isReplayable(body: RequestBody | undefined): boolean {
  return body === undefined || body instanceof Uint8Array || typeof body === 'function';
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

// a header value must not smuggle a CR/LF (or other control characters) into the request
function safeHeaderValue(s: string): boolean {
  return !/[\x00-\x1f\x7f]/.test(s);
}

export class RegistryClient {
  readonly #agent: Agent;
  readonly #send: UndiciRequest;
  readonly #credentials: CredentialSource | undefined;
  readonly #tlsVerify: boolean;
  readonly #insecure: ReadonlySet<string>;
  readonly #https: ReadonlySet<string>;
  readonly #userAgent: string;
  readonly #retries: number;
  readonly #ca: (string | Buffer)[] | undefined;
  readonly #idleTimeoutMs: number;
  readonly #backoff: Required<BackoffOptions>;
  readonly chunkSize: number;
  readonly resumeAttempts: number;
  readonly #hosts = new Map<string, HostState>();
  readonly #tokens = new Map<string, CachedToken[]>();
  readonly #inflightTokens = new Map<string, Promise<CachedToken>>();
  readonly #creds = new Map<string, Promise<Credential | undefined>>();

  constructor(opts: RegistryClientOptions = {}) {
    this.#credentials = opts.credentials;
    this.#tlsVerify = opts.tlsVerify ?? true;
    this.#insecure = new Set(opts.insecureHosts ?? []);
    this.#https = new Set(opts.httpsHosts ?? []);
    this.#userAgent = opts.userAgent ?? 'stratum/0.1';
    this.#retries = Math.max(0, opts.retries ?? 4);
    this.#backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.chunkSize = Math.max(1024, opts.chunkSize ?? Number.POSITIVE_INFINITY);
    this.resumeAttempts = Math.max(0, opts.resumeAttempts ?? 5);
    const ca = opts.ca === undefined ? undefined : Array.isArray(opts.ca) ? [...opts.ca] : [opts.ca];
    // the system's CA bundle plus the caller's: `ca` alone would replace the system's
    this.#ca = ca ? [...rootCertificates, ...(ca as (string | Buffer)[])] : undefined;
    this.#idleTimeoutMs = opts.idleTimeoutMs ?? 120_000;
    const { Agent: AgentClass, request } = undici();
    this.#send = request;
    this.#agent = new AgentClass({
      keepAliveTimeout: 10_000,
      connections: opts.connections ?? 8,
      headersTimeout: this.#idleTimeoutMs,
      bodyTimeout: this.#idleTimeoutMs,
      connect: {
        rejectUnauthorized: this.#tlsVerify,
        ...(this.#ca ? { ca: this.#ca } : {}),
      },
    });
  }

  /** Close every pooled connection. */
  async close(): Promise<void> {
    await this.#agent.close();
  }

  /** The base URL (`scheme://host`) currently used for a registry. */
  baseUrl(registry: string): string {
    return `${this.#host(registry).scheme}://${registry}`;
  }

  /** Check that the registry answers /v2/ (authenticating if it asks). */
  async ping(registry: string, opts: { signal?: AbortSignal; what?: string } = {}): Promise<void> {
    const res = await this.request({
      registry,
      method: 'GET',
      url: '/v2/',
      scopes: [],
      what: opts.what ?? `ping ${registry}`,
      signal: opts.signal,
    });
    discardBody(res.body);
  }

  /** Run one registry request (see the file comment for the steps). */
  async request(req: RegistryRequest): Promise<RegistryResponse> {
    const signal = req.signal;
    if (signal?.aborted) throw abortError(signal);
    const state = this.#host(req.registry);
    const replayable = isReplayable(req.body);
    const ok = req.ok;
    const isOk = (s: number) => (ok ? ok.includes(s) : s >= 200 && s < 300);
    let bodyUsed = false;
    let authRetried = false;
    let attempt = 0;
    let lastError: StratumError | undefined;

    for (;;) {
      if (!replayable && bodyUsed) throw lastError ?? new StratumError('ERR_NETWORK', `${req.what}: failed`);
      const base = `${state.scheme}://${req.registry}`;
      const url = new URL(req.url, `${base}/`);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new StratumError(
          'ERR_UNSAFE_REDIRECT',
          `${req.what}: refusing to follow a ${url.protocol} URL given by the registry`,
        );
      }
      // an upload Location that names the same host but another scheme keeps our scheme choice
      let auth: { header: string | undefined; token: CachedToken | undefined };
      let exchanged: { res: Answer; url: URL; sameOrigin: boolean };
      try {
        auth = await this.#authorization(req.registry, req.scopes, req.what, signal);
        bodyUsed = req.body !== undefined;
        exchanged = await this.#exchange(req, url, new URL(base).origin, auth.header);
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        if (e instanceof StratumError && !(e instanceof RegistryError && e.retryable)) throw e;
        const err = transportError(req.what, url.href, e);
        // tlsVerify:false lets an HTTPS failure fall back to plain HTTP, once per host
        if (
          !this.#tlsVerify &&
          state.scheme === 'https' &&
          !state.httpsConfirmed &&
          (isPlainHttpAnswer(e) || err.code === 'ERR_TLS' || err.code === 'ERR_NETWORK') &&
          replayable
        ) {
          state.scheme = 'http';
          continue;
        }
        if (err.code === 'ERR_NETWORK' && req.retry !== false && replayable && attempt < this.#retries) {
          lastError = err;
          await delay(backoffDelay(attempt, this.#backoff), signal);
          attempt++;
          continue;
        }
        throw err;
      }
      const { res } = exchanged;
      if (state.scheme === 'https' && exchanged.sameOrigin) state.httpsConfirmed = true;
      const status = res.statusCode;

      if (status === 401 && exchanged.sameOrigin && !isOk(401)) {
        const bytes = await readSome(res.body, Limits.errorBody);
        const err = errorFromBytes(req.what, status, exchanged.url.href, bytes);
        if (!authRetried && replayable) {
          authRetried = true;
          const challenges = parseChallenges(res.headers['www-authenticate']);
          if (await this.#answerChallenge(req, challenges, auth.token)) continue;
        }
        throw err;
      }

      if ((status >= 500 || status === 429) && !isOk(status)) {
        const err = await responseError(req.what, status, exchanged.url.href, res.body);
        if (req.retry !== false && replayable && attempt < this.#retries) {
          const after = parseRetryAfter(header(res, 'retry-after'));
          const wait =
            after === undefined
              ? backoffDelay(attempt, this.#backoff)
              : Math.min(after, this.#backoff.maxRetryAfterMs);
          lastError = err;
          await delay(wait, signal);
          attempt++;
          continue;
        }
        throw err;
      }

      if (isOk(status)) {
        return { status, headers: res.headers, body: res.body, url: exchanged.url };
      }
      throw await responseError(req.what, status, exchanged.url.href, res.body);
    }
  }

  /** Credentials for a registry, asked once per client (helpers are processes). */
  credentialsFor(registry: string, signal?: AbortSignal): Promise<Credential | undefined> {
    if (!this.#credentials) return Promise.resolve(undefined);
    let p = this.#creds.get(registry);
    if (!p) {
      p = this.#credentials.get(registry, signal ? { signal } : {});
      this.#creds.set(registry, p);
      p.catch(() => this.#creds.delete(registry));
    }
    return p;
  }

  #host(registry: string): HostState {
    let s = this.#hosts.get(registry);
    if (!s) {
      const bare = registry.startsWith('[')
        ? registry.slice(0, registry.indexOf(']') + 1)
        : registry.split(':')[0];
      const plain =
        !this.#https.has(registry) &&
        (isLoopbackHost(registry) || this.#insecure.has(registry) || this.#insecure.has(bare ?? registry));
      s = { scheme: plain ? 'http' : 'https', httpsConfirmed: false, auth: undefined };
      this.#hosts.set(registry, s);
    }
    return s;
  }

  // ---- sending ----

  async #exchange(
    req: RegistryRequest,
    start: URL,
    registryOrigin: string,
    authorization: string | undefined,
  ): Promise<{ res: Answer; url: URL; sameOrigin: boolean }> {
    let url = start;
    let method: HttpMethod = req.method;
    let body = req.body;
    for (let hop = 0; ; hop++) {
      const sameOrigin = url.origin === registryOrigin;
      const headers: Record<string, string> = { 'user-agent': this.#userAgent, ...req.headers };
      if (body === undefined) delete headers['content-length'];
      if (sameOrigin && authorization !== undefined) headers.authorization = authorization;
      const payload = body === undefined ? undefined : typeof body === 'function' ? body() : body;
      const res: Answer =
        req.bulk && method === 'GET'
          ? await directGet({
              url,
              headers,
              rejectUnauthorized: this.#tlsVerify,
              ca: this.#ca,
              idleTimeoutMs: this.#idleTimeoutMs,
              signal: req.signal,
            })
          : await this.#send(this.#agent, {
              origin: url.origin,
              path: `${url.pathname}${url.search}`,
              method,
              headers,
              body:
                payload === undefined ? null : payload instanceof Uint8Array ? Buffer.from(payload) : payload,
              signal: req.signal ?? null,
              // undici stops reading the socket whenever this much of the body waits unread: at
              // its 64 KiB default a blob download pauses and resumes the socket every few
              // chunks (a loopback blob came at a third of the speed)
              highWaterMark: BODY_BUFFER,
              // undici closes a connection after every HEAD (for servers that wrongly send a body);
              // registries answer HEAD per the HTTP spec, and a push asks one per blob: keep it
              ...(method === 'HEAD' ? { reset: false } : {}),
            });
      if (!REDIRECTS.has(res.statusCode)) return { res, url, sameOrigin };
      const location = firstHeader(res.headers.location);
      if (location === undefined) return { res, url, sameOrigin };
      discardBody(res.body);
      if (hop >= MAX_REDIRECTS) {
        throw new RegistryError('ERR_REGISTRY', `${req.what}: more than ${MAX_REDIRECTS} redirects`, {
          status: res.statusCode,
          url: url.href,
        });
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch (e) {
        throw new RegistryError('ERR_REGISTRY', `${req.what}: the registry redirected to an invalid URL`, {
          status: res.statusCode,
          url: url.href,
          cause: e,
        });
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new StratumError(
          'ERR_UNSAFE_REDIRECT',
          `${req.what}: refusing a redirect from ${url.host} to a ${next.protocol} URL`,
        );
      }
      if (
        res.statusCode === 303 ||
        ((res.statusCode === 301 || res.statusCode === 302) && method === 'POST')
      ) {
        method = 'GET';
        body = undefined;
      } else if (body !== undefined && !isReplayable(body)) {
        throw new RegistryError(
          'ERR_REGISTRY',
          `${req.what}: the registry redirected an upload whose body cannot be sent twice`,
          { status: res.statusCode, url: url.href },
        );
      }
      url = next;
    }
  }

  // ---- authentication ----

  /** The Authorization header to send now, if any (fetching a token when the realm is known). */
  async #authorization(
    registry: string,
    scopes: readonly string[],
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<{ header: string | undefined; token: CachedToken | undefined }> {
    const auth = this.#host(registry).auth;
    if (auth === undefined) return { header: undefined, token: undefined };
    if (auth.kind === 'basic') {
      const cred = await this.credentialsFor(registry, signal);
      if (cred?.username === undefined || cred.password === undefined)
        return { header: undefined, token: undefined };
      return { header: basicHeader(cred.username, cred.password), token: undefined };
    }
    const token = await this.#token(registry, auth, scopes, what, signal);
    return { header: `Bearer ${token.token}`, token };
  }

  /** Learn from a 401's challenge; true if sending again may now succeed. */
  async #answerChallenge(
    req: RegistryRequest,
    challenges: readonly Challenge[],
    usedToken: CachedToken | undefined,
  ): Promise<boolean> {
    const state = this.#host(req.registry);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      const realm = bearer.params.realm as string;
      state.auth = { kind: 'bearer', realm, service: bearer.params.service };
      if (usedToken) this.#dropToken(req.registry, usedToken);
      const wanted = mergeScopes(req.scopes, challengeScopes(bearer));
      // the token that failed is gone from the cache: a covering one there is newer (another
      // request's), else a fresh one is fetched (shared with concurrent requests)
      await this.#token(req.registry, state.auth, wanted, req.what, req.signal);
      return true;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (state.auth?.kind === 'basic') return false; // we already sent Basic: it was refused
      const cred = await this.credentialsFor(req.registry, req.signal);
      if (cred?.username === undefined || cred.password === undefined) return false;
      state.auth = { kind: 'basic' };
      return true;
    }
    return false;
  }

  #cachedToken(registry: string, want: ScopeSet): CachedToken | undefined {
    const list = this.#tokens.get(registry);
    if (!list) return undefined;
    const now = Date.now();
    for (let i = list.length - 1; i >= 0; i--) {
      const t = list[i] as CachedToken;
      if (t.expiresAt <= now) {
        list.splice(i, 1);
        continue;
      }
      if (coversScopes(t.scopes, want)) return t;
    }
    return undefined;
  }

  #dropToken(registry: string, token: CachedToken): void {
    const list = this.#tokens.get(registry);
    if (!list) return;
    const i = list.indexOf(token);
    if (i >= 0) list.splice(i, 1);
  }

  async #token(
    registry: string,
    auth: Extract<HostAuth, { kind: 'bearer' }>,
    scopes: readonly string[],
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<CachedToken> {
    const canonical = mergeScopes(scopes);
    const cached = this.#cachedToken(registry, scopeSet(canonical));
    if (cached) return cached;
    const key = `${registry}\n${auth.realm}\n${auth.service ?? ''}\n${canonical.join(' ')}`;
    let p = this.#inflightTokens.get(key);
    if (!p) {
      p = this.#fetchToken(registry, auth, canonical, what, signal).then((t) => {
        let list = this.#tokens.get(registry);
        if (!list) {
          list = [];
          this.#tokens.set(registry, list);
        }
        list.push(t);
        if (list.length > MAX_TOKENS_PER_HOST) list.shift();
        return t;
      });
      this.#inflightTokens.set(key, p);
      const cleanup = () => this.#inflightTokens.delete(key);
      p.then(cleanup, cleanup);
    }
    return p;
  }

  /** Whether credentials may be sent to the token realm: HTTPS, or a host we speak HTTP to anyway. */
  #mayCarryCredentials(realm: URL, registry: string): boolean {
    if (realm.protocol === 'https:') return true;
    return realm.host === registry || isLoopbackHost(realm.host) || this.#insecure.has(realm.host);
  }

  async #fetchToken(
    registry: string,
    auth: Extract<HostAuth, { kind: 'bearer' }>,
    scopes: readonly string[],
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(auth.realm);
    } catch (e) {
      throw new RegistryError('ERR_REGISTRY', `${what}: the registry named an invalid token realm`, {
        status: 401,
        url: auth.realm.slice(0, 200),
        cause: e,
      });
    }
    if (realm.protocol !== 'http:' && realm.protocol !== 'https:') {
      throw new StratumError(
        'ERR_UNSAFE_REDIRECT',
        `${what}: the registry's token realm uses ${realm.protocol}; only http(s) is allowed`,
      );
    }
    const cred = await this.credentialsFor(registry, signal);
    const scopeSetOf = scopeSet(scopes);
    if (cred?.registryToken !== undefined) {
      return { token: cred.registryToken, scopes: scopeSetOf, expiresAt: Date.now() + 5 * 60_000 };
    }
    const withCreds = cred !== undefined && this.#mayCarryCredentials(realm, registry);
    const tokenWhat = `${what}: get a token from ${realm.host}`;
    let method: HttpMethod = 'GET';
    const headers: Record<string, string> = { accept: 'application/json' };
    let body: Uint8Array | undefined;
    const url = new URL(realm.href);
    if (withCreds && cred?.identityToken !== undefined) {
      // OAuth2 refresh-token grant, as docker does with an identity token
      method = 'POST';
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: cred.identityToken,
        client_id: 'stratum',
        ...(auth.service !== undefined ? { service: auth.service } : {}),
        ...(scopes.length > 0 ? { scope: scopes.join(' ') } : {}),
      });
      body = Buffer.from(form.toString());
      headers['content-type'] = 'application/x-www-form-urlencoded';
      headers['content-length'] = String(body.byteLength);
    } else {
      if (auth.service !== undefined) url.searchParams.set('service', auth.service);
      for (const s of scopes) url.searchParams.append('scope', s);
      if (withCreds && cred?.username !== undefined && cred.password !== undefined) {
        url.searchParams.set('account', cred.username);
        if (!safeHeaderValue(cred.username) || !safeHeaderValue(cred.password)) {
          throw new StratumError(
            'ERR_CREDENTIALS',
            `${what}: the stored username or password has control characters`,
          );
        }
        headers.authorization = basicHeader(cred.username, cred.password);
      }
    }
    // the realm is another service: no registry auth, our own retries, bounded body
    const res = await this.#realmRequest(url, method, headers, body, tokenWhat, signal);
    const bytes = await readAll(res.body, Limits.token, `token answer from ${realm.host}`);
    const doc = parseJsonLimited(bytes, Limits.token, `token answer from ${realm.host}`) as Record<
      string,
      unknown
    >;
    const token =
      typeof doc?.token === 'string' && doc.token !== ''
        ? doc.token
        : typeof doc?.access_token === 'string'
          ? doc.access_token
          : undefined;
    if (token === undefined || token === '' || !safeHeaderValue(token) || /\s/.test(token)) {
      throw new RegistryError('ERR_REGISTRY', `${tokenWhat}: the answer has no usable token`, {
        status: res.statusCode,
        url: realm.origin + realm.pathname,
      });
    }
    const expiresIn =
      typeof doc.expires_in === 'number' && Number.isFinite(doc.expires_in) && doc.expires_in > 0
        ? Math.max(60, doc.expires_in)
        : 60;
    const ttl = Math.max(1000, expiresIn * 1000 - TOKEN_MARGIN_MS);
    return { token, scopes: scopeSetOf, expiresAt: Date.now() + ttl };
  }

  async #realmRequest(
    url: URL,
    method: HttpMethod,
    headers: Record<string, string>,
    body: Uint8Array | undefined,
    what: string,
    signal: AbortSignal | undefined,
  ): Promise<Dispatcher.ResponseData> {
    const safeUrl = url.origin + url.pathname;
    for (let attempt = 0; ; attempt++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await this.#send(this.#agent, {
          origin: url.origin,
          path: `${url.pathname}${url.search}`,
          method,
          headers: { 'user-agent': this.#userAgent, ...headers },
          body: body === undefined ? null : Buffer.from(body),
          signal: signal ?? null,
        });
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        const err = transportError(what, safeUrl, e);
        if (err.code === 'ERR_NETWORK' && attempt < this.#retries) {
          await delay(backoffDelay(attempt, this.#backoff), signal);
          continue;
        }
        throw err;
      }
      const status = res.statusCode;
      if (status === 200) return res;
      const err = await responseError(what, status, safeUrl, res.body);
      if ((status >= 500 || status === 429) && attempt < this.#retries) {
        const after = parseRetryAfter(header(res, 'retry-after'));
        await delay(
          after === undefined
            ? backoffDelay(attempt, this.#backoff)
            : Math.min(after, this.#backoff.maxRetryAfterMs),
          signal,
        );
        continue;
      }
      if (status === 401 || status === 403) {
        throw new RegistryError(
          'ERR_UNAUTHORIZED',
          `${what}: the token server refused: ${err.message.slice(what.length + 2)}`,
          {
            status,
            url: safeUrl,
            errors: err.errors,
          },
        );
      }
      throw err;
    }
  }
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
