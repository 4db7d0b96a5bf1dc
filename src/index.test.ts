import assert from 'node:assert/strict';
import { it } from 'node:test';
import * as stratum from './index.js';

it('exports the library with one import', () => {
  for (const name of [
    'copyImage',
    'pull',
    'push',
    'inspect',
    'importTarball',
    'copy',
    'openStore',
    'openLayout',
    'RegistryClient',
    'RegistryTarget',
    'openDockerArchive',
    'createDockerArchive',
    'openOciArchive',
    'createOciArchive',
    'parseNormalizedReference',
    'parseManifestDocument',
    'parseDigest',
    'StratumError',
    'login',
    'logout',
    'Session',
    'applyLayer',
    'diffTrees',
    'diffOverlayUpper',
    'unpack',
    'unpackImage',
    'makeRuntimeConfig',
    'gc',
    'build',
    'buildImage',
    'parseDockerfile',
    'run',
    'runImage',
    'commitImage',
    'runProcess',
    'Containers',
    'commitContainer',
    'Snapshots',
    'chainIds',
    'mountOverlay',
  ]) {
    assert.equal(typeof (stratum as Record<string, unknown>)[name], 'function', name);
  }
});
