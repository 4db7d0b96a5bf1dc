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

it('a RegistryClient keeps its connection after a HEAD (a push asks one per blob)', async () => {
  let connections = 0;
  const server = createServer((req, res) => {
    res.setHeader('content-length', '0');
    res.statusCode = req.method === 'HEAD' ? 404 : 200;
    res.end();
  });
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const host = `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  const { RegistryClient } = await import('./client.js');
  const client = new RegistryClient();
  try {
    for (let i = 0; i < 3; i++) {
      const res = await client.request({
        registry: host,
        method: 'HEAD',
        url: `/v2/app/blobs/sha256:${String(i).repeat(64)}`,
        scopes: [],
        what: 'check blob',
        ok: [404],
      });
      await new Promise((done) => {
        res.body.on('end', done);
        res.body.resume();
      });
    }
    const get = await client.request({
      registry: host,
      method: 'GET',
      url: '/v2/',
      scopes: [],
      what: 'ping',
    });
    get.body.resume();
    // undici closes the connection after each HEAD unless told not to: that would be 4 here
    // (the pool may open a second one while it settles the first)
    assert.ok(connections <= 2, `${connections} connections for 4 requests`);
  } finally {
    await client.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
