// .dockerignore, by docker's rules (moby/patternmatcher and its ignorefile reader):
//
// - one pattern a line; a line starting with `#` is a comment; surrounding whitespace is
//   trimmed; empty lines are skipped; a UTF-8 BOM on the first line is dropped
// - `!pattern` is an exception: it re-includes what an earlier pattern excluded
// - patterns are cleaned like Go's filepath.Clean, and a leading `/` is dropped (they are
//   relative to the context root)
// - `*` matches any run of characters but `/`, `?` one character but `/`, `[...]` a class,
//   `\` escapes the next character, `**` any number of directories (also none)
// - a path is excluded when the LAST pattern that matches it, or one of its parent
//   directories, is not an exception

import { posix } from 'node:path';

interface Pattern {
  readonly exception: boolean;
  readonly text: string;
  readonly re: RegExp;
}

function clean(p: string): string {
  const c = posix.normalize(p);
  return c.length > 1 && c.endsWith('/') ? c.slice(0, -1) : c;
}

/** Docker's pattern to a regular expression over slash-separated relative paths. */
export function patternToRegExp(pattern: string): RegExp {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (ch === '*') {
      if (pattern[i + 1] === '*') {
        i++;
        if (pattern[i + 1] === '/') i++;
        if (i + 1 >= pattern.length) re += '.*';
        else re += '(.*/)?';
      } else re += '[^/]*';
    } else if (ch === '?') {
      re += '[^/]';
    } else if (ch === '\\') {
      const next = pattern[i + 1];
      if (next === undefined) re += '\\\\';
      else {
        re += next.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
        i++;
      }
    } else if (ch === '[') {
      // a class: copied up to its closing bracket; Go's [^x] and [!x] both negate
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      if (body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else {
      re += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    }
  }
  try {
    return new RegExp(`${re}$`, 's');
  } catch {
    // a pattern that cannot be a regular expression matches only itself
    return new RegExp(`^${pattern.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`);
  }
}

/** The patterns of a .dockerignore file's text. */
export function parseDockerignore(text: string): string[] {
  const out: string[] = [];
  const lines = text.split(/\r?\n/);
  lines[0] = (lines[0] ?? '').replace(/^\uFEFF/, '');
  for (const raw of lines) {
    if (raw.startsWith('#')) continue;
    let p = raw.trim();
    if (p === '') continue;
    const invert = p.startsWith('!');
    if (invert) p = p.slice(1).trim();
    if (p !== '') {
      p = clean(p);
      if (p.length > 1 && p.startsWith('/')) p = p.slice(1);
    }
    out.push(invert ? `!${p}` : p);
  }
  return out;
}

export class IgnoreMatcher {
  readonly #patterns: Pattern[];

  constructor(patterns: readonly string[]) {
    this.#patterns = patterns
      .map((p) => {
        const exception = p.startsWith('!');
        const text = exception ? p.slice(1) : p;
        return { exception, text, re: patternToRegExp(text) };
      })
      .filter((p) => p.text !== '' && p.text !== '.');
  }

  get empty(): boolean {
    return this.#patterns.length === 0;
  }

  /** Some pattern is an exception (an excluded directory must still be looked into). */
  get hasExceptions(): boolean {
    return this.#patterns.some((p) => p.exception);
  }

  /** Whether the relative path `rel` (slash-separated, no leading `/`) is excluded. */
  excludes(rel: string): boolean {
    let matched = false;
    const parts = rel.split('/');
    for (const p of this.#patterns) {
      if (p.exception !== matched) continue;
      let m = p.re.test(rel);
      for (let i = 1; !m && i < parts.length; i++) m = p.re.test(parts.slice(0, i).join('/'));
      if (m) matched = !p.exception;
    }
    return matched;
  }
}
