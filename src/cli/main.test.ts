// The command line's entry: global options may come before the command.

import assert from 'node:assert/strict';
import { it } from 'node:test';
import { hoistGlobals } from './main.js';

it('moves global options given before the command to just after it', () => {
  assert.deepEqual(hoistGlobals(['--root', '/s', 'run', '--rm', 'img', 'sh', '-q']), [
    'run',
    '--root',
    '/s',
    '--rm',
    'img',
    'sh',
    '-q',
  ]);
  assert.deepEqual(hoistGlobals(['--json', '-q', '--tls-verify=false', 'images']), [
    'images',
    '--json',
    '-q',
    '--tls-verify=false',
  ]);
  assert.deepEqual(hoistGlobals(['--root=/s', 'gc']), ['gc', '--root=/s']);
  // nothing to move, or nothing after the options: as given
  assert.deepEqual(hoistGlobals(['copy', '--root', '/s', 'a', 'b']), ['copy', '--root', '/s', 'a', 'b']);
  assert.deepEqual(hoistGlobals(['--json']), ['--json']);
  assert.deepEqual(hoistGlobals(['--bogus', 'images']), ['--bogus', 'images']);
});
