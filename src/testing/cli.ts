// The CLI for tests: where the `stratum` command is (what tests and benches run, as users do),
// and an in-process context for command tests — a signal the test can abort, an empty stdin,
// and stdout/stderr captured as strings, shaped like cli/commands.ts's CommandContext.

import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';

/** package.json's bin within dist/: the launcher of the CLI bundle (src/cli/stratum.cts). */
export const BIN_IN_DIST = 'cli/stratum.cjs';

/**
 * A bundle older than tsc's output (`npx tsc -p .` without `npm run build`) would run old code:
 * make it again (scripts/bundle.mjs replaces it atomically, so test files doing this at once
 * are safe).
 */
function freshBundle(): void {
  const at = (rel: string): number => statSync(fileURLToPath(new URL(rel, import.meta.url))).mtimeMs;
  try {
    if (at('../cli/stratum-bundle.cjs') >= at('../cli/main.js')) return;
  } catch {
    // no bundle yet
  }
  const script = fileURLToPath(new URL('../../scripts/bundle.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the CLI bundle is out of date; ${script} failed: ${r.stderr}`);
}
freshBundle();

/** The `stratum` command as users run it (spawn it with `process.execPath`). */
export const STRATUM_BIN = fileURLToPath(new URL(`../${BIN_IN_DIST}`, import.meta.url));

/** The CLI bundle that STRATUM_BIN runs (scripts/bundle.mjs). */
export const CLI_BUNDLE = fileURLToPath(new URL('../cli/stratum-bundle.cjs', import.meta.url));

/** The CLI unbundled, as tsc made it (`node dist/cli/main.js`): what the bundle must equal. */
export const CLI_MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export interface CapturedContext {
  readonly ctx: {
    readonly signal: AbortSignal;
    readonly stdin: NodeJS.ReadStream;
    readonly stdout: NodeJS.WriteStream;
    readonly stderr: NodeJS.WriteStream;
    readonly env: NodeJS.ProcessEnv;
  };
  /** Everything written to stdout so far. */
  out(): string;
  /** Everything written to stderr so far. */
  err(): string;
  /** Abort ctx.signal, as Ctrl-C would. */
  abort(): void;
}

export function captureContext(env: NodeJS.ProcessEnv = {}, stdinText = ''): CapturedContext {
  const controller = new AbortController();
  let out = '';
  let err = '';
  const stdin = new PassThrough();
  stdin.end(stdinText);
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on('data', (c: Buffer) => {
    out += c.toString();
  });
  stderr.on('data', (c: Buffer) => {
    err += c.toString();
  });
  return {
    ctx: {
      signal: controller.signal,
      stdin: stdin as unknown as NodeJS.ReadStream,
      stdout: stdout as unknown as NodeJS.WriteStream,
      stderr: stderr as unknown as NodeJS.WriteStream,
      env,
    },
    out: () => out,
    err: () => err,
    abort: () => controller.abort(),
  };
}
