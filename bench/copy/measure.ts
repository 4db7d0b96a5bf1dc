// Running one tool once: the command goes under GNU time (`/usr/bin/time -f '%U %S %M'`),
// which reports the CPU time and the peak resident set size of the process it waited for;
// the wall time is taken around the whole spawn here, the same way for every tool. Output goes to files beside the
// run, kept for a look when something fails.

import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const TIME_BINARY = '/usr/bin/time';

export interface RunResult {
  /** Wall time, seconds. */
  readonly seconds: number;
  /** Peak RSS of the process, MiB. */
  readonly rssMiB: number;
  /** User + system CPU time of the process (all its threads), seconds. */
  readonly cpuSeconds: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Where stdout/stderr/time files go. */
  readonly logDir: string;
  readonly label: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

/** Run `argv` under GNU time; rejects with its output if it exits non-zero. */
export async function measure(argv: readonly string[], opts: RunOptions): Promise<RunResult> {
  const timeFile = join(opts.logDir, `${opts.label}.time`);
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('measure: empty command');
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const start = process.hrtime.bigint();
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(TIME_BINARY, ['-f', '%U %S %M', '-o', timeFile, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const stdout = Buffer.concat(out).toString('utf8');
  const stderr = Buffer.concat(err).toString('utf8');
  await writeFile(join(opts.logDir, `${opts.label}.out`), stdout);
  await writeFile(join(opts.logDir, `${opts.label}.err`), stderr);
  if (code !== 0) {
    throw new Error(`${opts.label}: ${argv.join(' ')} exited with ${code}\n${stderr.slice(-4000)}`);
  }
  const timeText = (await readFile(timeFile, 'utf8')).trim().split('\n').pop() ?? '';
  const m = /^([\d.]+) ([\d.]+) (\d+)$/.exec(timeText);
  if (!m) throw new Error(`${opts.label}: cannot read GNU time's output ${JSON.stringify(timeText)}`);
  return { seconds, cpuSeconds: Number(m[1]) + Number(m[2]), rssMiB: Number(m[3]) / 1024, stdout, stderr };
}

/** Run a command to completion (not measured); rejects with its stderr on failure. */
export async function run(argv: readonly string[], env?: NodeJS.ProcessEnv): Promise<string> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('run: empty command');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
      else reject(new Error(`${argv.join(' ')} exited with ${code}: ${Buffer.concat(err).toString('utf8')}`));
    });
  });
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
