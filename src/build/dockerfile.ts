// Dockerfile syntax: the text is split into instructions by `dockerfile-ast` (line
// continuations, the escape directive, comments inside continued lines, heredocs), and each
// instruction is checked here: a known keyword, the flags it takes, the arguments it needs,
// the JSON (exec) form when the arguments are a JSON array of strings, heredoc bodies. The
// meaning of each instruction (substitution, stages) is the executor's (build.ts).
//
// Every error is ERR_BUILD_SYNTAX and starts with `FILE:LINE:`.

import { type Instruction as AstInstruction, DockerfileParser } from 'dockerfile-ast';
import { StratumError } from '../errors/errors.js';

export const KEYWORDS = [
  'FROM',
  'ARG',
  'ENV',
  'LABEL',
  'WORKDIR',
  'USER',
  'EXPOSE',
  'VOLUME',
  'CMD',
  'ENTRYPOINT',
  'SHELL',
  'STOPSIGNAL',
  'HEALTHCHECK',
  'ONBUILD',
  'COPY',
  'ADD',
  'RUN',
  'MAINTAINER',
] as const;

export type Keyword = (typeof KEYWORDS)[number];

const FLAGS: Readonly<Partial<Record<Keyword, readonly string[]>>> = {
  FROM: ['platform'],
  RUN: ['network', 'mount', 'security'],
  COPY: ['from', 'chown', 'chmod', 'link', 'parents', 'exclude'],
  ADD: ['chown', 'chmod', 'link', 'checksum', 'keep-git-dir'],
  HEALTHCHECK: ['interval', 'timeout', 'start-period', 'start-interval', 'retries'],
};

/** Instructions whose arguments may be empty. */
const MAY_BE_EMPTY: ReadonlySet<Keyword> = new Set<Keyword>([]);

export interface Heredoc {
  readonly name: string;
  /** The body, with a final newline (as docker gives it); `<<-` strips leading tabs. */
  readonly content: string;
  /** Unquoted delimiter: variables in the body are expanded. */
  readonly expand: boolean;
}

export interface Instruction {
  readonly keyword: Keyword;
  /** 1-based line of the keyword. */
  readonly line: number;
  /** `FILE:LINE`, for messages. */
  readonly where: string;
  /** Flags (`--name=value`; a flag without `=` is `true`). */
  readonly flags: ReadonlyMap<string, string | true>;
  /** The arguments after the flags, continuation lines joined; for heredocs the first line only. */
  readonly args: string;
  /** The exec (JSON) form, when the arguments are a JSON array of strings. */
  readonly json: readonly string[] | undefined;
  readonly heredocs: readonly Heredoc[];
  /** The instruction as written on one line (flags included), for history and progress. */
  readonly text: string;
}

export interface Dockerfile {
  readonly file: string;
  readonly escape: string;
  readonly instructions: readonly Instruction[];
}

function syntax(where: string, why: string): StratumError {
  return new StratumError('ERR_BUILD_SYNTAX', `${where}: ${why}`);
}

const HEREDOC_RE = /<<(-?)\s*(?:"([^"\n]+)"|'([^'\n]+)'|([A-Za-z0-9_.-]+))/g;

/** Split `args` (the raw text with heredoc bodies) into the command line and the bodies. */
function splitHeredocs(raw: string, where: string): { command: string; heredocs: Heredoc[] } {
  const lines = raw.split('\n');
  const command = lines.shift() ?? '';
  const heredocs: Heredoc[] = [];
  for (const m of command.matchAll(HEREDOC_RE)) {
    const strip = m[1] === '-';
    const name = (m[2] ?? m[3] ?? m[4]) as string;
    const body: string[] = [];
    let closed = false;
    while (lines.length > 0) {
      const line = (lines.shift() as string).replace(/\r$/, '');
      const l = strip ? line.replace(/^\t+/, '') : line;
      if (l === name) {
        closed = true;
        break;
      }
      body.push(l);
    }
    if (!closed) throw syntax(where, `heredoc <<${name} has no closing ${name} line`);
    heredocs.push({
      name,
      content: body.length === 0 ? '' : `${body.join('\n')}\n`,
      expand: m[2] === undefined && m[3] === undefined,
    });
  }
  return { command, heredocs };
}

function parseJsonForm(args: string, where: string): readonly string[] | undefined {
  const t = args.trim();
  if (!t.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch {
    return undefined; // docker: not JSON, so the shell form
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw syntax(where, `the JSON form must be an array of strings: ${t}`);
  }
  return v as string[];
}

function flagsOf(ins: AstInstruction, keyword: Keyword, where: string): Map<string, string | true> {
  const out = new Map<string, string | true>();
  const getFlags = (ins as { getFlags?: () => { getName(): string; getValue(): string | null }[] }).getFlags;
  if (typeof getFlags !== 'function') return out;
  const allowed = FLAGS[keyword] ?? [];
  for (const f of getFlags.call(ins)) {
    const name = f.getName();
    if (!allowed.includes(name)) {
      throw syntax(
        where,
        `unknown flag --${name} for ${keyword}${allowed.length > 0 ? ` (it takes ${allowed.map((a) => `--${a}`).join(', ')})` : ''}`,
      );
    }
    if (out.has(name) && name !== 'exclude') throw syntax(where, `--${name} given twice`);
    out.set(name, f.getValue() ?? true);
  }
  return out;
}

/** Parse a Dockerfile. `file` names it in errors. */
export function parseDockerfile(text: string, file = 'Dockerfile'): Dockerfile {
  const df = DockerfileParser.parse(text);
  const escapeChar = df.getEscapeCharacter();
  for (const d of df.getDirectives()) {
    if (d.getName().toLowerCase() === 'escape' && d.getValue() !== '\\' && d.getValue() !== '`') {
      throw syntax(
        `${file}:${d.getRange().start.line + 1}`,
        `invalid escape directive ${JSON.stringify(d.getValue())}: use \\ or \``,
      );
    }
  }
  const instructions: Instruction[] = [];
  for (const ins of df.getInstructions()) {
    const line = ins.getRange().start.line + 1;
    const where = `${file}:${line}`;
    const keyword = ins.getKeyword();
    if (!(KEYWORDS as readonly string[]).includes(keyword)) {
      throw syntax(where, `unknown instruction: ${ins.getInstruction()}`);
    }
    const kw = keyword as Keyword;
    const flags = flagsOf(ins, kw, where);
    const hasHeredocs =
      (kw === 'RUN' || kw === 'COPY' || kw === 'ADD') &&
      typeof (ins as unknown as { getHeredocs?: unknown }).getHeredocs === 'function' &&
      (ins as unknown as { getHeredocs(): unknown[] }).getHeredocs().length > 0;
    let args: string;
    let heredocs: Heredoc[] = [];
    if (hasHeredocs) {
      const split = splitHeredocs(ins.getRawArgumentsContent() ?? '', where);
      args = split.command.trim();
      heredocs = split.heredocs;
    } else {
      args = (ins.getArgumentsContent() ?? '').trim();
    }
    if (args === '' && !MAY_BE_EMPTY.has(kw)) throw syntax(where, `${kw} needs arguments`);
    const json = ['RUN', 'CMD', 'ENTRYPOINT', 'SHELL', 'COPY', 'ADD', 'VOLUME'].includes(kw)
      ? parseJsonForm(args, where)
      : undefined;
    if (kw === 'SHELL' && (json === undefined || json.length === 0)) {
      throw syntax(where, 'SHELL takes a JSON array, e.g. SHELL ["/bin/sh", "-c"]');
    }
    const flagText = [...flags].map(([k, v]) => (v === true ? `--${k}` : `--${k}=${v}`)).join(' ');
    instructions.push({
      keyword: kw,
      line,
      where,
      flags,
      args,
      json,
      heredocs,
      text: `${kw}${flagText ? ` ${flagText}` : ''} ${args}`,
    });
  }
  if (instructions.length === 0) throw syntax(`${file}:1`, 'the file has no instructions');
  const first = instructions.find((i) => i.keyword !== 'ARG');
  if (first === undefined || first.keyword !== 'FROM') {
    throw syntax(
      first?.where ?? `${file}:1`,
      `${first ? first.keyword : 'the file'} before any FROM: a Dockerfile starts with FROM (ARG may come before it)`,
    );
  }
  return { file, escape: escapeChar, instructions };
}
