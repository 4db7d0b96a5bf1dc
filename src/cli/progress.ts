// Progress output for copy events: per-blob bars on a TTY, plain lines otherwise, or one
// JSON object per line with --json. Messages follow docker's words ("Already exists").

import type { CopyEvent } from '../copy/copy.js';
import type { Descriptor } from '../spec/types.js';

export type ProgressMode = 'tty' | 'plain' | 'json' | 'quiet';

function short(d: Descriptor): string {
  return d.digest.slice(d.digest.indexOf(':') + 1, d.digest.indexOf(':') + 13);
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)}${units[i]}`;
}

function bar(done: number, total: number, width = 30): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const full = Math.floor(frac * width);
  return `[${'='.repeat(Math.max(0, full - 1))}${full > 0 ? '>' : ''}${' '.repeat(width - full)}]`;
}

/** Renders CopyEvents to a stream. Call `finish()` at the end. */
export class ProgressPrinter {
  readonly #mode: ProgressMode;
  readonly #out: NodeJS.WritableStream & { columns?: number };
  readonly #lines: string[] = [];
  readonly #index = new Map<string, number>();
  #drawn = 0;
  #last = 0;

  constructor(mode: ProgressMode, out: NodeJS.WritableStream = process.stderr) {
    this.#mode = mode;
    this.#out = out;
  }

  readonly onEvent = (e: CopyEvent): void => {
    if (this.#mode === 'quiet') return;
    if (this.#mode === 'json') {
      if (e.type === 'blob-progress') return;
      this.#out.write(`${JSON.stringify({ event: e.type, ...eventFields(e) })}\n`);
      return;
    }
    const line = this.#lineFor(e);
    if (line === undefined) return;
    if (this.#mode === 'plain') {
      if (e.type !== 'blob-progress') this.#out.write(`${line}\n`);
      return;
    }
    const key = `${e.type === 'blob-progress' || e.type === 'blob-start' ? 'blob-done' : e.type}:${e.descriptor.digest}`;
    let i = this.#index.get(key);
    if (i === undefined) {
      i = this.#lines.length;
      this.#index.set(key, i);
      this.#lines.push(line);
    } else {
      this.#lines[i] = line;
    }
    const now = Date.now();
    if (e.type === 'blob-progress' && now - this.#last < 100) return;
    this.#last = now;
    this.#redraw();
  };

  #lineFor(e: CopyEvent): string | undefined {
    switch (e.type) {
      case 'resolved':
        return `Resolved ${e.descriptor.digest}`;
      case 'platform':
        return `Platform ${e.platform}: ${e.descriptor.digest}`;
      case 'blob-start':
        return `${short(e.descriptor)}: Copying ${formatBytes(e.descriptor.size)}`;
      case 'blob-progress':
        return `${short(e.descriptor)}: Copying ${bar(e.bytes, e.descriptor.size)} ${formatBytes(e.bytes)}/${formatBytes(e.descriptor.size)}`;
      case 'blob-done':
        return `${short(e.descriptor)}: ${
          e.action === 'exists'
            ? 'Already exists'
            : e.action === 'mounted'
              ? 'Mounted from source repository'
              : e.action === 'converted'
                ? `Converted to ${short(e.result)} (${formatBytes(e.result.size)})`
                : `Copied ${formatBytes(e.descriptor.size)}`
        }`;
      case 'manifest':
        return `${short(e.descriptor)}: ${e.action === 'exists' ? 'Manifest already exists' : 'Wrote manifest'}`;
      case 'tagged':
        return `Tagged ${e.ref} -> ${e.descriptor.digest}`;
    }
  }

  #redraw(): void {
    const cols = this.#out.columns ?? 120;
    let s = this.#drawn > 0 ? `\x1b[${this.#drawn}A` : '';
    for (const l of this.#lines) s += `\x1b[2K${l.slice(0, cols - 1)}\n`;
    this.#drawn = this.#lines.length;
    this.#out.write(s);
  }

  finish(): void {
    if (this.#mode === 'tty' && this.#lines.length > 0) this.#redraw();
  }
}

function eventFields(e: CopyEvent): Record<string, unknown> {
  const { type: _t, ...rest } = e;
  return rest;
}
