// A Session holds what operations share: the store root, one registry client (connections,
// tokens, credentials), TLS settings and the temp directory. Close it when done.

import { tmpdir } from 'node:os';
import type { Target } from '../content/types.js';
import { defaultStoreRoot, openStore, type Store } from '../layout/store.js';
import { RegistryClient, type RegistryClientOptions } from '../registry/client.js';
import { type CredentialSource, DockerConfigCredentials } from '../registry/credentials.js';
import type { Descriptor } from '../spec/types.js';
import { type Location, parseLocation } from '../transport/location.js';
import { type OpenContext, type Opened, openDestination, openSource } from '../transport/open.js';

export { defaultStoreRoot };

export interface SessionOptions {
  /** The local store's directory (default $STRATUM_ROOT, /var/lib/stratum for root, else ~/.local/share/stratum). */
  readonly root?: string;
  /** Verify registry TLS certificates (default true); false also allows plain HTTP. */
  readonly tlsVerify?: boolean;
  /** Registries spoken to over plain HTTP (loopback registries always are). */
  readonly insecureHosts?: readonly string[];
  /** Credentials (default: ~/.docker/config.json and its helpers). */
  readonly credentials?: CredentialSource;
  /** More registry client options. */
  readonly registry?: Omit<RegistryClientOptions, 'credentials' | 'tlsVerify' | 'insecureHosts'>;
  /** Temporary files (default os.tmpdir()). */
  readonly tmpDir?: string;
}

export class Session {
  readonly root: string;
  readonly tmpDir: string;
  readonly #opts: SessionOptions;
  #client: RegistryClient | undefined;
  #store: Promise<Store> | undefined;

  constructor(opts: SessionOptions = {}) {
    this.#opts = opts;
    this.root = opts.root ?? defaultStoreRoot();
    this.tmpDir = opts.tmpDir ?? tmpdir();
  }

  get client(): RegistryClient {
    this.#client ??= new RegistryClient({
      ...this.#opts.registry,
      credentials: this.#opts.credentials ?? new DockerConfigCredentials(),
      ...(this.#opts.tlsVerify === undefined ? {} : { tlsVerify: this.#opts.tlsVerify }),
      ...(this.#opts.insecureHosts ? { insecureHosts: this.#opts.insecureHosts } : {}),
    });
    return this.#client;
  }

  /** The local store (created on first use). */
  store(): Promise<Store> {
    this.#store ??= openStore({ root: this.root });
    return this.#store;
  }

  #ctx(): OpenContext {
    const session = this;
    return {
      // a getter: only a registry location makes the client (and loads undici)
      get client() {
        return session.client;
      },
      store: () => this.store(),
      tmpDir: this.tmpDir,
    };
  }

  openSource(loc: Location | string): Promise<Opened> {
    return openSource(typeof loc === 'string' ? parseLocation(loc) : loc, this.#ctx());
  }

  openDestination(loc: Location | string, source?: Location): Promise<Opened> {
    return openDestination(typeof loc === 'string' ? parseLocation(loc) : loc, this.#ctx(), source);
  }

  async close(): Promise<void> {
    const store = this.#store;
    this.#store = undefined;
    if (store) await (await store.catch(() => undefined))?.close();
    await this.#client?.close();
    this.#client = undefined;
  }
}

/**
 * Open `location` as a source in a session (the caller's, or a new one closed after), resolve
 * its root, run `fn`, and release what was opened.
 */
export async function withResolvedSource<T>(
  location: string | Location,
  opts: SessionOptions & { readonly session?: Session; readonly signal?: AbortSignal },
  fn: (src: {
    readonly target: Target;
    readonly root: Descriptor;
    readonly location: Location;
  }) => Promise<T>,
): Promise<T> {
  const loc = typeof location === 'string' ? parseLocation(location) : location;
  const session = opts.session ?? new Session(opts);
  try {
    const opened = await session.openSource(loc);
    try {
      const root = await opened.target.resolve(opened.ref ?? '', opts.signal ? { signal: opts.signal } : {});
      return await fn({ target: opened.target, root, location: loc });
    } finally {
      await opened.release();
    }
  } finally {
    if (!opts.session) await session.close();
  }
}
