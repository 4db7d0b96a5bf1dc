// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfile text uses ${VAR} literally
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LexError, processHeredoc, processWord, processWords } from './shell-lex.js';

const env = new Map([
  ['A', 'a'],
  ['B', 'd e'],
  ['EMPTY', ''],
  ['PATHX', '/usr/bin'],
]);

describe('processWord (docker substitution rules)', () => {
  const cases: [string, string][] = [
    ['$A', 'a'],
    ['${A}', 'a'],
    ['x${A}y', 'xay'],
    ['$A$A', 'aa'],
    ["'$A'", '$A'],
    ['"$A"', 'a'],
    ['\\$A', '$A'],
    ['"\\$A"', '$A'],
    ['"a\\"b"', 'a"b'],
    ['"a\\nb"', 'a\\nb'],
    ['a\\ b', 'a b'],
    ['$', '$'],
    ['a$', 'a$'],
    ['$-x', '$-x'],
    ['$UNSET', ''],
    ['${UNSET}x', 'x'],
    ['${UNSET:-def}', 'def'],
    ['${EMPTY:-def}', 'def'],
    ['${EMPTY-def}', ''],
    ['${UNSET-def}', 'def'],
    ['${A:-def}', 'a'],
    ['${A:+alt}', 'alt'],
    ['${EMPTY:+alt}', ''],
    ['${EMPTY+alt}', 'alt'],
    ['${UNSET+alt}', ''],
    ['${UNSET:-$A}', 'a'],
    ['${UNSET:-${A}b}', 'ab'],
    ['${UNSET:-"x y"}', 'x y'],
    ['${PATHX}:/bin', '/usr/bin:/bin'],
    ['$B', 'd e'],
    ['$1x', 'x'],
  ];
  for (const [word, want] of cases) {
    it(`${word} -> ${JSON.stringify(want)}`, () => assert.equal(processWord(word, env), want));
  }

  it('${X:?msg} fails when X is unset or empty, with the message', () => {
    assert.throws(
      () => processWord('${UNSET:?need it}', env),
      (e: unknown) => {
        assert.ok(e instanceof LexError);
        assert.match(e.message, /UNSET: need it/);
        return true;
      },
    );
    assert.throws(() => processWord('${EMPTY:?}', env), /EMPTY: is not allowed to be unset/);
    assert.equal(processWord('${EMPTY?}', env), '');
  });

  it('refuses unterminated quotes and substitutions, and unknown modifiers', () => {
    assert.throws(() => processWord("'abc", env), LexError);
    assert.throws(() => processWord('"abc', env), LexError);
    assert.throws(() => processWord('${A', env), LexError);
    assert.throws(() => processWord('${A:-x', env), LexError);
    assert.throws(() => processWord('${A%x}', env), /unsupported modifier/);
    assert.throws(() => processWord('${}', env), LexError);
  });

  it('uses the escape directive character', () => {
    assert.equal(processWord('`$A', env, '`'), '$A');
    assert.equal(processWord('C:\\dir\\$A', env, '`'), 'C:\\dir\\a');
  });
});

describe('processWords', () => {
  it('splits on unquoted whitespace, including in an unquoted expansion', () => {
    assert.deepEqual(processWords('a "b c" $B', env), ['a', 'b c', 'd', 'e']);
    assert.deepEqual(processWords('"$B"', env), ['d e']);
    assert.deepEqual(processWords('  x\t y  ', env), ['x', 'y']);
    assert.deepEqual(processWords('a\\ b c', env), ['a b', 'c']);
  });
});

describe('processHeredoc', () => {
  it('expands $ but keeps quotes and escapes as written', () => {
    assert.equal(processHeredoc(`echo "$A" '$A' \\$A \\n\n`, env), `echo "a" '$A' \\$A \\n\n`);
    assert.equal(processHeredoc(`don't $A\n`, env), `don't a\n`);
    assert.equal(processHeredoc('${UNSET:-"d"}', env), '"d"');
  });
});
