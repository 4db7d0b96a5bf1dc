// `stratum unpack`: an image into an OCI runtime bundle. Parses options, calls ops/unpack,
// prints one line per layer on stderr (or JSON events with --json) and the result.

import { parsePlatform } from '../image/platform.js';
import { parse, UsageError } from './args.js';
import type { Command } from './commands.js';
import { shortDigest } from './format.js';
import { formatBytes } from './progress.js';

const DETAIL = `
Makes DIR/rootfs (every layer applied in order, diffIDs checked) and DIR/config.json (the
OCI runtime config derived from the image config, as umoci unpack makes it). DIR is created
if missing; an existing DIR must not hold rootfs or config.json. Nothing is left behind if
unpacking fails or is interrupted. Run the bundle with: runc run --bundle DIR NAME

options:
  --rootless              map container root to the calling user (user namespace, no cgroups)
  --platform OS/ARCH[/V]  pick this platform from an index (default: this machine's)
  --hostname NAME         the container's hostname in config.json (default: stratum)
  --json                  one JSON object per event, and the result
  -q, --quiet             no progress
  --tls-verify=false      do not verify registry certificates; allow plain HTTP
`;

export const unpackCommand: Command = {
  summary: 'Unpack an image into an OCI runtime bundle (rootfs + config.json)',
  usage: 'stratum unpack [--rootless] [--platform OS/ARCH[/V]] LOCATION DIR',
  async run(argv, ctx) {
    const p = parse(
      argv,
      { rootless: { type: 'boolean' }, platform: { type: 'string' }, hostname: { type: 'string' } },
      { min: 2, max: 2, usage: this.usage },
    );
    const v = p.values;
    if (v.help) {
      ctx.stdout.write(`${this.summary}\n\nusage: ${this.usage}\n${DETAIL}`);
      return 0;
    }
    let platform: ReturnType<typeof parsePlatform> | undefined;
    try {
      platform = v.platform === undefined ? undefined : parsePlatform(v.platform);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (v.hostname !== undefined && !/^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$/.test(v.hostname)) {
      throw new UsageError(
        `--hostname takes a host name (letters, digits, '.', '-'), not ${JSON.stringify(v.hostname)}`,
      );
    }
    const [location, dir] = p.positionals as [string, string];
    const log = (line: string): void => {
      if (!v.quiet && !v.json) ctx.stderr.write(`${line}\n`);
    };
    const { unpack } = await import('../ops/unpack.js');
    const r = await unpack(location, dir, {
      ...(v.root ? { root: v.root } : {}),
      ...(v['tls-verify'] === 'false' ? { tlsVerify: false } : {}),
      ...(v.rootless ? { rootless: true } : {}),
      ...(platform ? { platform } : {}),
      ...(v.hostname ? { hostname: v.hostname } : {}),
      signal: ctx.signal,
      onProgress: (e) => {
        if (v.json && !v.quiet) {
          if (e.type === 'layer-progress') return;
          const { type, ...rest } = e;
          ctx.stdout.write(`${JSON.stringify({ event: type, ...rest })}\n`);
          return;
        }
        if (e.type === 'layer-start') {
          log(
            `${shortDigest(e.layer.digest)}: Unpacking layer ${e.index + 1}/${e.count} (${formatBytes(e.layer.size)})`,
          );
        } else if (e.type === 'warning') {
          log(`${shortDigest(e.layer.digest)}: warning: ${e.warning.path}: ${e.warning.message}`);
        } else if (e.type === 'layer-done') {
          log(`${shortDigest(e.layer.digest)}: Done (diffID ${shortDigest(e.diffId)})`);
        }
      },
    });
    if (v.json) {
      ctx.stdout.write(
        `${JSON.stringify({ event: 'result', bundle: r.bundle, digest: r.manifest.digest, layers: r.diffIds.length })}\n`,
      );
    } else {
      ctx.stdout.write(
        `Unpacked ${location} -> ${r.bundle}\nDigest: ${r.manifest.digest}\nLayers: ${r.diffIds.length}\nRun it: runc run --bundle ${r.bundle} NAME\n`,
      );
    }
    return 0;
  },
};
