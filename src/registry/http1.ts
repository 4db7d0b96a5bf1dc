// A lean HTTP/1.1 GET for blob downloads, the bulk of every pull. Each download gets its
// own connection (`Connection: close`), read into one reused 256 KiB buffer (the socket's
// `onread`), and its body is a DirectReadable: a consumer that takes it directly (a blob
// reader hashing into a layout's write buffers) sees views of that buffer, so no chunk is
// allocated, queued through stream stages or garbage collected. A general-purpose client
// (undici) allocates, parses in WebAssembly and queues every 64 KiB; on a loopback pull of
// 229 MB that cost more CPU than hashing.
//
// Only what a GET needs: the status line and headers (bounded), 1xx answers skipped, a body
// framed by Content-Length, chunked transfer coding or the end of the connection, an idle
// timeout and an abort signal. Redirects, authentication and retries stay with the caller
// (RegistryClient). TLS goes through node:tls with the caller's verification settings.

import { connect as netConnect, type Socket } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect } from 'node:tls';
import { abortError } from '../errors/errors.js';
import { DirectReadable } from '../internal/direct.js';

export interface DirectGetOptions {
  readonly url: URL;
  /** Request headers (names in any case); Host and Connection are set here. */
  readonly headers: Readonly<Record<string, string>>;
  readonly rejectUnauthorized: boolean;
  readonly ca?: readonly (string | Buffer)[] | undefined;
  /** No byte for this long (connecting, waiting, or mid-body) fails the request. */
  readonly idleTimeoutMs: number;
  readonly signal?: AbortSignal | null | undefined;
}

export interface DirectResponse {
  readonly statusCode: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: HttpBody;
}

/** Bytes read from the socket at a time (one buffer per connection, reused). */
const READ_BUFFER = 256 * 1024;
/** The status line and headers together may not be larger than this. */
const MAX_HEAD = 64 * 1024;
/** A chunk-size line (with extensions) or trailer line may not be longer than this. */
const MAX_LINE = 4096;

/** A malformed answer: the kind of failure a retry or resume may cure. */
export class HttpProtocolError extends Error {
  readonly code = 'HPE_INVALID';
  constructor(message: string) {
    super(message);
    this.name = 'HttpProtocolError';
  }
}

function protocolError(what: string): HttpProtocolError {
  return new HttpProtocolError(`the server sent a malformed HTTP answer: ${what}`);
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const UNSAFE_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;

function requestHead(url: URL, headers: Readonly<Record<string, string>>): string {
  let head = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (lower === 'host' || lower === 'connection' || lower === 'content-length') continue;
    if (!TOKEN.test(name) || UNSAFE_VALUE.test(value)) {
      throw new TypeError(`invalid HTTP header ${JSON.stringify(name)}`);
    }
    head += `${name}: ${value}\r\n`;
  }
  return `${head}Connection: close\r\n\r\n`;
}

type Framing =
  | { readonly kind: 'length'; remaining: number }
  | { readonly kind: 'close' }
  | { readonly kind: 'chunked' };

interface Head {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
}

function parseHead(text: string): Head {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) throw protocolError(`status line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
  const headers: Record<string, string | string[]> = Object.create(null);
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw protocolError(`header line ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw protocolError(`header name ${JSON.stringify(name.slice(0, 80))}`);
    const value = line.slice(colon + 1).trim();
    const key = name.toLowerCase();
    const had = headers[key];
    headers[key] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return { status: Number(m[1]), headers };
}

function framingOf(head: Head): Framing {
  if (head.status === 204 || head.status === 304) return { kind: 'length', remaining: 0 };
  const te = head.headers['transfer-encoding'];
  if (te !== undefined) {
    const codings = (Array.isArray(te) ? te.join(',') : te)
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== '');
    if (codings.at(-1) !== 'chunked' || codings.length !== 1) {
      throw protocolError(`unsupported transfer coding ${JSON.stringify(codings.join(', '))}`);
    }
    return { kind: 'chunked' };
  }
  const cl = head.headers['content-length'];
  if (cl !== undefined) {
    const values = new Set((Array.isArray(cl) ? cl : [cl]).flatMap((v) => v.split(',').map((s) => s.trim())));
    const [only] = values;
    if (values.size !== 1 || only === undefined || !/^\d{1,15}$/.test(only)) {
      throw protocolError(`Content-Length ${JSON.stringify([...values].join(', ').slice(0, 80))}`);
    }
    return { kind: 'length', remaining: Number(only) };
  }
  return { kind: 'close' };
}

/** GET `url` on a connection of its own; resolves once the status line and headers arrived. */
export function directGet(opts: DirectGetOptions): Promise<DirectResponse> {
  const { url, signal } = opts;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  let head: string;
  try {
    head = requestHead(url, opts.headers);
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise<DirectResponse>((resolve, reject) => {
    const exchange = new Exchange(opts, resolve, reject);
    exchange.start(head);
  });
}

/** One request and its answer; owns the socket until the body is done or dropped. */
class Exchange {
  readonly #opts: DirectGetOptions;
  #resolve: ((r: DirectResponse) => void) | undefined;
  #reject: ((e: unknown) => void) | undefined;
  #socket: Socket | undefined;
  #head: Buffer[] = [];
  #headBytes = 0;
  #body: HttpBody | undefined;
  readonly #onAbort = () => this.#fail(abortError(this.#opts.signal as AbortSignal));

  constructor(opts: DirectGetOptions, resolve: (r: DirectResponse) => void, reject: (e: unknown) => void) {
    this.#opts = opts;
    this.#resolve = resolve;
    this.#reject = reject;
  }

  start(requestHead: string): void {
    const { url } = this.#opts;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const https = url.protocol === 'https:';
    const port = Number(url.port) || (https ? 443 : 80);
    const onread = {
      buffer: Buffer.allocUnsafeSlow(READ_BUFFER),
      callback: (n: number, buf: Buffer): boolean => {
        this.#onBytes(buf.subarray(0, n));
        return true;
      },
    };
    const socket = https
      ? tlsConnect({
          host,
          port,
          // SNI takes names, not addresses
          ...(/^[\d.]+$|:/.test(host) ? {} : { servername: host }),
          rejectUnauthorized: this.#opts.rejectUnauthorized,
          ...(this.#opts.ca ? { ca: [...this.#opts.ca] } : {}),
          ALPNProtocols: ['http/1.1'],
          // node:tls takes `onread` as net does (missing from its types)
          onread,
        } as ConnectionOptions)
      : netConnect({ host, port, onread });
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.setTimeout(this.#opts.idleTimeoutMs, () => {
      const e = Object.assign(new Error(`no answer for ${this.#opts.idleTimeoutMs} ms`), {
        code: 'ETIMEDOUT',
      });
      this.#fail(e);
    });
    socket.on('error', (e) => this.#fail(e));
    socket.on('end', () => this.#onEnd());
    this.#opts.signal?.addEventListener('abort', this.#onAbort, { once: true });
    socket.write(requestHead);
  }

  #onBytes(view: Buffer): void {
    if (this.#body) {
      this.#body.feed(view);
      return;
    }
    if (!this.#resolve) return;
    // the head: gather until the blank line (copying: the read buffer is reused)
    this.#head.push(Buffer.from(view));
    this.#headBytes += view.byteLength;
    for (;;) {
      const all = this.#head.length === 1 ? this.#head[0]! : Buffer.concat(this.#head);
      this.#head = [all];
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.#headBytes > MAX_HEAD) this.#fail(protocolError(`headers larger than ${MAX_HEAD} bytes`));
        return;
      }
      if (end > MAX_HEAD) {
        this.#fail(protocolError(`headers larger than ${MAX_HEAD} bytes`));
        return;
      }
      let head: Head;
      let framing: Framing;
      try {
        head = parseHead(all.subarray(0, end).toString('latin1'));
        framing = framingOf(head);
      } catch (e) {
        this.#fail(e);
        return;
      }
      const rest = all.subarray(end + 4);
      if (head.status >= 100 && head.status < 200) {
        // an interim answer (100 Continue, 103 Early Hints): the real one follows
        this.#head = rest.byteLength > 0 ? [rest] : [];
        this.#headBytes = rest.byteLength;
        if (rest.byteLength === 0) return;
        continue;
      }
      this.#head = [];
      const socket = this.#socket as Socket;
      const body = new HttpBody(socket, framing, () => this.#done());
      this.#body = body;
      const resolve = this.#resolve;
      this.#resolve = undefined;
      this.#reject = undefined;
      // nothing more is read until somebody reads the body
      socket.pause();
      if (rest.byteLength > 0) body.hold(rest);
      resolve?.({ statusCode: head.status, headers: head.headers, body });
      return;
    }
  }

  #onEnd(): void {
    if (this.#body) {
      this.#body.socketEnded();
      return;
    }
    this.#fail(
      Object.assign(new Error('the server closed the connection without an answer'), { code: 'ECONNRESET' }),
    );
  }

  #fail(e: unknown): void {
    const err = e instanceof Error ? e : new Error(String(e));
    if (this.#body) {
      this.#body.failWith(err);
    } else if (this.#reject) {
      const reject = this.#reject;
      this.#resolve = undefined;
      this.#reject = undefined;
      reject(err);
    }
    this.#done();
  }

  #done(): void {
    this.#opts.signal?.removeEventListener('abort', this.#onAbort);
    this.#socket?.destroy();
  }
}

/** A response body read straight from its connection's buffer. */
export class HttpBody extends DirectReadable {
  readonly #socket: Socket;
  readonly #framing: Framing;
  readonly #onDone: () => void;
  /** Body bytes that arrived with the head, kept until the body is read. */
  #held: Buffer | undefined;
  #paused = true;
  /** The server closed its side (seen while held bytes were still unread). */
  #ended = false;
  // chunked transfer coding: where in the chunk syntax the next byte falls
  #chunkState: 'size' | 'data' | 'data-crlf' | 'trailer' = 'size';
  #chunkLeft = 0;
  #line = '';

  constructor(socket: Socket, framing: Framing, onDone: () => void) {
    super({ highWaterMark: 1024 * 1024 });
    this.#socket = socket;
    this.#framing = framing;
    this.#onDone = onDone;
  }

  /** Keep bytes that came with the head. */
  hold(bytes: Buffer): void {
    this.#held = bytes;
  }

  protected startFlow(): void {
    if (this.over) return;
    const held = this.#held;
    if (held) {
      this.#held = undefined;
      this.#paused = false;
      this.feed(held);
      // the consumer may have asked for a pause on these already
      if (this.over || this.#paused) return;
    }
    if (this.#ended) {
      this.socketEnded();
      return;
    }
    if (this.#framing.kind === 'length' && this.#framing.remaining === 0) {
      this.#complete();
      return;
    }
    if (this.#paused || this.#socket.isPaused()) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  protected release(): void {
    this.#onDone();
  }

  /** Bytes from the socket (valid only during this call). */
  feed(view: Buffer): void {
    if (this.over) return;
    const f = this.#framing;
    if (f.kind === 'close') {
      this.#pass(view);
      return;
    }
    if (f.kind === 'length') {
      const n = Math.min(view.byteLength, f.remaining);
      f.remaining -= n;
      if (n > 0) this.#pass(n === view.byteLength ? view : view.subarray(0, n));
      // bytes past the body (the connection is closing anyway) are dropped
      if (f.remaining === 0) this.#complete();
      return;
    }
    this.#takeChunked(view);
  }

  #pass(view: Buffer): void {
    if (!this.deliver(view) && !this.#paused && !this.over) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #takeChunked(view: Buffer): void {
    let i = 0;
    while (i < view.byteLength && !this.over) {
      switch (this.#chunkState) {
        case 'data': {
          const n = Math.min(this.#chunkLeft, view.byteLength - i);
          this.#pass(view.subarray(i, i + n));
          i += n;
          this.#chunkLeft -= n;
          if (this.#chunkLeft === 0) this.#chunkState = 'data-crlf';
          break;
        }
        default: {
          // a line: a chunk size, the CRLF after data, or a trailer
          const nl = view.indexOf(10, i);
          const end = nl < 0 ? view.byteLength : nl;
          this.#line += view.toString('latin1', i, end);
          i = nl < 0 ? view.byteLength : nl + 1;
          if (this.#line.length > MAX_LINE) {
            this.failWith(protocolError('a chunk line is too long'));
            return;
          }
          if (nl < 0) return;
          const line = this.#line.endsWith('\r') ? this.#line.slice(0, -1) : this.#line;
          this.#line = '';
          this.#onLine(line);
        }
      }
    }
  }

  #onLine(line: string): void {
    switch (this.#chunkState) {
      case 'data-crlf':
        if (line !== '') this.failWith(protocolError('no line break after a chunk'));
        else this.#chunkState = 'size';
        return;
      case 'size': {
        const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line);
        if (!m) {
          this.failWith(protocolError(`chunk size ${JSON.stringify(line.slice(0, 40))}`));
          return;
        }
        this.#chunkLeft = Number.parseInt(m[1] as string, 16);
        this.#chunkState = this.#chunkLeft === 0 ? 'trailer' : 'data';
        return;
      }
      case 'trailer':
        if (line === '') this.#complete();
        return;
      default:
        return;
    }
  }

  #complete(): void {
    if (this.over) return;
    this.finish();
    this.#onDone();
  }

  /** The server closed its side. */
  socketEnded(): void {
    if (this.over) return;
    if (this.#held !== undefined) {
      this.#ended = true; // judged once the held bytes are taken
      return;
    }
    if (this.#framing.kind === 'close') {
      this.#complete();
      return;
    }
    this.failWith(
      Object.assign(new Error('the connection closed before the whole body arrived'), { code: 'ECONNRESET' }),
    );
  }

  failWith(e: Error): void {
    this.fail(e);
  }
}
