// directGet against scripted raw TCP servers: every body framing (Content-Length, chunked
// split at every byte, end of connection), interim answers, hostile heads, drops, the
// idle timeout and aborts; bodies read as streams and taken directly with backpressure.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DirectReadable } from '../internal/direct.js';
import { directGet } from './http1.js';

type Script = (socket: Socket, request: string) => void | Promise<void>;

let server: Server;
let port = 0;
let script: Script = () => {};
const requests: string[] = [];

before(async () => {
  server = createServer((socket) => {
    let head = '';
    const onData = (b: Buffer) => {
      head += b.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      requests.push(head);
      Promise.resolve(script(socket, head)).catch(() => socket.destroy());
    };
    socket.on('data', onData);
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as { port: number }).port;
});

after(() => server.close());

const get = (opts: { signal?: AbortSignal; idleTimeoutMs?: number; headers?: Record<string, string> } = {}) =>
  directGet({
    url: new URL(`http://127.0.0.1:${port}/v2/app/blobs/sha256:abc?x=1`),
    headers: opts.headers ?? { 'user-agent': 'test' },
    rejectUnauthorized: true,
    idleTimeoutMs: opts.idleTimeoutMs ?? 5000,
    signal: opts.signal,
  });

async function readStream(body: DirectReadable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of body) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** Take a body directly; `slow` pauses the source after every write for a moment. */
function readDirect(body: DirectReadable, slow = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const handle = body.sinkTo({
      write(view) {
        out.push(Buffer.from(view)); // a copy: the view is only lent
        if (!slow) return true;
        setTimeout(() => handle.resume(), 1);
        return false;
      },
      end: () => resolve(Buffer.concat(out)),
      error: reject,
    });
  });
}

const blob = randomBytes(700_000);

function chunked(data: Buffer, size: number, ext = ''): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) {
    const part = data.subarray(i, i + size);
    parts.push(Buffer.from(`${part.length.toString(16)}${ext}\r\n`), part, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\nx-trailer: yes\r\n\r\n'));
  return Buffer.concat(parts);
}

/** Send `bytes` in pieces of `step` bytes, each written separately. */
async function dribble(socket: Socket, bytes: Buffer, step: number): Promise<void> {
  for (let i = 0; i < bytes.length; i += step) {
    socket.write(bytes.subarray(i, i + step));
    if (step < 64) await sleep(0);
  }
}

describe('directGet', () => {
  it('sends a well-formed GET with Host and Connection: close, and reads a Content-Length body', async () => {
    script = (s) => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\nX-Multi: a\r\nx-multi: b\r\n\r\n`);
      s.end(blob);
    };
    const res = await get({ headers: { 'user-agent': 'test', authorization: 'Bearer t' } });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.headers['x-multi'], ['a', 'b']);
    assert.deepEqual(await readStream(res.body), blob);
    const req = requests.at(-1) ?? '';
    assert.match(req, /^GET \/v2\/app\/blobs\/sha256:abc\?x=1 HTTP\/1\.1\r\n/);
    assert.match(req, new RegExp(`\r\nHost: 127\\.0\\.0\\.1:${port}\r\n`));
    assert.match(req, /\r\nauthorization: Bearer t\r\n/);
    assert.match(req, /\r\nConnection: close\r\n\r\n$/);
  });

  for (const step of [1, 7, 4096, 100_000]) {
    it(`reads a chunked body (with extensions and trailers) that arrives ${step} bytes at a time, directly`, async () => {
      // tiny writes each wait a turn of the event loop: a small body keeps them few
      const small = step < 64;
      const want = small ? blob.subarray(0, 600) : blob;
      script = async (s) => {
        const head = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
        const body = small ? chunked(want, 200, ';name=v') : chunked(want, 65_536, ';a=b');
        await dribble(s, Buffer.concat([head, body]), step);
        s.end();
      };
      const res = await get();
      assert.deepEqual(await readDirect(res.body, step === 4096), want);
    });
  }

  it('a body framed by the end of the connection, with the head and body in one write', async () => {
    script = (s) => {
      s.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\n\r\n'), blob]));
    };
    const res = await get();
    // nothing is read until the consumer asks, even though everything has arrived
    await sleep(20);
    assert.deepEqual(await readDirect(res.body), blob);
  });

  it('skips interim 1xx answers', async () => {
    script = (s) => {
      s.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n');
      s.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    };
    const res = await get();
    assert.equal(res.statusCode, 200);
    assert.equal((await readStream(res.body)).toString(), 'hello');
  });

  it('an empty body ends at once, read either way', async () => {
    script = (s) => {
      s.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    };
    assert.equal((await readStream((await get()).body)).length, 0);
    assert.equal((await readDirect((await get()).body)).length, 0);
  });

  it('a body cut short fails with ECONNRESET (what a resume acts on), read either way', async () => {
    script = (s) => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
      s.end(blob.subarray(0, 100_000));
    };
    await assert.rejects(readStream((await get()).body), { code: 'ECONNRESET' });
    await assert.rejects(readDirect((await get()).body), { code: 'ECONNRESET' });
    script = (s) => {
      s.end(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly part`);
    };
    await assert.rejects(readDirect((await get()).body), { code: 'ECONNRESET' });
  });

  it('a connection closed before any answer is a network error', async () => {
    script = (s) => {
      s.end();
    };
    await assert.rejects(get(), { code: 'ECONNRESET' });
  });

  const hostile: [string, string][] = [
    ['not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n'],
    ['a status line with no code', 'HTTP/1.1 OK\r\n\r\n'],
    ['a header without a colon', 'HTTP/1.1 200 OK\r\nbroken header\r\n\r\n'],
    ['a folded header', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\n\r\n'],
    [
      'two different Content-Lengths',
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
    ],
    ['a negative Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n'],
    ['a transfer coding other than chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n'],
  ];
  for (const [name, answer] of hostile) {
    it(`refuses ${name} with a clear error`, async () => {
      script = (s) => {
        s.end(answer);
      };
      await assert.rejects(get(), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'HPE_INVALID');
        assert.match(e.message, /malformed HTTP answer/);
        return true;
      });
    });
  }

  it('refuses a bad chunk size in the body', async () => {
    script = (s) => {
      s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n');
    };
    await assert.rejects(readDirect((await get()).body), { code: 'HPE_INVALID' });
  });

  it('refuses headers that never end instead of buffering them', async () => {
    script = async (s) => {
      s.write('HTTP/1.1 200 OK\r\n');
      const line = Buffer.from(`X-Pad: ${'a'.repeat(1000)}\r\n`);
      for (let i = 0; i < 80 && !s.destroyed; i++) {
        s.write(line);
        await sleep(0);
      }
    };
    await assert.rejects(get(), /headers larger than/);
  });

  it('a header value carrying a line break is refused before anything is sent', async () => {
    const before = requests.length;
    await assert.rejects(get({ headers: { 'x-a': 'v\r\nInjected: 1' } }), TypeError);
    assert.equal(requests.length, before);
  });

  it('a server that stops sending is given up after the idle timeout', async () => {
    script = (s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc');
    };
    const res = await get({ idleTimeoutMs: 200 });
    await assert.rejects(readDirect(res.body), { code: 'ETIMEDOUT' });
  });

  it('an abort stops a request waiting for its answer, and a body being read', async () => {
    script = () => {}; // never answers
    const ac = new AbortController();
    const p = get({ signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(p, { code: 'ERR_ABORTED' });

    script = (s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc');
    };
    const ac2 = new AbortController();
    const res = await get({ signal: ac2.signal });
    setTimeout(() => ac2.abort(), 20);
    await assert.rejects(readDirect(res.body), { code: 'ERR_ABORTED' });
  });

  it('a body taken directly is held back while the consumer is slow, not buffered', async () => {
    const big = randomBytes(24 * 1024 * 1024);
    script = (s) => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`);
      s.end(big);
    };
    const res = await get();
    let taken = 0;
    let paused = false;
    let whilePaused = 0;
    const got = await new Promise<number>((resolve, reject) => {
      const handle = res.body.sinkTo({
        write(view) {
          if (paused) whilePaused++;
          taken += view.byteLength;
          paused = true;
          setTimeout(() => {
            paused = false;
            handle.resume();
          }, 1);
          return false;
        },
        end: () => resolve(taken),
        error: reject,
      });
    });
    assert.equal(got, big.length);
    // one read is one view: after a false, nothing more comes until resume()
    assert.equal(whilePaused, 0);
  });
});
