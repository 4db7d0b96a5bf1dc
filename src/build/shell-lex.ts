// Variable substitution in Dockerfile instructions, by docker's rules (buildkit's
// frontend/dockerfile/shell lexer), not a shell's:
//
//   $NAME  ${NAME}            the value, or '' when unset
//   ${NAME:-word} ${NAME-word}  word when NAME is unset or empty (':'), or unset (no ':')
//   ${NAME:+word} ${NAME+word}  word when NAME is set and not empty (':'), or set; else ''
//   ${NAME:?msg}  ${NAME?msg}   an error (msg) when NAME is unset or empty / unset
//   'single'                    literal, no escapes
//   "double"                    $ expands; the escape character escapes only " $ and itself
//   \c (outside quotes)         c literally (the escape character is the parser's: \ or `)
//   $ not followed by a name    a literal $
//
// processWord keeps whitespace; processWords also splits into words on whitespace outside
// quotes (the value of an unquoted $VAR is split too), as buildkit's ProcessWords does.

export type LexEnv = ReadonlyMap<string, string>;

/** Thrown for a bad substitution; the caller adds the file and line. */
export class LexError extends Error {}

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\v' || ch === '\f';
}

function isNameChar(ch: string): boolean {
  return /^[A-Za-z0-9_]$/.test(ch);
}

class Words {
  readonly words: string[] = [];
  word = '';
  inWord = false;
  constructor(readonly split: boolean) {}
  raw(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  /** Unquoted text: whitespace separates words when splitting. */
  text(s: string): void {
    if (!this.split) {
      this.raw(s);
      return;
    }
    for (const ch of s) {
      if (isSpace(ch)) this.end();
      else this.raw(ch);
    }
  }
  end(): void {
    if (this.inWord && this.word !== '') this.words.push(this.word);
    this.word = '';
    this.inWord = false;
  }
}

class Scanner {
  pos = 0;
  constructor(
    readonly s: string,
    readonly esc: string,
    readonly env: LexEnv,
    /** Heredoc bodies: quotes and escapes are kept as they are, only $ expands. */
    readonly rawText = false,
  ) {}
  peek(): string | undefined {
    return this.s[this.pos];
  }
  next(): string | undefined {
    return this.s[this.pos++];
  }

  run(out: Words, stopOn?: string): boolean {
    for (;;) {
      const ch = this.peek();
      if (ch === undefined) return false;
      if (stopOn !== undefined && ch === stopOn) {
        this.pos++;
        return true;
      }
      if (this.rawText && ch === "'") {
        // single-quoted text is not expanded; the quotes stay (an unmatched one is literal)
        const end = this.s.indexOf("'", this.pos + 1);
        const stop = end === -1 ? this.pos + 1 : end + 1;
        out.raw(this.s.slice(this.pos, stop));
        this.pos = stop;
      } else if (this.rawText && ch === '"') {
        this.pos++;
        out.raw(ch);
      } else if (this.rawText && ch === this.esc) {
        this.pos++;
        out.raw(ch + (this.next() ?? ''));
      } else if (ch === "'") {
        this.pos++;
        out.raw(this.singleQuoted());
      } else if (ch === '"') {
        this.pos++;
        out.raw(this.doubleQuoted());
      } else if (ch === '$') {
        this.pos++;
        out.text(this.dollar());
      } else if (ch === this.esc) {
        this.pos++;
        const c = this.next();
        if (c === undefined) return false;
        out.raw(c);
      } else if (out.split && stopOn === undefined && isSpace(ch)) {
        this.pos++;
        out.end();
      } else {
        this.pos++;
        out.raw(ch);
      }
    }
  }

  singleQuoted(): string {
    const end = this.s.indexOf("'", this.pos);
    if (end === -1) throw new LexError('unexpected end of statement while looking for matching single-quote');
    const v = this.s.slice(this.pos, end);
    this.pos = end + 1;
    return v;
  }

  doubleQuoted(): string {
    let v = '';
    for (;;) {
      const ch = this.next();
      if (ch === undefined) {
        throw new LexError('unexpected end of statement while looking for matching double-quote');
      }
      if (ch === '"') return v;
      if (ch === '$') v += this.dollar();
      else if (ch === this.esc) {
        const c = this.peek();
        if (c === '"' || c === '$' || c === this.esc) {
          v += c;
          this.pos++;
        } else v += ch;
      } else v += ch;
    }
  }

  name(): string {
    const first = this.peek();
    if (first === undefined) return '';
    if (/^[0-9]$/.test(first)) {
      let n = '';
      while (/^[0-9]$/.test(this.peek() ?? '')) n += this.next();
      return n;
    }
    let n = '';
    while (isNameChar(this.peek() ?? '')) n += this.next();
    return n;
  }

  dollar(): string {
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      return this.env.get(name) ?? '';
    }
    this.pos++;
    const name = this.name();
    if (name === '') throw new LexError('bad substitution: no variable name in the braces after $');
    const ch = this.next();
    if (ch === '}') return this.env.get(name) ?? '';
    let colon = false;
    let modifier = ch;
    if (ch === ':') {
      colon = true;
      modifier = this.next();
    }
    if (modifier !== '-' && modifier !== '+' && modifier !== '?') {
      throw new LexError(
        `unsupported modifier (${ch === undefined ? 'end of line' : `${colon ? ':' : ''}${modifier ?? ''}`}) in substitution of ${name}`,
      );
    }
    const inner = new Words(false);
    if (!this.run(inner, '}')) throw new LexError(`bad substitution: missing '}' after \${${name}`);
    const word = inner.word;
    const value = this.env.get(name);
    const unset = value === undefined || (colon && value === '');
    switch (modifier) {
      case '-':
        return unset ? word : (value as string);
      case '+':
        return unset ? '' : word;
      default:
        if (unset) throw new LexError(`${name}: ${word === '' ? 'is not allowed to be unset' : word}`);
        return value as string;
    }
  }
}

/** Expand one word (quotes removed, whitespace kept). Throws LexError. */
export function processWord(word: string, env: LexEnv, escapeChar = '\\'): string {
  const out = new Words(false);
  new Scanner(word, escapeChar, env).run(out);
  return out.word;
}

/** Expand a heredoc body: `$` expands; quotes and escapes stay as written (buildkit's raw mode). */
export function processHeredoc(text: string, env: LexEnv, escapeChar = '\\'): string {
  const out = new Words(false);
  new Scanner(text, escapeChar, env, true).run(out);
  return out.word;
}

/** Expand and split into words on unquoted whitespace. Throws LexError. */
export function processWords(word: string, env: LexEnv, escapeChar = '\\'): string[] {
  const out = new Words(true);
  new Scanner(word, escapeChar, env).run(out);
  out.end();
  return out.words;
}
