// Argument parsing for the CLI on top of node:util parseArgs: typed options, usage errors
// (exit code 2) that say what was wrong, and `--help` text per command.

import { type ParseArgsConfig, parseArgs } from 'node:util';
import { StratumError } from '../errors/errors.js';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export class UsageError extends StratumError {
  constructor(message: string) {
    super('ERR_USAGE', message);
    this.name = 'UsageError';
  }
}

/** Options every command takes. */
export const GLOBAL_OPTIONS = {
  root: { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
  'tls-verify': { type: 'string' },
  debug: { type: 'boolean' },
} as const satisfies OptionSpec;

export interface Parsed<O extends OptionSpec> {
  readonly values: {
    [K in keyof O]?: O[K] extends { type: 'boolean' }
      ? boolean
      : O[K] extends { multiple: true }
        ? string[]
        : string;
  };
  readonly positionals: string[];
}

export function parse<O extends OptionSpec>(
  argv: readonly string[],
  options: O,
  positionals: { min: number; max: number; usage: string },
): Parsed<O & typeof GLOBAL_OPTIONS> {
  // accept --tls-verify=false and bare --tls-verify
  const args = argv.map((a) => (a === '--tls-verify' ? '--tls-verify=true' : a));
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args,
      options: { ...GLOBAL_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(
      `${(e as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, '')}\nusage: ${positionals.usage}`,
    );
  }
  if (parsed.values.help) return parsed as never;
  const n = parsed.positionals.length;
  if (n < positionals.min || n > positionals.max) {
    throw new UsageError(
      `${n < positionals.min ? 'missing' : 'too many'} arguments\nusage: ${positionals.usage}`,
    );
  }
  const tv = parsed.values['tls-verify'];
  if (tv !== undefined && tv !== 'true' && tv !== 'false') {
    throw new UsageError(`--tls-verify takes true or false, not ${JSON.stringify(tv)}`);
  }
  return parsed as never;
}
