// Test helper: a real OCI registry (Debian's docker-registry, distribution v2.8) on
// 127.0.0.1 with a free port, filesystem storage in a tmpfs temp dir, deletes enabled, no
// log noise; optionally htpasswd (bcrypt) or token auth (see token-server.ts). Waits until
// /v2/ answers; stop() ends the process and removes its storage.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hashSync } from 'bcryptjs';
import { makeTempDir } from './tmp.js';

export const REGISTRY_BINARY = '/usr/bin/docker-registry';

export interface RegistryTokenAuth {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  readonly rootcertbundle: string;
}

export interface StartRegistryOptions {
  readonly auth?:
    | { readonly htpasswd: { readonly user: string; readonly password: string } }
    | { readonly token: RegistryTokenAuth };
  /** Answer relative Location headers (http.relativeurls). */
  readonly relativeUrls?: boolean;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  readonly host: string;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** Where the registry keeps its data. */
  readonly storage: string;
  stop(): Promise<void>;
}

/** Whether the registry binary is installed (tests skip with a reason when it is not). */
export function registryAvailable(): boolean {
  return existsSync(REGISTRY_BINARY);
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function ping(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(`${url}/v2/`, { method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => {
      req.destroy();
      resolve(0);
    });
    req.end();
  });
}

async function launch(dir: string, port: number, opts: StartRegistryOptions): Promise<ChildProcess> {
  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'error', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: join(dir, 'data') },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr: `127.0.0.1:${port}`,
      secret: randomBytes(16).toString('hex'),
      relativeurls: opts.relativeUrls ?? false,
    },
    health: { storagedriver: { enabled: false } },
  };
  const auth = opts.auth;
  if (auth && 'htpasswd' in auth) {
    const path = join(dir, 'htpasswd');
    await writeFile(path, `${auth.htpasswd.user}:${hashSync(auth.htpasswd.password, 4)}\n`, { mode: 0o600 });
    config.auth = { htpasswd: { realm: 'stratum-test', path } };
  } else if (auth && 'token' in auth) {
    config.auth = { token: { ...auth.token } };
  }
  // JSON is YAML: the registry reads it as its config file
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, JSON.stringify(config, null, 2));
  return spawn(REGISTRY_BINARY, ['serve', configPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
  });
}

/** Start a registry; resolves once /v2/ answers. */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  if (!registryAvailable()) {
    throw new Error(`${REGISTRY_BINARY} is not installed (apt-get install docker-registry)`);
  }
  const tmp = await makeTempDir('stratum-registry-');
  let lastError = '';
  for (let tries = 0; tries < 3; tries++) {
    const port = await freePort();
    const child = await launch(tmp.path, port, opts);
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => {
      if (stderr.length < 16_384) stderr += c.toString('utf8');
    });
    let exited = false;
    const exitedP = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.once('exit', () => {
      exited = true;
    });
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 20_000;
    let up = false;
    while (!exited && Date.now() < deadline) {
      const status = await ping(url);
      if (status === 200 || status === 401) {
        up = true;
        break;
      }
      await sleep(25);
    }
    if (up) {
      const stop = async () => {
        if (!exited) {
          child.kill('SIGTERM');
          const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await exitedP;
          clearTimeout(killer);
        }
        await tmp.cleanup();
      };
      return { host: `127.0.0.1:${port}`, url, storage: join(tmp.path, 'data'), stop };
    }
    if (!exited) {
      child.kill('SIGKILL');
      await exitedP;
    }
    lastError = stderr.trim() || 'it did not answer /v2/ in time';
    if (!/address already in use/i.test(stderr)) break;
  }
  await tmp.cleanup();
  throw new Error(`docker-registry did not start: ${lastError}`);
}
