#!/usr/bin/env node
// The stratum command line: a thin layer over the library (src/ops). Parses arguments,
// prints results (text or --json), renders progress, maps errors to exit codes
// (0 ok, 1 failure, 2 usage) and turns Ctrl-C into a clean cancellation.

import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { fromSystemError, StratumError } from '../errors/errors.js';
import { UsageError } from './args.js';
import { COMMANDS, type CommandContext } from './commands.js';

const VERSION = (() => {
  try {
    return (
      JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    ).version;
  } catch {
    return 'unknown';
  }
})();

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(9)} ${c.summary}`);
  return [
    'stratum — build, ship and run OCI images, without a daemon',
    '',
    'usage: stratum COMMAND [OPTIONS]',
    '',
    'commands:',
    ...lines,
    '',
    'locations: docker://HOST/REPO[:TAG|@DIGEST]  oci:DIR[:TAG]  docker-archive:FILE[:NAME:TAG]',
    '           oci-archive:FILE[:TAG]  NAME[:TAG] (the local store)',
    'global options: --root DIR (store, default $STRATUM_ROOT)  --json  -q/--quiet  --tls-verify=false',
    "run 'stratum COMMAND --help' for a command's options",
  ].join('\n');
}

/**
 * Global options given before the command (`stratum --root DIR run ...`) move to just after
 * it, where every command parses them (and before `run`'s image, after which options end).
 */
export function hoistGlobals(argv: readonly string[]): string[] {
  const globals: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--root' && i + 1 < argv.length) globals.push(a, argv[++i]!);
    else if (
      /^--(root|tls-verify)=/.test(a) ||
      ['--json', '-q', '--quiet', '--debug', '--tls-verify'].includes(a)
    )
      globals.push(a);
    else break;
  }
  if (globals.length === 0 || i >= argv.length) return [...argv];
  return [argv[i]!, ...globals, ...argv.slice(i + 1)];
}

export async function main(argvIn: readonly string[]): Promise<number> {
  const argv = hoistGlobals(argvIn);
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === 'version' || name === '--version') {
    process.stdout.write(`stratum ${VERSION}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  const controller = new AbortController();
  let interrupted = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted++;
    if (interrupted > 1) process.exit(130);
    // Ctrl-C gets an answer on the terminal; a SIGTERM (a supervisor stopping us) a quiet stop
    if (sig === 'SIGINT') process.stderr.write(`\nstratum: ${sig}: cancelling (again to force)\n`);
    controller.abort(new StratumError('ERR_ABORTED', `cancelled by ${sig}`));
  };
  if (!command?.ownsSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  const json = rest.includes('--json');
  // a reader that stops early (`stratum layers IMG | head`) closes the pipe: stop quietly
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  });
  try {
    if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    const ctx: CommandContext = {
      signal: controller.signal,
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
    };
    return await command.run(rest, ctx);
  } catch (e) {
    const err = e instanceof StratumError ? e : fromSystemError(e);
    const code = err?.code ?? 'ERR_INTERNAL';
    const message = err?.message ?? (e instanceof Error ? e.message : String(e));
    if (json) {
      process.stdout.write(`${JSON.stringify({ error: { code, message } })}\n`);
    } else {
      process.stderr.write(`stratum ${name}: ${message}${code === 'ERR_USAGE' ? '' : ` [${code}]`}\n`);
      if (rest.includes('--debug') && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    }
    if (code === 'ERR_USAGE') return 2;
    if (code === 'ERR_ABORTED') return 130;
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function invokedDirectly(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

/** The CLI as a program: main() on process.argv, its result as the process's exit code. */
export function runCli(): void {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`stratum: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}

// `node dist/cli/main.js` runs the CLI; the bundle (scripts/bundle.mjs) calls runCli() itself
if (invokedDirectly()) runCli();
