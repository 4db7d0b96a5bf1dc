// Registry credentials the way docker keeps them: `$DOCKER_CONFIG/config.json` (default
// ~/.docker/config.json) with `auths` (base64 `auth`, or username/password, identitytoken,
// registrytoken), `credsStore` and per-host `credHelpers` (external `docker-credential-NAME`
// programs speaking get/store/erase on stdin/stdout). Docker Hub's entries live under the key
// `https://index.docker.io/v1/`. Also: explicit credentials per host, and login/logout that
// check the credentials against the registry before writing anything, and write the config
// file atomically with mode 0600.

import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { abortError, StratumError } from '../errors/errors.js';
import { writeFileAtomic } from '../internal/fs.js';
import { Limits } from '../spec/types.js';
import { RegistryClient, type RegistryClientOptions } from './client.js';
import { checkRegistryHost } from './names.js';

export interface Credential {
  readonly username?: string;
  readonly password?: string;
  /** An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token realm. */
  readonly identityToken?: string;
  /** A bearer token sent as is (docker's `registrytoken`). */
  readonly registryToken?: string;
}

/** Where a RegistryClient gets credentials for a registry host (`host[:port]`). */
export interface CredentialSource {
  get(registry: string, opts?: { readonly signal?: AbortSignal }): Promise<Credential | undefined>;
}

/** Docker Hub's key in config.json and for credential helpers. */
export const DOCKER_HUB_CONFIG_KEY = 'https://index.docker.io/v1/';
const HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/** Whether a host is Docker Hub under any of its names. */
export function isDockerHub(registry: string): boolean {
  return HUB_HOSTS.has(registry);
}

/** `https://host:5000/v1/` → `host:5000` (what docker's ConvertToHostname does). */
export function hostnameOfKey(key: string): string {
  let s = key;
  if (s.startsWith('http://')) s = s.slice(7);
  else if (s.startsWith('https://')) s = s.slice(8);
  const slash = s.indexOf('/');
  return slash === -1 ? s : s.slice(0, slash);
}

/** The key docker uses for a registry in `auths` and towards helpers. */
export function configKeyFor(registry: string): string {
  return isDockerHub(registry) ? DOCKER_HUB_CONFIG_KEY : registry;
}

/** Fixed credentials per host; for programs that have them at hand. */
export function staticCredentials(
  map: Readonly<Record<string, { readonly username: string; readonly password: string }>>,
): CredentialSource {
  return {
    async get(registry) {
      const hit = map[registry] ?? (isDockerHub(registry) ? findHub(map) : undefined);
      return hit ? { username: hit.username, password: hit.password } : undefined;
    },
  };
}

function findHub<T>(map: Readonly<Record<string, T>>): T | undefined {
  for (const [k, v] of Object.entries(map))
    if (isDockerHub(hostnameOfKey(k)) || k === DOCKER_HUB_CONFIG_KEY) return v;
  return undefined;
}

export interface DockerConfigOptions {
  /** The directory holding config.json. Default: $DOCKER_CONFIG, else ~/.docker. */
  readonly configDir?: string;
  /** Environment for DOCKER_CONFIG, HOME and the helpers' PATH. Default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Credentials that win over the config file, per host. */
  readonly explicit?: Readonly<Record<string, { readonly username: string; readonly password: string }>>;
  /** How long a credential helper may run (ms). Default 60 s. */
  readonly helperTimeoutMs?: number;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  registrytoken?: string;
  [k: string]: unknown;
}

interface DockerConfigFile {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [k: string]: unknown;
}

/** The directory of config.json for an environment. */
export function dockerConfigDir(env: Readonly<Record<string, string | undefined>> = process.env): string {
  const d = env.DOCKER_CONFIG;
  if (d !== undefined && d !== '') return d;
  return join(env.HOME ?? homedir(), '.docker');
}

const CONFIG_LIMIT = 16 * 1024 * 1024;

async function readConfig(path: string): Promise<DockerConfigFile> {
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new StratumError('ERR_CREDENTIALS', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (text.byteLength > CONFIG_LIMIT) {
    throw new StratumError('ERR_CREDENTIALS', `${path} is larger than ${CONFIG_LIMIT} bytes`);
  }
  if (text.toString('utf8').trim() === '') return {};
  let doc: unknown;
  try {
    doc = JSON.parse(text.toString('utf8'));
  } catch (e) {
    throw new StratumError('ERR_CREDENTIALS', `${path} is not valid JSON: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new StratumError('ERR_CREDENTIALS', `${path} is not a JSON object`);
  }
  const cfg = doc as DockerConfigFile;
  const check = (ok: boolean, field: string) => {
    if (!ok) throw new StratumError('ERR_CREDENTIALS', `${path}: "${field}" has the wrong type`);
  };
  check(cfg.auths === undefined || (typeof cfg.auths === 'object' && cfg.auths !== null), 'auths');
  check(cfg.credsStore === undefined || typeof cfg.credsStore === 'string', 'credsStore');
  check(
    cfg.credHelpers === undefined || (typeof cfg.credHelpers === 'object' && cfg.credHelpers !== null),
    'credHelpers',
  );
  return cfg;
}

function decodeEntry(key: string, e: AuthEntry, path: string): Credential | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  let username = typeof e.username === 'string' ? e.username : undefined;
  let password = typeof e.password === 'string' ? e.password : undefined;
  if (typeof e.auth === 'string' && e.auth !== '') {
    const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0) {
      throw new StratumError(
        'ERR_CREDENTIALS',
        `${path}: the "auth" entry for ${key} is not base64 of "username:password"`,
      );
    }
    username = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  }
  const out: { -readonly [K in keyof Credential]: Credential[K] } = {};
  if (username !== undefined && username !== '') out.username = username;
  if (password !== undefined) out.password = password;
  if (typeof e.identitytoken === 'string' && e.identitytoken !== '') out.identityToken = e.identitytoken;
  if (typeof e.registrytoken === 'string' && e.registrytoken !== '') out.registryToken = e.registrytoken;
  return Object.keys(out).length === 0 ? undefined : out;
}

/** Find the `auths` entry for a host, allowing the scheme/path forms docker accepts. */
function findAuthKey(auths: Record<string, AuthEntry>, registry: string): string | undefined {
  const key = configKeyFor(registry);
  if (Object.hasOwn(auths, key)) return key;
  const want = isDockerHub(registry) ? undefined : registry;
  for (const k of Object.keys(auths)) {
    const h = hostnameOfKey(k);
    if (want === undefined ? isDockerHub(h) : h === want) return k;
  }
  return undefined;
}

const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Run `docker-credential-<name> <action>` with `input` on stdin; its stdout. */
export async function runCredentialHelper(
  name: string,
  action: 'get' | 'store' | 'erase',
  input: string,
  opts: { env?: Readonly<Record<string, string | undefined>>; timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  if (!HELPER_NAME.test(name)) {
    throw new StratumError('ERR_CREDENTIALS', `credential helper name ${JSON.stringify(name)} is not valid`);
  }
  const program = `docker-credential-${name}`;
  if (opts.signal?.aborted) throw abortError(opts.signal);
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], {
      env: { ...(opts.env ?? process.env) } as NodeJS.ProcessEnv,
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    // our own timer: spawn's `timeout` is never cleared when the program cannot start
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    timer.unref();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    child.stdout.on('data', (c: Buffer) => {
      outLen += c.byteLength;
      if (outLen <= Limits.token) out.push(c);
      else child.kill('SIGKILL');
    });
    child.stderr.on('data', (c: Buffer) => {
      errLen += c.byteLength;
      if (errLen <= Limits.errorBody) err.push(c);
    });
    child.stdin.on('error', () => {}); // a helper that exits without reading stdin
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (opts.signal?.aborted) return reject(abortError(opts.signal));
      reject(
        new StratumError(
          'ERR_CREDENTIALS',
          e.code === 'ENOENT'
            ? `credential helper ${program} is not installed (not found on PATH)`
            : `credential helper ${program} could not run: ${e.message}`,
          { cause: e },
        ),
      );
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (outLen > Limits.token) {
        reject(
          new StratumError(
            'ERR_CREDENTIALS',
            `credential helper ${program} wrote more than ${Limits.token} bytes`,
          ),
        );
        return;
      }
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (sig !== null && code === null) {
        reject(
          new StratumError(
            'ERR_CREDENTIALS',
            `credential helper ${program} was killed (${sig}); ${stderr.trim()}`,
          ),
        );
        return;
      }
      resolve({ ok: code === 0, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

const NOT_FOUND_MESSAGE = /credentials not found/i;

function helperFailure(program: string, action: string, r: { stdout: string; stderr: string }): StratumError {
  const said = [r.stderr.trim(), r.stdout.trim()]
    .filter((s) => s !== '')
    .join(' / ')
    .slice(0, 500);
  return new StratumError(
    'ERR_CREDENTIALS',
    `credential helper docker-credential-${program} ${action} failed${said ? `: ${said}` : ''}`,
  );
}

/** Credentials from docker's config.json (auths, credsStore, credHelpers), plus explicit ones. */
export class DockerConfigCredentials implements CredentialSource {
  readonly #dir: string;
  readonly #env: Readonly<Record<string, string | undefined>>;
  readonly #explicit: DockerConfigOptions['explicit'];
  readonly #timeout: number;

  constructor(opts: DockerConfigOptions = {}) {
    this.#env = opts.env ?? process.env;
    this.#dir = opts.configDir ?? dockerConfigDir(this.#env);
    this.#explicit = opts.explicit;
    this.#timeout = opts.helperTimeoutMs ?? 60_000;
  }

  get configPath(): string {
    return join(this.#dir, 'config.json');
  }

  async get(registry: string, opts: { readonly signal?: AbortSignal } = {}): Promise<Credential | undefined> {
    if (this.#explicit) {
      const hit = this.#explicit[registry] ?? (isDockerHub(registry) ? findHub(this.#explicit) : undefined);
      if (hit) return { username: hit.username, password: hit.password };
    }
    const cfg = await readConfig(this.configPath);
    const helper = helperFor(cfg, registry);
    if (helper !== undefined) return this.#fromHelper(helper, registry, opts.signal);
    const auths = cfg.auths ?? {};
    const key = findAuthKey(auths, registry);
    if (key === undefined) return undefined;
    return decodeEntry(key, auths[key] as AuthEntry, this.configPath);
  }

  async #fromHelper(
    helper: string,
    registry: string,
    signal: AbortSignal | undefined,
  ): Promise<Credential | undefined> {
    const serverUrl = configKeyFor(registry);
    const r = await runCredentialHelper(helper, 'get', serverUrl, {
      env: this.#env,
      timeoutMs: this.#timeout,
      ...(signal ? { signal } : {}),
    });
    if (!r.ok) {
      if (NOT_FOUND_MESSAGE.test(r.stdout) || NOT_FOUND_MESSAGE.test(r.stderr)) return undefined;
      throw helperFailure(helper, 'get', r);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(r.stdout);
    } catch {
      throw new StratumError(
        'ERR_CREDENTIALS',
        `credential helper docker-credential-${helper} answered something that is not JSON`,
      );
    }
    const { Username, Secret } = (doc ?? {}) as { Username?: unknown; Secret?: unknown };
    if (typeof Secret !== 'string' || (Username !== undefined && typeof Username !== 'string')) {
      throw new StratumError(
        'ERR_CREDENTIALS',
        `credential helper docker-credential-${helper} answered without a Username/Secret`,
      );
    }
    if (Secret === '') return undefined;
    // docker's convention: Username "<token>" means Secret is an identity token
    if (Username === '<token>') return { identityToken: Secret };
    return { username: Username ?? '', password: Secret };
  }
}

function helperFor(cfg: DockerConfigFile, registry: string): string | undefined {
  const helpers = cfg.credHelpers ?? {};
  const names = isDockerHub(registry) ? ['index.docker.io', 'docker.io', 'registry-1.docker.io'] : [registry];
  for (const n of names) {
    const h = helpers[n];
    if (typeof h === 'string' && h !== '') return h;
  }
  return typeof cfg.credsStore === 'string' && cfg.credsStore !== '' ? cfg.credsStore : undefined;
}

export interface LoginOptions {
  readonly configDir?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly signal?: AbortSignal;
  /** Client options for the check against the registry (tlsVerify, insecureHosts, ...). */
  readonly client?: Omit<RegistryClientOptions, 'credentials'>;
  /** Skip the check against the registry (store only). */
  readonly skipCheck?: boolean;
}

/** `https://host/v1/` or `host` → `host`, validated (docker accepts either form). */
function loginHost(arg: string, verb: string): string {
  const host = arg.includes('://') ? hostnameOfKey(arg) : arg.replace(/\/+$/, '');
  try {
    return checkRegistryHost(host);
  } catch (e) {
    throw new StratumError('ERR_INVALID_ARGUMENT', `${verb}: ${(e as Error).message}`, { cause: e });
  }
}

/** The host API calls go to (Docker Hub's names → registry-1.docker.io). */
function apiHost(registry: string): string {
  return isDockerHub(registry) ? 'registry-1.docker.io' : registry;
}

/**
 * Check `username`/`password` against the registry's /v2/ (ERR_UNAUTHORIZED if refused,
 * and nothing is written), then store them: in the credential helper if one is configured
 * for the host, else base64 in `auths` of config.json (atomic write, mode 0600).
 */
export async function login(
  registryArg: string,
  username: string,
  password: string,
  opts: LoginOptions = {},
): Promise<void> {
  const registry = loginHost(registryArg, 'login');
  if (username === '' || username.includes(':')) {
    throw new StratumError(
      'ERR_INVALID_ARGUMENT',
      `login ${registry}: ${username === '' ? 'the username is empty' : 'a username cannot contain ":"'}`,
    );
  }
  if (!opts.skipCheck) {
    const host = apiHost(registry);
    const client = new RegistryClient({
      ...opts.client,
      credentials: staticCredentials({ [host]: { username, password } }),
    });
    try {
      await client.ping(host, { what: `login ${registry}`, ...(opts.signal ? { signal: opts.signal } : {}) });
    } finally {
      await client.close();
    }
  }
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? dockerConfigDir(env);
  const path = join(dir, 'config.json');
  const cfg = await readConfig(path);
  const key = configKeyFor(registry);
  cfg.auths ??= {};
  const helper = helperFor(cfg, registry);
  if (helper !== undefined) {
    const r = await runCredentialHelper(
      helper,
      'store',
      JSON.stringify({ ServerURL: key, Username: username, Secret: password }),
      { env, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
    if (!r.ok) throw helperFailure(helper, 'store', r);
    // docker leaves an empty entry so the host shows as logged in
    cfg.auths[key] = {};
  } else {
    cfg.auths[key] = { auth: Buffer.from(`${username}:${password}`, 'utf8').toString('base64') };
  }
  await writeFileAtomic(path, `${JSON.stringify(cfg, null, '\t')}\n`, { mode: 0o600 });
}

/** Remove stored credentials for a registry (ERR_NOT_FOUND if there were none). */
export async function logout(
  registryArg: string,
  opts: { configDir?: string; env?: Readonly<Record<string, string | undefined>>; signal?: AbortSignal } = {},
): Promise<void> {
  const registry = loginHost(registryArg, 'logout');
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? dockerConfigDir(env);
  const path = join(dir, 'config.json');
  const cfg = await readConfig(path);
  const auths = cfg.auths ?? {};
  const keys = Object.keys(auths).filter((k) =>
    isDockerHub(registry) ? isDockerHub(hostnameOfKey(k)) : hostnameOfKey(k) === registry,
  );
  let removed = keys.length > 0;
  const helper = helperFor(cfg, registry);
  if (helper !== undefined) {
    const r = await runCredentialHelper(helper, 'erase', configKeyFor(registry), {
      env,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (r.ok) removed = true;
    else if (!(NOT_FOUND_MESSAGE.test(r.stdout) || NOT_FOUND_MESSAGE.test(r.stderr))) {
      throw helperFailure(helper, 'erase', r);
    }
  }
  if (!removed) {
    throw new StratumError(
      'ERR_NOT_FOUND',
      `logout ${registry}: not logged in (no credentials stored in ${path})`,
    );
  }
  if (keys.length > 0) {
    for (const k of keys) delete auths[k];
    cfg.auths = auths;
    await writeFileAtomic(path, `${JSON.stringify(cfg, null, '\t')}\n`, { mode: 0o600 });
  }
}
