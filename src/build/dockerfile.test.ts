// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text uses ${VAR} literally
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isStratumError } from '../errors/errors.js';
import { parseDockerfile } from './dockerfile.js';
import { IgnoreMatcher, parseDockerignore } from './dockerignore.js';

function syntaxError(text: string, where: RegExp): void {
  assert.throws(
    () => parseDockerfile(text, 'ctx/Dockerfile'),
    (e: unknown) => {
      assert.ok(isStratumError(e));
      assert.equal(e.code, 'ERR_BUILD_SYNTAX');
      assert.match(e.message, where);
      return true;
    },
  );
}

describe('parseDockerfile', () => {
  it('splits instructions with line numbers, flags, JSON forms and continuations', () => {
    const df = parseDockerfile(
      [
        'ARG BASE=busybox',
        'FROM ${BASE} AS build',
        '# a comment',
        'RUN echo a \\',
        '  && echo b',
        'COPY --from=build --chown=1:2 a b /dst/',
        'CMD ["sh", "-c", "echo hi"]',
        'ENTRYPOINT [not json',
        'run echo lower',
      ].join('\n'),
    );
    const ins = df.instructions;
    assert.deepEqual(
      ins.map((i) => [i.keyword, i.line]),
      [
        ['ARG', 1],
        ['FROM', 2],
        ['RUN', 4],
        ['COPY', 6],
        ['CMD', 7],
        ['ENTRYPOINT', 8],
        ['RUN', 9],
      ],
    );
    assert.equal(ins[2]?.args, 'echo a   && echo b');
    assert.deepEqual(
      [...(ins[3]?.flags ?? [])],
      [
        ['from', 'build'],
        ['chown', '1:2'],
      ],
    );
    assert.equal(ins[3]?.args, 'a b /dst/');
    assert.deepEqual(ins[4]?.json, ['sh', '-c', 'echo hi']);
    assert.equal(ins[5]?.json, undefined, 'not JSON: the shell form');
    assert.equal(ins[2]?.where, 'Dockerfile:4');
  });

  it('reads heredocs: the command line and each body', () => {
    const df = parseDockerfile(
      [
        'FROM scratch',
        'RUN <<EOF',
        'echo one',
        'echo two',
        'EOF',
        'COPY <<-"X" /f',
        '\tliteral $A',
        '\tX',
        'RUN true',
      ].join('\n'),
    );
    const [, run, copy, last] = df.instructions;
    assert.equal(run?.args, '<<EOF');
    assert.deepEqual(run?.heredocs, [{ name: 'EOF', content: 'echo one\necho two\n', expand: true }]);
    assert.deepEqual(copy?.heredocs, [{ name: 'X', content: 'literal $A\n', expand: false }]);
    assert.equal(last?.line, 9);
  });

  it('honours the escape directive', () => {
    const df = parseDockerfile('# escape=`\nFROM scratch\nRUN echo a `\n  b\n');
    assert.equal(df.escape, '`');
    assert.equal(df.instructions[1]?.args, 'echo a   b');
  });

  it('names the file and line of an unknown instruction', () => {
    syntaxError(
      'FROM scratch\nRUN true\nFROBNICATE x\n',
      /^ctx\/Dockerfile:3: unknown instruction: FROBNICATE/,
    );
  });

  it('refuses instructions without arguments, unknown flags, bad SHELL, bad JSON arrays', () => {
    syntaxError('FROM scratch\n\nRUN\n', /Dockerfile:3: RUN needs arguments/);
    syntaxError('FROM scratch\nCOPY --frm=x a b\n', /Dockerfile:2: unknown flag --frm for COPY/);
    syntaxError('FROM scratch\nRUN --from=x true\n', /Dockerfile:2: unknown flag --from/);
    syntaxError('FROM scratch\nSHELL /bin/bash\n', /Dockerfile:2: SHELL takes a JSON array/);
    syntaxError('FROM scratch\nCMD ["a", 1]\n', /Dockerfile:2: the JSON form must be an array of strings/);
    syntaxError(
      'FROM scratch\nRUN <<EOF\necho never closed\n',
      /Dockerfile:2: heredoc <<EOF has no closing EOF line/,
    );
  });

  it('requires FROM first (ARG may precede it)', () => {
    syntaxError('ENV A=1\nFROM scratch\n', /Dockerfile:1: ENV before any FROM/);
    syntaxError('# only a comment\n', /no instructions/);
    assert.equal(parseDockerfile('ARG X\nFROM scratch\n').instructions.length, 2);
  });
});

describe('.dockerignore', () => {
  const matcher = (text: string) => new IgnoreMatcher(parseDockerignore(text));

  it('reads patterns as docker does: comments, trimming, cleaning, leading /', () => {
    assert.deepEqual(parseDockerignore('\uFEFF# c\n  *.md  \n\n/abs/x/\n! keep.md\n./a/../b\n'), [
      '*.md',
      'abs/x',
      '!keep.md',
      'b',
    ]);
  });

  it('matches files and their parent directories; the last match wins', () => {
    const m = matcher('*.md\n!README.md\nnode_modules\nlogs/**/*.log\nsecret?\n[ab].txt\n');
    assert.equal(m.excludes('x.md'), true);
    assert.equal(m.excludes('README.md'), false);
    assert.equal(m.excludes('docs/x.md'), false, '* does not cross /');
    assert.equal(m.excludes('node_modules'), true);
    assert.equal(m.excludes('node_modules/a/b.js'), true, 'a parent directory matches');
    assert.equal(m.excludes('logs/a.log'), true, '** matches no directory too');
    assert.equal(m.excludes('logs/x/y/a.log'), true);
    assert.equal(m.excludes('logs/a.txt'), false);
    assert.equal(m.excludes('secret1'), true);
    assert.equal(m.excludes('secret12'), false);
    assert.equal(m.excludes('a.txt'), true);
    assert.equal(m.excludes('c.txt'), false);
  });

  it('an exception re-includes a file inside an excluded directory', () => {
    const m = matcher('docs\n!docs/keep.txt\n');
    assert.equal(m.excludes('docs/other.txt'), true);
    assert.equal(m.excludes('docs/keep.txt'), false);
    assert.equal(m.hasExceptions, true);
  });

  it('regular-expression characters in patterns are literal', () => {
    const m = matcher('a+b.(c)\n');
    assert.equal(m.excludes('a+b.(c)'), true);
    assert.equal(m.excludes('aab.(c)'), false);
    assert.equal(m.excludes('a+bx(c)'), false);
  });
});
