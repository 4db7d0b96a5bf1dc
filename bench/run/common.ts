// What bench/run and bench/build share: a private copy of dist/ to run stratum from (others
// rebuild the shared checkout while a bench runs), the load figures that go with every run,
// exit-code-checking spawns, and the summary (median wall and CPU per tool, ratios against
// the peers and the targets) as a console table, markdown and JSON rows.
// Timing itself is bench/copy/measure.ts (GNU time: wall, CPU of the process and its waited-for
// children, peak RSS).

import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { copyFile, mkdir, readFile, symlink } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN_IN_DIST } from '../../dist/testing/cli.js';
import { median, run } from '../copy/measure.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');

export const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

export const split = (s: string): string[] => s.split(/[\s,]+/).filter((x) => x !== '');

/** Copy dist/ (with package.json and a node_modules link) into `dir`; returns the CLI there. */
export async function snapshotDist(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await run(['cp', '-a', join(ROOT, 'dist'), join(dir, 'dist')]);
  await copyFile(join(ROOT, 'package.json'), join(dir, 'package.json'));
  await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  const cli = join(dir, 'dist', BIN_IN_DIST);
  // every module the CLI may load, so that a half-rebuilt dist/ shows here and not mid-run
  const probe = await runExit([
    process.execPath,
    '--input-type=module',
    '-e',
    `for (const m of ['cli/main.js', 'ops/run.js', 'ops/build.js', 'build/build.js', 'runtime/containers.js']) await import(${JSON.stringify(join(dir, 'dist'))} + '/' + m);`,
  ]);
  // and the bin (the CLI bundle), which also leaves its code cache in the copy
  const bin = probe.code === 0 ? await runExit([process.execPath, cli, '--version']) : probe;
  if (bin.code !== 0) {
    throw new Error(
      `dist/ does not load (someone may be rebuilding it: run npm run build and try again):\n${bin.stderr.slice(-2000)}`,
    );
  }
  return cli;
}

/** Remove `dir` when the process exits, however it exits (unless `keep`). */
export function removeOnExit(dir: string, keep: boolean): void {
  const remove = (): void => {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', remove);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
}

/** HEAD's short commit, and how many files under src/ differ from it (what dist/ may hold beyond it). */
export async function sourceState(): Promise<{ commit: string; dirty: number }> {
  const commit = (await run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']).catch(() => '')).trim();
  const dirty = (await run(['git', '-C', ROOT, 'status', '--porcelain', '--', 'src']).catch(() => ''))
    .split('\n')
    .filter((l) => l.trim() !== '').length;
  return { commit, dirty };
}

/** Runnable tasks other than this one, averaged over 1 s (the 4th field of /proc/loadavg). */
export async function othersBusy(): Promise<number> {
  let sum = 0;
  const n = 10;
  for (let i = 0; i < n; i++) {
    const running = Number((await readFile('/proc/loadavg', 'utf8')).split(' ')[3]?.split('/')[0]);
    sum += Math.max(0, running - 1);
    await new Promise((r) => setTimeout(r, 100));
  }
  return sum / n;
}

export const load1 = (): number => loadavg()[0] as number;

/** Run a command to its end, not measured; resolves with its exit code and output whatever the code. */
export function runExit(
  argv: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('runExit: empty command');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code, sig) =>
      resolve({
        code: code ?? (sig ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
  });
}

// ---- records and the summary ----------------------------------------------------------

export interface RunRecord {
  /** e.g. the image (run) or the build state (build). */
  readonly group: string;
  readonly tool: string;
  readonly rep: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly rssMiB: number;
  readonly load1: number;
  /** Cores kept busy by other processes just before the run (see othersBusy). */
  readonly busy: number;
  readonly facts: Record<string, unknown>;
}

export interface ToolStats {
  readonly tool: string;
  readonly seconds: number;
  readonly cpuSeconds: number;
  readonly peakRssMiB: number;
  readonly runs: readonly number[];
  readonly cpuRuns: readonly number[];
}

export interface Comparison {
  readonly group: string;
  readonly title: string;
  readonly tool: string;
  readonly peer: string;
  /** The target for tool / peer (wall), when it sets one. */
  readonly target?: number;
}

export interface Row extends Comparison {
  readonly a: ToolStats;
  readonly b: ToolStats;
  /** Median wall time of tool over peer's. */
  readonly ratio: number;
  /** Median CPU time of tool over peer's. */
  readonly cpuRatio: number;
}

export function stats(records: readonly RunRecord[], group: string, tool: string): ToolStats | undefined {
  const rs = records.filter((r) => r.group === group && r.tool === tool);
  if (rs.length === 0) return undefined;
  return {
    tool,
    seconds: median(rs.map((r) => r.seconds)),
    cpuSeconds: median(rs.map((r) => r.cpuSeconds)),
    peakRssMiB: Math.max(...rs.map((r) => r.rssMiB)),
    runs: rs.map((r) => r.seconds),
    cpuRuns: rs.map((r) => r.cpuSeconds),
  };
}

export function rows(records: readonly RunRecord[], comparisons: readonly Comparison[]): Row[] {
  const out: Row[] = [];
  for (const c of comparisons) {
    const a = stats(records, c.group, c.tool);
    const b = stats(records, c.group, c.peer);
    if (!a || !b) continue;
    out.push({ ...c, a, b, ratio: a.seconds / b.seconds, cpuRatio: a.cpuSeconds / b.cpuSeconds });
  }
  return out;
}

const HEADER = [
  'group',
  'scenario',
  'tool',
  'tool s',
  'peer',
  'peer s',
  'ratio',
  'target',
  'tool CPU s',
  'peer CPU s',
  'CPU ratio',
  'tool RSS MiB',
  'peer RSS MiB',
];
const LEFT = new Set([0, 1, 2, 4]);

function cells(r: Row): string[] {
  return [
    r.group,
    r.title,
    r.tool,
    fmt(r.a.seconds, 3),
    r.peer,
    fmt(r.b.seconds, 3),
    `${fmt(r.ratio)}x`,
    r.target === undefined ? '' : `<= ${fmt(r.target, 1)}x ${r.ratio <= r.target ? 'ok' : 'MISSED'}`,
    fmt(r.a.cpuSeconds, 3),
    fmt(r.b.cpuSeconds, 3),
    `${fmt(r.cpuRatio)}x`,
    fmt(r.a.peakRssMiB, 0),
    fmt(r.b.peakRssMiB, 0),
  ];
}

export function consoleTable(rs: readonly Row[]): string {
  const all = [HEADER, ...rs.map(cells)];
  const widths = HEADER.map((_, i) => Math.max(...all.map((c) => (c[i] ?? '').length)));
  return all
    .map((c) =>
      c
        .map((x, i) => (LEFT.has(i) ? x.padEnd(widths[i] as number) : x.padStart(widths[i] as number)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function markdownTable(rs: readonly Row[]): string {
  const line = (c: readonly string[]) => `| ${c.join(' | ')} |`;
  return [
    line(HEADER),
    line(HEADER.map((_, i) => (LEFT.has(i) ? '---' : '---:'))),
    ...rs.map((r) => line(cells(r))),
  ].join('\n');
}

/** Every tool's runs, one line each: median, min, max of wall and CPU. */
export function perToolTable(records: readonly RunRecord[]): string {
  const keys = [...new Set(records.map((r) => `${r.group}\u0000${r.tool}`))];
  const lines = keys.map((k) => {
    const [group, tool] = k.split('\u0000') as [string, string];
    const rs = records.filter((r) => r.group === group && r.tool === tool);
    const w = rs.map((r) => r.seconds);
    const c = rs.map((r) => r.cpuSeconds);
    return (
      `${group.padEnd(10)} ${tool.padEnd(16)} n=${rs.length}  wall ${fmt(median(w), 3)} (${fmt(Math.min(...w), 3)}..${fmt(Math.max(...w), 3)})` +
      `  CPU ${fmt(median(c), 3)} (${fmt(Math.min(...c), 3)}..${fmt(Math.max(...c), 3)})  RSS ${fmt(Math.max(...rs.map((r) => r.rssMiB)), 0)} MiB`
    );
  });
  return lines.join('\n');
}

/** The machine and the load during the runs, for the JSON and the line under the tables. */
export function machineInfo(
  records: readonly RunRecord[],
  loadBefore: readonly number[],
): { info: Record<string, unknown>; line: string } {
  const loads = records.map((r) => r.load1);
  const busies = records.map((r) => r.busy);
  const during = { min: Math.min(...loads), median: median(loads), max: Math.max(...loads) };
  const busy = { min: Math.min(...busies), median: median(busies), max: Math.max(...busies) };
  const info = {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    loadBefore,
    loadAfter: loadavg(),
    load1DuringRuns: during,
    othersBusyBeforeRuns: busy,
  };
  const line =
    `load (1 min) ${fmt(during.min)} .. ${fmt(during.max)}, median ${fmt(during.median)} on ${info.cores} cores; ` +
    `other processes kept ${fmt(busy.min, 1)} .. ${fmt(busy.max, 1)} (median ${fmt(busy.median, 1)}) cores busy just before the runs`;
  return { info, line };
}
