// Basic authentication against an htpasswd file, as Debian's docker-registry (distribution)
// reads it: one `user:hash` per line, surrounding whitespace trimmed, blank lines and lines
// starting with '#' skipped, the user name ending at the first ':'. Only bcrypt hashes
// ($2a$, $2b$, $2y$, as `htpasswd -B` writes) are accepted; other kinds (MD5 $apr1$,
// {SHA}, crypt, plain text) never match, and loading says which lines were ignored.
//
// bcrypt is slow on purpose, so: comparisons run in worker threads (bcrypt-pool.ts), at
// most two at a time, with a bounded queue (past it, TOOMANYREQUESTS); a result is remembered (keyed by a hash of user and
// password) until the file changes, so a client sending Basic on every request pays once;
// and an unknown user is compared against a dummy hash, so timing does not tell which
// users exist. A file given by path is re-read when its mtime or size changes (checked at
// most once a second), as distribution does.

import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { StratumError } from '../errors/errors.js';
import { sharedBcryptPool } from './bcrypt-pool.js';

const BCRYPT_RE = /^\$2[aby]\$(\d{2})\$[./A-Za-z0-9]{53}$/;
const MAX_FILE_BYTES = 16 * 1024 * 1024;
const CACHE_ENTRIES = 1024;
const RECHECK_MS = 1000;

export interface HtpasswdEntries {
  /** user -> bcrypt hash */
  readonly users: ReadonlyMap<string, string>;
  /** Lines that were not used, and why (never the hash itself). */
  readonly warnings: readonly string[];
}

/** Parse htpasswd text. Throws ERR_INVALID_ARGUMENT on a line without ':' (as distribution does). */
export function parseHtpasswd(text: string, where = 'htpasswd'): HtpasswdEntries {
  const users = new Map<string, string>();
  const warnings: string[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return;
    const colon = t.indexOf(':');
    if (colon < 0) {
      throw new StratumError('ERR_INVALID_ARGUMENT', `${where}: line ${i + 1} is not user:hash`);
    }
    const user = t.slice(0, colon);
    const hash = t.slice(colon + 1);
    if (!BCRYPT_RE.test(hash)) {
      warnings.push(
        `${where}: line ${i + 1} (user ${JSON.stringify(user)}) is not a bcrypt hash and will never match; make it with htpasswd -B`,
      );
      return;
    }
    users.set(user, hash);
  });
  return { users, warnings };
}

/** Credentials checked against htpasswd entries (fixed, or a file re-read when it changes). */
export class Htpasswd {
  readonly path: string | undefined;
  #entries: HtpasswdEntries;
  #stamp = '';
  #checkedAt = 0;
  #reloading: Promise<void> | undefined;
  readonly #cache = new Map<string, boolean>();
  readonly #dummy: string;
  readonly #salt = randomBytes(16);

  constructor(entries: HtpasswdEntries, path?: string, stamp = '') {
    this.#entries = entries;
    this.path = path;
    this.#stamp = stamp;
    this.#checkedAt = Date.now();
    // a well-formed hash no password matches, at the cost of the first entry
    const first = [...entries.users.values()][0];
    const cost = first ? first.slice(4, 6) : '10';
    this.#dummy = `$2b$${cost}$${'A'.repeat(53)}`;
  }

  /** Read and parse a file (it is re-read later when it changes). */
  static async load(path: string): Promise<Htpasswd> {
    const { entries, stamp } = await readEntries(path);
    return new Htpasswd(entries, path, stamp);
  }

  static fromText(text: string): Htpasswd {
    return new Htpasswd(parseHtpasswd(text));
  }

  get warnings(): readonly string[] {
    return this.#entries.warnings;
  }

  get users(): readonly string[] {
    return [...this.#entries.users.keys()];
  }

  /** Whether user and password match an entry. */
  async verify(user: string, password: string): Promise<boolean> {
    await this.#maybeReload();
    const key = createHash('sha256')
      .update(this.#salt)
      .update(user)
      .update('\0')
      .update(password)
      .digest('hex');
    const known = this.#cache.get(key);
    if (known !== undefined) return known;
    const hash = this.#entries.users.get(user);
    const entries = this.#entries;
    // an unknown user costs the same as a known one
    const ok = (await sharedBcryptPool().compare(password, hash ?? this.#dummy)) && hash !== undefined;
    if (entries === this.#entries) {
      if (this.#cache.size >= CACHE_ENTRIES) this.#cache.delete(this.#cache.keys().next().value as string);
      this.#cache.set(key, ok);
    }
    return ok;
  }

  async #maybeReload(): Promise<void> {
    if (this.path === undefined || Date.now() - this.#checkedAt < RECHECK_MS) return;
    this.#reloading ??= (async () => {
      try {
        const path = this.path as string;
        const st = await stat(path);
        const stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
        if (stamp !== this.#stamp) {
          const next = await readEntries(path);
          this.#entries = next.entries;
          this.#stamp = next.stamp;
          this.#cache.clear();
        }
      } catch {
        // keep the entries we have: a file being rewritten, or removed by mistake, does not lock everyone out
      } finally {
        this.#checkedAt = Date.now();
        this.#reloading = undefined;
      }
    })();
    await this.#reloading;
  }
}

async function readEntries(path: string): Promise<{ entries: HtpasswdEntries; stamp: string }> {
  let st: Awaited<ReturnType<typeof stat>>;
  let text: string;
  try {
    st = await stat(path);
    if (!st.isFile())
      throw new StratumError('ERR_INVALID_ARGUMENT', `htpasswd file ${path} is not a regular file`);
    if (st.size > MAX_FILE_BYTES) {
      throw new StratumError('ERR_TOO_LARGE', `htpasswd file ${path} is larger than ${MAX_FILE_BYTES} bytes`);
    }
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (e instanceof StratumError) throw e;
    throw new StratumError('ERR_NOT_FOUND', `cannot read htpasswd file ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return { entries: parseHtpasswd(text, path), stamp: `${st.ino}:${st.size}:${st.mtimeMs}` };
}

/** `Authorization: Basic base64(user:password)` -> the pair, or undefined if absent or malformed. */
export function parseBasicAuth(header: string | undefined): { user: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const m = /^Basic[ ]+([A-Za-z0-9+/]+={0,2})[ ]*$/i.exec(header);
  if (!m?.[1] || m[1].length > 8192) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
