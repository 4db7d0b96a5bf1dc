// An in-process CLI context for command tests: a signal the test can abort, an empty stdin,
// and stdout/stderr captured as strings. Shaped like cli/commands.ts's CommandContext.

import { PassThrough } from 'node:stream';

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
