// The lean undici load: the two modules are where we look for them (else every CLI start
// pays for the whole package again), and what they give works like the package's own API.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { it } from 'node:test';
import { undici } from './undici.js';

it('loads Agent and request() without the package entry point', () => {
  const u = undici();
  assert.equal(u.lean, true, 'undici moved lib/dispatcher/agent.js or lib/api/api-request.js');
  assert.equal(typeof u.Agent, 'function');
  assert.equal(undici(), u);
});

it('request() through the lean Agent answers like agent.request()', async () => {
  const server = createServer((req, res) => {
    res.setHeader('x-method', req.method ?? '');
    res.end(`hello ${req.url}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const u = undici();
  const agent = new u.Agent();
  try {
    const res = await u.request(agent, { origin: `http://127.0.0.1:${port}`, path: '/x?y=1', method: 'GET' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-method'], 'GET');
    assert.equal(await res.body.text(), 'hello /x?y=1');
  } finally {
    await agent.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
