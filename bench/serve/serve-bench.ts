// bench/serve: skopeo pulling the same image from `stratum serve` and from Debian's
// docker-registry (distribution 2.8), in the same run.
//
//   npm run build && npx tsc -p bench/serve && node dist-bench/serve/serve-bench.js [--reps N] [--concurrency C]
//
// 1. generates a ~100 MB, 5-layer gzip image on tmpfs (image.ts) as an OCI layout;
// 2. starts both registries as processes of their own, storage on tmpfs: docker-registry
//    with a config like src/testing/registry.ts writes (access log off), and
//    `stratum serve -q` over a fresh store (access log off too); skopeo pushes
//    the image into each once (not measured) and the digest each serves is checked;
// 3. single pull: N runs per registry (alternating which goes first), each
//    `skopeo copy docker://HOST/bench:1 oci:<fresh dir>:x`, timed around the process;
// 4. concurrent pulls: N rounds per registry of C skopeo processes started at once; each
//    process's wall time is one latency sample, the round's wall time gives the aggregate
//    throughput;
// 5. each registry's CPU time over each scenario (/proc/PID/stat) and peak RSS (VmHWM);
// 6. prints a table and markdown, and writes bench/results/serve-<date>.json.
// Every pull is checked: the manifest digest skopeo wrote must be the image's.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { STRATUM_BIN } from '../../dist/testing/cli.js';
import { freePort, REGISTRY_BINARY } from '../../dist/testing/registry.js';
import { TMP_ROOT } from '../../dist/testing/tmp.js';
import { median, run } from '../copy/measure.js';
import { type BenchImage, generateImage, LAYER_MIB } from './image.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = STRATUM_BIN;
const SKOPEO = '/usr/bin/skopeo';
const SERVERS = ['stratum', 'registry'] as const;
type ServerName = (typeof SERVERS)[number];

const { values: args } = parseArgs({
  options: {
    reps: { type: 'string', default: '7' },
    rounds: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '32' },
    keep: { type: 'boolean', default: false },
    'image-cache': { type: 'string' },
    'node-args': { type: 'string', default: '' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (args.help) {
  process.stdout.write(`usage: node dist-bench/serve/serve-bench.js [options]
  --reps N           single pulls per registry (default 7; the median is reported)
  --rounds N         rounds of concurrent pulls per registry (default 4)
  --concurrency C    skopeo processes at once in a round (default 32)
  --keep             keep the work directory (image, stores, logs) on tmpfs
  --image-cache DIR  generate the image into DIR once and reuse it in later runs
  --node-args "..."  extra node options for stratum serve (e.g. --cpu-prof --cpu-prof-dir=DIR)
  --out FILE         JSON results (default bench/results/serve-<date>.json)
`);
  process.exit(0);
}

const REPS = Number(args.reps);
const ROUNDS = Number(args.rounds);
const CONCURRENCY = Number(args.concurrency);
for (const [name, v] of [
  ['--reps', REPS],
  ['--rounds', ROUNDS],
  ['--concurrency', CONCURRENCY],
] as const) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} takes a whole number >= 1`);
}

interface RunningServer {
  readonly name: ServerName;
  readonly host: string;
  readonly pid: number;
  stop(): Promise<void>;
}

function waitExit(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await waitExit(child);
  clearTimeout(killer);
}

async function ping(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/v2/`);
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function startDistribution(dir: string, logs: string): Promise<RunningServer> {
  const port = await freePort();
  const config = {
    version: '0.1',
    log: { level: 'error', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: join(dir, 'data') },
      delete: { enabled: true },
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
    health: { storagedriver: { enabled: false } },
  };
  await mkdir(dir, { recursive: true });
  const configPath = join(dir, 'config.yml');
  await writeFile(configPath, JSON.stringify(config, null, 2));
  const child = spawn(REGISTRY_BINARY, ['serve', configPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
  });
  const err: Buffer[] = [];
  child.stderr?.on('data', (c: Buffer) => err.push(c));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 400 && child.exitCode === null; i++) {
    if (await ping(url)) {
      return {
        name: 'registry',
        host: `127.0.0.1:${port}`,
        pid: child.pid ?? 0,
        stop: async () => {
          await stopChild(child);
          await writeFile(join(logs, 'registry.err'), Buffer.concat(err));
        },
      };
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  await stopChild(child);
  throw new Error(`docker-registry did not start: ${Buffer.concat(err).toString().slice(-2000)}`);
}

async function startStratum(root: string, logs: string): Promise<RunningServer> {
  const split = (s: string) => s.split(/\s+/).filter((x) => x !== '');
  const child = spawn(
    process.execPath,
    [...split(args['node-args']), CLI, 'serve', '--addr', '127.0.0.1:0', '--root', root, '--json', '-q'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const err: Buffer[] = [];
  child.stderr?.on('data', (c: Buffer) => err.push(c));
  const address = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        try {
          resolve((JSON.parse(line) as { address: string }).address);
        } catch (e) {
          reject(e);
        }
      }
    });
    child.once('exit', (code) =>
      reject(new Error(`stratum serve exited with ${code}: ${Buffer.concat(err).toString().slice(-2000)}`)),
    );
  });
  return {
    name: 'stratum',
    host: address,
    pid: child.pid ?? 0,
    stop: async () => {
      await stopChild(child);
      await writeFile(join(logs, 'stratum.err'), Buffer.concat(err));
    },
  };
}

/** CPU seconds (user + system) a process has used so far. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[11], fields[12]: utime, stime (clock ticks; 100 per second on Linux)
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Peak resident set size of a process, MiB. */
async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** Run a command; resolves with its wall time in seconds, rejects with its stderr if it fails. */
function timed(argv: readonly string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd as string, rest, { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const s = Number(process.hrtime.bigint() - start) / 1e9;
      if (code === 0) resolve(s);
      else
        reject(
          new Error(`${argv.join(' ')} exited with ${code}: ${Buffer.concat(err).toString().slice(-2000)}`),
        );
    });
  });
}

async function layoutDigest(dir: string): Promise<string> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: { digest: string }[];
  };
  return index.manifests[0]?.digest ?? '';
}

function pullArgv(host: string, dst: string): string[] {
  return [SKOPEO, 'copy', '-q', '--src-tls-verify=false', `docker://${host}/bench:1`, `oci:${dst}:x`];
}

/** Nearest-rank percentile. */
function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const fmt = (x: number, d = 2) => x.toFixed(d);

async function main(): Promise<void> {
  for (const [what, path] of [
    ['skopeo', SKOPEO],
    ['docker-registry', REGISTRY_BINARY],
    ['stratum CLI (npm run build)', CLI],
  ] as const) {
    if (!existsSync(path)) throw new Error(`${what} is missing: ${path}`);
  }
  const work = await mkdtemp(join(TMP_ROOT, 'stratum-bench-serve-'));
  const logs = join(work, 'logs');
  await mkdir(logs);
  const servers: RunningServer[] = [];
  try {
    process.stderr.write(`work directory ${work}\ngenerating the image...\n`);
    const t0 = Date.now();
    let img: BenchImage;
    const cache = args['image-cache'];
    if (cache && existsSync(join(cache, 'bench-image.json'))) {
      img = JSON.parse(await readFile(join(cache, 'bench-image.json'), 'utf8')) as BenchImage;
    } else {
      const dir = cache ?? join(work, 'src');
      if (cache) await rm(cache, { recursive: true, force: true });
      img = await generateImage(dir);
      if (cache) await writeFile(join(cache, 'bench-image.json'), JSON.stringify(img));
    }
    const mb = img.totalSize / 1e6;
    process.stderr.write(
      `  ${img.layers.length} layers (${LAYER_MIB.join(', ')} MiB), ${fmt(mb, 1)} MB, ${img.manifest.digest} (${fmt((Date.now() - t0) / 1000, 1)} s)\n`,
    );

    process.stderr.write('starting docker-registry and stratum serve, pushing the image into each...\n');
    const registry = await startDistribution(join(work, 'registry'), logs);
    servers.push(registry);
    const stratum = await startStratum(join(work, 'store'), logs);
    servers.push(stratum);
    const byName: Record<ServerName, RunningServer> = { stratum, registry };
    for (const s of servers) {
      await run([
        SKOPEO,
        'copy',
        '-q',
        '--dest-tls-verify=false',
        `oci:${img.dir}:${img.ref}`,
        `docker://${s.host}/bench:1`,
      ]);
      const check = join(work, `check-${s.name}`);
      await timed(pullArgv(s.host, check));
      const got = await layoutDigest(check);
      if (got !== img.manifest.digest)
        throw new Error(`${s.name} serves ${got}, want ${img.manifest.digest}`);
      await rm(check, { recursive: true, force: true });
    }

    let n = 0;
    const fresh = () => join(work, `pull-${n++}`);
    const cpuUsed: Record<string, Record<ServerName, number>> = {
      single: { stratum: 0, registry: 0 },
      concurrent: { stratum: 0, registry: 0 },
    };

    process.stderr.write(`single pulls: ${REPS} per registry\n`);
    const single: Record<ServerName, number[]> = { stratum: [], registry: [] };
    for (let rep = 0; rep < REPS; rep++) {
      const order: readonly ServerName[] = rep % 2 === 0 ? SERVERS : [...SERVERS].reverse();
      for (const name of order) {
        const s = byName[name];
        const dst = fresh();
        const cpu0 = await cpuSeconds(s.pid);
        const secs = await timed(pullArgv(s.host, dst));
        cpuUsed.single![name] += (await cpuSeconds(s.pid)) - cpu0;
        if ((await layoutDigest(dst)) !== img.manifest.digest)
          throw new Error(`${name}: wrong digest pulled`);
        await rm(dst, { recursive: true, force: true });
        single[name].push(secs);
        process.stderr.write(
          `  single      ${name.padEnd(8)} #${rep}  ${fmt(secs).padStart(6)} s  ${fmt(mb / secs, 0).padStart(5)} MB/s\n`,
        );
      }
    }

    process.stderr.write(`concurrent pulls: ${ROUNDS} rounds of ${CONCURRENCY} per registry\n`);
    const latencies: Record<ServerName, number[]> = { stratum: [], registry: [] };
    const roundWall: Record<ServerName, number[]> = { stratum: [], registry: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order: readonly ServerName[] = round % 2 === 0 ? SERVERS : [...SERVERS].reverse();
      for (const name of order) {
        const s = byName[name];
        const dsts = Array.from({ length: CONCURRENCY }, fresh);
        const cpu0 = await cpuSeconds(s.pid);
        const start = process.hrtime.bigint();
        const secs = await Promise.all(dsts.map((d) => timed(pullArgv(s.host, d))));
        const wall = Number(process.hrtime.bigint() - start) / 1e9;
        cpuUsed.concurrent![name] += (await cpuSeconds(s.pid)) - cpu0;
        for (const d of dsts) {
          if ((await layoutDigest(d)) !== img.manifest.digest)
            throw new Error(`${name}: wrong digest pulled`);
        }
        await Promise.all(dsts.map((d) => rm(d, { recursive: true, force: true })));
        latencies[name].push(...secs);
        roundWall[name].push(wall);
        process.stderr.write(
          `  concurrent  ${name.padEnd(8)} #${round}  ${fmt(wall).padStart(6)} s  ${fmt((CONCURRENCY * mb) / wall, 0).padStart(5)} MB/s  p99 ${fmt(percentile(secs, 99))} s\n`,
        );
      }
    }

    const rss: Record<ServerName, number> = {
      stratum: await peakRssMiB(stratum.pid),
      registry: await peakRssMiB(registry.pid),
    };
    const stat = (name: ServerName) => {
      const singleMedian = median(single[name]);
      const wallMedian = median(roundWall[name]);
      return {
        singleMedianSeconds: singleMedian,
        singleSeconds: single[name],
        singleMBps: mb / singleMedian,
        singleP99Seconds: percentile(single[name], 99),
        concurrentRoundSeconds: roundWall[name],
        concurrentMBps: (CONCURRENCY * mb) / wallMedian,
        concurrentP50Seconds: percentile(latencies[name], 50),
        concurrentP99Seconds: percentile(latencies[name], 99),
        serverCpuSeconds: { single: cpuUsed.single![name], concurrent: cpuUsed.concurrent![name] },
        serverPeakRssMiB: rss[name],
      };
    };
    const s = stat('stratum');
    const r = stat('registry');
    const rows: [string, string, string, string][] = [
      [
        'single pull, throughput (MB/s, median)',
        fmt(s.singleMBps, 0),
        fmt(r.singleMBps, 0),
        fmt(s.singleMBps / r.singleMBps),
      ],
      [
        'single pull, p99 latency (s)',
        fmt(s.singleP99Seconds),
        fmt(r.singleP99Seconds),
        fmt(s.singleP99Seconds / r.singleP99Seconds),
      ],
      [
        `${CONCURRENCY} concurrent pulls, aggregate throughput (MB/s, median round)`,
        fmt(s.concurrentMBps, 0),
        fmt(r.concurrentMBps, 0),
        fmt(s.concurrentMBps / r.concurrentMBps),
      ],
      [
        `${CONCURRENCY} concurrent pulls, round wall time min / max (s)`,
        `${fmt(Math.min(...roundWall.stratum))} / ${fmt(Math.max(...roundWall.stratum))}`,
        `${fmt(Math.min(...roundWall.registry))} / ${fmt(Math.max(...roundWall.registry))}`,
        '',
      ],
      [
        `${CONCURRENCY} concurrent pulls, p50 latency (s)`,
        fmt(s.concurrentP50Seconds),
        fmt(r.concurrentP50Seconds),
        fmt(s.concurrentP50Seconds / r.concurrentP50Seconds),
      ],
      [
        `${CONCURRENCY} concurrent pulls, p99 latency (s)`,
        fmt(s.concurrentP99Seconds),
        fmt(r.concurrentP99Seconds),
        fmt(s.concurrentP99Seconds / r.concurrentP99Seconds),
      ],
      [
        'server CPU, all single pulls (s)',
        fmt(s.serverCpuSeconds.single),
        fmt(r.serverCpuSeconds.single),
        fmt(s.serverCpuSeconds.single / r.serverCpuSeconds.single),
      ],
      [
        'server CPU, all concurrent rounds (s)',
        fmt(s.serverCpuSeconds.concurrent),
        fmt(r.serverCpuSeconds.concurrent),
        fmt(s.serverCpuSeconds.concurrent / r.serverCpuSeconds.concurrent),
      ],
      [
        'server peak RSS (MiB)',
        fmt(s.serverPeakRssMiB, 0),
        fmt(r.serverPeakRssMiB, 0),
        fmt(s.serverPeakRssMiB / r.serverPeakRssMiB),
      ],
    ];
    const header: [string, string, string, string] = [
      'measure',
      'stratum serve',
      'docker-registry',
      'stratum / registry',
    ];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((c) => c[i]!.length)));
    const line = (c: readonly string[]) =>
      c.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  ');
    process.stdout.write(`\n${line(header)}\n${rows.map(line).join('\n')}\n\n`);

    const when = new Date().toISOString();
    const machine = {
      cpu: cpus()[0]?.model ?? 'unknown',
      cores: cpus().length,
      node: process.version,
      skopeo: (await run([SKOPEO, '--version'])).trim(),
      registry: (await run([REGISTRY_BINARY, '--version']).catch(() => 'docker-registry')).trim(),
      commit: (await run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']).catch(() => '')).trim(),
    };
    const md = [
      `skopeo copy docker://… oci:… of a ${fmt(mb, 0)} MB image (${img.layers.length} gzip layers); ${REPS} single pulls per registry ` +
        `(median), ${ROUNDS} rounds of ${CONCURRENCY} concurrent skopeo processes (latency percentiles over all ${ROUNDS * CONCURRENCY} pulls); ` +
        `both registries are separate processes on 127.0.0.1 with storage on tmpfs and access logs off; ${machine.cores} cores, ${machine.cpu}; ` +
        `${machine.skopeo}; ${machine.registry}; node ${machine.node}. Ratios above 1 favour stratum for throughput, below 1 for latency, CPU and RSS.`,
      '',
      `| ${header.join(' | ')} |`,
      '|---|---:|---:|---:|',
      ...rows.map((c) => `| ${c.join(' | ')} |`),
    ].join('\n');
    process.stdout.write(`${md}\n`);

    const out =
      args.out ?? join(ROOT, 'bench', 'results', `serve-${when.slice(0, 19).replace(/:/g, '-')}.json`);
    await mkdir(join(out, '..'), { recursive: true });
    await writeFile(
      out,
      `${JSON.stringify(
        {
          benchmark: 'serve',
          date: when,
          machine,
          reps: REPS,
          rounds: ROUNDS,
          concurrency: CONCURRENCY,
          nodeArgs: args['node-args'],
          image: { digest: img.manifest.digest, totalBytes: img.totalSize, layers: img.layers },
          results: { stratum: s, registry: r },
          latencies,
          markdown: md,
        },
        null,
        2,
      )}\n`,
    );
    process.stderr.write(`\nresults: ${out}\n`);
  } finally {
    for (const s of servers) await s.stop().catch(() => {});
    if (args.keep) process.stderr.write(`kept ${work}\n`);
    else await rm(work, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/serve: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
