// `stratum build`: parses its options and calls src/build (through src/ops); no logic of its own.

import type { BuildEvent } from '../build/build.js';
import { parsePlatform } from '../image/platform.js';
import { familiarString, parseNormalizedReference } from '../reference/reference.js';
import { parse, UsageError } from './args.js';
import type { Command } from './commands.js';
import { help, shortDigest } from './format.js';
import { formatBytes } from './progress.js';

const DETAIL = `
Builds the Dockerfile in CONTEXT (or -f FILE) into the local store. Each instruction that
changes files makes one layer; steps are cached in the store (build-cache/) and reused when
nothing they depend on changed. Progress goes to stderr; the image's manifest digest (the ID
'stratum images' shows) is printed last.

options:
  -f, --file FILE          the Dockerfile (default CONTEXT/Dockerfile)
  -t, --tag NAME[:TAG]     name the image (repeatable)
  --build-arg K=V          set a build arg (K alone takes its value from the environment)
  --target STAGE           build this stage (default: the last)
  --no-cache               run every step, ignoring the cache
  --timestamp T            created times = T (seconds since the epoch, or an ISO date) and layer
                           mtimes clamped to T, for reproducible images (default SOURCE_DATE_EPOCH)
  --network none|host      RUN's network (default host)
  --platform OS/ARCH[/V]   the platform of base images taken from an index
  --pull=false             do not pull base images missing from the store
  --push DEST              copy the image to DEST too (docker://HOST/REPO:TAG, oci:DIR:TAG, ...)
  --json                   one JSON object per event, and the result
  -q, --quiet              no progress, no RUN output: only the manifest digest
  --tls-verify=false       do not verify registry certificates; allow plain HTTP
`;

function parseTimestamp(s: string): number {
  if (/^\d+$/.test(s)) return Number(s);
  const t = Date.parse(s);
  if (Number.isNaN(t) || t < 0) {
    throw new UsageError(
      `--timestamp takes seconds since the epoch or an ISO date, not ${JSON.stringify(s)}`,
    );
  }
  return Math.floor(t / 1000);
}

export const buildCommands: Readonly<Record<string, Command>> = {
  build: {
    summary: 'Build an image from a Dockerfile into the local store',
    usage:
      'stratum build [-f FILE] [-t NAME:TAG]... [--build-arg K=V]... [--target STAGE] [--no-cache] [--timestamp T] [--network none|host] [--push DEST] CONTEXT',
    async run(argv, ctx) {
      const p = parse(
        argv,
        {
          file: { type: 'string', short: 'f' },
          tag: { type: 'string', short: 't', multiple: true },
          'build-arg': { type: 'string', multiple: true },
          target: { type: 'string' },
          'no-cache': { type: 'boolean' },
          timestamp: { type: 'string' },
          network: { type: 'string' },
          platform: { type: 'string' },
          pull: { type: 'string' },
          push: { type: 'string' },
        },
        { min: 1, max: 1, usage: this.usage },
      );
      const v = p.values;
      if (v.help) return help(ctx, this, DETAIL);
      const buildArgs: Record<string, string> = {};
      for (const a of v['build-arg'] ?? []) {
        const eq = a.indexOf('=');
        const name = eq === -1 ? a : a.slice(0, eq);
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
          throw new UsageError(`--build-arg takes NAME=VALUE, not ${JSON.stringify(a)}`);
        if (eq === -1) {
          const fromEnv = ctx.env[name];
          if (fromEnv !== undefined) buildArgs[name] = fromEnv;
        } else buildArgs[name] = a.slice(eq + 1);
      }
      if (v.network !== undefined && v.network !== 'none' && v.network !== 'host') {
        throw new UsageError(`--network takes none or host, not ${JSON.stringify(v.network)}`);
      }
      if (v.pull !== undefined && v.pull !== 'true' && v.pull !== 'false') {
        throw new UsageError('--pull takes true or false');
      }
      let platform: ReturnType<typeof parsePlatform> | undefined;
      try {
        platform = v.platform === undefined ? undefined : parsePlatform(v.platform);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const quiet = v.quiet === true;
      const json = v.json === true && !quiet;
      const log = (line: string): void => {
        if (!quiet && !json) ctx.stderr.write(`${line}\n`);
      };
      const onEvent = (e: BuildEvent): void => {
        if (quiet) return;
        if (json) {
          const { type, ...rest } = e;
          ctx.stdout.write(`${JSON.stringify({ event: type, ...rest })}\n`);
          return;
        }
        switch (e.type) {
          case 'step':
            log(`STEP ${e.step}/${e.count}: ${e.text}`);
            break;
          case 'cache-hit':
            log('--> Using cache');
            break;
          case 'layer':
            log(`--> ${shortDigest(e.digest)} (${formatBytes(e.size)})`);
            break;
          case 'empty-layer':
            log('--> no changes: no layer');
            break;
          case 'pull':
            log(`Pulling ${e.ref}`);
            break;
          case 'warning':
            log(`warning: ${e.message}`);
            break;
          case 'tagged':
            log(`Tagged ${familiar(e.ref)}`);
            break;
        }
      };
      const [context] = p.positionals as [string];
      // loaded on use: the build pulls in the runtime and the snapshot code
      const { buildImage } = await import('../ops/build.js');
      const r = await buildImage(context, {
        ...(v.root ? { root: v.root } : {}),
        ...(v['tls-verify'] === 'false' ? { tlsVerify: false } : {}),
        ...(v.file ? { dockerfile: v.file } : {}),
        tags: v.tag ?? [],
        buildArgs,
        ...(v.target ? { target: v.target } : {}),
        ...(v['no-cache'] ? { noCache: true } : {}),
        ...(v.timestamp !== undefined ? { timestamp: parseTimestamp(v.timestamp) } : {}),
        ...(v.network ? { network: v.network as 'none' | 'host' } : {}),
        ...(platform ? { platform } : {}),
        ...(v.pull === 'false' ? { pull: false } : {}),
        ...(v.push ? { push: v.push } : {}),
        ...(quiet ? {} : { output: ctx.stderr }),
        env: ctx.env,
        signal: ctx.signal,
        onEvent,
      });
      // the image is named by its manifest digest, as `images`, `inspect` and `push` name it
      if (quiet) {
        ctx.stdout.write(`${r.manifest.digest}\n`);
      } else if (json) {
        ctx.stdout.write(
          `${JSON.stringify({
            event: 'result',
            imageId: r.imageId,
            digest: r.manifest.digest,
            tags: r.tags,
            steps: r.steps,
            cacheHits: r.cacheHits,
            layers: r.layers,
            builtLayers: r.builtLayers,
            ...(r.pushed ? { pushed: r.pushed.descriptor.digest } : {}),
          })}\n`,
        );
      } else {
        if (r.pushed) log(`Pushed ${v.push} (${r.pushed.descriptor.digest})`);
        log(
          `Built ${r.tags.length > 0 ? r.tags.map(familiar).join(', ') : 'an untagged image'} (${r.cacheHits}/${r.steps} steps cached, ${r.builtLayers} new layers; config ${shortDigest(r.imageId)})`,
        );
        ctx.stdout.write(`${r.manifest.digest}\n`);
      }
      return 0;
    },
  },
};

/** A store name as people write it (`docker.io/library/app:1` -> `app:1`). */
function familiar(ref: string): string {
  try {
    return familiarString(parseNormalizedReference(ref));
  } catch {
    return ref;
  }
}
