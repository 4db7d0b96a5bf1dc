#!/usr/bin/env node

// The `stratum` command (package.json's bin): runs the CLI bundle beside it (stratum-bundle.cjs,
// made by scripts/bundle.mjs from dist/) through V8's code cache, so a start deserialises
// bytecode instead of parsing and compiling the CLI again. Node 20 has no compile cache for
// user code (module.enableCompileCache is Node 22), hence vm.Script and cachedData by hand.
//
// The cache is one file per Node version, architecture and set of V8 flags (V8 refuses data
// made under other flags), holding the bundle's identity (size, mtime, inode), V8's data and
// its SHA-256 (V8 checks only the data's header: a damaged body would crash it).
// It sits beside the bundle when that directory is writable, else in $XDG_CACHE_HOME/stratum
// (~/.cache/stratum). It is written when there was none, it was for another bundle or V8
// rejected it — at exit, so that it holds the functions the command compiled — to a temp file
// renamed into place, so a concurrent start reads the old file or the new one, never half.
// Nothing about the cache may change what the command does: errors reading or writing it are
// ignored. STRATUM_NO_COMPILE_CACHE=1 turns it off.

import { createHash } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';

const BUNDLE = join(__dirname, 'stratum-bundle.cjs');

type Wrapped = (
  exports: object,
  require: NodeJS.Require,
  module: { exports: object },
  filename: string,
  dirname: string,
) => void;

/** FNV-1a, for short file names. */
function hash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** Where the cache may be, in the order tried. */
function cacheFiles(): string[] {
  const flags = hash(`${process.execArgv.join('\0')}\n${process.env.NODE_OPTIONS ?? ''}`);
  const name = `stratum-bundle-${process.version}-${process.arch}-${flags}.codecache`;
  const files = [join(__dirname, name)];
  try {
    const xdg = process.env.XDG_CACHE_HOME;
    const base = xdg?.startsWith('/') ? xdg : join(homedir(), '.cache');
    files.push(join(base, 'stratum', `${hash(BUNDLE)}-${name}`));
  } catch {
    // no home directory: the bundle's directory or no cache
  }
  return files;
}

/** V8 checks the data's header but not its payload: a damaged payload would crash it, or worse. */
function digest(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function readCache(files: readonly string[], identity: string): Buffer | undefined {
  for (const file of files) {
    try {
      const b = readFileSync(file);
      const end = b.indexOf(10);
      if (end < 0 || b.toString('latin1', 0, identity.length) !== identity) continue;
      const data = b.subarray(end + 1);
      if (b.toString('latin1', identity.length, end) === digest(data)) return data;
    } catch {
      // absent or unreadable: the next place
    }
  }
  return undefined;
}

function writeCache(script: Script, files: readonly string[], identity: string): void {
  try {
    const cached = script.createCachedData();
    const data = Buffer.concat([Buffer.from(`${identity}${digest(cached)}\n`, 'latin1'), cached]);
    for (const file of files) {
      const tmp = `${file}.${process.pid}-${Math.random().toString(36).slice(2)}.tmp`;
      try {
        mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
        writeFileSync(tmp, data);
        renameSync(tmp, file);
        return;
      } catch {
        try {
          unlinkSync(tmp);
        } catch {
          // never written
        }
      }
    }
  } catch {
    // no cache this time
  }
}

function runWithCodeCache(): void {
  const fd = openSync(BUNDLE, 'r');
  let source: string;
  let identity: string;
  try {
    const st = fstatSync(fd);
    identity = `stratum-code-cache 1 ${st.size} ${st.mtimeMs} ${st.ino} `;
    source = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const off = process.env.STRATUM_NO_COMPILE_CACHE;
  const files = off && off !== '0' ? [] : cacheFiles();
  const cachedData = readCache(files, identity);
  // CommonJS's wrapper, all on the first line: stack traces give the bundle's line numbers
  const script = new Script(
    `(function (exports, require, module, __filename, __dirname) { ${source}\n});`,
    cachedData ? { filename: BUNDLE, cachedData } : { filename: BUNDLE },
  );
  if (files.length > 0 && (!cachedData || script.cachedDataRejected)) {
    process.once('exit', () => writeCache(script, files, identity));
  }
  const bundle = { exports: {} };
  const run = script.runInThisContext() as Wrapped;
  run.call(bundle.exports, bundle.exports, createRequire(BUNDLE), bundle, BUNDLE, __dirname);
}

// `node --enable-source-maps`: Node's own loader, which maps stack traces to src/*.ts
if (process.sourceMapsEnabled) require(BUNDLE);
else runWithCodeCache();
