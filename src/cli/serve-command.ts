// `stratum serve`: the local store as an OCI registry, until SIGINT/SIGTERM. Parses the
// options, opens the store, loads the htpasswd file and the certificate, starts
// createRegistryServer, prints where it listens, and closes gracefully (requests in flight
// finish, upload files and leases are cleaned up).

import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIPv6 } from 'node:net';
import { StratumError } from '../errors/errors.js';
import { defaultStoreRoot, openStore } from '../layout/store.js';
import type { Htpasswd } from '../server/htpasswd.js';
import { parse, UsageError } from './args.js';
import type { Command } from './commands.js';

export const DEFAULT_SERVE_ADDR = '127.0.0.1:5000';

const SERVE_OPTIONS = {
  addr: { type: 'string' },
  htpasswd: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'read-only': { type: 'boolean' },
} as const;

const DETAIL = `
options:
  --addr HOST:PORT          where to listen (default ${DEFAULT_SERVE_ADDR}; port 0 picks a free one;
                            [::1]:5000 for IPv6; 0.0.0.0:5000 for every interface)
  --root DIR                the store to serve (default $STRATUM_ROOT)
  --htpasswd FILE           require Basic auth against FILE (bcrypt entries: htpasswd -B)
  --tls-cert F --tls-key F  serve HTTPS with this certificate and key (PEM)
  --read-only               refuse pushes and deletes (405)
  -q, --quiet               no access log (it goes to stderr otherwise)
  --json                    print where it listens as JSON

Repositories are store names read the way docker reads them: the store's
docker.io/library/alpine:latest is library/alpine:latest (or alpine:latest), and a push
to HOST/team/app:1 is stored as docker.io/team/app:1 (stratum images shows team/app 1).
`;

/** `host:port` (IPv6 in brackets) -> parts; a usage error says what is wrong. */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(addr);
  if (!m) throw new UsageError(`--addr takes HOST:PORT (or [IPv6]:PORT), not ${JSON.stringify(addr)}`);
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined && !isIPv6(m[1])) throw new UsageError(`--addr: ${m[1]} is not an IPv6 address`);
  const port = Number(m[3]);
  if (port > 65535) throw new UsageError(`--addr: port ${port} is out of range (0-65535)`);
  return { host: host === '' ? '0.0.0.0' : host, port };
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(
        new StratumError(
          'ERR_INVALID_ARGUMENT',
          e.code === 'EADDRINUSE'
            ? `cannot listen on ${host}:${port}: the address is in use`
            : `cannot listen on ${host}:${port}: ${e.message}`,
          { cause: e },
        ),
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

export const serveCommand: Command = {
  summary: 'Serve the local store as an OCI registry (pull, push, delete, referrers)',
  usage:
    'stratum serve [--addr HOST:PORT] [--root DIR] [--htpasswd FILE] [--tls-cert F --tls-key F] [--read-only]',
  async run(argv, ctx) {
    const p = parse(argv, SERVE_OPTIONS, { min: 0, max: 0, usage: this.usage });
    if (p.values.help) {
      ctx.stdout.write(`${this.summary}\n\nusage: ${this.usage}\n${DETAIL}`);
      return 0;
    }
    const { host, port } = parseAddr(p.values.addr ?? DEFAULT_SERVE_ADDR);
    const certFile = p.values['tls-cert'];
    const keyFile = p.values['tls-key'];
    if ((certFile === undefined) !== (keyFile === undefined)) {
      throw new UsageError('--tls-cert and --tls-key go together');
    }
    const readOnly = p.values['read-only'] === true;
    const root = p.values.root ?? defaultStoreRoot(ctx.env);
    // the server's code loads only when a server starts (every CLI run pays for what it imports)
    const { closeRegistryServer, createRegistryServer } = await import('../server/server.js');
    const htpasswd: Htpasswd | undefined =
      p.values.htpasswd === undefined
        ? undefined
        : await (await import('../server/htpasswd.js')).Htpasswd.load(p.values.htpasswd);
    for (const w of htpasswd?.warnings ?? []) ctx.stderr.write(`stratum serve: warning: ${w}\n`);
    if (htpasswd && htpasswd.users.length === 0) {
      throw new StratumError(
        'ERR_INVALID_ARGUMENT',
        `${p.values.htpasswd} has no bcrypt entries: nobody could log in`,
      );
    }
    const tls =
      certFile !== undefined && keyFile !== undefined
        ? { cert: await readFile(certFile), key: await readFile(keyFile) }
        : undefined;
    const store = await openStore(readOnly ? { root, readOnly: true } : { root });
    let server: Server | undefined;
    try {
      server = createRegistryServer({
        store,
        readOnly,
        ...(htpasswd ? { htpasswd } : {}),
        ...(tls ? { tls } : {}),
        logger: p.values.quiet ? false : (line) => ctx.stderr.write(`${line}\n`),
        onError: (e) => ctx.stderr.write(`stratum serve: ${e instanceof Error ? e.message : String(e)}\n`),
      });
      const addr = await listen(server, host, port);
      const shown =
        addr.family === 'IPv6' ? `[${addr.address}]:${addr.port}` : `${addr.address}:${addr.port}`;
      const url = `${tls ? 'https' : 'http'}://${shown}`;
      if (p.values.json) {
        ctx.stdout.write(
          `${JSON.stringify({ address: shown, url, root: store.root, readOnly, tls: tls !== undefined, auth: htpasswd !== undefined })}\n`,
        );
      } else {
        ctx.stdout.write(
          `Serving ${store.root} at ${url}${readOnly ? ' (read-only)' : ''}${htpasswd ? ' (Basic auth)' : ''}; Ctrl-C stops\n`,
        );
      }
      if (!ctx.signal.aborted) {
        await new Promise<void>((resolve) =>
          ctx.signal.addEventListener('abort', () => resolve(), { once: true }),
        );
      }
      if (!p.values.json && !p.values.quiet)
        ctx.stderr.write('stratum serve: stopping (requests in flight finish first)\n');
      await closeRegistryServer(server);
      server = undefined;
      return 0;
    } finally {
      if (server) await closeRegistryServer(server, { graceMs: 0 }).catch(() => {});
      await store.close();
    }
  },
};
